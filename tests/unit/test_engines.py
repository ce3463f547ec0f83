"""CPU engines: OpenVINO f32 equals onnxruntime; bf16 passes a parity bar on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import engines
from pipeline.align import crops_to_blob, norm_crop
from pipeline.detection import decode_scrfd, detector_blob, letterbox
from pipeline.embedding import SWAP_MEAN, SWAP_STD
from pipeline.quality import psnr
from tests.support.photos import load

try:
    import openvino  # noqa: F401
except ImportError as exc:  # a missing package fails the tests, saying what to install
    raise ImportError("install openvino (make setup does)") from exc


def run_detector(run, img):
    det_img, scale = letterbox(img, (640, 640))
    return decode_scrfd(run({"input.1": detector_blob(det_img)}), (640, 640), scale)


@pytest.fixture(scope="module")
def faces(models):
    import onnx

    det_path = models["detector"].path
    outs = [o.name for o in onnx.load(det_path, load_external_data=False).graph.output]
    ref = engines.load(det_path, outs)
    img = load("group_insightface_t1.jpg")
    return img, outs, run_detector(ref, img)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_detector_matches_onnxruntime(models, faces, precision):
    img, outs, ref = faces
    ours = run_detector(engines.load(models["detector"].path, outs, "openvino", precision), img)
    assert len(ours) == len(ref) == 6
    tol = 0.01 if precision == "f32" else 2.0
    assert np.abs(ours.boxes - ref.boxes).max() <= tol and np.abs(ours.kps - ref.kps).max() <= tol


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_swapper_parity_on_real_crops(models, faces, precision):
    img, _, dets = faces
    crops = np.stack([norm_crop(img, k, 128)[0] for k in dets.kps])
    blob = crops_to_blob(crops, SWAP_MEAN, SWAP_STD)
    lat = np.random.default_rng(0).standard_normal((len(crops), 512)).astype(np.float32)
    lat /= np.linalg.norm(lat, axis=1, keepdims=True)
    path = models["swapper"].path
    ref = engines.load(path, ["output"])({"target": blob, "source": lat})[0]
    out = engines.load(path, ["output"], "openvino", precision)({"target": blob, "source": lat})[0]
    db = psnr(out, ref, peak=1.0)
    assert db >= (80 if precision == "f32" else 45), db


def test_engine_settings_are_validated(monkeypatch):
    from repository.generate import cpu_engine

    monkeypatch.setenv("FACESWAP_ENGINE", "openvino")
    monkeypatch.setenv("FACESWAP_PRECISION", "bf16")
    assert cpu_engine() == ("openvino", "bf16")
    monkeypatch.setenv("FACESWAP_ENGINE", "onnxruntime")
    assert cpu_engine() == ("onnxruntime", "bf16")  # bf16 and int8 always run on OpenVINO
    monkeypatch.delenv("FACESWAP_PRECISION")
    assert cpu_engine() == ("onnxruntime", "auto")  # the default: the load-time self-check decides
    monkeypatch.setenv("FACESWAP_PRECISION", "fp32")
    with pytest.raises(ValueError, match="FACESWAP_PRECISION='fp32' is not one of auto, f32, bf16, int8, fp16"):
        cpu_engine()
    monkeypatch.setenv("FACESWAP_PRECISION", "fp16")
    with pytest.raises(ValueError, match="fp16: torch only"):
        cpu_engine()
    monkeypatch.setenv("FACESWAP_ENGINE", "torch")
    assert cpu_engine() == ("torch", "fp16")
    monkeypatch.setenv("FACESWAP_PRECISION", "int8")
    with pytest.raises(ValueError, match="int8: onnxruntime or openvino"):
        cpu_engine()
    with pytest.raises(ValueError, match="fp16 runs on engine torch only"):
        engines.load("x.onnx", [], "openvino", "fp16")
    with pytest.raises(ValueError, match="engine"):
        engines.load("x.onnx", [], "tensorflow")


def test_torch_engine_is_onnxruntime_on_the_cpu(models, faces, monkeypatch):
    """Engine ``torch`` (the GPU profile's networks where there is no TensorRT), run here on the
    CPU in f32: the detector's faces and the swapper's output are onnxruntime's; the self-check
    offers its reduced types on a GPU only."""
    from pipeline import precision as prec

    monkeypatch.delenv("FACESWAP_TORCH_DEVICE", raising=False)
    img, outs, ref = faces
    ours = run_detector(engines.load(models["detector"].path, outs, "torch"), img)
    assert len(ours) == len(ref) and np.abs(ours.boxes - ref.boxes).max() < 0.01
    crops = np.stack([norm_crop(img, k, 128)[0] for k in ref.kps])
    feeds = {"target": crops_to_blob(crops, SWAP_MEAN, SWAP_STD),
             "source": np.random.default_rng(0).standard_normal((len(crops), 512)).astype(np.float32)}
    path = models["swapper"].path
    want = engines.load(path, ["output"])(feeds)[0]
    assert psnr(engines.load(path, ["output"], "torch")(feeds)[0], want, peak=1.0) >= 70  # measured 78 dB
    cands, notes = prec.candidates(path, "torch", [], None, True)
    assert [(c.precision, c.engine) for c in cands] == [("f32", "torch")] and "GPU only" in notes[0]
    monkeypatch.setenv("FACESWAP_TORCH_DEVICE", "cuda")
    cands, _ = prec.candidates(path, "torch", [], None, True)
    assert [(c.precision, c.engine) for c in cands] == [("f32", "torch"), ("bf16", "torch"), ("fp16", "torch")]
    with pytest.raises(ValueError, match="not int8"):
        engines.load(path, ["output"], "torch", "int8")
