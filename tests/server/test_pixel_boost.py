"""Pixel boost through the server (``FaceSwapClient``) and the gateway (422 on a bad value).
Detector: the real SCRFD; swapper: the tiny stand-in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.support.gateway_calls import swap
from tests.support.photos import image_path

GROUP = "group_insightface_t1.jpg"


def test_server_swaps_with_pixel_boost_and_keeps_quality_figures(triton, source_latent):
    from client import FaceSwapClient, InvalidInput

    with FaceSwapClient(triton.http_url, timeout=300) as c:
        plain = c.swap(image_path(GROUP), source_latent, output_format="png")
        boosted = c.swap(image_path(GROUP), source_latent, output_format="png", pixel_boost=256)
        with pytest.raises(InvalidInput, match="pixel_boost"):
            c.swap(image_path(GROUP), source_latent, pixel_boost=200)
    a = cv2.imdecode(np.frombuffer(plain.image, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(boosted.image, np.uint8), cv2.IMREAD_COLOR)
    assert boosted.faces_swapped == plain.faces_swapped >= 6 and a.shape == b.shape
    assert not np.array_equal(a, b)
    assert [q.face for q in boosted.face_quality] == boosted.selected
    assert all(-1 <= q.identity_leakage <= 1 for q in boosted.face_quality)


def test_gateway_rejects_a_bad_pixel_boost_with_422(http):  # noqa: F811
    r = swap(http, image_path(GROUP), image_path("portrait_obama_official.jpg"), pixel_boost=300)
    assert r.status_code == 422 and r.json()["code"] == "invalid_option", r.text
    assert "pixel_boost" in r.json()["message"]
    r = swap(http, image_path(GROUP), image_path("portrait_obama_official.jpg"), pixel_boost=256)
    assert r.status_code == 200, r.text
