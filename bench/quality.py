"""``python -m bench.quality``: what the per-face quality figures add to a 1080p swap (issue 12),
written to out/bench_quality.json.

For each stand-in size (tiny, full) a server is started and two 1920x1080 JPEG (q95) targets are
swapped through ``face_swap`` over gRPC: one face (the source portrait centred) and six faces
(the group photo scaled to 1080 px high, centred). Each request is sent alternately with the
option ``face_quality`` on and off, ``--repeats`` times each, and we report per target:

- ``added_ms``: median latency with the figures minus median latency without (end to end; on
  a busy 2-core machine its noise is tens of ms on the full stand-ins), and ``added_min_ms``
  the same with the fastest of each (less sensitive to other work on the machine);
- ``paster_added_ms``: the same difference of ``face_swap``'s own compute time per request
  (Triton statistics: swap, paste-back, figures, encode; without decode and detection noise);
- ``recognizer_ms``: Triton's own compute time of ``face_recognizer`` per request with the
  figures on (the one batched ArcFace call on 2M crops; Triton statistics), and
  ``recognizer_calls`` / ``recognizer_crops`` per request (1 and 2M);
- ``crops_ms``: cutting the 2M aligned 112x112 crops from the two frames (``quality_crops``,
  measured here in-process on the same image).

Timings are of this machine; compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from bench import summary
from client import FaceSwapClient
from launch.server import embedded
from pipeline.quality import quality_crops
from repository.layout import default_images
from repository.resolve import resolve


def canvas_1080(img: np.ndarray, height: int) -> np.ndarray:
    """``img`` scaled to ``height`` px high (at most 1920 wide), centred on a grey 1920x1080 frame."""
    scale = min(height / img.shape[0], 1920 / img.shape[1])
    small = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    out = np.full((1080, 1920, 3), 96, np.uint8)
    y, x = (1080 - small.shape[0]) // 2, (1920 - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def _counters(c: FaceSwapClient) -> tuple[int, int, int, int]:
    """face_recognizer's (requests, crops, compute ns) and face_swap's compute ns so far."""
    stats = c.statistics()
    s, paster = stats["face_recognizer"], stats["face_swap"]["inference_stats"]
    inf = s["inference_stats"]
    return (int(inf["success"]["count"]), int(s["inference_count"]), int(inf["compute_infer"]["ns"]),
            int(paster["compute_infer"]["ns"]))


def bench_target(c: FaceSwapClient, image: bytes, latent: np.ndarray, embedding: np.ndarray, repeats: int) -> dict:
    for on in (True, False):  # warm-up
        c.swap(image, latent, source_embedding=embedding, output_format="jpeg", face_quality=on)
    times: dict[bool, list[float]] = {True: [], False: []}
    paster: dict[bool, list[float]] = {True: [], False: []}
    calls = crops = compute_ns = 0
    faces = 0
    for _ in range(repeats):
        for on in (True, False):
            before = _counters(c)
            t = time.perf_counter()
            res = c.swap(image, latent, source_embedding=embedding, output_format="jpeg", face_quality=on)
            times[on].append(time.perf_counter() - t)
            after = _counters(c)
            paster[on].append((after[3] - before[3]) / 1e6)
            if on:
                calls, crops = calls + after[0] - before[0], crops + after[1] - before[1]
                compute_ns += after[2] - before[2]
                faces = res.faces_swapped
    frame = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    kps = np.stack([f.kps for f in res.faces]) if res.faces else np.zeros((0, 5, 2), np.float32)
    t = time.perf_counter()
    for _ in range(repeats):
        quality_crops(frame, frame, kps)
    crops_ms = 1000 * (time.perf_counter() - t) / repeats
    on_ms, off_ms = 1000 * statistics.median(times[True]), 1000 * statistics.median(times[False])
    return {"faces": faces, "repeats": repeats, "with_ms": round(on_ms, 1), "without_ms": round(off_ms, 1),
            "added_ms": round(on_ms - off_ms, 1), "added_pct": round(100 * (on_ms - off_ms) / off_ms, 1),
            "added_min_ms": round(1000 * (min(times[True]) - min(times[False])), 1),
            "paster_added_ms": round(statistics.median(paster[True]) - statistics.median(paster[False]), 1),
            "recognizer_ms": round(compute_ns / 1e6 / repeats, 1), "recognizer_calls": calls / repeats,
            "recognizer_crops": crops / repeats, "crops_ms": round(crops_ms, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description="Added latency of the quality figures per 1080p image, one run.")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    ap.add_argument("--repeats", type=int, default=0, help="requests per setting (default: 20 tiny, 6 full)")
    ap.add_argument("--port", type=int, default=18130)
    ap.add_argument("--json", type=Path, default=summary.out_path("quality"))
    args = ap.parse_args()
    source, group = default_images()
    targets = {"1080p_1_face": canvas_1080(cv2.imread(str(source)), 900),
               "1080p_6_faces": canvas_1080(cv2.imread(str(group)), 1080)}
    encoded = {k: cv2.imencode(".jpg", v, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for k, v in targets.items()}
    rows = []
    for size in args.sizes:
        repeats = args.repeats or (20 if size == "tiny" else 6)
        models = resolve(size)
        with embedded(f"bench_quality_{size}", models, args.port) as server:
            with FaceSwapClient(server.grpc_url, "grpc", timeout=600) as c:
                src = c.embed(source).largest()
                for name, image in encoded.items():
                    r = {"size": size, "target": name, **bench_target(c, image, src.latent, src.embedding, repeats),
                         "stand_ins": [m.name for m in models.values() if m.stand_in]}
                    print(f"{size:5s} {name:14s} {r['faces']} face(s): {r['without_ms']:8.1f} ms -> "
                          f"{r['with_ms']:8.1f} ms  ({r['added_ms']:+.1f} ms, {r['added_pct']:+.1f}%; fastest "
                          f"{r['added_min_ms']:+.1f} ms; face_swap "
                          f"{r['paster_added_ms']:+.1f} ms); recognizer "
                          f"{r['recognizer_ms']:.1f} ms in {r['recognizer_calls']:g} call(s) of "
                          f"{r['recognizer_crops']:g} crops; crops {r['crops_ms']:.2f} ms", flush=True)
                    rows.append(r)
    summary.write("quality", rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
