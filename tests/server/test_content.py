"""The content gate's detector served by a real tritonserver (``content_detector``, CPU profile):
on every shared photo it answers what onnxruntime answers directly (within the self-check's
parity bound when a faster precision serves), and refuses none of them."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient

from pipeline import content as C
from pipeline import precision as prec
from tests.support.photos import IMAGES
from tests.support.servers import Gateway, served_precision


def test_triton_serves_the_real_detector_and_it_refuses_no_shared_photo(triton, models):
    model = models["content"]
    assert not model.stand_in, model
    direct = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    precision = served_precision(triton, "content_detector")
    bound = 1e-5 if precision == "f32" else prec.THRESHOLDS["content"]["score_diff"]
    photos = sorted(p for p in glob.glob(str(IMAGES / "*")) if p.endswith((".jpg", ".png")))
    assert len(photos) >= 20
    worst = 0.0
    with httpclient.InferenceServerClient(triton.http_url) as client:
        meta = client.get_model_config("content_detector")
        assert [list(map(int, i["dims"])) for i in meta["input"]] == [[3, 320, 320]]
        for path in photos:
            blob, _ = C.preprocess(cv2.imread(path))
            inp = httpclient.InferInput("images", list(blob.shape), "FP32")
            inp.set_data_from_numpy(blob)
            served = client.infer("content_detector", [inp]).as_numpy("output0")
            ref = direct.run(["output0"], {"images": blob})[0]
            assert served.shape == ref.shape == (1, C.OUTPUT_ROWS, C.ANCHORS)
            worst = max(worst, float(np.abs(served[:, 4:] - ref[:, 4:]).max()))
            assert not C.decide(served)[0].refused, path
    assert worst <= bound, (precision, worst)


def test_the_gate_is_off_only_by_the_server_setting_and_says_so(triton, tmp_path):
    import httpx

    g = Gateway(triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env["FACESWAP_GATEWAY_CONTENT_GATE"] = "false"
    g.start()
    try:
        ready = httpx.get(f"{g.url}/readyz", timeout=30).json()
        metrics = httpx.get(f"{g.url}/metrics", timeout=30).text
    finally:
        g.stop()
    assert ready["content_gate"] == {"enabled": False, "policy": None, "classes": None, "threshold": None}
    assert "\ngateway_content_gate 0.0\n" in metrics
    assert "CONTENT GATE IS OFF" in g.log.read_text()


def test_with_consent_required_a_registration_stating_consent_goes_through(triton, tmp_path):
    import httpx

    g = Gateway(triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env["FACESWAP_GATEWAY_CONSENT_REQUIRED"] = "true"
    g.start()
    try:
        photo = {"image": ("p.jpg", (IMAGES / "portrait_obama_official.jpg").read_bytes(), "image/jpeg")}
        refused = httpx.post(f"{g.url}/v1/faces", files=photo, timeout=60)
        ok = httpx.post(f"{g.url}/v1/faces", files=photo, data={"consent": "true"}, timeout=120)
    finally:
        g.stop()
    assert refused.status_code == 422 and refused.json()["code"] == "consent_required"
    assert ok.status_code == 200 and len(ok.json()["faces"]) >= 1, ok.text
