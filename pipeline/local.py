"""The networks in-process, without Triton: for the tests, the benchmarks and the GPU run's
parity check, which call the entry points' own functions (``pipeline.frames``,
``pipeline.tensor_frames``) with these in place of the BLS calls.

- ``onnxruntime_networks``: onnxruntime f32 sessions on the CPU as ``frames.Networks`` (the
  reference numerics);
- ``tensor_networks``: any ``frames.Networks`` behind tensors (the device path's arithmetic with
  the host path's networks);
- ``torch_networks``: the ONNX graphs as torch modules (``pipeline.torch_net``) on a device, as
  ``tensor_frames.TensorNetworks`` (the ``torch`` profile's networks without Triton);
- ``engine_networks``: the same as engine ``torch`` serves them (precision, CUDA graphs, one
  call at a time per network).

Each takes ``models`` as ``repository.resolve`` gives them (detector, recognizer, swapper,
content) and the batch limits the repositories give (ArcFace 32, swapper 8).
"""

from __future__ import annotations

import numpy as np

from pipeline.frames import Networks

EMBED_BATCH, SWAP_BATCH = 32, 8


def onnxruntime_networks(models: dict) -> Networks:
    """``frames.Networks`` over onnxruntime f32 sessions on the CPU."""
    import onnxruntime as ort

    s = {r: ort.InferenceSession(m.path, providers=["CPUExecutionProvider"]) for r, m in models.items()}
    det, rec, swp, gate = s["detector"], s["recognizer"], s["swapper"], s["content"]
    return Networks(lambda blob: det.run(None, {det.get_inputs()[0].name: blob}),
                    lambda blob: rec.run(None, {rec.get_inputs()[0].name: blob})[0],
                    lambda blob, lat: swp.run(None, {"target": blob, "source": lat})[0], EMBED_BATCH, SWAP_BATCH,
                    lambda blob: gate.run(None, {gate.get_inputs()[0].name: blob})[0])


def tensor_networks(nets: Networks):
    """``nets`` as ``tensor_frames.TensorNetworks``: tensors in and out (on the host), the same
    networks behind."""
    import torch

    from pipeline.tensor_frames import TensorNetworks, host

    def wrap(fn):
        def call(*tensors):
            out = fn(*[host(t) for t in tensors])
            return [torch.from_numpy(np.asarray(o)) for o in out] if isinstance(out, list) else torch.from_numpy(out)

        return call

    return TensorNetworks(wrap(nets.detect_fn), wrap(nets.embed_fn), wrap(nets.swap_fn), nets.embed_batch,
                          nets.swap_batch, wrap(nets.content_fn))


def _swap_fn(input_names: list[str], fn):
    """The swapper ``fn(*inputs in graph order) -> [outputs]`` as f(blob, latents) -> its first
    output (inswapper's inputs are named target and source: insightface inswapper.py)."""
    return lambda blob, latents: fn(*[{"target": blob, "source": latents}[n] for n in input_names])[0]


def torch_networks(models: dict, device="cpu", dtype=None):
    """``tensor_frames.TensorNetworks`` of the ONNX graphs as torch modules on ``device``
    (``dtype``: torch.float32 by default; bf16/fp16 for the heavy ops)."""
    import onnx
    import torch

    from pipeline.tensor_frames import TensorNetworks
    from pipeline.torch_net import OnnxModule

    mods = {r: OnnxModule(onnx.load(models[r].path), dtype or torch.float32, device)
            for r in ("detector", "recognizer", "swapper", "content")}
    return TensorNetworks(lambda b: mods["detector"](b), lambda b: mods["recognizer"](b)[0],
                          _swap_fn(mods["swapper"].inputs, mods["swapper"]), EMBED_BATCH, SWAP_BATCH,
                          lambda b: mods["content"](b)[0])


def engine_networks(models: dict, precision: str = "f32"):
    """``tensor_frames.TensorNetworks`` of the networks as engine ``torch`` serves them
    (``pipeline.engines.load``: on ``engines.torch_device()``, ``precision`` f32, bf16 or fp16,
    replayed from CUDA graphs on CUDA), each behind a lock as a Triton instance runs one call at
    a time: the ``torch`` profile's networks in one process, for ``bench.gpu_run``."""
    import threading

    import onnx

    from pipeline.engines import load
    from pipeline.tensor_frames import TensorNetworks

    def net(role: str):
        graph = onnx.load(models[role].path, load_external_data=False).graph
        inputs = [i.name for i in graph.input]
        run = load(models[role].path, [o.name for o in graph.output], "torch", precision).tensors
        lock = threading.Lock()

        def call(*tensors) -> list:
            with lock:
                return run(dict(zip(inputs, tensors)))

        return call, inputs

    (det, _), (rec, _), (swp, swp_inputs), (gate, _) = (net(r) for r in ("detector", "recognizer", "swapper",
                                                                          "content"))
    return TensorNetworks(det, lambda b: rec(b)[0], _swap_fn(swp_inputs, swp), EMBED_BATCH, SWAP_BATCH,
                          lambda b: gate(b)[0])
