"""``python -m bench.pixel_boost``: time per face of the ``pixel_boost`` option (N = 1 to 4),
written to out/bench_pixel_boost.json.

In-process, on ``face_swap``'s own code (``pipeline.stages.pasted_frame``: N x N sub-crops of
every face through the swapper in chunks of ``--batch``, face_swapper's batch limit, then
interleaving and paste-back) with the swapper stand-in on onnxruntime (CPU), for each stand-in
size: tiny on the six-face group photo, full (about 170 GFLOP per swapper row) on the one-face
portrait. Per N we report the median over ``--repeats`` of milliseconds per face, the swapper
rows and calls per request, and, for comparison, the same work one sub-crop per swapper call
(FaceFusion's loop; ``--loop`` sizes only, since on the full stand-in it costs as much again).
Detection and alignment at 128 are done once beforehand and not timed.

Timings are of this machine; compare within one run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from bench import summary as bench_summary
from pipeline.detection import decode_scrfd, detector_blob, letterbox
from pipeline.pixel_boost import PIXEL_BOOSTS
from pipeline.selection import SwapOptions
from pipeline.stages import align_stage, pasted_frame
from repository.layout import default_images
from repository.resolve import resolve

log = logging.getLogger("bench_pixel_boost")
#: Target per stand-in size: the group photo (six faces), the portrait (one face).
PHOTOS = {"tiny": "group", "full": "portrait"}


def _faces(det: ort.InferenceSession, img: np.ndarray):
    det_img, scale = letterbox(img, (640, 640))
    dets = decode_scrfd(det.run(None, {det.get_inputs()[0].name: detector_blob(det_img)}), (640, 640), scale,
                        0.5, 0.4)
    return align_stage(img, dets, SwapOptions(), cap=64)


def bench_size(size: str, images: dict[str, np.ndarray], batch: int, repeats: int, loop: bool) -> dict:
    """Per N: ms per face batched (and one sub-crop per call with ``loop``), rows and calls."""
    models = resolve(size)
    det = ort.InferenceSession(models["detector"].path, providers=["CPUExecutionProvider"])
    swp = ort.InferenceSession(models["swapper"].path, providers=["CPUExecutionProvider"])
    img = images[PHOTOS[size]]
    a = _faces(det, img)
    m = len(a.selected)
    lat = np.random.default_rng(0).standard_normal((m, 512)).astype(np.float32)
    lat /= np.linalg.norm(lat, axis=1, keepdims=True)
    rows: list[int] = []

    def swap_fn(blob: np.ndarray, latents: np.ndarray) -> np.ndarray:
        rows.append(blob.shape[0])
        return swp.run(None, {"target": blob, "source": latents})[0]

    def timed(limit: int, pixel_boost: int) -> float:
        times = []
        for _ in range(repeats):
            rows.clear()
            t0 = time.perf_counter()
            pasted_frame(img, {}, a.crops, a.affines, lat, swap_fn, limit, pixel_boost)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000 / m

    pasted_frame(img, {}, a.crops[:1], a.affines[:1], lat[:1], swap_fn, batch)  # warm-up
    out: dict = {"target": PHOTOS[size], "faces": m, "swapper": models["swapper"].name,
                 "stand_in": models["swapper"].stand_in, "by_n": {}}
    for pixel_boost in PIXEL_BOOSTS:
        n = pixel_boost // 128
        entry = {"pixel_boost": pixel_boost, "ms_per_face": round(timed(batch, pixel_boost), 1),
                 "swapper_rows": sum(rows), "swapper_calls": len(rows)}
        if loop:
            entry["loop_ms_per_face"] = round(timed(1, pixel_boost), 1)
        out["by_n"][str(n)] = entry
        log.info("%s N=%d: %.1f ms/face batched%s (%d rows in %d calls)", size, n, entry["ms_per_face"],
                 f", {entry['loop_ms_per_face']:.1f} one at a time" if loop else "", entry["swapper_rows"],
                 entry["swapper_calls"])
    base = out["by_n"]["1"]["ms_per_face"]
    for entry in out["by_n"].values():
        entry["vs_n1"] = round(entry["ms_per_face"] / base, 2)
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,full", help="stand-in sizes, comma-separated")
    ap.add_argument("--batch", type=int, default=8, help="swapper batch limit (face_swapper's max_batch_size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop", default="tiny", help="sizes also timed one sub-crop per call")
    ap.add_argument("--out", type=Path, default=bench_summary.out_path("pixel_boost"))
    args = ap.parse_args()
    portrait, group = default_images()
    images = {"portrait": cv2.imread(str(portrait)), "group": cv2.imread(str(group))}
    loop = set(args.loop.split(","))
    summary = {"batch": args.batch, "repeats": args.repeats, "photos": {"group": group.name, "portrait": portrait.name},
               "sizes": {s: bench_size(s, images, args.batch, args.repeats, s in loop)
                         for s in args.sizes.split(",") if s}}
    bench_summary.write("pixel_boost", summary, args.out)
    for size, res in summary["sizes"].items():
        for n, e in res["by_n"].items():
            log.info("%-4s N=%s (%d px): %8.1f ms/face  x%.2f of N=1%s", size, n, e["pixel_boost"], e["ms_per_face"],
                     e["vs_n1"], f"  one at a time {e['loop_ms_per_face']:.1f}" if "loop_ms_per_face" in e else "")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
