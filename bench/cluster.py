"""``python -m bench.cluster``: how the scale-out topology spreads work (``make bench``).

Starts the local cluster (``launch.cluster``: Redis, SeaweedFS, 2 tritonservers, 2 gateways
behind HAProxy, 2 job workers; tiny stand-ins unless ``--standin-size full``) plus two more
gateways that know only the first tritonserver, and measures in one run:

1. image swaps/s (``POST /v1/swap`` of the group photo with a registered source face, closed
   loop, ``--callers`` callers for ``--seconds`` each, after a warm-up) with
   1 Triton x 1 gateway, 2 x 1, 1 x 2 and 2 x 2 (the 2-gateway cases through HAProxy or
   alternating between the two gateways); p50/p95 latency of each;
2. jobs/hour with 2 and then 1 job workers (``--jobs`` video jobs of the 48-frame zoom clip
   submitted at once; time until all are done);
3. how long a job whose worker is killed (SIGKILL) takes to run again on the other worker.

On a 2-core machine every process shares the same cores: the figures show that work spreads
over the replicas and that nothing is lost, not a speed-up past the cores. Ratios are against
the 1 x 1 case measured in the same run. Writes ``out/bench_cluster.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench import summary
from repository.layout import shared_images_dir


def _image(name: str) -> Path:
    path = shared_images_dir() / name
    if path.exists():
        return path
    raise SystemExit(f"{name} is needed: provide ../shared/images or set FACESWAP_SHARED_IMAGES")


async def _swap_rate(bases: list[str], face_id: str, target: bytes, callers: int, seconds: float) -> dict:
    """Closed loop: ``callers`` callers, caller i talks to ``bases[i % len(bases)]``."""
    lat, errors = [], 0

    async def caller(c: httpx.AsyncClient, end: float) -> None:
        nonlocal errors
        while time.monotonic() < end:
            t = time.monotonic()
            r = await c.post("/v1/swap", files={"target": ("t.jpg", target)},
                             data={"source_face_id": face_id, "output_format": "jpeg"})
            if r.status_code == 200:
                lat.append(time.monotonic() - t)
            else:
                errors += 1
                await asyncio.sleep(float(r.headers.get("retry-after", 0.2)))

    clients = [httpx.AsyncClient(base_url=b, timeout=120) for b in bases]
    try:
        warm = time.monotonic() + 3
        await asyncio.gather(*(caller(clients[i % len(clients)], warm) for i in range(callers)))
        lat.clear()
        errors = 0
        t0 = time.monotonic()
        await asyncio.gather(*(caller(clients[i % len(clients)], t0 + seconds) for i in range(callers)))
        wall = time.monotonic() - t0
    finally:
        for c in clients:
            await c.aclose()
    a = np.asarray(lat) * 1000
    return {"swaps_per_s": len(lat) / wall, "ok": len(lat), "refused_or_failed": errors,
            "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
            "p95_ms": float(np.percentile(a, 95)) if len(a) else None}


def _post_job(base: str, video: bytes, source: bytes) -> str:
    r = httpx.post(base + "/v1/jobs", files={"video": ("v.mp4", video), "source": ("s.png", source)}, timeout=120)
    r.raise_for_status()
    return r.json()["id"]


def _wait_jobs(base: str, ids: list[str], timeout: float = 1800) -> float:
    t0, left = time.monotonic(), set(ids)
    with httpx.Client(base_url=base, timeout=30) as c:
        while left:
            for i in list(left):
                j = c.get(f"/v1/jobs/{i}").json()
                if j["status"] == "done":
                    left.discard(i)
                elif j["status"] in ("failed", "cancelled", "expired"):
                    raise RuntimeError(f"job {i} ended {j['status']}: {j.get('error')}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{len(left)} job(s) not done after {timeout} s")
            time.sleep(0.5)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=os.environ.get("FACESWAP_STANDIN_SIZE",
                                                                                        "tiny"))
    ap.add_argument("--callers", type=int, default=8, help="concurrent swap callers (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per swap case")
    ap.add_argument("--jobs", type=int, default=4, help="video jobs per jobs/hour case")
    ap.add_argument("--heartbeat", type=float, default=5.0, help="job heartbeat (s) for the kill case")
    ap.add_argument("--out", type=Path, default=summary.out_path("cluster"))
    args = ap.parse_args()

    from launch.cluster import _gateway, start_cluster

    source, target = _image("portrait_astronaut_eileen_collins.png").read_bytes(), \
        _image("group_insightface_t1.jpg").read_bytes()
    video = _image("video_astronaut_zoompan_384.mp4").read_bytes()
    env = {"FACESWAP_GATEWAY_MAX_IN_FLIGHT": str(args.callers), "FACESWAP_GATEWAY_MAX_WAITING": str(args.callers),
           "FACESWAP_GATEWAY_JOB_HEARTBEAT_S": str(args.heartbeat)}
    report: dict = {"standin_size": args.standin_size, "cpu_count": os.cpu_count(), "callers": args.callers,
                    "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        print(f"starting the cluster ({args.standin_size} stand-ins)...", flush=True)
        topo = start_cluster(Path(tmp), tritons=2, gateways=2, workers=2, standin_size=args.standin_size,
                             env_extra=env)
        single = []
        try:
            for k in range(2):  # gateways that know only the first tritonserver
                g = _gateway(topo.run_dir, 10 + k, {**topo.env, "FACESWAP_GATEWAY_TRITON_URL": topo.triton_grpc[0]})
                g.start(90)
                single.append(g)
            one_t = [f"http://127.0.0.1:{g.port}" for g in single]
            face_id = httpx.post(topo.balancer_url + "/v1/faces", files={"image": ("s.png", source)},
                                 timeout=120).json()["faces"][0]["id"]
            cases = {"1 triton x 1 gateway": [one_t[0]], "2 tritons x 1 gateway": [topo.gateway_urls[0]],
                     "1 triton x 2 gateways": one_t, "2 tritons x 2 gateways (HAProxy)": [topo.balancer_url]}
            report["swaps"] = {}
            for name, bases in cases.items():
                r = asyncio.run(_swap_rate(bases, face_id, target, args.callers, args.seconds))
                report["swaps"][name] = r
                print(f"{name:34s} {r['swaps_per_s']:6.2f} swaps/s  p50 {r['p50_ms']:.0f} ms  p95 "
                      f"{r['p95_ms']:.0f} ms  ({r['refused_or_failed']} refused/failed)", flush=True)
            base = report["swaps"]["1 triton x 1 gateway"]["swaps_per_s"]
            for r in report["swaps"].values():
                r["ratio_to_1x1"] = r["swaps_per_s"] / base if base else None

            report["jobs"] = {}
            for workers in (2, 1):
                if workers == 1:
                    topo.workers[1].stop()
                ids = [_post_job(topo.balancer_url, video, source) for _ in range(args.jobs)]
                wall = _wait_jobs(topo.balancer_url, ids)
                report["jobs"][f"{workers} worker(s)"] = {"jobs": args.jobs, "seconds": wall,
                                                           "jobs_per_hour": args.jobs / wall * 3600}
                print(f"{workers} worker(s): {args.jobs} video jobs in {wall:.1f} s = "
                      f"{args.jobs / wall * 3600:.0f} jobs/hour", flush=True)

            topo.start_worker()
            job = _post_job(topo.balancer_url, video, source)
            with httpx.Client(base_url=topo.balancer_url, timeout=30) as c:
                while c.get(f"/v1/jobs/{job}").json()["done"] < 4:
                    time.sleep(0.2)
                victim = next(i for i, w in enumerate(topo.workers)
                              if w.alive() and job in w.log_file.read_text(errors="replace"))
                topo.kill_worker(victim)
                t0 = time.monotonic()
                while c.get(f"/v1/jobs/{job}").json()["restarts"] < 1:
                    time.sleep(0.2)
                resumed = time.monotonic() - t0
            done = _wait_jobs(topo.balancer_url, [job]) + resumed
            report["worker_kill"] = {"heartbeat_s": args.heartbeat, "resumed_after_s": resumed,
                                     "finished_after_s": done}
            print(f"killed worker: its job ran again on the other after {resumed:.1f} s (heartbeat "
                  f"{args.heartbeat:g} s), finished {done:.1f} s after the kill", flush=True)
        finally:
            for g in single:
                g.stop()
            topo.stop()
    summary.write("cluster", report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
