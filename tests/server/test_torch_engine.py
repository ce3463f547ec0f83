"""The ``torch`` profile inside a real tritonserver (the GPU profile where the server has no
TensorRT, issue 20), here on the CPU: the networks on engine ``torch``, the swap entry points
keeping each frame on the torch device (``pipeline.tensor_frames``) and calling the networks with
tensors by DLPack; the precision self-check names the engine, and a swap equals the default
path's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from client import FaceSwapClient
from pipeline.local import onnxruntime_networks
from pipeline.quality import face_psnr, psnr
from tests.support.photos import image_path
from tests.support.servers import start_triton

GROUP = image_path("two_obama_biden_stage.jpg")
SOURCE = image_path("portrait_obama_official.jpg")


@pytest.fixture(scope="module")
def torch_triton(models, tmp_path_factory, request):
    mp = pytest.MonkeyPatch()
    mp.delenv("FACESWAP_ENGINE", raising=False)
    mp.setenv("FACESWAP_TORCH_DEVICE", "cpu")
    run = tmp_path_factory.mktemp("torch_triton")
    try:
        server = start_triton(models, run, "torch")
    finally:
        mp.undo()
    yield server
    server.stop()


def test_a_swap_on_torch_networks_is_the_onnxruntime_swap(models, torch_triton):
    """The server's answer against the same stages run here with onnxruntime f32 sessions
    (``pipeline.frames.swap_frame``, what face_swap runs, with the content gate)."""
    from pipeline.frames import DetectSettings, swap_frame
    from pipeline.selection import SwapOptions

    nets = onnxruntime_networks(models)
    with FaceSwapClient(torch_triton.grpc_url, "grpc", timeout=120) as c:
        latent = c.embed(SOURCE).largest().latent
        ours = c.swap(GROUP, latent, output_format="png")
        stats = c.statistics()
    ref = swap_frame(GROUP.read_bytes(), SwapOptions(output_format="png"), nets, DetectSettings(),
                     latent[None].astype(np.float32))
    assert ours.faces_swapped == len(ref.aligned.crops) == 3
    a, b = (cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in (ref.data, ours.image))
    assert psnr(b, a) >= 45  # the tensor stages' warps and blends against OpenCV's (tests/unit/test_tensor_frames.py)
    assert min(face_psnr(a, b, ref.dets.kps[ref.aligned.selected])) >= 40
    assert np.abs(np.stack([f.box for f in ours.faces]) - ref.dets.boxes).max() <= 1.0
    assert int(stats["face_swapper"]["execution_count"]) >= 1
    log = torch_triton.log_file.read_text()
    assert "face_swapper: f32 (torch)" in log and "face_detector: f32 (torch)" in log
    assert "face_swap: frames on cpu (pipeline.tensor_frames), networks called by DLPack" in log
