"""``make demo``: a real source face onto every face of a real group photo, through Triton.

Steps: resolve the models (real where they can be had, labelled stand-ins where not), write
the CPU model repository, start the embedded tritonserver on loopback, embed the source,
swap every face of the target, write the result and a before/after sheet (the input with the
detected boxes and 5 key points beside the output, labelled when the swapper is a stand-in),
print which models were real, the faces found, the time per stage (Triton's own statistics)
and the output paths, stop the server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from client import FaceSwapClient, FaceSwapError
from client.core import Face
from launch.server import embedded
from repository.layout import default_images
from repository.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
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


#: BGR colours of the 5 key points: left eye, right eye, nose, left and right mouth corners.
KPS_COLOURS = ((255, 80, 0), (0, 200, 255), (0, 255, 0), (255, 0, 255), (0, 0, 255))


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    th = max(1, round(2 * scale))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)


def before_after_sheet(before: np.ndarray, after: np.ndarray, faces: list[Face], selected: list[int],
                       stand_in_models: list[str]) -> np.ndarray:
    """BGR sheet: ``before`` with each detected box (green: swapped, red: left alone), its index
    and score and the 5 key points, beside ``after``, under a title band that says when the
    swapper is a stand-in (then the output is not a real swap)."""
    if after.shape[:2] != before.shape[:2]:
        after = cv2.resize(after, (before.shape[1], before.shape[0]))
    h, w = before.shape[:2]
    scale = max(0.5, h / 900)
    marked = before.copy()
    for i, f in enumerate(faces):
        colour = (0, 220, 0) if i in selected else (0, 0, 255)
        x1, y1, x2, y2 = (round(float(v)) for v in f.box)
        cv2.rectangle(marked, (x1, y1), (x2, y2), colour, max(2, round(2 * scale)), cv2.LINE_AA)
        _label(marked, f"{i} {f.score:.2f}", (x1, max(y1 - 6, 12)), 0.6 * scale, colour)
        r = max(2, round(0.03 * (x2 - x1)))
        for (x, y), c in zip(np.asarray(f.kps, np.float32).reshape(5, 2), KPS_COLOURS):
            cv2.circle(marked, (round(float(x)), round(float(y))), r, c, -1, cv2.LINE_AA)
    gap = max(4, round(8 * scale))
    band = round(90 * scale)
    sheet = np.full((h + band, 2 * w + gap, 3), 32, np.uint8)
    sheet[band:, :w] = marked
    sheet[band:, w + gap:] = after
    _label(sheet, f"input: {len(faces)} face(s) detected (boxes, 5 key points)", (10, round(35 * scale)),
           0.8 * scale)
    _label(sheet, f"output: {len(selected)} face(s) swapped", (w + gap + 10, round(35 * scale)), 0.8 * scale)
    if "inswapper_128" in stand_in_models:
        note, colour = "STAND-IN swapper: not a real swap (random weights; colour stripes mark each swapped face)", (
            0, 200, 255)
    elif stand_in_models:
        note, colour = f"stand-in models: {', '.join(stand_in_models)} (not real face models)", (0, 200, 255)
    else:
        note, colour = "real models", (200, 255, 200)
    _label(sheet, note, (10, round(75 * scale)), 0.8 * scale, colour)
    return sheet


def write_sheet(path: Path, target: Path, output_bytes: bytes, faces: list[Face], selected: list[int],
                stand_in_models: list[str]) -> Path:
    """Decode ``target`` (EXIF orientation applied, as the pipeline does) and the output, write
    ``before_after_sheet`` as JPEG to ``path``."""
    before = cv2.imread(str(target), cv2.IMREAD_COLOR)
    after = cv2.imdecode(np.frombuffer(output_bytes, np.uint8), cv2.IMREAD_COLOR)
    if before is None or after is None:
        raise ValueError(f"cannot decode {target} or the output image for the sheet")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), before_after_sheet(before, after, faces, selected, stand_in_models),
                       [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"could not write {path}")
    return path


def precision_lines(metrics_port: int) -> list[str]:
    """What each network serves in (the load-time self-check, read from Triton's metrics)."""
    import urllib.request

    from gateway.core.precision import parse

    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    except OSError as exc:
        return [f"   precision: unknown ({exc})"]
    lines = ["== precision per network (FACESWAP_PRECISION=auto: a parity self-check against fp32 at load)"]
    for model, net in sorted(parse(page).items()):
        figs = "; ".join(f"{k}: " + ", ".join(f"{f} {v:g}" for f, v in sorted(row.items()))
                         for k, row in sorted(net.get("probe", {}).items()))
        lines.append(f"   {model:16s} {net['precision']:5s} ({net['engine']}, {net['chosen_by']})"
                     + (f"  [{figs}]" if figs else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description="Face swap demo through a real Triton server.")
    ap.add_argument("--source", type=Path, default=None)
    ap.add_argument("--target", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=ROOT / "out" / "demo_swap.jpg")
    ap.add_argument("--sheet", type=Path, default=ROOT / "out" / "demo_sheet.jpg",
                    help="before/after sheet: input with boxes and key points beside the output")
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
        for line in precision_lines(server.ports.metrics):
            print(line)
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
    steps = res.stage_ms.get("steps", {})
    if steps:
        print("   face_swap's steps (ms, the networks it calls through BLS included): "
              + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
    if res.stand_in_models:
        print(f"!! STAND-IN models used: {', '.join(res.stand_in_models)}. The faces in the output are NOT a real "
              "swap (the stand-ins have random weights; the stand-in swapper paints each face with colour stripes "
              "chosen by the source); put the real models in models/ (make models) for one.")
    print(f"== output: {args.output}")
    write_sheet(args.sheet, tgt, res.image, res.faces, list(res.selected), list(res.stand_in_models))
    print(f"== before/after sheet (boxes, key points; output): {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
