"""``python -m bench.video``: frames/s of video face swap on a 720p clip, tiny and full stand-ins.

The clip (1280x720, 30 fps, AAC tone) is made from a real portrait sliding across the frame
(tests/media.py), so that every frame has one face; the job runs through a real embedded
Triton server with the client's video path (PyAV decode, face_embed + face_swap_kps over
asyncio gRPC, libx264 encode).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from fractions import Fraction
from pathlib import Path

import cv2

from bench import stages
from bench.clips import moving_face_frames, write_clip
from client import AsyncFaceSwapClient, FaceSwapClient
from launch.server import embedded
from media.video import VideoOptions, swap_video
from repository.layout import default_images
from repository.resolve import resolve


async def _run(url: str, latent, src: Path, dst: Path, in_flight: int):
    async with AsyncFaceSwapClient(url, "grpc", timeout=600) as ac:
        return await swap_video(ac, latent, src, dst, VideoOptions(in_flight=in_flight))


def main() -> int:
    ap = argparse.ArgumentParser(description="Video face swap frames/s on a 720p clip.")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    ap.add_argument("--frames", type=int, default=0, help="default: 90 tiny, 30 full")
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--port", type=int, default=18400)
    args = ap.parse_args()
    source, _ = default_images()
    face = cv2.imread(str(source))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            n = args.frames or (90 if size == "tiny" else 30)
            src = Path(tmp) / f"in_{n}.mp4"
            if not src.exists():
                write_clip(src, moving_face_frames(face, (1280, 720), n), Fraction(30), audio=[("aac", 48000, n / 30)])
            with embedded(f"bench_video_{size}", resolve(size), args.port) as server:
                with FaceSwapClient(server.grpc_url, "grpc") as c:
                    latent = c.embed(source).largest().latent
                    before = c.statistics()
                    rep = asyncio.run(_run(server.grpc_url, latent, src, Path(tmp) / "out.mp4", args.in_flight))
                    where = stages.breakdown(before, c.statistics(), rep.frames)
            print(f"{size:5s} 1280x720: {rep.frames} frames ({rep.frames_swapped} swapped) in {rep.seconds:.1f} s "
                  f"-> {rep.frames / rep.seconds:.2f} frames/s\n      {stages.describe(where)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
