"""Stand-ins have exactly the real models' interfaces and (full size) about their compute."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from repository import standins


def io(model: onnx.ModelProto):
    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]

    return ([(i.name, dims(i)) for i in model.graph.input], [(o.name, dims(o)) for o in model.graph.output])


def test_scrfd_standin_has_det10g_heads(tmp_path):
    model, _ = standins.make_scrfd("tiny")
    ins, outs = io(model)
    assert ins == [("input.1", [1, 3, None, None])]
    assert [n for n, _ in outs] == list(standins.DET10G_OUTPUTS)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {"input.1": np.zeros((1, 3, 640, 640), np.float32)})
    ks = [12800, 3200, 800]
    assert [r.shape for r in res] == [(k, 1) for k in ks] + [(k, 4) for k in ks] + [(k, 10) for k in ks]
    assert res[0].max() < 0.5  # the stand-in detector finds nothing


def test_arcface_and_inswapper_interfaces():
    arc, _ = standins.make_arcface("tiny")
    assert io(arc) == ([("input.1", [None, 3, 112, 112])], [("683", [None, 512])])
    swp, _ = standins.make_inswapper("tiny")
    assert io(swp) == ([("target", [None, 3, 128, 128]), ("source", [None, 512])], [("output", [None, 3, 128, 128])])
    emap = numpy_helper.to_array(swp.graph.initializer[-1])
    assert emap.shape == (512, 512) and emap.dtype == np.float32


def test_standins_are_seeded():
    a, _ = standins.make_inswapper("tiny")
    b, _ = standins.make_inswapper("tiny")
    assert a.SerializeToString() == b.SerializeToString()


def test_insightface_routes_standins_like_real_models(tmp_path):
    import insightface  # noqa: F401  (make setup installs insightface==0.7.3)
    from insightface.model_zoo import get_model

    report = standins.generate(tmp_path, "tiny")
    assert type(get_model(report["w600k_r50"]["path"])).__name__ == "ArcFaceONNX"
    rec = get_model(report["w600k_r50"]["path"])
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
    assert type(get_model(report["inswapper_128"]["path"])).__name__ == "INSwapper"


@pytest.mark.parametrize("name,builder", [("det_10g", standins.make_scrfd), ("w600k_r50", standins.make_arcface),
                                          ("inswapper_128", standins.make_inswapper)])
def test_full_standins_within_25_percent_of_published_flops(name, builder):
    _, gflop = builder("full")
    assert 0.75 <= gflop / standins.PUBLISHED_GFLOP[name] <= 1.25, gflop


#: sha256 (first 16 hex digits) of each tiny stand-in per builder version. A builder whose
#: output changes must get a new version in standins.VERSIONS (a new file name, so no cache
#: of the old graph is reused) and its fingerprint here.
FINGERPRINTS = {
    ("det_10g", 1): "0cc8e21740633676",
    ("w600k_r50", 1): "8675a30a01e635ad",
    ("inswapper_128", 2): "33b364749f22be42",
    ("content_flag_all", 1): "8ec387f4b8a03455",
    ("content_flag_none", 1): "0906c9100f3c393d",
}


@pytest.mark.parametrize("name", list(standins.BUILDERS))
def test_changed_builder_gets_a_new_version(name):
    import hashlib

    model, _ = standins.BUILDERS[name]("tiny")
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()[:16]
    version = standins.VERSIONS[name]
    assert FINGERPRINTS.get((name, version)) == digest, (
        f"{name}'s stand-in changed ({digest}): bump standins.VERSIONS[{name!r}] and record "
        f"({name!r}, {version + 1}): {digest!r} in FINGERPRINTS")


def test_generate_does_not_reuse_another_version_or_size(tmp_path, monkeypatch):
    first = standins.generate(tmp_path, "tiny", ("inswapper_128",))["inswapper_128"]["path"]
    assert first.endswith(f"inswapper_128.v{standins.VERSIONS['inswapper_128']}.onnx")
    mtime = Path(first).stat().st_mtime_ns
    assert standins.generate(tmp_path, "tiny", ("inswapper_128",))["inswapper_128"]["path"] == first
    assert Path(first).stat().st_mtime_ns == mtime  # cached
    # An old near-identity file under the old name is never picked up.
    (tmp_path / "inswapper_128.onnx").write_bytes(b"old")
    # A .json saying another size (or version) makes it build again.
    meta = Path(first).with_suffix(".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "size": "full"}))
    standins.generate(tmp_path, "tiny", ("inswapper_128",))
    assert json.loads(meta.read_text())["size"] == "tiny"
    monkeypatch.setitem(standins.VERSIONS, "inswapper_128", 99)
    bumped = standins.generate(tmp_path, "tiny", ("inswapper_128",))["inswapper_128"]["path"]
    assert bumped.endswith("inswapper_128.v99.onnx") and bumped != first
    assert json.loads(Path(bumped).with_suffix(".json").read_text())["version"] == 99
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture(scope="module")
def swapper():
    model, _ = standins.make_inswapper("tiny")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda target, source: sess.run(["output"], {"target": target, "source": source})[0]


def _targets() -> np.ndarray:
    """float32 [3, 3, 128, 128] RGB in [0, 1] as inswapper gets them: a real face, black, white."""
    from tests.support.photos import load

    img = load("portrait_obama_official.jpg")
    h, w = img.shape[:2]
    s = min(h, w)
    face = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (128, 128))
    crops = np.stack([face, np.zeros_like(face), np.full_like(face, 255)])
    return cv2.dnn.blobFromImages(list(crops), 1.0 / 255, (128, 128), (0, 0, 0), swapRB=True)


def _latents(n: int, seed: int) -> np.ndarray:
    lat = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return lat / np.linalg.norm(lat, axis=1, keepdims=True)


def test_swapper_standin_output_is_visibly_not_its_input(swapper):
    target = _targets()
    out = swapper(target, _latents(3, 1))
    assert out.shape == target.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    mad = np.abs(out - target).mean(axis=(1, 2, 3))
    assert (mad > 0.08).all(), mad  # > 20 of 255 grey levels on average, per crop (black ones too)
    # ... yet the face stays readable: the output's luminance follows the target's.
    luma = np.array([0.299, 0.587, 0.114], np.float32).reshape(3, 1, 1)
    corr = np.corrcoef((out[0] * luma).sum(0).ravel(), (target[0] * luma).sum(0).ravel())[0, 1]
    assert corr > 0.3, corr


def test_swapper_standin_look_depends_on_the_latent(swapper):
    target = np.repeat(_targets()[:1], 4, axis=0)
    lat = _latents(4, 2)
    out = swapper(target, lat)
    for i in range(4):
        for j in range(i + 1, 4):
            d = np.abs(out[i] - out[j]).mean()
            assert d > 0.08, (i, j, d)
    # Each face only depends on its own latent: batching changes nothing.
    np.testing.assert_allclose(swapper(target[2:3], lat[2:3]), out[2:3], atol=1e-5)
    # The same latent gives the same look.
    np.testing.assert_array_equal(swapper(target[:1], lat[:1]), swapper(target[:1], lat[:1]))
