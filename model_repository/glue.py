"""Helpers shared by the Triton Python models (imported only inside the Python backend stub):
input tensors, error answers, and the networks called through BLS as the stage contracts say
(``pipeline.contracts``)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.contracts import ContentCall, DetectorCall, RecognizerCall, SwapperCall
from pipeline.engines import non_finite
from pipeline.frames import DetectSettings


def get(request, name: str, default: np.ndarray | None = None) -> np.ndarray:
    """An input as numpy, or ``default`` when the (optional) input is absent."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        if default is None:
            raise ValueError(f"missing input tensor {name!r}")
        return default
    return t.as_numpy()


def get_bytes(request, name: str, default: bytes = b"") -> bytes:
    """First element of a BYTES input, or ``default``."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return default
    arr = t.as_numpy().reshape(-1)
    if arr.size == 0:
        return default
    v = arr[0]
    return v if isinstance(v, bytes) else str(v).encode()


def bytes_tensor(name: str, value: bytes) -> "pb_utils.Tensor":
    return pb_utils.Tensor(name, np.array([value], dtype=np.object_))


class StageError(RuntimeError):
    """A failure that is not the caller's: a model called through BLS failed, was full or was
    cancelled. ``code`` is the called model's TritonError code, passed on when it says
    UNAVAILABLE (queue full, timeout) or CANCELLED, so the caller sees why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _code(name: str, fallback: str = "INTERNAL") -> int:
    return getattr(pb_utils.TritonError, name, getattr(pb_utils.TritonError, fallback))


def error_response(exc: Exception) -> "pb_utils.InferenceResponse":
    """The error answer for a failed request.

    - ``ValueError`` (bad image, bad option): INVALID_ARG with the message, for a person (the
      client maps it to InvalidInput; the gateway to 4xx);
    - ``StageError`` from a called model: UNAVAILABLE or CANCELLED passed on, else INTERNAL;
    - anything else is the model's own failure: INTERNAL, ``model_failed: ...`` (gateway 502).
    """
    if isinstance(exc, ValueError):
        code, msg = pb_utils.TritonError.INVALID_ARG, str(exc)
    elif isinstance(exc, StageError) and exc.code in (_code("UNAVAILABLE"), _code("CANCELLED")):
        code, msg = exc.code, str(exc)
    elif "model_output_invalid" in str(exc):
        code, msg = pb_utils.TritonError.INTERNAL, str(exc)[str(exc).index("model_output_invalid"):]
    else:
        code, msg = pb_utils.TritonError.INTERNAL, f"model_failed: {type(exc).__name__}: {exc}"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(msg, code))


def bls_fn(model_name: str, input_names: list[str], output_name: str) -> Callable[..., np.ndarray]:
    """A callable running ``model_name`` synchronously through BLS: f(*arrays) -> output array.

    Raises:
        StageError: the called model answered with an error.
    """

    def call(*arrays: np.ndarray) -> np.ndarray:
        return _bls(model_name, input_names, arrays, [output_name])[0]

    return call


def _exec(model: str, inputs: list, outputs: list[str], memory: str = "cpu", device_id: int = 0) -> list:
    """One synchronous BLS request; its output tensors (``pb_utils.Tensor``) in the given order,
    asked for in host memory (``memory`` "cpu") or on GPU ``device_id`` ("gpu").

    Raises:
        StageError: the called model answered with an error.
    """
    kw = {}
    if hasattr(pb_utils, "PreferredMemory"):
        kind = pb_utils.TRITONSERVER_MEMORY_GPU if memory == "gpu" else pb_utils.TRITONSERVER_MEMORY_CPU
        kw["preferred_memory"] = pb_utils.PreferredMemory(kind, device_id)
    resp = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=inputs, **kw).exec()
    if resp.has_error():
        err = resp.error()
        raise StageError(f"{model}: {err.message()}", err.code() if hasattr(err, "code") else None)
    return [pb_utils.get_output_tensor_by_name(resp, o) for o in outputs]


def _bls(model: str, input_names: list[str], arrays, outputs: list[str]) -> list[np.ndarray]:
    """One synchronous BLS request with arrays; the outputs as arrays (StageError on failure)."""
    inputs = [pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(input_names, arrays)]
    arrays = [_host_array(t) for t in _exec(model, inputs, outputs)]
    require_finite(model, arrays, outputs)
    return arrays


def _host_array(t) -> np.ndarray:
    """A BLS output as a host array; one left on a GPU (a torch network that did not honour the
    preferred memory) is copied down through DLPack."""
    if not hasattr(t, "is_cpu") or t.is_cpu():
        return t.as_numpy()
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(t.to_dlpack()).cpu().numpy()


BLS_MEMORY_ENV = "FACESWAP_BLS_MEMORY"


def bls_memory() -> str:
    """Where ``dlpack_bls`` hands tensors to the networks: ``FACESWAP_BLS_MEMORY`` "device" (the
    default: GPU tensors cross between the stub processes through CUDA IPC in Triton's CUDA
    memory pool) or "host" (each call's inputs and outputs cross in host memory, one copy each
    way per call; the frame itself stays on the device: the fallback where CUDA IPC fails).

    Raises:
        ValueError: any other value.
    """
    value = os.environ.get(BLS_MEMORY_ENV, "device").strip().lower() or "device"
    if value not in ("device", "host"):
        raise ValueError(f"{BLS_MEMORY_ENV}={value!r}: expected device or host")
    return value


def bls_placement(memory: str, device) -> tuple[str, int]:
    """Where ``dlpack_bls`` asks for a network's outputs: ("gpu", index) for ``memory``
    "device" and a CUDA ``device``, else ("cpu", 0) (``pb_utils.PreferredMemory``'s kind and
    device id)."""
    return ("gpu", device.index or 0) if memory == "device" and device.type == "cuda" else ("cpu", 0)


def dlpack_bls(model: str, input_names: list[str], outputs: list[str], device,
               memory: str = "device") -> Callable[..., list]:
    """A callable running ``model`` through BLS on torch tensors: f(*tensors) -> [output
    tensors] on ``device`` (a ``torch.device``), both ways by DLPack. With ``memory`` "device"
    the tensors cross where they are and the outputs are asked for on ``device`` (no host copy);
    with "host" (``bls_memory``) the inputs are copied to the host first and the outputs copied
    up to ``device``.

    Raises (when called):
        StageError: the called model answered with an error, or NaN/inf in a float output.
    """
    from torch.utils.dlpack import from_dlpack, to_dlpack

    kind, index = bls_placement(memory, device)
    on_host = kind == "cpu"

    def call(*tensors) -> list:
        tensors = [(t.cpu() if on_host else t).contiguous() for t in tensors]
        if any(t.is_cuda for t in tensors):  # another process reads them: the kernels that make them must be done
            import torch

            torch.cuda.current_stream(tensors[0].device).synchronize()
        inputs = [pb_utils.Tensor.from_dlpack(n, to_dlpack(t)) for n, t in zip(input_names, tensors)]
        outs = [from_dlpack(t.to_dlpack()).to(device) for t in _exec(model, inputs, outputs, kind, index)]
        require_finite(model, outs, outputs)
        return outs

    return call


def tensor_input(request, name: str, default: np.ndarray | None = None) -> np.ndarray:
    """A numeric input as a host array, read by DLPack (it may sit on a GPU where the model takes
    inputs where they are, and DLPack reads it whatever NumPy the stub has), or ``default``."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        if default is None:
            raise ValueError(f"missing input tensor {name!r}")
        return default
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(t.to_dlpack()).cpu().numpy()


def require_finite(model: str, arrays: list[np.ndarray], names: list[str]) -> None:
    """Raise StageError ``model_output_invalid`` when a float array of ``model``'s output holds
    NaN or infinite values (a swapper gone wrong must fail loudly, not paste a black face)."""
    bad = non_finite(arrays, names)
    if bad:
        raise StageError(f"model_output_invalid: {model} returned NaN or infinite values in {bad}")


def _detector_outputs(p: DetectorCall) -> list[str]:
    """SCRFD's 9 head names (``detector_outputs``).

    Raises:
        ValueError: ``detector_outputs`` does not name 9 heads.
    """
    if len(p.detector_outputs) != 9:
        raise ValueError(f"detector_outputs names {len(p.detector_outputs)} tensors, SCRFD has 9 heads")
    return list(p.detector_outputs)


def bls_detector(p: DetectorCall) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The detector as f(float32 [1, 3, H, W] blob) -> its 9 heads in graph order, through BLS.

    Raises:
        ValueError: ``detector_outputs`` does not name 9 heads.
    """
    outputs = _detector_outputs(p)
    return lambda blob: _bls(p.detector_model, [p.detector_input], [blob], outputs)


def detect_settings(p: DetectorCall, max_faces: int = 0) -> DetectSettings:
    """The stage's detection parameters as ``pipeline.frames.DetectSettings``."""
    kw = {"max_faces": max_faces} if max_faces else {}
    return DetectSettings(det_size=p.det_size, det_thresh=p.det_thresh, nms_thresh=p.nms_thresh,
                          close_up_retry=p.close_up_retry, max_pixels=p.max_pixels, **kw)


def bls_recognizer(p: RecognizerCall) -> Callable[[np.ndarray], np.ndarray]:
    """ArcFace as f(float32 [N, 3, 112, 112]) -> float32 [N, 512], through BLS."""
    return bls_fn(p.recognizer_model, [p.recognizer_input], p.recognizer_output)


def bls_swapper(p: SwapperCall) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """inswapper as f(float32 [N, 3, 128, 128] crops, float32 [N, 512] latents) -> float32
    [N, 3, 128, 128], through BLS."""
    return bls_fn(p.swapper_model, [p.swapper_target, p.swapper_source], p.swapper_output)


def bls_content(p: ContentCall) -> Callable[[np.ndarray], np.ndarray]:
    """The content gate's detector as f(float32 [1, 3, 320, 320]) -> float32 [1, 22, anchors], through BLS."""
    return bls_fn(p.content_model, [p.content_input], p.content_output)


def dlpack_networks(p, device):
    """The four networks of ``FrameSwapperParams`` as ``pipeline.tensor_frames.TensorNetworks``
    over ``dlpack_bls`` (tensors crossing where ``bls_memory`` says): the ``torch`` profile's
    swap entry points, frames on ``device``.

    Raises:
        ValueError: ``detector_outputs`` does not name 9 heads, or ``FACESWAP_BLS_MEMORY`` is
            neither device nor host.
    """
    from pipeline.tensor_frames import TensorNetworks

    mem = bls_memory()
    det = dlpack_bls(p.detector_model, [p.detector_input], _detector_outputs(p), device, mem)
    rec = dlpack_bls(p.recognizer_model, [p.recognizer_input], [p.recognizer_output], device, mem)
    swp = dlpack_bls(p.swapper_model, [p.swapper_target, p.swapper_source], [p.swapper_output], device, mem)
    gate = dlpack_bls(p.content_model, [p.content_input], [p.content_output], device, mem)
    return TensorNetworks(det, lambda blob: rec(blob)[0], lambda blob, latents: swp(blob, latents)[0],
                          p.recognizer_max_batch, p.swapper_max_batch, lambda blob: gate(blob)[0])


def cancelled_check(request) -> Callable[[], None]:
    """A function raising StageError(CANCELLED) once the caller has cancelled ``request`` (its
    gRPC deadline passed or it hung up); long stages call it between chunks of work."""

    def check() -> None:
        if hasattr(request, "is_cancelled") and request.is_cancelled():
            raise StageError("request cancelled by the caller", _code("CANCELLED", "UNAVAILABLE"))

    return check


def respond(requests, handler: Callable[[object], list]) -> list:
    """Run ``handler(request) -> output tensors`` for each request; a failing request gets an
    error response (see ``error_response``) while the others in the batch still succeed."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handler(request)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error answer
            responses.append(error_response(exc))
    return responses
