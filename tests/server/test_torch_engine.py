"""The networks on engine ``torch`` inside a real tritonserver (the GPU profile's networks where
the server has no TensorRT, issue 20), here on the CPU: the Python-backend stubs import PyTorch,
the precision self-check names the engine, and a swap equals the default server's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from client import FaceSwapClient
from pipeline.quality import psnr
from tests.support.networks import onnxruntime_networks
from tests.support.photos import image_path
from tests.support.servers import start_triton

GROUP = image_path("two_obama_biden_stage.jpg")
SOURCE = image_path("portrait_obama_official.jpg")


@pytest.fixture(scope="module")
def torch_triton(models, tmp_path_factory, request):
    mp = pytest.MonkeyPatch()
    mp.setenv("FACESWAP_ENGINE", "torch")
    mp.setenv("FACESWAP_TORCH_DEVICE", "cpu")
    run = tmp_path_factory.mktemp("torch_triton")
    try:
        server = start_triton(models, run)
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
    assert psnr(b, a) >= 50
    assert int(stats["face_swapper"]["execution_count"]) >= 1
    log = torch_triton.log_file.read_text()
    assert "face_swapper: f32 (torch)" in log and "face_detector: f32 (torch)" in log
