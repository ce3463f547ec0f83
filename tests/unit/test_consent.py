"""The operator's consent setting on POST /v1/faces (issue 21): with CONSENT_REQUIRED, a
registration without ``consent=true`` is 422 consent_required before any work; without the
setting, nothing changes. (Registering with consent against a real Triton: tests/server/test_content.py.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.core.config import Settings
from gateway.main import create_app

PNG = cv2.imencode(".png", np.full((80, 80, 3), 128, np.uint8))[1].tobytes()


@pytest.fixture(params=[True, False], ids=["consent_required", "default"])
def client(request, tmp_path):
    # Triton is unreachable on purpose: a request that passes the consent check then fails there
    settings = Settings(store_path=tmp_path / "faces.sqlite3", jobs_dir=tmp_path / "jobs", triton_url="127.0.0.1:1",
                        consent_required=request.param, request_timeout_s=5)
    with TestClient(create_app(settings)) as c:
        yield request.param, c


@pytest.mark.parametrize("consent", [None, "false", "true"])
def test_registration_needs_consent_only_when_the_operator_says_so(client, consent):
    required, c = client
    data = {} if consent is None else {"consent": consent}
    r = c.post("/v1/faces", files={"image": ("a.png", PNG, "image/png")}, data=data)
    if required and consent != "true":
        assert r.status_code == 422 and r.json()["code"] == "consent_required", r.text
        assert "consent=true" in r.json()["message"]
    else:  # the check passed: the request went on to the (unreachable) pipeline
        assert r.json()["code"] != "consent_required" and r.status_code in (502, 503, 504), r.text
