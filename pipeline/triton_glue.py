"""Helpers shared by the Triton Python models (imported only inside the Python backend stub)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils


def parameters(args: dict) -> dict[str, str]:
    """The model's config.pbtxt ``parameters`` as {key: string_value}."""
    cfg = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}


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


def error_response(exc: Exception) -> "pb_utils.InferenceResponse":
    """INVALID_ARG response with the exception's message (what the client shows a person)."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))


def bls_fn(model_name: str, input_names: list[str], output_name: str) -> Callable[..., np.ndarray]:
    """A callable running ``model_name`` synchronously through BLS: f(*arrays) -> output array.

    Raises:
        RuntimeError: the called model answered with an error.
    """

    def call(*arrays: np.ndarray) -> np.ndarray:
        return _bls(model_name, input_names, arrays, [output_name])[0]

    return call


def _bls(model: str, input_names: list[str], arrays, outputs: list[str]) -> list[np.ndarray]:
    """One synchronous BLS request; the outputs in the given order (RuntimeError on failure)."""
    inputs = [pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(input_names, arrays)]
    resp = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=inputs).exec()
    if resp.has_error():
        raise RuntimeError(f"{model}: {resp.error().message()}")
    return [pb_utils.get_output_tensor_by_name(resp, o).as_numpy() for o in outputs]


def bls_detector(params: dict[str, str]) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """The detector as f(blob) -> its 9 heads in graph order, through BLS; None when the config
    has no ``detector_outputs`` or ``close_up_retry`` is "false"."""
    outputs = [o for o in params.get("detector_outputs", "").split(",") if o]
    if len(outputs) != 9 or params.get("close_up_retry", "true") != "true":
        return None
    model, input_name = params.get("detector_model", "face_detector"), params.get("detector_input", "input.1")

    return lambda blob: _bls(model, [input_name], [blob], outputs)


def respond(requests, handler: Callable[[object], list]) -> list:
    """Run ``handler(request) -> output tensors`` for each request; a failing request gets an
    INVALID_ARG error response while the others in the batch still succeed."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handler(request)))
        except (ValueError, RuntimeError) as exc:
            responses.append(error_response(exc))
    return responses
