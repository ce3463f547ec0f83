"""Stand-ins have exactly the real models' interfaces and (full size) about their compute."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tools import standins


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
    pytest.importorskip("insightface")
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
