"""``python -m bench.overload``: the gateway under more load than it can serve.

Starts its own Triton (tiny stand-ins by default) and gateway on loopback, registers the source
face once, then sends ``POST /v1/swap`` (``source_face_id``, the group photo, ``output_format=jpeg``):

1. saturation: after 5 warm-up swaps, closed loop with 1, 2, 4, 8 callers, ``--sat-seconds`` each;
   callers honour ``Retry-After`` on 503 as a well-behaved client does; saturation = the best
   rate of 200 answers; its latency reference is the p50 at the fewest callers that reach 90%
   of that rate (adding callers past that point only adds waiting);
2. overload: open loop, Poisson arrivals (seeded) at ``--factor`` x saturation for ``--seconds``,
   sent whatever the answers, each with its own 120 s client deadline. Outcomes are counted by
   status (a 503 without ``Retry-After`` apart), client timeouts and connection errors; at most
   ``--max-outstanding`` requests are open, arrivals past it are skipped and counted.

Reports goodput (200 answers received during the phase, per second) against saturation, the
status histogram, p50/p95/p99 of 200 latencies (from each actual send), RSS (VmRSS of the process
and its descendants: Triton's Python stubs) after phase 1, at its peak (sampled each second) and
10 s after the last answer, and how long Triton keeps working after the last send (statistics of
``face_swap`` and ``face_detector`` polled every 0.2 s: the last change, once still for 2 s).
Prints the issue's targets with PASS/FAIL and writes ``out/bench_overload.json``; exits 0 even
when a target fails, non-zero only when it could not run. Reproduce: ``make bench``, or
``python -m bench.overload [--standin-size full] [--seconds 300] [--gateway-env KEY=VALUE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import httpx
import numpy as np

from bench import summary as bench_summary
from launch.server import RUN, embedded, start_gateway, stop_gateway
from repository.layout import default_images
from repository.resolve import resolve

CLIENT_TIMEOUT_S = 120.0
QUIET_S = 2.0


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, MiB (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            children.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [pid]
    while todo:
        todo += children.get(p := todo.pop(), [])
        try:
            total += next(int(x.split()[1]) for x in Path(f"/proc/{p}/status").read_text().splitlines()
                          if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return round(total / 1024, 1)


def pcts(lat: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in ms (None without data)."""
    vals = [round(float(v), 1) for v in np.percentile(lat, [50, 95, 99]) * 1000] if lat else [None] * 3
    return dict(zip(("p50_ms", "p95_ms", "p99_ms"), vals))


class Bench:
    def __init__(self, args: argparse.Namespace, gw: str, triton_http: str, pids: dict[str, int]) -> None:
        self.args, self.triton_http, self.pids, self.face_id = args, triton_http, pids, ""
        self.http = httpx.AsyncClient(base_url=gw, timeout=CLIENT_TIMEOUT_S,
                                      limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        self.source, self.target = (Path(p).read_bytes() for p in default_images())

    def rss(self) -> dict[str, float]:
        return {name: rss_mib(pid) for name, pid in self.pids.items()}

    async def swap(self) -> tuple[str, float, float, float]:
        """One request: (outcome, sent at, answered at, Retry-After seconds or 0)."""
        t, retry_after = time.perf_counter(), 0.0
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                r = await self.http.post("/v1/swap", files={"target": ("t1.jpg", self.target)},
                                         data={"source_face_id": self.face_id, "output_format": "jpeg"})
            code = str(r.status_code) + (" without Retry-After" * (r.status_code == 503 and
                                                                    "retry-after" not in r.headers))
            retry_after = float(r.headers.get("retry-after", 0) or 0)
        except (TimeoutError, httpx.TimeoutException):
            code = "client timeout"
        except httpx.HTTPError as exc:
            code = f"connection error ({type(exc).__name__})"
        return code, t, time.perf_counter(), retry_after

    async def closed_loop(self, callers: int, seconds: float) -> dict:
        ok: list[float] = []
        codes: Counter[str] = Counter()
        t0 = time.perf_counter()

        async def caller() -> None:
            while time.perf_counter() - t0 < seconds:
                code, sent, done, retry_after = await self.swap()
                codes[code] += 1
                if code == "200":
                    ok.append(done - sent)
                elif retry_after:
                    await asyncio.sleep(min(retry_after, max(seconds - (time.perf_counter() - t0), 0)))
        await asyncio.gather(*(caller() for _ in range(callers)))
        return {"rps": round(len(ok) / (time.perf_counter() - t0), 3), **pcts(ok), "statuses": dict(codes)}

    async def triton_counts(self) -> tuple:
        r = await self.http.get(f"http://{self.triton_http}/v2/models/stats", timeout=5)
        stats = {s["name"]: s for s in r.json().get("model_stats", [])}
        return tuple((stats.get(m, {}).get("inference_count"), stats.get(m, {}).get("execution_count"))
                     for m in ("face_swap", "face_detector"))

    async def idle_after(self, t_stop: float) -> float | None:
        """Seconds from ``t_stop`` to the last change of Triton's counts (None: still moving at the cap)."""
        last, changed = await self.triton_counts(), t_stop
        while time.perf_counter() - t_stop < CLIENT_TIMEOUT_S + 60:
            await asyncio.sleep(0.2)
            now, counts = time.perf_counter(), await self.triton_counts()
            if counts != last:
                last, changed = counts, now
            elif now - changed >= QUIET_S:
                return round(changed - t_stop, 2)
        return None

    async def open_loop(self, rate: float) -> dict:
        a = self.args
        arrivals = np.cumsum(np.random.default_rng(a.seed).exponential(1 / rate, int(rate * a.seconds * 1.5) + 10))
        arrivals = arrivals[arrivals < a.seconds]
        results: list[tuple[str, float, float]] = []
        tasks: set[asyncio.Task] = set()
        skipped, lag, peak = 0, 0.0, self.rss()

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                peak.update({k: max(peak[k], v) for k, v in self.rss().items()})
        sampler = asyncio.create_task(sample())
        t0 = time.perf_counter()
        for at in arrivals:
            if (delay := t0 + at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            lag = max(lag, -delay)
            if len(tasks) >= a.max_outstanding:
                skipped += 1
                continue
            tasks.add(task := asyncio.create_task(self.swap()))
            task.add_done_callback(lambda t: (tasks.discard(t), results.append(t.result())))
        t_stop = time.perf_counter()
        idle = asyncio.create_task(self.idle_after(t_stop))
        while tasks:
            await asyncio.wait(set(tasks))
        last_answer = time.perf_counter() - t_stop
        sampler.cancel()
        idle_s = await idle
        await asyncio.sleep(10)
        ok = [(sent, done) for code, sent, done, _ in results if code == "200"]
        in_phase = sum(done <= t_stop for _, done in ok)
        return {"offered_rps": round(rate, 3), "arrivals": "poisson", "sent": len(results),
                "skipped_by_generator": skipped, "max_scheduler_lag_s": round(lag, 3),
                "goodput_rps": round(in_phase / (t_stop - t0), 3), "ok_after_phase": len(ok) - in_phase,
                "statuses": dict(Counter(code for code, *_ in results).most_common()),
                "accepted_latency": pcts([done - sent for sent, done in ok]),
                "last_answer_after_last_send_s": round(last_answer, 2), "triton_idle_after_s": idle_s,
                "rss_peak_mib": peak, "rss_end_mib": self.rss()}

    async def run(self) -> dict:
        a = self.args
        r = await self.http.post("/v1/faces", files={"image": ("source.jpg", self.source)})
        self.face_id = r.raise_for_status().json()["faces"][0]["id"]
        for _ in range(5):  # warm-up
            if (code := (await self.swap())[0]) != "200":
                raise RuntimeError(f"warm-up swap answered {code}")
        sat = {}
        for n in (1, 2, 4, 8):
            sat[n] = await self.closed_loop(n, a.sat_seconds)
            print(f"  closed loop, {n} caller(s): {sat[n]['rps']:7.2f} 200/s, p50 {sat[n]['p50_ms']} ms, "
                  f"statuses {sat[n]['statuses']}", flush=True)
        best = max(sat, key=lambda n: sat[n]["rps"])
        if not sat[best]["rps"]:
            raise RuntimeError("no successful swap during saturation")
        knee = min(n for n in sat if sat[n]["rps"] >= 0.9 * sat[best]["rps"])
        warm = self.rss()
        print(f"  open loop at {a.factor * sat[best]['rps']:.2f} req/s for {a.seconds:.0f} s ...", flush=True)
        over = await self.open_loop(a.factor * sat[best]["rps"])
        await self.http.aclose()
        return {"standin_size": a.standin_size, "factor": a.factor, "saturation": {
                "by_callers": sat, "best_callers": best, "rps": sat[best]["rps"], "knee_callers": knee,
                "p50_ms": sat[knee]["p50_ms"]},
                "overload": over, "rss_warm_mib": warm}


def targets(s: dict) -> list[tuple[str, str, str, bool]]:
    """(figure, value, target, passed) for each of the issue's targets."""
    o, sat = s["overload"], s["saturation"]
    share, p99, idle = o["goodput_rps"] / sat["rps"], o["accepted_latency"]["p99_ms"], o["triton_idle_after_s"]
    bad = {k: v for k, v in o["statuses"].items() if k not in ("200", "503")}
    rows = [("goodput", f"{o['goodput_rps']:.2f}/s = {100 * share:.0f}% of {sat['rps']:.2f}/s", ">= 90%",
             share >= 0.9),
            ("other outcomes", json.dumps(bad) if bad else "none", "200 and 503+Retry-After only", not bad),
            ("p99 accepted / sat. p50", "no 200" if p99 is None else f"{p99:.0f} / {sat['p50_ms']:.0f} ms = "
             f"{p99 / sat['p50_ms']:.1f}x", "<= 3x", p99 is not None and p99 <= 3 * sat["p50_ms"])]
    for k, warm in s["rss_warm_mib"].items():
        end = o["rss_end_mib"][k]
        rows.append((f"RSS {k} end / warm", f"{end:.0f} / {warm:.0f} MiB ({100 * (end / warm - 1):+.0f}%)",
                     "<= +10%", end <= 1.1 * warm))
    return rows + [("Triton idle after load", "still busy at cap" if idle is None else f"{idle:.1f} s", "<= 2 s",
                    idle is not None and idle <= QUIET_S)]


def report(s: dict) -> None:
    o, sat, lat = s["overload"], s["saturation"], s["overload"]["accepted_latency"]
    print(f"\nsaturation: {sat['rps']:.2f} 200/s with {sat['best_callers']} callers; p50 {sat['p50_ms']} ms with "
          f"{sat['knee_callers']} (the fewest callers reaching 90% of it) "
          f"({s['standin_size']} stand-ins)\noverload: {o['arrivals']} arrivals at {o['offered_rps']:.2f}/s "
          f"({s['factor']}x), {o['sent']} sent, {o['skipped_by_generator']} skipped by the generator, worst "
          f"scheduler lag {o['max_scheduler_lag_s']} s; last answer {o['last_answer_after_last_send_s']} s after "
          f"the last send ({o['ok_after_phase']} 200s after the phase, not in goodput)")
    print("statuses: " + ", ".join(f"{k}: {v}" for k, v in o["statuses"].items()))
    print(f"accepted latency: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms")
    for k, warm in s["rss_warm_mib"].items():
        print(f"RSS {k}: warm {warm} MiB, peak {o['rss_peak_mib'][k]} MiB, end {o['rss_end_mib'][k]} MiB")
    print(f"\n{'figure':<26} {'value':<44} {'target':<30} result")
    for name, value, target, ok in targets(s):
        print(f"{name:<26} {value:<44} {target:<30} {'PASS' if ok else 'FAIL'}")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    ap.add_argument("--port", type=int, default=18400,
                    help="Triton HTTP port; gRPC +1, metrics +2, gateway +10 (all on 127.0.0.1)")
    ap.add_argument("--standin-size", choices=["tiny", "full"], default="tiny",
                    help="stand-in models to generate where no real model is found")
    ap.add_argument("--sat-seconds", type=float, default=15.0, help="duration of each closed-loop concurrency")
    ap.add_argument("--seconds", type=float, default=300.0, help="duration of the open-loop overload phase")
    ap.add_argument("--factor", type=float, default=2.0, help="overload rate as a multiple of saturation")
    ap.add_argument("--max-outstanding", type=int, default=2000,
                    help="the generator's own cap on open requests; arrivals past it are skipped and counted")
    ap.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrival times")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the gateway only (repeatable), e.g. FACESWAP_GATEWAY_TRITON_TIMEOUT_S=10")
    ap.add_argument("--out", type=Path, default=bench_summary.out_path("overload"), help="JSON summary")
    args = ap.parse_args()
    if bad := [kv for kv in args.gateway_env if "=" not in kv]:
        ap.error(f"--gateway-env wants KEY=VALUE, got {bad}")
    gw_port = args.port + 10
    private = RUN / f"bench_overload_{gw_port}"  # own face store and jobs folder
    gw_env = {k: v for k, v in {"FACESWAP_GATEWAY_STORE_PATH": str(private / "faces.sqlite3"),
                                "FACESWAP_GATEWAY_JOBS_DIR": str(private / "jobs")}.items() if k not in os.environ}
    gw_env |= dict(kv.split("=", 1) for kv in args.gateway_env)
    try:
        with embedded("bench_overload", resolve(args.standin_size), args.port) as server:
            with mock.patch.dict(os.environ, gw_env):
                gw_pid = start_gateway(gw_port, server.grpc_url)
            try:
                bench = Bench(args, f"http://127.0.0.1:{gw_port}", server.http_url,
                              {"gateway": gw_pid, "triton": server.proc.pid})
                summary = asyncio.run(bench.run())
            finally:
                stop_gateway(gw_port)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"bench_overload could not run: {exc}")
        return 1
    summary["gateway_env"] = gw_env
    summary["targets"] = [dict(zip(("figure", "value", "target", "pass"), t)) for t in targets(summary)]
    report(summary)
    bench_summary.write("overload", summary, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
