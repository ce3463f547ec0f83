"""``python -m bench.live``: live streams (``/v1/stream``) through a real gateway and Triton.

For the tiny and the full stand-ins (each with its own Triton and gateway on loopback), streams
the shared 1080p clip scaled to 480p and 720p at its own 24 fps, as a camera would (looped for
``--seconds``), with 1 and 4 streams at once, and reports per case: delivered fps per stream,
frames dropped (latest frame wins), p50/p95 of the gateway's latency (a frame's arrival to its
answer) and of the round trip seen by the client. Also: detection on every frame against every
2nd frame (tracking in between), one 480p stream.

GPU estimate: Triton's statistics give the three networks' compute time per frame here (the
swapper's is printed per face); the rest of a frame's time (decode, alignment, paste-back,
encode, transport, queueing) is the frame latency minus that. Assumption stated in the output:
on a GPU the networks take their FLOPs (swapper 174.7 GFLOP per face, detector about 10,
recognizer about 2.2) at 50% of an H200's 790 TFLOP/s bf16, and every other part keeps the
CPU time measured here, so one stream's fps would be about 1000 / (other ms + network ms).
Writes ``out/bench_live.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from bench import stages, summary
from client import FaceSwapClient
from client.live import read_frames, stream_frames
from launch.server import RUN, embedded, start_gateway, stop_gateway
from repository.layout import shared_dir
from repository.resolve import resolve

GPU_TFLOPS = 0.5 * 790e3  # GFLOP per second: half of an H200's bf16 peak
GPU_SWAP_MS = 174.7 / GPU_TFLOPS * 1000  # one face


def _clip(height: int) -> tuple[list[np.ndarray], list[float]]:
    frames, times, _ = read_frames(shared_dir() / "images" / "video_roop_target_1080p_24f.mp4")
    out = []
    for f in frames:
        w = round(f.shape[1] * height / f.shape[0] / 2) * 2
        out.append(cv2.resize(f, (w, height), interpolation=cv2.INTER_AREA))
    return out, times


NETWORKS = ("face_detector", "face_recognizer", "face_swapper")
#: GFLOP per frame of one face: the swapper's 174.7 (the issue's figure for inswapper_128), det_10g
#: at 640x640 about 10 and ArcFace R50 at 112x112 about 2.2 (approximate, from the models' names
#: in insightface's model zoo: "10g" detector; R50 backbone).
GFLOP = {"face_detector": 10.0, "face_recognizer": 2.2, "face_swapper": 174.7}


def server_statistics(server) -> dict:
    """Triton's statistics of every model (``FaceSwapClient.statistics``)."""
    with FaceSwapClient(server.grpc_url, "grpc") as c:
        return c.statistics()


def _compute(triton_http: str) -> dict[str, tuple[float, int]]:
    """{network: (total compute ms, inferences)} from Triton's statistics."""
    import httpx

    out = {}
    for m in NETWORKS:
        stats = httpx.get(f"http://{triton_http}/v2/models/{m}/stats", timeout=10).json()["model_stats"][0]
        out[m] = (int(stats["inference_stats"]["compute_infer"]["ns"]) / 1e6, int(stats["inference_count"]))
    return out


async def _case(url: str, source: bytes, frames, times, streams: int, seconds: float, opts: dict) -> dict:
    span = times[-1] + 1 / 24
    repeat = max(1, round(seconds / span))
    reps = await asyncio.gather(*(stream_frames(url, frames, times, source=source, options=opts, repeat=repeat)
                                  for _ in range(streams)))
    lat = [v for r in reps for v in r.latency_ms]
    rtt = [v for r in reps for v in r.round_trip_ms]
    return {"streams": streams, "sent_per_stream": reps[0].sent,
            "fps_per_stream": float(np.mean([r.fps for r in reps])),
            "dropped": int(sum(r.dropped for r in reps)), "received": int(sum(r.received for r in reps)),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "round_trip_p50_ms": float(np.percentile(rtt, 50)) if rtt else None,
            "round_trip_p95_ms": float(np.percentile(rtt, 95)) if rtt else None,
            "sizes_kept": all(r.sizes_kept for r in reps)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="streaming seconds per case (default %(default)s)")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    ap.add_argument("--port", type=int, default=int(os.environ.get("BENCH_LIVE_PORT", 8640)))
    ap.add_argument("--out", type=Path, default=summary.out_path("live"))
    args = ap.parse_args()
    source = (shared_dir() / "images" / "portrait_astronaut_eileen_collins.png").read_bytes()
    clips = {h: _clip(h) for h in (480, 720)}
    report: dict = {"cpu_count": os.cpu_count(), "seconds": args.seconds, "gpu_swap_ms_assumed": GPU_SWAP_MS,
                    "gflop_assumed": GFLOP, "cases": []}
    for size in args.sizes:
        gw_port = args.port + 10
        private = RUN / f"bench_live_{gw_port}"
        env = {"FACESWAP_GATEWAY_STORE_PATH": str(private / "faces.sqlite3"),
               "FACESWAP_GATEWAY_JOBS_DIR": str(private / "jobs")}
        with embedded(f"bench_live_{size}", resolve(size), args.port) as server:
            with mock.patch.dict(os.environ, env):
                start_gateway(gw_port, server.grpc_url)
            url = f"ws://127.0.0.1:{gw_port}"
            try:
                runs = [(h, n, 1) for h in (480, 720) for n in (1, 4)] + [(480, 1, 2)]
                for height, streams, every in runs:
                    before, stats_before = _compute(server.http_url), server_statistics(server)
                    r = asyncio.run(_case(url, source, *clips[height], streams, args.seconds,
                                          {"detect_every": every}))
                    after, stats_after = _compute(server.http_url), server_statistics(server)
                    r["where_time_goes"] = stages.breakdown(stats_before, stats_after, max(r["received"], 1))
                    # network compute ms per processed frame (each call of a network is one frame here:
                    # one face per frame in this clip)
                    per_frame = {m: (after[m][0] - before[m][0]) / max(r["received"], 1) for m in NETWORKS}
                    swap_ms = per_frame["face_swapper"]
                    r.update(standin_size=size, height=height, detect_every=every, swapper_ms_per_face=swap_ms,
                             network_ms_per_frame=per_frame)
                    if r["latency_p50_ms"] and streams == 1:
                        other = max(r["latency_p50_ms"] - sum(per_frame.values()), 0.0)
                        gpu = sum(GFLOP[m] for m in NETWORKS) / GPU_TFLOPS * 1000
                        r["cpu_side_ms_per_frame"] = other
                        r["gpu_fps_estimate"] = 1000.0 / (other + gpu)
                    report["cases"].append(r)
                    print(f"{size:4s} {height}p x{streams} detect_every {every}: {r['fps_per_stream']:5.1f} fps/stream,"
                          f" {r['dropped']} dropped, latency p50 {r['latency_p50_ms'] or 0:.0f} ms p95 "
                          f"{r['latency_p95_ms'] or 0:.0f} ms, round trip p50 {r['round_trip_p50_ms'] or 0:.0f} ms; "
                          f"swapper {swap_ms:.0f} ms/face"
                          + (f"; CPU side {r['cpu_side_ms_per_frame']:.0f} ms/frame, GPU estimate "
                             f"{r['gpu_fps_estimate']:.0f} fps" if "gpu_fps_estimate" in r else ""),
                          flush=True)
                    print(f"     {stages.describe(r['where_time_goes'])}", flush=True)
            finally:
                stop_gateway(gw_port)
    print(f"GPU estimate assumes the networks at 50% of an H200's 790 TFLOP/s bf16 (swapper {GPU_SWAP_MS:.2f} "
          "ms/face) and every other part of a frame at its CPU time measured here.")
    summary.write("live", report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
