"""The networks in-process, without Triton: for the tests, the benchmarks and the GPU run's
parity check, which call the entry points' own functions (``pipeline.frames``,
``pipeline.tensor_frames``) with these in place of the BLS calls.

- ``onnxruntime_networks``: onnxruntime f32 sessions on the CPU as ``frames.Networks`` (the
  reference numerics);
- ``tensor_networks``: any ``frames.Networks`` behind tensors (the device path's arithmetic with
  the host path's networks);
- ``torch_networks``: the ONNX graphs as torch modules (``pipeline.torch_net``) on a device, as
  ``tensor_frames.TensorNetworks`` (the ``torch`` profile's networks without Triton).

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


def torch_networks(models: dict, device="cpu", dtype=None):
    """``tensor_frames.TensorNetworks`` of the ONNX graphs as torch modules on ``device``
    (``dtype``: torch.float32 by default; bf16/fp16 for the heavy ops)."""
    import onnx
    import torch

    from pipeline.tensor_frames import TensorNetworks
    from pipeline.torch_net import OnnxModule

    mods = {r: OnnxModule(onnx.load(models[r].path), dtype or torch.float32, device)
            for r in ("detector", "recognizer", "swapper", "content")}

    def swap(blob, latents):  # inswapper's inputs are named target and source (insightface inswapper.py)
        feeds = {"target": blob, "source": latents}
        return mods["swapper"](*[feeds[n] for n in mods["swapper"].inputs])[0]

    return TensorNetworks(lambda b: mods["detector"](b), lambda b: mods["recognizer"](b)[0], swap,
                          EMBED_BATCH, SWAP_BATCH, lambda b: mods["content"](b)[0])
