"""Every output says it is AI-made, through the real gateway and Triton (tiny stand-ins): swapped
images, video job results and stream frames carry a valid C2PA manifest, the XMP
DigitalSourceType and the watermark; ``/v1/verify`` reads them back (after a re-encode too) and
says when this service made the result; an ordinary photo has no marks; only a server setting
turns marking off, and the log says so."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from client.live import read_frames, stream_frames
from tests.support.photos import image_path
from tests.support.servers import Gateway, jobs_gateway

SOURCE = image_path("portrait_astronaut_eileen_collins.png")
TARGET = image_path("group_insightface_t1.jpg")
CLIP = image_path("video_astronaut_zoompan_384.mp4")


@pytest.fixture(scope="module")
def gw(triton, tmp_path_factory):
    g = jobs_gateway(triton.grpc_url, tmp_path_factory.mktemp("marking"))
    yield g
    g.stop()


def verify(gw, data: bytes, name: str) -> dict:
    r = httpx.post(gw.url + "/v1/verify", files={"file": (name, data)}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def swap(gw, fmt: str = "jpeg", **form) -> httpx.Response:
    r = httpx.post(gw.url + "/v1/swap", files={"source": ("s.png", SOURCE.read_bytes()),
                                               "target": ("t.jpg", TARGET.read_bytes())},
                   data={"output_format": fmt, **form}, timeout=120)
    assert r.status_code == 200 and int(r.headers["x-faces-swapped"]) > 0, r.text[:300]
    swapped = [f for f in json.loads(r.headers["x-faces"]) if f["swapped"]]
    # the gateway sends the source's embedding: both quality figures are there for each swapped face
    assert swapped and all(-1 <= f["identity_transfer"] <= 1 and -1 <= f["identity_leakage"] <= 1 for f in swapped)
    return r


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_swapped_images_carry_three_marks_and_verify_knows_them(gw, fmt):
    t = time.time()
    out = swap(gw, fmt).content
    rep = verify(gw, out, f"out.{fmt}")
    assert rep["c2pa"]["present"] and rep["c2pa"]["valid"], rep["c2pa"]
    assert [a.get("action") for a in rep["c2pa"]["actions"]] == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert rep["c2pa"]["actions"][1]["digitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
    assert rep["watermark"]["matches_manifest"] is True
    assert rep["xmp"]["ai_generated"] and rep["watermark"]["found"], rep["summary"]
    assert rep["result"]["ours"] and rep["result"]["known"] and rep["result"]["kind"] == "image"
    assert t - 5 <= rep["result"]["created_at"] <= time.time() + 1
    assert set(rep["marks_found"]) == {"c2pa", "xmp", "watermark"} and rep["ai_generated"]


def test_a_jpeg_result_is_compressed_once_with_its_watermark_inside(gw, triton):
    """The watermark goes into the pixels inside Triton, before the one encode; the gateway only
    adds XMP and C2PA to those bytes. So the gateway's JPEG decodes to exactly the pixels of
    Triton's own answer with the same watermark payload, and another JPEG pass (what marking
    after the encode used to do) would not."""
    import cv2
    import numpy as np

    from client import FaceSwapClient

    out = swap(gw, "jpeg").content
    rep = verify(gw, out, "out.jpg")
    assert rep["watermark"]["found"], rep["summary"]
    with FaceSwapClient(triton.grpc_url, "grpc", timeout=120) as c:
        face = c.embed(SOURCE).largest()
        res = c.swap(TARGET.read_bytes(), face.latent, source_embedding=face.embedding, output_format="jpeg",
                     quality=95, watermark=rep["watermark"]["payload"]["hex"])
    assert res.watermarked and res.format == "jpeg"
    steps = res.stage_ms["steps"]
    assert steps["decode"] > 0 and steps["encode"] > 0 and steps["watermark"] > 0, res.stage_ms
    ours = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    triton_pixels = cv2.imdecode(np.frombuffer(res.image, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(ours, triton_pixels)
    twice = cv2.imdecode(cv2.imencode(".jpg", triton_pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], cv2.IMREAD_COLOR)
    assert not np.array_equal(twice, triton_pixels)  # a second compression would have shown


def test_a_reencoded_copy_is_still_recognised_and_a_camera_photo_is_not(gw):
    out = swap(gw).content
    buf = io.BytesIO()
    Image.open(io.BytesIO(out)).convert("RGB").save(buf, "JPEG", quality=75)  # strips C2PA and XMP
    rep = verify(gw, buf.getvalue(), "copy.jpg")
    assert not rep["c2pa"]["present"] and rep["watermark"]["found"] and rep["result"]["known"], rep["summary"]
    plain = verify(gw, TARGET.read_bytes(), "t.jpg")
    assert plain["marks_found"] == [] and not plain["ai_generated"] and not plain["result"]["ours"]
    assert plain["summary"] == "no marks found"


def test_bytes_changed_after_signing_make_the_manifest_invalid(gw):
    out = bytearray(swap(gw).content)
    out[-200] ^= 0xFF  # inside the JPEG scan data, after every metadata segment
    rep = verify(gw, bytes(out), "t.jpg")
    assert rep["c2pa"]["present"] and rep["c2pa"]["valid"] is False, rep["c2pa"]


def test_video_job_results_are_marked(gw):
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        job = c.post("/v1/jobs", files={"video": ("v.mp4", CLIP.read_bytes()),
                                        "source": ("s.png", SOURCE.read_bytes())}).json()
        end = time.monotonic() + 180
        while (j := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < end, j
            time.sleep(0.5)
        assert j["status"] == "done", j
        assert j["quality"] and j["quality"][0]["frames"] > 0, j  # per-track figures in the job
        assert "_source_embedding" not in j["options"]
        video = c.get(f"/v1/jobs/{job['id']}/result").content
    rep = verify(gw, video, "out.mp4")
    assert rep["format"] == "mp4" and rep["c2pa"]["valid"] and rep["xmp"]["ai_generated"], rep["summary"]
    assert rep["watermark"]["found"] and rep["result"]["known"] and rep["result"]["kind"] == "video"


def test_stream_frames_are_marked(gw):
    frames, times, _ = read_frames(CLIP)
    got: list[bytes] = []

    def keep(meta: dict, img: bytes) -> None:
        if meta["kps"]:
            got.append(img)

    asyncio.run(stream_frames(gw.url.replace("http", "ws"), frames[:12], times[:12], source=SOURCE.read_bytes(),
                              on_frame=keep))
    assert got
    rep = verify(gw, got[-1], "frame.jpg")
    assert set(rep["marks_found"]) == {"c2pa", "xmp", "watermark"} and rep["result"]["kind"] == "stream"


def test_the_visible_badge_is_opt_in_and_goes_under_the_invisible_marks(gw):
    import cv2
    import numpy as np

    from pipeline.badge import badge_box

    plain = cv2.imdecode(np.frombuffer(swap(gw, "png").content, np.uint8), cv2.IMREAD_COLOR)
    out = swap(gw, "png", badge="true").content
    badged = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = badge_box(badged.shape[1], badged.shape[0])
    diff = np.abs(badged.astype(int) - plain.astype(int)).max(axis=2)
    assert diff[y1:y2, x1:x2].mean() > 30  # the label is there, in its corner
    outside = np.ones(diff.shape, bool)
    outside[y1:y2, x1:x2] = False
    assert diff[outside].mean() < 3  # elsewhere only the two watermarks' payloads (result ids) differ
    rep = verify(gw, out, "o.png")
    assert set(rep["marks_found"]) == {"c2pa", "xmp", "watermark"} and rep["c2pa"]["valid"]


def test_marking_is_off_only_by_the_server_setting_and_the_log_says_so(triton, tmp_path):
    g = Gateway(triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env["FACESWAP_GATEWAY_MARKING"] = "false"
    g.start()
    try:
        out = swap(g).content
        assert verify(g, out, "o.jpg")["marks_found"] == []
        assert "OUTPUT MARKING IS OFF" in g.log.read_text()
    finally:
        g.stop()


def test_verify_refuses_what_it_cannot_read(gw):
    r = httpx.post(gw.url + "/v1/verify", files={"file": ("x.txt", b"hello, not an image")}, timeout=30)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = httpx.post(gw.url + "/v1/verify", files={"file": ("x.jpg", b"")}, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "empty_file"
    # a name says nothing: random bytes called x.jpg are not a JPEG
    r = httpx.post(gw.url + "/v1/verify", files={"file": ("x.jpg", os.urandom(100_000))}, timeout=30)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    # a decompression bomb (20000 x 20000 zero pixels in about 1 MB) is refused from its header
    rows = zlib.compress(b"".join(b"\0" + b"\0" * 20000 for _ in range(20000)), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    r = httpx.post(gw.url + "/v1/verify", files={"file": ("bomb.png", bomb)}, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "image_too_large", r.text
    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
