"""``python -m bench.lean``: the time around the networks, end to end through the gateway (issue 24).

In one run, on this machine, with the product's default settings:

- **live**: one ``/v1/stream`` of the shared clip ``video_whitehouse_hamilton_640x360.mp4`` (275
  frames; at 640x360 as it is and upscaled bicubic to 1280x720), one frame in flight (send,
  wait for the answer, send the next), frames JPEG q85 as the client sends them, marks on (the
  default): frames/s, p50 of the round trip, and the networks' share of the wall time (Triton's
  compute time of the four networks, the content gate's detector included, over the stream's
  seconds). Targets: >= 20 frames/s at
  640x360, >= 15 at 1280x720, networks >= 45% at 1280x720. The frames are JPEG-encoded before
  the stream starts (as a camera's encoder hands them over): the client shares these cores with
  the service, and its encoder is not the service's time.
- **video job**: the same clip through ``POST /v1/jobs`` with the defaults (selection
  "largest", tracking, smoothing, marks, quality figures), timed from the upload to ``done``;
  against insightface 0.7.3's own loop on the same models and clip in this process: PyAV
  decode, ``SCRFD.detect``, ArcFace on every face found (as ``FaceAnalysis.get`` does with these
  two models), ``INSwapper.get(paste_back=True)`` on the largest face, libx264 (crf 18,
  veryfast, as the product) encode: the loop of roop and Deep-Live-Cam. Target: >= 2x, with the
  tiny and with the full stand-ins.

The stand-ins are random-weight models of the real ones' shapes (``repository standins``), the
detector is the real det_2.5g where ``models/`` has it. Figures go to ``out/bench_lean.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import httpx
import numpy as np

from bench import stages, summary
from bench.clips import write_clip
from client import FaceSwapClient
from client.live import stream_frames
from launch.server import embedded, start_gateway, stop_gateway
from repository.layout import default_images, shared_dir
from repository.resolve import resolve

CLIP = "video_whitehouse_hamilton_640x360.mp4"
LIVE_TARGETS = {360: 20.0, 720: 15.0}
LIVE_NETWORK_SHARE = 0.45
VIDEO_TARGET = 2.0


def clip_path() -> Path:
    return shared_dir() / "images" / CLIP


def clip_frames(height: int, limit: int = 0) -> tuple[list[np.ndarray], list[float]]:
    """The clip's frames (BGR) at ``height`` (bicubic when larger) and their times in seconds."""
    frames, times = [], []
    with av.open(str(clip_path())) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="bgr24")
            if img.shape[0] != height:
                w = round(img.shape[1] * height / img.shape[0] / 2) * 2
                img = cv2.resize(img, (w, height), interpolation=cv2.INTER_CUBIC)
            frames.append(img)
            times.append(float(f.time or 0.0))
            if limit and len(frames) >= limit:
                break
    return frames, times


def live_case(gw_url: str, triton_grpc: str, source: bytes, height: int, frames: int) -> dict:
    imgs, times = clip_frames(height, frames)
    # encoded before the stream starts, as a camera's encoder hands them over: on this machine
    # the client shares the server's cores, and its JPEG encoder is not the service's time
    width = imgs[0].shape[1]
    imgs = [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for img in imgs]
    with FaceSwapClient(triton_grpc, "grpc") as c:
        before = c.statistics()
        rep = asyncio.run(stream_frames(gw_url.replace("http", "ws"), imgs, times, source=source, realtime=False,
                                        lockstep=True))
        after = c.statistics()
    where = stages.breakdown(before, after, max(rep.received, 1))  # Triton's compute per frame
    nets = where.get("networks", {})
    fps = rep.received / rep.seconds if rep.seconds else 0.0
    share = sum(nets.values()) * rep.received / (rep.seconds * 1000) if rep.seconds else 0.0
    return {"height": height, "width": width, "frames": rep.received, "frame_errors": rep.frame_errors,
            "seconds": round(rep.seconds, 2), "fps": round(fps, 2),
            "p50_round_trip_ms": round(statistics.median(rep.round_trip_ms), 1) if rep.round_trip_ms else None,
            "networks_ms_per_frame": nets, "networks_share": round(share, 3), "faces_swapped": rep.faces_swapped,
            "where_time_goes": where,
            "target_fps": LIVE_TARGETS.get(height)}


def video_job(gw_url: str, triton_grpc: str, video: Path, source: bytes, timeout_s: float = 1800) -> dict:
    """One ``POST /v1/jobs`` with the defaults, timed from the upload to ``done``."""
    with FaceSwapClient(triton_grpc, "grpc") as c:
        before = c.statistics()
    with httpx.Client(base_url=gw_url, timeout=120) as h:
        t0 = time.perf_counter()
        r = h.post("/v1/jobs", files={"video": (video.name, video.read_bytes(), "video/mp4"),
                                      "source": ("source.jpg", source, "image/jpeg")})
        r.raise_for_status()
        job_id = r.json()["id"]
        while True:
            j = h.get(f"/v1/jobs/{job_id}").json()
            if j["status"] in ("done", "failed", "cancelled"):
                break
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"video job {job_id} still {j['status']} after {timeout_s:.0f} s")
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        if j["status"] != "done":
            raise RuntimeError(f"video job {job_id} {j['status']}: {j.get('error')}")
    with FaceSwapClient(triton_grpc, "grpc") as c:
        after = c.statistics()
    frames = int(j.get("total") or 0) or _count_frames(video)
    return {"seconds": round(seconds, 2), "frames": frames, "fps": round(frames / seconds, 2),
            "where_time_goes": stages.breakdown(before, after, frames)}


def _count_frames(video: Path) -> int:
    with av.open(str(video)) as c:
        return sum(1 for _ in c.decode(video=0))


def insightface_loop(models: dict, video: Path, source: Path, out: Path) -> dict:
    """insightface 0.7.3's own video loop on ``models`` (see the module's docstring)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from insightface.app.common import Face
    from insightface.model_zoo import get_model

    det = get_model(models["detector"].path)
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = get_model(models["recognizer"].path)
    rec.prepare(-1)
    swp = get_model(models["swapper"].path)
    src = cv2.imread(str(source))
    b, k = det.detect(src, max_num=0, metric="default")
    sface = Face(bbox=b[0, :4], kps=k[0], det_score=b[0, 4])
    rec.get(src, sface)
    frames = 0
    t0 = time.perf_counter()
    with av.open(str(video)) as inp, av.open(str(out), "w") as dst:
        vin = inp.streams.video[0]
        vout = dst.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        for frame in inp.decode(video=0):
            img = frame.to_ndarray(format="bgr24")
            boxes, kpss = det.detect(img, max_num=0, metric="default")
            faces = [Face(bbox=boxes[i, :4], kps=kpss[i], det_score=boxes[i, 4]) for i in range(boxes.shape[0])]
            for f in faces:
                rec.get(img, f)
            if faces:
                largest = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
                img = swp.get(img, largest, sface, paste_back=True)
            for pkt in vout.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                dst.mux(pkt)
            frames += 1
        for pkt in vout.encode(None):
            dst.mux(pkt)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "frames": frames, "fps": round(frames / seconds, 2)}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description="Live and video job throughput through the gateway vs the networks "
                                             "and vs insightface's own loop (issue 24).")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"],
                    help="stand-in sizes: live runs with tiny only, the video job with each")
    ap.add_argument("--live-frames", type=int, default=150, help="frames per live case (0: the whole clip)")
    ap.add_argument("--video-frames", type=int, default=0, help="cut the clip to this many frames (0: all 275)")
    ap.add_argument("--no-live", action="store_true")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    source_path, _ = default_images()
    source = source_path.read_bytes()
    report: dict = {"clip": CLIP, "live": [], "video": []}
    with tempfile.TemporaryDirectory() as tmp:
        video = clip_path()
        if args.video_frames:
            video = Path(tmp) / f"clip_{args.video_frames}.mp4"
            with av.open(str(clip_path())) as c:
                rate = c.streams.video[0].average_rate
            write_clip(video, clip_frames(360, args.video_frames)[0], rate)
        for size in args.sizes:
            models = resolve(size)
            gw_port = args.port + 10
            with embedded(f"bench_lean_{size}", models, args.port) as server:
                start_gateway(gw_port, server.grpc_url)
                try:
                    gw = f"http://127.0.0.1:{gw_port}"
                    if size == "tiny" and not args.no_live:
                        for height in (360, 720):
                            r = {"size": size, **live_case(gw, server.grpc_url, source, height, args.live_frames)}
                            report["live"].append(r)
                            print(f"live  {size} {r['width']}x{r['height']}: {r['fps']:.2f} frames/s one in flight, "
                                  f"p50 {r['p50_round_trip_ms']} ms, networks {100 * r['networks_share']:.0f}% of the "
                                  f"wall time ({r['networks_ms_per_frame']})\n      "
                                  f"{stages.describe(r['where_time_goes'])}", flush=True)
                    if not args.no_video:
                        ours = video_job(gw, server.grpc_url, video, source)
                finally:
                    stop_gateway(gw_port)
            if args.no_video:
                continue
            ref = insightface_loop(models, video, source_path, Path(tmp) / "insightface.mp4")
            ratio = ours["fps"] / ref["fps"] if ref["fps"] else 0.0
            report["video"].append({"size": size, "ours": ours, "insightface": ref, "ratio": round(ratio, 2)})
            print(f"video {size} {CLIP}: job {ours['fps']:.2f} frames/s ({ours['frames']} frames in "
                  f"{ours['seconds']} s), insightface's loop {ref['fps']:.2f} frames/s -> {ratio:.2f}x\n      "
                  f"{stages.describe(ours['where_time_goes'])}", flush=True)
    print("== targets (issue 24, default settings, ratios in this run)")
    for r in report["live"]:
        print(f"  {_verdict(r['fps'] >= r['target_fps'])}  live {r['width']}x{r['height']}: {r['fps']:.2f} frames/s "
              f"(target >= {r['target_fps']:g})")
        if r["height"] == 720:
            print(f"  {_verdict(r['networks_share'] >= LIVE_NETWORK_SHARE)}  live 1280x720 networks' share: "
                  f"{100 * r['networks_share']:.0f}% (target >= {100 * LIVE_NETWORK_SHARE:.0f}%)")
    for r in report["video"]:
        print(f"  {_verdict(r['ratio'] >= VIDEO_TARGET)}  video job {r['size']} vs insightface's loop: "
              f"{r['ratio']:.2f}x (target >= {VIDEO_TARGET:g}x)")
    print(f"wrote {summary.write('lean', report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
