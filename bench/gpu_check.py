"""GPU check (issue 13, item 5): the full inswapper stand-in in PyTorch on one GPU, one run.

On the GPU machine (device tool; one H200, PyTorch 2.11 + CUDA 13, onnx and onnxruntime for CPU,
nothing to install or carry), from the repository root, well under 600 s:

    PYTHONUNBUFFERED=1 python3 -m bench.gpu_check --out $OUT/gpu_check.json

(device tool: ``run`` with that command and ``timeout_s`` 540). The full stand-in (359 MB, too
large to carry) is regenerated there by ``repository.standins.make_inswapper("full")`` (numpy + onnx
only, ~5 s); the report says whether its weights' fingerprint equals the file made here. To check
parity on real aligned face crops instead of smooth synthetic images, make them here first
(``python -m bench.gpu_check --write-crops out/gpu_crops.npy``), then add ``--crops
out/gpu_crops.npy`` to the command and ``carry: ["out/gpu_crops.npy"]`` to the call.

What it does: converts the ONNX graph to PyTorch with a small converter for the ops it uses
(``OnnxModule``; no onnx2torch needed), checks the fp32 conversion against onnxruntime on the
CPU (batch 2), then for batch 1, 8, 64 and 256 and for fp32 (TF32 off), fp16 and bf16 measures
faces/s with the forward pass captured in a CUDA graph (``torch.cuda.graph``; ``--mode compile``
uses ``torch.compile(mode="reduce-overhead")`` instead), and the parity of fp16/bf16 against fp32
on the same inputs: PSNR and max abs difference of the output face (on [0, 1]) and of the last
convolution's raw output (the stand-in damps its decoder, 0.08 tanh(0.05 x), so the face alone
would hide errors of the heavy layers). Precision policy: Conv/MatMul/Gemm (and their
weights) in the reduced type, channels-last; InstanceNormalization always computed in fp32
(normalisation is what breaks inswapper in fp16); other ops in their inputs' type (graph inputs
arrive in fp32, so the stand-in's latent-coloured look stays fp32). Physical anchor: about
790 TFLOP/s dense bf16 (and fp16) measured on an H200, i.e. 0.22 ms per face at 174.7 GFLOP;
the report gives achieved TFLOP/s (GFLOP per face counted from the graph) and % of that.

It prints one JSON report (and writes ``--out``). Without CUDA it stops at once with exit code 3,
unless ``--device cpu``: ``python -m bench.gpu_check --device cpu --batches 1 --dry-run``
converts and checks fp32 against onnxruntime on the CPU only (how it is tested here).
Exit codes: 0 done; 1 the fp32 conversion differs from onnxruntime; 3 no CUDA device / no torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.torch_net import OnnxModule

#: Dense bf16 (and fp16) matrix rate measured on an H200 here (KINDS.md: 769-798 TFLOP/s).
ANCHOR_TFLOPS = 790.0
#: Published compute of the real inswapper_128 per face (repository.standins.PUBLISHED_GFLOP)
#: and the anchor's time for it.
PUBLISHED_GFLOP = 174.7
ANCHOR_MS_PER_FACE = PUBLISHED_GFLOP / ANCHOR_TFLOPS  # GFLOP / (TFLOP/s) = ms
#: Fingerprint (sha256 of every initializer's bytes, graph order, first 16 hex) of the full
#: stand-in v2 as generated on the development machine (numpy 1.26, onnx 1.17).
FULL_FINGERPRINT = "68fb90181e8a4e6e"
DEFAULT_BATCHES = (1, 8, 64, 256)
PRECISIONS = ("fp32", "fp16", "bf16")


def fingerprint(model) -> str:
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in model.graph.initializer:
        h.update(np.ascontiguousarray(numpy_helper.to_array(init)).tobytes())
    return h.hexdigest()[:16]


def last_conv_output(model) -> str:
    """Name of the last Conv's output (the decoder's raw output in the stand-in)."""
    return [n.output[0] for n in model.graph.node if n.op_type == "Conv"][-1]


def synthetic_inputs(batch: int, seed: int = 0, crops: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(target [B, 3, 128, 128] RGB in [0, 1], source [B, 512] unit latents).

    ``crops``: uint8 [K, 128, 128, 3] BGR aligned faces, repeated to ``batch``; otherwise smooth
    random images (8x8 noise, bilinear upsampled).
    """
    rng = np.random.default_rng(seed)
    if crops is not None:
        reps = crops[np.arange(batch) % len(crops)]
        target = reps[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    else:
        coarse = rng.random((batch, 3, 9, 9)).astype(np.float32)
        pos = np.linspace(0, 8, 128)
        i0 = np.clip(np.floor(pos).astype(int), 0, 7)
        f = (pos - i0).astype(np.float32)
        rows = coarse[:, :, i0, :] * (1 - f)[None, None, :, None] + coarse[:, :, i0 + 1, :] * f[None, None, :, None]
        target = rows[:, :, :, i0] * (1 - f) + rows[:, :, :, i0 + 1] * f
    lat = rng.standard_normal((batch, 512)).astype(np.float32)
    lat /= np.linalg.norm(lat, axis=1, keepdims=True)
    return np.ascontiguousarray(target, dtype=np.float32), lat


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    """PSNR (peak: the reference's range, 1 for the face) and max abs difference; finite check."""
    from pipeline.quality import psnr

    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    finite = bool(np.isfinite(out64).all())
    peak = max(float(ref64.max() - ref64.min()), 1e-12)
    db = psnr(out64, ref64, peak) if finite else float("-inf")
    return {"psnr_db": round(db, 2), "max_abs": float(np.max(np.abs(out64 - ref64))) if finite else None,
            "finite": finite, "range": round(peak, 4)}


def _time_cuda(fn, budget_s: float, min_reps: int = 5, max_reps: int = 200) -> tuple[float, int]:
    """Mean ms per call of ``fn`` (a graph replay) with CUDA events, reps sized to ``budget_s``."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    one = max(start.elapsed_time(end), 1e-3)
    reps = int(min(max(budget_s * 1000 / one, min_reps), max_reps))
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps, reps


def run_one(module: OnnxModule, target, source, mode: str, budget_s: float, device: str) -> tuple[float, int, list]:
    """(ms per call, calls timed, outputs) of one batch on one module."""
    import torch

    if device != "cuda":
        with torch.inference_mode():
            module(target, source)
            t0, reps = time.perf_counter(), 0
            while reps < 2 or time.perf_counter() - t0 < budget_s:
                outs = module(target, source)
                reps += 1
            return 1000 * (time.perf_counter() - t0) / reps, reps, [o.float().cpu().numpy() for o in outs]
    with torch.no_grad():
        if mode == "compile":
            fn = torch.compile(module.__call__, mode="reduce-overhead", fullgraph=False)
            for _ in range(3):
                outs = fn(target, source)
            torch.cuda.synchronize()
            ms, reps = _time_cuda(lambda: fn(target, source), budget_s)
            outs = [o.float().cpu().numpy() for o in fn(target, source)]
            return ms, reps, outs
        static_t, static_s = target.clone(), source.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: cuDNN autotuning (benchmark mode) happens here, not in the graph
                module(static_t, static_s)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_t, static_s)
        graph.replay()
        torch.cuda.synchronize()
        ms, reps = _time_cuda(graph.replay, budget_s)
        outs = [o.float().cpu().numpy() for o in static_out]
        del graph, static_out
        torch.cuda.empty_cache()
        return ms, reps, outs


def make_crops(path: Path) -> int:
    """Write aligned 128x128 crops (uint8 BGR) of the faces in the shared group photo (this machine)."""
    import cv2
    import onnxruntime as ort

    from pipeline.align import norm_crop
    from pipeline.detection import decode_scrfd, detector_blob, letterbox
    from repository.layout import default_images
    from repository.resolve import resolve

    det = resolve("tiny")["detector"]
    sess = ort.InferenceSession(det.path, providers=["CPUExecutionProvider"])
    _, group = default_images()
    img = cv2.imread(str(group))
    blob_img, scale = letterbox(img, (640, 640))
    dets = decode_scrfd(sess.run(None, {sess.get_inputs()[0].name: detector_blob(blob_img)}), (640, 640), scale,
                        0.5, 0.4)
    crops = np.stack([norm_crop(img, k, 128)[0] for k in dets.kps])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, crops)
    print(f"{len(crops)} crops of {group.name} ({'stand-in' if det.stand_in else 'real'} detector) -> {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="inswapper stand-in on the GPU: faces/s fp16/bf16 with CUDA graphs, "
                                             "parity against fp32 (one JSON report).")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="full", choices=["full", "tiny"], help="stand-in size (full: the real cost)")
    ap.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--mode", default="graphs", choices=["graphs", "compile"],
                    help="graphs: torch.cuda.graph capture; compile: torch.compile(mode='reduce-overhead') "
                         "(not tried on a GPU yet)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per (precision, batch)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    ap.add_argument("--crops", type=Path, default=None, help="uint8 [K,128,128,3] BGR aligned crops (.npy)")
    ap.add_argument("--write-crops", type=Path, default=None, help="write crops of the shared group photo and stop")
    ap.add_argument("--dry-run", action="store_true", help="fp32 only: convert and check against onnxruntime")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = ap.parse_args()
    if args.write_crops:
        return make_crops(args.write_crops)
    t_start = time.perf_counter()
    report: dict = {"tool": "bench.gpu_check", "args": {k: str(v) for k, v in vars(args).items()}}

    def finish(code: int) -> int:
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return code

    try:
        import torch
    except ImportError as exc:
        report["error"] = f"PyTorch is not installed: {exc}"
        print(report["error"], file=sys.stderr)
        return finish(3)
    report["torch"] = torch.__version__
    if args.device == "cuda":
        if not torch.cuda.is_available():
            report["error"] = ("no CUDA device (torch.cuda.is_available() is False): run this on the GPU machine, "
                               "or pass --device cpu for the CPU check")
            print(report["error"], file=sys.stderr)
            return finish(3)
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "sm": f"{props.major}.{props.minor}", "multiprocessors":
                         props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
                         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is the true fp32 reference
        torch.backends.cudnn.allow_tf32 = False
    else:
        report["gpu"] = None
    print(f"[gpu_check] torch {torch.__version__} on {args.device}"
          f"{' ' + report['gpu']['name'] if report['gpu'] else ''}", file=sys.stderr)

    from bench.peak import graph_flops
    from repository.standins import VERSIONS, make_inswapper

    t = time.perf_counter()
    model, builder_gflop = make_inswapper(args.size)
    counted = graph_flops(model, run_missing=False)
    fp = fingerprint(model)
    report["model"] = {"stand_in": f"inswapper_128 v{VERSIONS['inswapper_128']} {args.size}", "made_s":
                       round(time.perf_counter() - t, 1), "gflop_per_face": round(counted["gflop"], 3),
                       "builder_gflop": round(builder_gflop, 3), "fingerprint": fp,
                       "fingerprint_matches_dev_machine": fp == FULL_FINGERPRINT if args.size == "full" else None,
                       "ops": sorted({n.op_type for n in model.graph.node}), "numpy": np.__version__}
    gflop = counted["gflop"]
    keep = (last_conv_output(model),)
    crops = np.load(args.crops) if args.crops else None
    report["inputs"] = f"{len(crops)} real aligned crops, repeated" if crops is not None else \
        "smooth synthetic images (seeded), unit latents"

    # 1. The fp32 conversion against onnxruntime (CPU), batch 2: the face and the last convolution.
    import onnx
    import onnxruntime as ort

    model.graph.output.append(onnx.ValueInfoProto(name=keep[0]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    model.graph.output.pop()
    tgt, src = synthetic_inputs(2, seed=1, crops=crops)
    ort_outs = sess.run(["output", keep[0]], {"target": tgt, "source": src})
    del sess
    dev = torch.device(args.device)
    ref32 = OnnxModule(model, torch.float32, dev, keep=keep)
    with torch.inference_mode():
        ours = [o.float().cpu().numpy() for o in ref32(torch.from_numpy(tgt).to(dev), torch.from_numpy(src).to(dev))]
    face, last = compare(ours[0], ort_outs[0]), compare(ours[1], ort_outs[1])
    ok = bool(face["finite"] and last["finite"] and face["max_abs"] <= 1e-4 and last["psnr_db"] >= 80)
    report["fp32_vs_onnxruntime"] = {"face": face, "last_conv": last, "ok": ok,
                                     "bar": "face max abs <= 1e-4 and last conv PSNR >= 80 dB"}
    print(f"[gpu_check] fp32 conversion vs onnxruntime: face max abs {face['max_abs']:.2e}, last conv PSNR "
          f"{last['psnr_db']} dB (max abs {last['max_abs']:.2e} of range {last['range']}) -> "
          f"{'ok' if ok else 'MISMATCH'}", file=sys.stderr)
    if not ok:
        report["error"] = "the fp32 torch conversion differs from onnxruntime"
        return finish(1)
    if args.dry_run:
        report["dry_run"] = True
        return finish(0)

    # 2. Speed and parity per batch and precision.
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    precisions = ["fp32"] + [p for p in args.precisions if p != "fp32"]
    modules = {p: (ref32 if p == "fp32" else OnnxModule(model, dtypes[p], dev, keep=keep)) for p in precisions}
    rows = []
    for batch in args.batches:
        tgt, src = synthetic_inputs(batch, seed=batch, crops=crops)
        target, source = torch.from_numpy(tgt).to(dev), torch.from_numpy(src).to(dev)
        ref_outs = None
        for prec in precisions:
            row: dict = {"batch": batch, "precision": prec}
            if time.perf_counter() - t_start > args.budget_s:
                row["skipped"] = f"time budget ({args.budget_s:.0f} s) spent"
                rows.append(row)
                continue
            try:
                ms, reps, outs = run_one(modules[prec], target, source, args.mode, args.seconds, args.device)
            except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
                row["error"] = f"out of memory: {exc}"
                rows.append(row)
                torch.cuda.empty_cache()
                continue
            faces_s = batch / (ms / 1000)
            tflops = faces_s * gflop / 1000
            row.update({"ms_per_call": round(ms, 3), "calls": reps, "ms_per_face": round(ms / batch, 4),
                        "faces_per_s": round(faces_s, 1), "tflops": round(tflops, 1),
                        "pct_of_anchor": round(100 * tflops / ANCHOR_TFLOPS, 1)})
            if prec == "fp32":
                ref_outs = outs
            elif ref_outs is not None:
                row["parity_face"] = compare(outs[0], ref_outs[0])
                row["parity_last_conv"] = compare(outs[1], ref_outs[1])
            rows.append(row)
            par = row.get("parity_face")
            print(f"[gpu_check] batch {batch:4d} {prec}: {row['faces_per_s']:10.1f} faces/s  {ms / batch:8.4f} "
                  f"ms/face  {tflops:7.1f} TFLOP/s ({row['pct_of_anchor']:.1f}% of {ANCHOR_TFLOPS:.0f})"
                  + (f"  face PSNR {par['psnr_db']} dB max {par['max_abs']:.2e}, last conv PSNR "
                     f"{row['parity_last_conv']['psnr_db']} dB" if par else ""), file=sys.stderr)
        del target, source
    report["results"] = rows
    report["anchor"] = {"tflops": ANCHOR_TFLOPS, "published_gflop": PUBLISHED_GFLOP,
                        "ms_per_face": round(ANCHOR_MS_PER_FACE, 4)}
    timed = [r for r in rows if "tflops" in r and r["precision"] != "fp32"]
    if timed:
        best = max(timed, key=lambda r: r["tflops"])
        report["best"] = {k: best[k] for k in ("precision", "batch", "faces_per_s", "ms_per_face", "tflops",
                                               "pct_of_anchor")}
    report["policy"] = ("Conv/MatMul/Gemm and their weights in the reduced type (channels-last); InstanceNormalization "
                        "in fp32; other ops in their inputs' type; fp32 with TF32 off")
    return finish(0)


if __name__ == "__main__":
    raise SystemExit(main())
