"""A network that returns NaN fails loudly: never a 200 with a black face.

The test builds a NaN-producing swapper from the tiny stand-in (its output multiplied by a NaN
constant; the emap initializer stays last), serves it from a real Triton, and calls it directly
and through the gateway.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from client import FaceSwapClient, ModelOutputInvalid
from tests.support.broken_models import nan_swapper
from tests.support.gateway_calls import GROUP, OBAMA, files
from tests.support.servers import Gateway, start_triton


@pytest.fixture(scope="module")
def nan_triton(models, tmp_path_factory):
    run = tmp_path_factory.mktemp("nan_triton")
    nan_swapper(models["swapper"].path, str(run / "nan_swapper.onnx"))
    broken = {**models, "swapper": dataclasses.replace(models["swapper"], path=str(run / "nan_swapper.onnx"))}
    server = start_triton(broken, run)
    yield server
    server.stop()


def test_nan_swapper_is_an_error_not_a_black_face(nan_triton, tmp_path):
    with FaceSwapClient(nan_triton.grpc_url, "grpc") as c:
        latent = c.embed(OBAMA).largest().latent  # detector and ArcFace are fine
        with pytest.raises(ModelOutputInvalid, match="face_swapper"):
            c.swap(GROUP.read_bytes(), latent)
    g = Gateway(nan_triton.grpc_url, tmp_path / "faces.sqlite3").start()
    try:
        with httpx.Client(base_url=g.url, timeout=120) as h:
            r = h.post("/v1/swap", files=files(target=GROUP, source=OBAMA))
            assert (r.status_code, r.json()["code"]) == (502, "model_output_invalid")
            assert "face_swapper" in r.json()["message"]
            assert 'gateway_triton_errors_total{code="model_output_invalid"} 1.0' in h.get("/metrics").text
            deep = h.get("/readyz", params={"deep": 1})
            assert deep.status_code == 503 and deep.json()["deep"]["ok"] is False
    finally:
        g.stop()
