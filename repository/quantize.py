"""int8 post-training quantization of the networks, calibrated on aligned faces from our photos.

    faceswap-repository quantize [--repository .run/model_repository] [--json out/quantize.json]

For each network of the model repository (or ``--models tiny|full``) this writes the int8 file
the CPU profile may serve, ``<cache>/int8/<first 16 hex of the fp32 file's SHA-256>.r<recipe>.onnx``
(``pipeline.precision.int8_path``; made once per model file, reused after), then measures it
against fp32 and bf16 with the load-time self-check's own probe and thresholds and prints one
row per precision: time per probe call, speed-up over fp32, parity, pass/fail. The model
repository's build calls ``ensure_int8`` itself where int8 is native, so serving needs no manual
step; this command is the report (and a way to rebuild after deleting the cache).

How: onnxruntime's static quantization (``onnxruntime.quantization.quantize_static``), QDQ
format, weights int8 per output channel, activations uint8 per tensor (asymmetric, MinMax
calibration), ``Conv`` layers only (the detector's output heads stay fp32, ``FP32_HEADS``): on
the inswapper stand-in, quantizing its ``MatMul`` layers too (the latent's style and colour
projections) dropped the face's PSNR against fp32 from 56.7 dB to 17.1 dB for almost no speed.
Calibration data: the probe's faces mirrored left-right (and, for the swapper, each face with
every other face's identity), so the self-check never scores the int8 file on the exact inputs
it was calibrated on. A change of this recipe must bump ``pipeline.precision.INT8_RECIPE`` (it
names the cached files).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import engines
from pipeline.contracts import NET_MODEL
from pipeline.precision import (
    PROBE_FILE,
    ROLE_OF_MODEL,
    Candidate,
    cpu_info,
    int8_intact,
    int8_path,
    int8_stamp,
    native_support,
    self_check,
)
from repository.layout import cache_dir, cached_sha256
from repository.onnx_graph import io_names

log = logging.getLogger(__name__)
#: Operators quantized per network (see the module docstring for why not MatMul).
OP_TYPES = {"detector": ("Conv",), "recognizer": ("Conv",), "swapper": ("Conv",)}
#: Networks whose output convolutions stay fp32: SCRFD's 9 heads regress boxes and key points in
#: stride units, and int8 there moved boxes by 1.17 px (det_2.5g; 0.95 px with the heads in fp32).
FP32_HEADS = {"detector": True, "recognizer": False, "swapper": False}
MAX_CALIBRATION = 16
MIN_OPSET = 13


def calibration_feeds(role: str, probe: dict[str, np.ndarray], input_names: list[str], input_ranks: list[int]
                      ) -> list[dict[str, np.ndarray]]:
    """Calibration inputs, one item per feed: the probe's faces (or photos) mirrored left-right."""
    from pipeline.align import crops_to_blob
    from pipeline.detection import detector_blob

    if role == "detector":
        return [{input_names[0]: detector_blob(np.ascontiguousarray(img[:, ::-1]))} for img in probe["det_images"]]
    if role == "recognizer":
        crops = np.ascontiguousarray(probe["rec_crops"][:, :, ::-1])
        return [{input_names[0]: crops_to_blob(crops[i:i + 1], 127.5, 127.5)} for i in range(len(crops))]
    crops = np.ascontiguousarray(probe["swap_crops"][:, :, ::-1])
    lat, n = probe["swap_latents"], len(crops)
    feeds = []
    for shift in range(1, n):  # face i with the identity of face i + shift + 1 (the probe uses shift 0)
        for i in range(n):
            j = (i + shift) % n
            target = crops_to_blob(crops[i:i + 1], 0.0, 255.0)
            feeds.append({name: (target if rank == 4 else lat[j:j + 1])
                          for name, rank in zip(input_names, input_ranks)})
    rng = np.random.default_rng(0)
    return [feeds[k] for k in rng.permutation(len(feeds))[:MAX_CALIBRATION]]


def head_convs(model) -> list[str]:
    """Names of the Conv nodes nearest each graph output (walking back through other ops)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    heads, stack, seen = set(), [o.name for o in model.graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            heads.add(node.name)
        else:
            stack += list(node.input)
    return sorted(heads)


def quantize(f32_path: str, out_path: Path, feeds: list[dict[str, np.ndarray]], op_types: tuple[str, ...],
             fp32_heads: bool = False) -> Path:
    """Write the QDQ int8 version of ``f32_path`` to ``out_path`` (atomically); return it.
    ``fp32_heads``: leave the output convolutions (``head_convs``) unquantized.

    Raises:
        ImportError: onnxruntime's quantization tools are missing.
    """
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        src = f32_path
        model = onnx.load(f32_path)
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < MIN_OPSET:  # per-channel QuantizeLinear/DequantizeLinear need opset 13
            src = str(Path(tmp) / "opset.onnx")
            onnx.save(onnx.version_converter.convert_version(model, MIN_OPSET), src)
        exclude = head_convs(model) if fp32_heads else []
        del model
        quant_pre_process(src, str(pre), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types), nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": False})
        os.replace(staged, out_path)
    return out_path


def ensure_int8(model: str, f32_path: str, model_sha256: str, probe_path: Path, cache: Path | None = None) -> Path:
    """The cached int8 file of this network, quantized now (seconds to a minute) when it is missing
    or not intact (``pipeline.precision.int8_intact``: its stamp names another source or another
    content); stamped with both hashes."""
    if cache is None:
        cache = cache_dir()
    out = int8_path(cache, model_sha256)
    ok, why = int8_intact(out, model_sha256)
    if ok:
        return out
    if out.is_file():
        log.warning("%s: %s: making it again", model, why)
    role = ROLE_OF_MODEL[model]
    names, ranks, _ = io_names(f32_path)
    with np.load(probe_path) as z:
        probe = {k: z[k] for k in z.files}
    t = time.perf_counter()
    quantize(f32_path, out, calibration_feeds(role, probe, names, ranks), OP_TYPES[role], FP32_HEADS[role])
    int8_stamp(out, model_sha256)
    log.info("%s: int8 model written to %s in %.1f s", model, out, time.perf_counter() - t)
    return out


def report(repository: Path, cache: Path) -> dict:
    """Quantize (where missing) and measure every network of ``repository`` in f32, bf16, int8."""
    summary = json.loads((repository / "repository.json").read_text())
    probe_path = repository / PROBE_FILE
    with np.load(probe_path) as z:
        probe = {k: z[k] for k in z.files}
    cpu = cpu_info()
    native = native_support(cpu["all_flags"])
    out: dict = {"cpu": {k: cpu[k] for k in ("model", "cores", "flags")},
                 "native": {p: v["native"] for p, v in native.items()}, "networks": {}}
    for role, model in summary["models"].items():
        name = NET_MODEL[role]
        path = model["path"]
        sha = cached_sha256(str(Path(path).resolve()))
        q = ensure_int8(name, path, sha, probe_path, cache)
        names, ranks, outputs = io_names(path)
        cands = [Candidate("f32", "onnxruntime", path), Candidate("bf16", "openvino", path),
                 Candidate("int8", "openvino", str(q)), Candidate("int8", "onnxruntime", str(q))]
        choice = self_check(name, cands, probe, names, ranks, outputs, engines.load)
        for row in choice.results:
            p = row["precision"]
            row["native"] = native[p]["native"]
        out["networks"][name] = {"model": f"{model['name']}{' (STAND-IN)' if model['stand_in'] else ''}",
                                 "int8_file": str(q), "results": choice.results,
                                 "self_check_would_serve": _would_serve(choice.results)}
        print(choice.summary().replace(f"chosen by self-check in {choice.probe_seconds:.1f} s",
                                       "fastest passing"), file=sys.stderr)
    return out


def _would_serve(results: list[dict]) -> str:
    """The precision the load-time self-check would pick here (native precisions only)."""
    ok = [r for r in results if r.get("passed") and r.get("native") and r.get("ms") is not None]
    best = min(ok, key=lambda r: r["ms"])
    return f"{best['precision']} ({best['engine']})"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repository", type=Path, default=None,
                    help="model repository (default: build one in a temporary folder from --models)")
    ap.add_argument("--models", choices=["tiny", "full"], default=None, help="stand-in size (default: "
                    "FACESWAP_STANDIN_SIZE or tiny); real models are used where present")
    ap.add_argument("--json", type=Path, default=None, help="write the report here too")


def run(args: argparse.Namespace) -> int:
    """``faceswap-repository quantize``: the int8 files and the report (JSON on stdout, rows on stderr)
    of ``args.repository`` (``repository.cli`` builds one in a temporary folder when none is given)."""
    cache = cache_dir()
    if not (args.repository / PROBE_FILE).is_file():
        print(f"no {PROBE_FILE} in {args.repository}: build the repository with faceswap-repository build",
              file=sys.stderr)
        return 2
    else:
        out = report(args.repository, cache)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0
