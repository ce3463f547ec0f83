"""What the content gate costs per image, per video frame and per live frame (issue 21).

    python -m bench.content [--repeats 5] [--out out/bench_content.json]

The real detector (nudenet 3.4.2's 320n.onnx, as ``repository.resolve`` finds it) in onnxruntime
fp32, the precision the load-time self-check keeps for it on this machine (bf16 moved its scores
by more than ``pipeline.precision.THRESHOLDS``), on one thread pool as Triton's Python model runs
it. Per kind of input, the median of ``--repeats`` passes over its frames: ``preprocess_ms``
(``pipeline.content.preprocess``: pad, resize, scale), ``network_ms`` (the detector), and
``decide_ms`` (``pipeline.content.decide``). Decoding is not counted: the pipeline decodes each
image once for the swap anyway. Inputs: every shared photo, the frames of the shared clips (a
640x360 clip stands for a live frame at the stream's default size; the 1080p clip for video jobs).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import time

import av
import cv2
import numpy as np

from bench import summary
from pipeline import content
from pipeline.engines import load
from repository.download import load_manifest
from repository.layout import shared_images_dir
from repository.resolve import resolve_content


def _frames(path: str, limit: int) -> list[np.ndarray]:
    out = []
    with av.open(path) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24"))
            if len(out) >= limit:
                break
    return out


def measure(images: list[np.ndarray], run, repeats: int) -> dict:
    """Median ms per image of each step over ``repeats`` passes."""
    pre, net, dec = [], [], []
    for _ in range(repeats):
        for img in images:
            t0 = time.perf_counter()
            blob, _ = content.preprocess(img)
            t1 = time.perf_counter()
            out = run({"images": blob})[0]
            t2 = time.perf_counter()
            content.decide(out)
            t3 = time.perf_counter()
            pre.append(t1 - t0)
            net.append(t2 - t1)
            dec.append(t3 - t2)
    ms = {k: round(1000 * statistics.median(v), 2) for k, v in (("preprocess_ms", pre), ("network_ms", net),
                                                                  ("decide_ms", dec))}
    ms["total_ms"] = round(sum(ms.values()), 2)
    h, w = images[0].shape[:2]
    return {"images": len(images), "first_size": f"{w}x{h}", **ms}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=24, help="frames read from each clip")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    entry = next(e for e in load_manifest() if e.role == "content")
    model = resolve_content(entry, "nudenet")
    run = load(model.path, ["output0"], "onnxruntime", "f32")
    shared = shared_images_dir()
    photos = [cv2.imread(p) for p in sorted(glob.glob(str(shared / "*"))) if p.endswith((".jpg", ".png"))]
    run({"images": content.preprocess(photos[0])[0]})  # warm-up
    rows = {
        "photo (every shared photo)": measure(photos, run, args.repeats),
        "live frame (640x360)": measure(_frames(str(shared / "video_whitehouse_hamilton_640x360.mp4"), args.frames),
                                        run, args.repeats),
        "video frame (1080p)": measure(_frames(str(shared / "video_roop_target_1080p_24f.mp4"), args.frames),
                                       run, args.repeats),
    }
    for name, row in rows.items():
        print(f"{name:28s} {row['total_ms']:7.2f} ms  (preprocess {row['preprocess_ms']}, network "
              f"{row['network_ms']}, decide {row['decide_ms']})")
    summary.write("content", {"detector": {"name": model.name, "source": model.source, "path": model.path},
                              "engine": "onnxruntime f32", "per_image": rows}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
