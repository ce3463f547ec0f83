"""``make bench``: face_swap throughput through the real server vs insightface, same run.

For each stand-in size (tiny, full): build the repository, start the embedded tritonserver,
send the same 1280x886 group photo (6 faces) ``--requests`` times with ``--concurrency``
requests in flight (asyncio gRPC), and report images/s. Then run insightface 0.7.3's own
pipeline (SCRFD detect + INSwapper.get(paste_back=True) per face) on the same models and
image, in this process, and report the ratio. Timing goals are ratios in one run, never
absolute numbers in unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from client import AsyncFaceSwapClient, FaceSwapClient
from tools.demo import default_images
from tools.resolve import resolve
from tools.server import embedded


async def _load(url: str, image: bytes, latent: np.ndarray, n: int, concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    async with AsyncFaceSwapClient(url, "grpc", timeout=600) as c:
        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                await c.swap(image, latent, output_format="jpeg")
                lat.append(time.perf_counter() - t)

        await asyncio.gather(*(one() for _ in range(n)))
    return lat


def bench_server(size: str, image: bytes, source: Path, n: int, concurrency: int, port: int) -> dict:
    models = resolve(size)
    with embedded(f"bench_{size}", models, port) as server:
        with FaceSwapClient(server.grpc_url, "grpc", timeout=600) as c:
            latent = c.embed(source).largest().latent
            for _ in range(2):
                c.swap(image, latent, output_format="jpeg")  # warm-up
        t0 = time.perf_counter()
        lat = asyncio.run(_load(server.grpc_url, image, latent, n, concurrency))
        wall = time.perf_counter() - t0
    return {"size": size, "requests": n, "concurrency": concurrency, "images_per_s": n / wall,
            "p50_ms": 1000 * statistics.median(lat), "stand_ins": [m.name for m in models.values() if m.stand_in]}


def bench_reference(size: str, image: bytes, source: Path, n: int) -> dict:
    import onnxruntime as ort

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # insightface imports albumentations
    from insightface.app.common import Face
    from insightface.model_zoo import get_model

    models = resolve(size)
    opts = ort.SessionOptions()
    det = get_model(models["detector"].path, sess_options=opts, providers=["CPUExecutionProvider"])
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = get_model(models["recognizer"].path, providers=["CPUExecutionProvider"])
    swp = get_model(models["swapper"].path, providers=["CPUExecutionProvider"])
    src = cv2.imread(str(source))
    b, k = det.detect(src, max_num=0, metric="default")
    source_face = Face(bbox=b[0, :4], kps=k[0], det_score=b[0, 4])
    rec.get(src, source_face)

    def once() -> None:
        img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        boxes, kpss = det.detect(img, max_num=0, metric="default")
        res = img.copy()
        for i in range(boxes.shape[0]):
            res = swp.get(res, Face(bbox=boxes[i, :4], kps=kpss[i], det_score=boxes[i, 4]), source_face, True)
        cv2.imencode(".jpg", res, [cv2.IMWRITE_JPEG_QUALITY, 95])

    once()
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    wall = time.perf_counter() - t0
    return {"size": size, "requests": n, "images_per_s": n / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description="face_swap throughput (images/s) vs insightface, one run.")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    ap.add_argument("--requests", type=int, default=0, help="requests per size (default: 40 tiny, 6 full)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-reference", action="store_true", help="skip the insightface baseline")
    ap.add_argument("--port", type=int, default=18100)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    source, target = default_images()
    image = target.read_bytes()
    h, w = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    print(f"target {target} ({w}x{h}), source {source}")
    rows = []
    for size in args.sizes:
        n = args.requests or (40 if size == "tiny" else 6)
        r = bench_server(size, image, source, n, args.concurrency, args.port)
        line = f"{size:5s} server    {r['images_per_s']:7.2f} images/s  p50 {r['p50_ms']:8.1f} ms  " \
               f"({n} requests, {args.concurrency} in flight, gRPC)"
        if not args.no_reference:
            ref = bench_reference(size, image, source, max(n // 4, 2))
            r["reference_images_per_s"] = ref["images_per_s"]
            r["speedup_vs_insightface"] = r["images_per_s"] / ref["images_per_s"]
            line += (f"\n{size:5s} insightface {ref['images_per_s']:5.2f} images/s"
                     f"  -> ratio {r['speedup_vs_insightface']:.2f}x")
        print(line, flush=True)
        rows.append(r)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
