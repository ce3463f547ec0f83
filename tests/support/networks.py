"""The four networks as ``pipeline.frames.Networks`` over onnxruntime f32 sessions on the CPU:
the entry points' own functions run in-process, without Triton's BLS calls."""

from __future__ import annotations

import onnxruntime as ort

from pipeline.frames import Networks


def onnxruntime_networks(models: dict) -> Networks:
    """``Networks`` for ``models`` (``repository.resolve``: detector, recognizer, swapper,
    content), with the batch limits the CPU repository gives them (ArcFace 32, swapper 8)."""
    s = {r: ort.InferenceSession(m.path, providers=["CPUExecutionProvider"]) for r, m in models.items()}
    det, rec, swp, gate = s["detector"], s["recognizer"], s["swapper"], s["content"]
    return Networks(lambda blob: det.run(None, {det.get_inputs()[0].name: blob}),
                    lambda blob: rec.run(None, {rec.get_inputs()[0].name: blob})[0],
                    lambda blob, lat: swp.run(None, {"target": blob, "source": lat})[0], 32, 8,
                    lambda blob: gate.run(None, {gate.get_inputs()[0].name: blob})[0])


def tensor_networks(nets: Networks):
    """``nets`` as ``pipeline.tensor_frames.TensorNetworks``: tensors in and out, the same
    sessions behind (the device path's arithmetic with the host path's networks)."""
    import numpy as np
    import torch

    from pipeline.tensor_frames import TensorNetworks, host

    def wrap(fn):
        def call(*tensors):
            out = fn(*[host(t) for t in tensors])
            return [torch.from_numpy(np.asarray(o)) for o in out] if isinstance(out, list) else torch.from_numpy(out)
        return call

    return TensorNetworks(wrap(nets.detect_fn), wrap(nets.embed_fn), wrap(nets.swap_fn), nets.embed_batch,
                          nets.swap_batch, wrap(nets.content_fn))
