"""``make demo``: a real source face onto every face of a real group photo, through Triton.

Steps: resolve the models (real where they can be had, labelled stand-ins where not), write
the CPU model repository, start the embedded tritonserver on loopback, embed the source,
swap every face of the target, write the result, print which models were real, the faces
found, the time per stage (Triton's own statistics) and the output's path, stop the server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from client import FaceSwapClient, FaceSwapError
from tools.resolve import resolve, shared_dir
from tools.server import embedded

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = Path(os.environ.get("FACESWAP_SHARED_IMAGES", shared_dir() / "images"))


def default_images() -> tuple[Path, Path]:
    """(source portrait, group photo): ../shared/images when present, else insightface's own."""
    src, tgt = SHARED_IMAGES / "portrait_obama_official.jpg", SHARED_IMAGES / "group_insightface_t1.jpg"
    if src.exists() and tgt.exists():
        return src, tgt
    import insightface

    data = Path(insightface.__file__).parent / "data" / "images"
    return data / "Tom_Hanks_54745.png", data / "t1.jpg"


def stage_times(before: dict, after: dict) -> list[tuple[str, int, float]]:
    """(model, requests, mean ms per request) from two Triton statistics snapshots."""
    rows = []
    for name, stats in after.items():
        prev = before.get(name, {})
        n = int(stats.get("inference_count", 0)) - int(prev.get("inference_count", 0))
        calls = int(stats.get("execution_count", 0)) - int(prev.get("execution_count", 0))
        if n <= 0:
            continue

        def ns(s: dict, key: str) -> int:
            return int(s.get("inference_stats", {}).get(key, {}).get("ns", 0))

        total = sum(ns(stats, k) - ns(prev, k) for k in ("compute_input", "compute_infer", "compute_output"))
        rows.append((name, calls, total / max(calls, 1) / 1e6))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description="Face swap demo through a real Triton server.")
    ap.add_argument("--source", type=Path, default=None)
    ap.add_argument("--target", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=ROOT / "out" / "demo_swap.jpg")
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=os.environ.get("FACESWAP_STANDIN_SIZE", "full"))
    ap.add_argument("--http-port", type=int, default=18000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    src, tgt = default_images()
    src, tgt = args.source or src, args.target or tgt

    print("== models (resolution: downloaded real -> ../shared/models -> stand-in)")
    models = resolve(args.standin_size)
    for m in models.values():
        print("  " + m.describe())
    if models["detector"].stand_in:
        print("demo needs a real face detector: `make models` where the network allows, or SCRFD files in "
              "../shared/models (FACESWAP_SHARED_MODELS); the stand-in detector finds no faces", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(f"== starting tritonserver (embedded, CPU) on 127.0.0.1:{args.http_port}/{args.http_port + 1} ...")
    with embedded("demo_repository", models, args.http_port) as server:
        print(f"   ready after {time.perf_counter() - t0:.1f} s (log: {server.log_file})")
        with FaceSwapClient(server.grpc_url, "grpc") as c:
            try:
                before = c.statistics()
                t1 = time.perf_counter()
                emb = c.embed(src)
                face = emb.largest()
                t2 = time.perf_counter()
                res = c.swap(tgt, face.latent, selection="all", output_format="jpeg")
                t3 = time.perf_counter()
                after = c.statistics()
            except FaceSwapError as exc:
                print(f"demo failed: {exc}", file=sys.stderr)
                return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(res.image)
    print(f"== source {src}: {len(emb.faces)} face(s); using the largest, box {[round(float(v)) for v in face.box]}")
    print(f"== target {tgt}: {len(res.faces)} face(s) found, {res.faces_swapped} swapped"
          f"{' (truncated)' if res.truncated else ''}, {res.width}x{res.height}")
    print(f"== time: face_embed {1000 * (t2 - t1):.0f} ms, face_swap {1000 * (t3 - t2):.0f} ms (client side)")
    print("== time per stage (Triton statistics: compute input+infer+output, mean per execution)")
    rows = {name: (calls, ms) for name, calls, ms in stage_times(before, after)}
    for name, (calls, ms) in sorted(rows.items()):
        print(f"   {name:16s} {calls:3d} execution(s) {ms:9.1f} ms")
    if "face_paster" in rows and "face_swapper" in rows:
        own = rows["face_paster"][1] - rows["face_swapper"][0] * rows["face_swapper"][1]
        print(f"   (face_paster's own work, paste-back of {res.faces_swapped} face(s) + encoding: {own:.1f} ms; "
              "the rest is its BLS calls to face_swapper)")
    if res.stand_in_models:
        print(f"!! STAND-IN models used: {', '.join(res.stand_in_models)}. The faces in the output are NOT a real "
              "swap (the stand-ins have random weights); put the real models in models/ (make models) for one.")
    print(f"== output: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
