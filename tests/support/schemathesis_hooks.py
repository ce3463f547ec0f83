"""Schemathesis hooks of ``tests/server/test_openapi_contract.py`` (loaded through
``SCHEMATHESIS_HOOKS``): real files where the document can only say "binary".

JSON Schema describes a file field as bytes; what makes the bytes an image or a video is
judged by the gateway from the bytes (415 ``unsupported_media_type``, 422 ``corrupt_image``,
described in the document). Random bytes would test only that refusal, so every case that is
meant to be valid (positive) gets real files: a face photo, a 16x16 two-frame MP4, a zip of one
image (``tests/fixtures/formats``); ``pairs`` as the JSON its ``contentSchema`` describes; media
URLs under the operator's prefixes. Negative cases keep what Schemathesis made of them.
"""

from __future__ import annotations

import json
import os
from functools import cache

import cv2
import schemathesis
from schemathesis.core.parameters import ParameterLocation

from repository.layout import ROOT
from tests.support.photos import load

FIXTURES = ROOT / "tests" / "fixtures" / "formats"
PHOTO_FIELDS = {"image", "target", "source", "file"}
URL_FIELDS = {"video_url", "archive_url", "result_url"}
FIXTURE_FIELDS = {"images": "image.jpg", "video": "video.mp4", "archive": "archive.zip"}
#: Two registered-looking ids (unknown: 404 face_not_found), as the pairs' contentSchema asks.
PAIRS = json.dumps([{"reference_face_id": "0" * 32, "source_face_id": "1" * 32}])


@cache
def face_photo() -> bytes:
    """The tests' portrait, 240 px wide (a face the real detector finds), as JPEG."""
    img = load("portrait_obama_official.jpg")
    h, w = img.shape[:2]
    small = cv2.resize(img, (240, round(h * 240 / w)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def real_file(field: str) -> bytes | None:
    """The real file for a form field (None: not a file field)."""
    if field in PHOTO_FIELDS:
        return face_photo()
    fixture = FIXTURE_FIELDS.get(field)
    return (FIXTURES / fixture).read_bytes() if fixture else None


def real_text(field: str, value):
    """``pairs`` as its contentSchema says; a media URL under the gateway's MEDIA_URL_PREFIXES
    (the job accepts it and then fails to fetch it, as a job whose URL is gone does). An empty
    value is a field left out, and stays."""
    if not value:
        return value
    if field == "pairs":
        return PAIRS
    prefixes = os.environ.get("FACESWAP_GATEWAY_MEDIA_URL_PREFIXES", "")
    if field in URL_FIELDS and prefixes:
        return prefixes.split(",")[0] + field
    return value


def _part(name: str, part):
    """A multipart part with the real file's bytes, or the real text, in it (its file name and
    content type kept)."""
    content = part[1] if isinstance(part, tuple) else part
    data = real_file(name)
    if data is None:
        data = real_text(name, content)
    if isinstance(part, tuple):
        return (part[0], data, *part[2:])
    return data


@schemathesis.hook
def before_call(context, case, kwargs):
    """Real files in a body that is meant to be valid (positive); a body meant to be invalid is
    sent as Schemathesis made it (its violation may be the file itself: empty, or not a string).
    Only the request on the wire changes, so the case, its metadata and its report stay
    Schemathesis' own (a reproduction command shows the generated stand-in text)."""
    meta = case.meta
    if meta is None or not isinstance(case.body, dict):
        return
    body = meta.components.get(ParameterLocation.BODY)  # none in the examples phase: the case's mode
    if not (body.mode if body is not None else meta.generation.mode).is_positive:
        return
    sent = case.as_transport_kwargs()
    files, data = sent.get("files"), sent.get("data")
    if files:
        kwargs["files"] = [(name, _part(name, part)) for name, part in files]
    if isinstance(data, dict):
        kwargs["data"] = {k: real_text(k, v) for k, v in data.items()}
