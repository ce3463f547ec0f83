"""Inference engines for the ONNX networks, behind one call signature.

- ``onnxruntime`` (default): fp32, the reference numerics.
- ``openvino``: OpenVINO's CPU plugin; ``precision="bf16"`` uses AMX/AVX-512 bf16 where the
  CPU has it. On this project's 2-core Xeon the full-size inswapper stand-in ran 2.25x faster
  in bf16 than onnxruntime fp32 (batch 4); its output differed by at most 0.0012 (on [0, 1]),
  PSNR 72.8 dB against fp32. ``precision="int8"`` runs a quantized file (``repository.quantize``).
- ``torch``: the ONNX graph executed with PyTorch ops (``pipeline.torch_net``) on
  ``torch_device()``: CUDA where there is a GPU (the GPU profile's networks where the server has
  no TensorRT: the ``nvidia-pytriton`` wheel's server), else the CPU; ``f32`` (TF32 off),
  ``bf16`` or ``fp16`` for the heavy ops (normalisation stays fp32); on CUDA each input shape is
  replayed from a CUDA graph (``torch_net.CudaGraphed``, batches padded to powers of two;
  ``FACESWAP_CUDA_GRAPHS=0`` runs eagerly).

Which precision serves is decided when a network loads by ``pipeline.precision`` (a parity
self-check against fp32): users of the fp16 inswapper report noisy faces, so a reduced precision
never serves unchecked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)
ENGINES = ("onnxruntime", "openvino", "torch")
#: "0" turns the torch engine's CUDA graphs off (``torch_net.CudaGraphed``; on by default on CUDA).
CUDA_GRAPHS_ENV = "FACESWAP_CUDA_GRAPHS"
PRECISIONS = ("f32", "bf16", "int8", "fp16")
RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def load(path: str, output_names: list[str], engine: str = "onnxruntime", precision: str = "f32",
         threads: int = 0) -> RunFn:
    """A function ``run({input name: array}) -> [arrays in output_names order]``.

    Args:
        path: ONNX file.
        output_names: the outputs wanted, in order.
        engine: one of ENGINES.
        precision: "f32"; "bf16" (openvino, torch); "fp16" (torch); "int8": ``path`` is a quantized (QDQ) file
            (``repository.quantize``), whose quantized layers both engines run as u8 x s8 kernels
            (OpenVINO with its fp32 hint for the rest).
        threads: intra-op threads, 0 = the engine's default.

    Raises:
        ValueError: an unknown engine or precision, or one the engine does not run (bf16 on
            onnxruntime, fp16 but on torch, int8 on torch).
        ImportError: the engine's package is not installed.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of {ENGINES}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "fp16" and engine != "torch":
        raise ValueError("fp16 runs on engine torch only")
    if engine == "torch":
        return _torch_run(path, output_names, precision)
    if engine == "onnxruntime":
        if precision == "bf16":
            raise ValueError("onnxruntime runs these networks in f32 (or int8) only; use engine openvino for bf16")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # no spinning after a call: onnxruntime's threads otherwise busy-wait for the next one,
        # taking cores from the other models and stages of the same server (a video job, tiny
        # stand-ins: the f32 recognizer's stub burned 3.3 s of CPU for 0.4 s of compute)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(output_names, feeds)
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    outputs = [compiled.output(n) for n in output_names]
    request = compiled.create_infer_request()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feeds)
        return [np.array(result[o], copy=True) for o in outputs]

    return run


def torch_device() -> str:
    """``FACESWAP_TORCH_DEVICE`` if set (``cuda``, ``cuda:1``, ``cpu``), else ``cuda`` where
    PyTorch sees a GPU, else ``cpu``."""
    import torch

    return os.environ.get("FACESWAP_TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def _torch_run(path: str, output_names: list[str], precision: str) -> RunFn:
    if precision == "int8":
        raise ValueError("engine torch runs f32, bf16 or fp16, not int8")
    import onnx
    import torch

    from pipeline.torch_net import OnnxModule

    device = torch.device(torch_device())
    if device.type == "cuda":  # f32 means f32: TF32 would change the reference's numerics
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    module = OnnxModule(onnx.load(path), dtype, device)
    if device.type == "cuda" and os.environ.get(CUDA_GRAPHS_ENV, "1") != "0":
        from pipeline.torch_net import CudaGraphed

        module = CudaGraphed(module, lambda msg: log.warning("%s: %s", path, msg))
    missing = [n for n in output_names if n not in module.outputs]
    if missing:
        raise ValueError(f"{path} has no outputs {missing}")
    pick = [module.outputs.index(n) for n in output_names]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outs = module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in module.inputs])
            return [outs[i].float().cpu().numpy() for i in pick]

    def run_tensors(feeds: dict) -> list:
        """The same on tensors (any device; moved to the module's): float32 tensors on ``device``."""
        with torch.inference_mode():
            outs = module(*[feeds[n].to(device) for n in module.inputs])
            return [outs[i].float().contiguous() for i in pick]

    def warm(item_shapes: list[tuple[int, ...]], max_batch: int) -> list[int]:
        """Capture the CUDA graphs of every padded batch up to ``max_batch`` now
        (``CudaGraphed.warm``); [] where the network is not replayed from graphs."""
        return module.warm(item_shapes, max_batch, device) if hasattr(module, "warm") else []

    run.tensors = run_tensors  # the torch profile's networks take and give tensors by DLPack
    run.warm = warm
    return run


class OutputNotFinite(RuntimeError):
    """A network returned NaN or infinite values (message: ``model_output_invalid: ...``)."""


def non_finite(outputs: list, names: list[str]) -> list[str]:
    """Names of the floating-point outputs (arrays, or torch tensors on any device) holding NaN
    or infinite values."""
    bad = []
    for n, o in zip(names, outputs):
        if hasattr(o, "is_floating_point"):  # a torch tensor: checked where it lives
            import torch

            if o.is_floating_point() and not bool(torch.isfinite(o).all()):
                bad.append(n)
        elif np.issubdtype(o.dtype, np.floating) and not np.isfinite(o).all():
            bad.append(n)
    return bad


def checked(run: RunFn, output_names: list[str], model: str, precision: str,
            fallback: Callable[[], RunFn] | None = None, on_fallback: Callable[[str], None] | None = None) -> RunFn:
    """``run`` with every output checked for NaN/inf.

    When a reduced precision (``precision != "f32"``) produced a non-finite value, the same
    inputs are run once more in fp32 (``fallback()`` builds that engine, on first need) and
    ``on_fallback(message)`` is told; a non-finite fp32 output raises.

    Raises:
        OutputNotFinite: the output is not finite (after the fp32 retry where there is one).
    """
    f32: list[RunFn] = []

    def run_checked(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = run(feeds)
        bad = non_finite(outs, output_names)
        if bad and precision != "f32" and fallback is not None:
            if not f32:
                f32.append(fallback())
            if on_fallback:
                on_fallback(f"{model}: {precision} output {bad} not finite; recomputed in f32")
            outs = f32[0](feeds)
            bad = non_finite(outs, output_names)
        if bad:
            raise OutputNotFinite(f"model_output_invalid: {model} returned NaN or infinite values in {bad}")
        return outs

    return run_checked
