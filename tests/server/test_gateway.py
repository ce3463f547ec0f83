"""The FastAPI gateway under uvicorn on loopback, against a real embedded Triton server."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from client.signing import sign, signed_headers
from launch.services import free_port
from tests.support.gateway_calls import GROUP, OBAMA, SECRET, clip, files, solid_png, swap, wait_job
from tests.support.hostile import bomb_zip, tree_rss_mb
from tests.support.photos import ROOT, image_path, load
from tests.support.servers import Gateway


def test_healthz_and_readyz(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    r = http.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert set(r.json()["stand_ins"]) == {"w600k_r50", "inswapper_128"}
    nets = r.json()["precision"]["triton-0"]  # what each network serves in (Triton's metrics)
    assert set(nets) == {"face_detector", "face_recognizer", "face_swapper", "content_detector"}
    assert all(n["precision"] in ("f32", "bf16", "int8") and "probe" not in n for n in nets.values())
    from pipeline.content import DEFAULT_REFUSED, DEFAULT_THRESHOLD

    assert r.json()["content_gate"] == {"enabled": True, "policy": "intimate-imagery",
                                        "classes": list(DEFAULT_REFUSED), "threshold": DEFAULT_THRESHOLD}
    body = http.get("/readyz", params={"deep": 1}).json()
    deep = body["deep"]
    assert deep["ok"] and not deep.get("cached")
    swapper = body["precision"]["triton-0"]["face_swapper"]
    if swapper["chosen_by"] in ("self-check", "cache"):  # deep: with the probe's figures
        assert swapper["probe"]["f32 (onnxruntime)"]["passed"] == 1
    assert http.get("/readyz", params={"deep": 1}).json()["deep"]["cached"]
    metrics = http.get("/metrics").text
    for model, net in nets.items():
        assert f'model="{model}",precision="{net["precision"]}"' in metrics
    assert 'gateway_precision_probe{' in metrics and 'figure="passed"' in metrics
    assert "\ngateway_content_gate 1.0\n" in metrics


def test_register_read_delete_face(http):
    r = http.post("/v1/faces", files=files(image=GROUP))
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert len(faces) == 6 and all(f["thumbnail"].startswith("data:image/jpeg;base64,") for f in faces)
    fid = faces[0]["id"]
    assert http.get(f"/v1/faces/{fid}").json()["box"] == faces[0]["box"]
    assert http.delete(f"/v1/faces/{fid}").status_code == 204
    r = http.get(f"/v1/faces/{fid}")
    assert r.status_code == 404 and r.json()["code"] == "face_not_found"
    assert http.delete(f"/v1/faces/{fid}").status_code == 404


def test_swap_returns_image_with_per_face_headers(http):
    r = swap(http, GROUP, OBAMA)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-faces-detected"] == "6" and r.headers["x-faces-swapped"] == "6"
    assert len(json.loads(r.headers["x-faces"])) == 6 and "inswapper_128" in r.headers["x-stand-in-models"]
    assert cv2.imdecode(np.frombuffer(r.content, np.uint8), 1).shape == (886, 1280, 3)


def test_swap_json_when_asked(http):
    r = swap(http, image_path("two_obama_biden.jpg"), OBAMA, accept="application/json", selection="largest")
    body = r.json()
    assert r.status_code == 200 and body["faces_swapped"] == 1 and body["faces_detected"] == 2
    assert sum(f["swapped"] for f in body["faces"]) == 1
    import base64

    assert base64.b64decode(body["image"])[:3] == b"\xff\xd8\xff"


def test_swap_with_registered_face_and_pairs(http):
    src = http.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
    r = swap(http, GROUP, source_face_id=src)
    assert r.status_code == 200 and r.headers["x-faces-swapped"] == "6"
    target = image_path("two_obama_biden.jpg")
    refs = http.post("/v1/faces", files=files(image=target)).json()["faces"]
    pairs = json.dumps([{"reference_face_id": refs[1]["id"], "source_face_id": src}])
    r = swap(http, target, pairs=pairs, threshold=0.999, accept="application/json")
    body = r.json()
    assert r.status_code == 200 and body["faces_swapped"] == 1 and [f["swapped"] for f in body["faces"]] == [
        False, True]


def test_face_index_implies_index_and_pairs_errors_are_plain(http):
    r = swap(http, image_path("two_obama_biden.jpg"), OBAMA, face_index=1, accept="application/json")
    assert r.status_code == 200 and [f["swapped"] for f in r.json()["faces"]] == [False, True]
    r = swap(http, GROUP, pairs='{"a": 1}')
    assert (r.status_code, r.json()["code"]) == (422, "invalid_option")
    assert "pydantic" not in r.text and "reference_face_id" in r.json()["message"]


def test_openapi_documents_error_bodies_and_resolves(http):
    import re

    spec = http.get("/openapi.json").json()
    text = json.dumps(spec)
    names = set(spec["components"]["schemas"])
    assert all(ref.split("/")[-1] in names for ref in re.findall(r'"\$ref": "([^"]+)"', text))
    swap_responses = spec["paths"]["/v1/swap"]["post"]["responses"]
    assert {"200", "413", "415", "422", "503", "504"} <= set(swap_responses)
    assert "image/png" in swap_responses["200"]["content"]


def test_source_without_face_is_422(http):
    r = swap(http, GROUP, image_path("noface_cat_chelsea.png"))
    assert r.status_code == 422 and r.json()["code"] == "no_face_in_source"


def test_face_index_out_of_range_is_422_naming_range(http):
    r = swap(http, GROUP, OBAMA, selection="index", face_index=6)
    assert r.status_code == 422 and r.json()["code"] == "face_index_out_of_range"
    assert "valid 0..5" in r.json()["message"]


def test_target_without_face_comes_back_unchanged(http):
    data = image_path("noface_coffee.png").read_bytes()
    r = swap(http, data, OBAMA)
    assert r.status_code == 200 and r.headers["x-faces-detected"] == "0" and r.content == data


@pytest.mark.parametrize("case,status,code", [
    ("empty", 400, "empty_file"), ("text.jpg", 415, "unsupported_media_type"), ("pdf", 415, "unsupported_media_type"),
    ("half-jpeg", 422, "corrupt_image"), ("bad-crc-png", 422, "corrupt_image"),
    ("bomb-png", 413, "image_too_large"), ("huge-jpeg-header", 413, "image_too_large")])
def test_bad_targets(http, case, status, code):
    if case == "empty":
        data = b""
    elif case == "text.jpg":
        data = b"hello, I am not a picture\n"
    elif case == "pdf":
        data = b"%PDF-1.4\n1 0 obj << >> endobj\n"
    elif case == "half-jpeg":
        raw = OBAMA.read_bytes()
        data = raw[: len(raw) // 2]
    elif case == "bad-crc-png":
        raw = bytearray(cv2.imencode(".png", load("portrait_obama_small_320x240.jpg"))[1].tobytes())
        raw[29] ^= 0xFF  # a byte of IHDR's CRC
        data = bytes(raw)
    elif case == "bomb-png":
        data = solid_png(20000, 20000)
        assert len(data) < 2_000_000
    else:
        raw = bytearray(cv2.imencode(".jpg", load("portrait_obama_small_320x240.jpg"))[1].tobytes())
        i = raw.find(b"\xff\xc0")
        raw[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)
        data = bytes(raw)
    r = swap(http, data, OBAMA)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.json()["message"] and "Traceback" not in r.text
    assert http.get("/readyz").status_code == 200


def test_upload_over_limit_is_413_before_reading(http):
    r = http.post("/v1/swap", content=b"x" * (13 * 1024 * 1024), headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_missing_source_and_unknown_face(http):
    r = swap(http, GROUP)
    assert r.status_code == 422 and r.json()["code"] == "missing_source"
    r = swap(http, GROUP, source_face_id="0" * 32)
    assert r.status_code == 404 and r.json()["code"] == "face_not_found"
    r = swap(http, GROUP, OBAMA, output_format="gif")
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "L"])
def test_unusual_colour_modes_decode_to_right_colours(http, mode):
    rgb = cv2.cvtColor(load("noface_coffee.png"), cv2.COLOR_BGR2RGB)
    im = Image.fromarray(rgb)
    buf = io.BytesIO()
    if mode == "CMYK":
        im.convert("CMYK").save(buf, "JPEG", quality=95)
    elif mode == "I;16":
        arr = np.asarray(im.convert("L")).astype(np.uint16) * 257
        cv2_buf = cv2.imencode(".png", arr)[1].tobytes()
        buf.write(cv2_buf)
        rgb = np.dstack([np.asarray(im.convert("L"))] * 3)
    elif mode == "P":
        im.convert("P", palette=Image.ADAPTIVE).save(buf, "PNG")
        rgb = np.asarray(im.convert("P", palette=Image.ADAPTIVE).convert("RGB"))
    else:
        im.convert("L").save(buf, "JPEG", quality=95)
        rgb = np.dstack([np.asarray(im.convert("L"))] * 3)
    r = swap(http, buf.getvalue(), OBAMA, output_format="png")
    assert r.status_code == 200, r.text
    out = cv2.cvtColor(cv2.imdecode(np.frombuffer(r.content, np.uint8), 1), cv2.COLOR_BGR2LAB).astype(float)
    ref = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2LAB).astype(float)
    assert np.abs(out.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))).max() < 5


def test_metrics_count_requests_and_faces(http):
    text = http.get("/metrics").text
    assert 'gateway_requests_total{method="POST",route="/v1/swap",status="200"}' in text
    assert "gateway_faces_swapped_total" in text and "gateway_request_seconds_bucket" in text


def test_face_store_survives_gateway_restart(gw, http):
    fid = http.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
    gw.stop()
    gw.start()
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        assert c.get(f"/v1/faces/{fid}").status_code == 200
        assert swap(c, GROUP, source_face_id=fid).status_code == 200


def test_triton_down_is_503_then_served_again_without_restart(gw, gw_triton):
    gw_triton.stop()
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        r = swap(c, GROUP, OBAMA)
        assert r.status_code == 503 and r.json()["code"] == "triton_unavailable" and r.headers["retry-after"]
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        gw_triton.start(240)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and c.get("/readyz").status_code != 200:
            time.sleep(0.5)
        r = swap(c, GROUP, OBAMA)
        assert r.status_code == 200 and r.headers["x-faces-swapped"] == "6"


@pytest.fixture(scope="module")
def signed_gw(gw_triton, tmp_path_factory):
    g = Gateway(gw_triton.grpc_url, tmp_path_factory.mktemp("gws") / "faces.sqlite3", secret=SECRET).start()
    yield g
    g.stop()


def _signed(url: str, path: str, body: bytes, ts: float | None = None, secret: str = SECRET) -> httpx.Response:
    ts_s = str(int(ts if ts is not None else time.time()))
    headers = {"X-Faceswap-Timestamp": ts_s, "X-Faceswap-Signature": sign(secret, "GET", path, ts_s, body)}
    return httpx.get(url + path, headers=headers, timeout=30)


def test_hmac_good_bad_stale_replayed(signed_gw):
    url, path = signed_gw.url, "/v1/faces/" + "0" * 32
    assert httpx.get(url + path).json()["code"] == "missing_signature"
    ts = str(int(time.time()))
    good = {"X-Faceswap-Timestamp": ts, "X-Faceswap-Signature": sign(SECRET, "GET", path, ts, b"")}
    r = httpx.get(url + path, headers=good)
    assert r.status_code == 404  # authenticated, and the face does not exist
    r = httpx.get(url + path, headers=good)
    assert (r.status_code, r.json()["code"]) == (401, "replayed_signature")
    r = _signed(url, path, b"", secret="wrong-secret")
    assert (r.status_code, r.json()["code"]) == (401, "bad_signature")
    r = _signed(url, path, b"", ts=time.time() - 301)
    assert (r.status_code, r.json()["code"]) == (401, "stale_signature")
    for bad_ts in ("nan", "inf", "1e9", "-5", str(time.time())):  # whole seconds only
        r = httpx.get(url + path, headers={"X-Faceswap-Timestamp": bad_ts, "X-Faceswap-Signature": "0" * 64})
        assert (r.status_code, r.json()["code"]) == (401, "bad_signature"), bad_ts
    assert httpx.get(url + "/healthz").status_code == 200


def test_unsigned_body_is_refused_before_it_is_read(signed_gw):
    """An unsigned 100 MB chunked upload gets its 401 after the headers: we send 1 MB, then read."""
    import socket

    head = ("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
    with socket.create_connection(("127.0.0.1", signed_gw.port), timeout=5) as s:
        s.sendall(head + chunk)  # 1 MB of the announced 100 MB, then wait for the answer
        answer = ""
        while "missing_signature" not in answer and (part := s.recv(65536)):
            answer += part.decode("latin-1")
    assert answer.startswith("HTTP/1.1 401") and "missing_signature" in answer
    assert httpx.get(signed_gw.url + "/healthz").status_code == 200


def test_signed_post_with_body(signed_gw):
    req = httpx.Request("POST", signed_gw.url + "/v1/faces", files=files(image=OBAMA))
    body = req.read()
    ctype = req.headers["content-type"]
    now = int(time.time())  # distinct timestamps: each call's signature differs however slow the first is
    headers = {"Content-Type": ctype, **signed_headers(SECRET, "POST", "/v1/faces", body, now)}
    r = httpx.post(signed_gw.url + "/v1/faces", content=body, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    headers.update(signed_headers(SECRET, "POST", "/v1/faces", body, now - 1))
    tampered = body.replace(b"image", b"imagf", 1)  # signed body, different body sent
    r = httpx.post(signed_gw.url + "/v1/faces", content=tampered, headers=headers)
    assert (r.status_code, r.json()["code"]) == (401, "content_sha256_mismatch")
    ts = str(now - 2)  # signed over the body's hash but the hash header left out
    r = httpx.post(signed_gw.url + "/v1/faces", content=body, headers={
        "Content-Type": ctype, "X-Faceswap-Timestamp": ts,
        "X-Faceswap-Signature": sign(SECRET, "POST", "/v1/faces", ts, body)})
    assert (r.status_code, r.json()["code"]) == (401, "bad_signature")


def test_refuses_public_address_without_secret(tmp_path):
    env = {**os.environ, "FACESWAP_GATEWAY_HOST": "0.0.0.0", "FACESWAP_GATEWAY_PORT": str(free_port())}
    env.pop("FACESWAP_GATEWAY_HMAC_SECRET", None)
    p = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "without FACESWAP_GATEWAY_HMAC_SECRET" in p.stderr


def test_slow_triton_is_504(gw_triton, tmp_path):
    g = Gateway(gw_triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env["FACESWAP_GATEWAY_REQUEST_TIMEOUT_S"] = "0.005"
    g.start()
    try:
        with httpx.Client(base_url=g.url, timeout=60) as c:
            r = swap(c, GROUP, OBAMA)
            assert (r.status_code, r.json()["code"]) == (504, "deadline_exceeded")
            assert c.get("/healthz").status_code == 200
    finally:
        g.stop()


def test_video_job_end_to_end(gw, http, tmp_path):
    r = http.post("/v1/jobs", files=files(video=clip(tmp_path), source=OBAMA))
    assert r.status_code == 202 and r.headers["location"].endswith(r.json()["id"])
    job_id = r.json()["id"]
    early = http.get(f"/v1/jobs/{job_id}/result")
    assert early.status_code in (200, 409)
    j = wait_job(http, job_id)
    assert j["status"] == "done" and j["progress"] == 1.0 and j["done"] == 24, j
    res = http.get(f"/v1/jobs/{job_id}/result")
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(res.content)
    from bench.clips import probe

    info = probe(out)
    assert info["frames"] == 24 and len(info["audio"]) == 1
    assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert http.get(f"/v1/jobs/{job_id}").status_code == 404


def test_batch_job_lists_bad_files(http, tmp_path):
    f = [("images", ("a.jpg", image_path("portrait_biden_official.jpg").read_bytes(), "image/jpeg")),
         ("images", ("../../b.png", b"not an image", "image/png")),
         ("source", ("s.jpg", OBAMA.read_bytes(), "image/jpeg"))]
    job_id = http.post("/v1/jobs", files=f).json()["id"]
    j = wait_job(http, job_id)
    assert j["status"] == "done" and len(j["warnings"]) == 1 and "unsupported" in j["warnings"][0]
    res = http.get(f"/v1/jobs/{job_id}/result")
    import zipfile as zf

    with zf.ZipFile(io.BytesIO(res.content)) as z:
        names = z.namelist()
        report = json.loads(z.read("batch_report.json"))
    assert len(names) == 2 and report["failed"] == 1 and all("/" not in n for n in names)


def test_job_errors(http, tmp_path):
    r = http.post("/v1/jobs", files=files(video=b"definitely not a video", source=OBAMA))
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type")
    r = http.post("/v1/jobs", files=files(video=clip(tmp_path, 6), source=image_path("noface_rocket.jpg")))
    assert (r.status_code, r.json()["code"]) == (422, "no_face_in_source")
    r = http.post("/v1/jobs", files=files(source=OBAMA))
    assert (r.status_code, r.json()["code"]) == (422, "missing_media")
    r = http.post("/v1/jobs", files=files(video=b"", source=OBAMA))
    assert (r.status_code, r.json()["code"]) == (400, "empty_file")
    video = clip(tmp_path, 6)
    r = http.post("/v1/jobs", files=files(video=video[: len(video) // 3], source=OBAMA))
    assert (r.status_code, r.json()["code"]) == (422, "corrupt_video"), r.text
    assert "/" not in r.json()["message"]  # no server paths in messages
    assert http.get("/v1/jobs/" + "0" * 32).json()["code"] == "job_not_found"


def test_long_tiny_video_is_refused_at_upload(http, tmp_path):
    from fractions import Fraction

    from bench.clips import write_clip

    p = tmp_path / "long_tiny.mp4"  # 16x16, 310 s: cheap to send, hours of work for a job worker
    write_clip(p, [np.full((16, 16, 3), i % 255, np.uint8) for i in range(310 * 2)], rate=Fraction(2))
    r = http.post("/v1/jobs", files=files(video=p.read_bytes(), source=OBAMA))
    assert (r.status_code, r.json()["code"]) == (422, "video_too_long"), r.text
    assert "300" in r.json()["message"]


def test_zip_bomb_job_fails_on_the_limit_with_bounded_memory(gw, http, tmp_path):

    bomb = tmp_path / "bomb.zip"
    bomb_zip(bomb, 200, 50 << 20)  # 10 GB of zeros in ~10 MB
    before = tree_rss_mb(gw.pid)
    r = http.post("/v1/jobs", files=files(archive=bomb.read_bytes(), source=OBAMA))
    assert r.status_code == 202
    j = wait_job(http, r.json()["id"])
    assert (j["status"], j["error_code"]) == ("failed", "archive_too_large"), j
    assert tree_rss_mb(gw.pid) < before + 150
    r = http.get(f"/v1/jobs/{j['id']}/result")
    assert (r.status_code, r.json()["code"]) == (409, "job_failed")


def test_cancel_a_running_job(http, tmp_path):
    job_id = http.post("/v1/jobs", files=files(video=clip(tmp_path, 150), source=OBAMA)).json()["id"]
    wait_job(http, job_id, states=("running", "done"))
    t = time.monotonic()
    r = http.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"  # the truth, not a promise
    assert time.monotonic() - t < 3.5
    j = wait_job(http, job_id, states=("cancelled", "done"))
    assert j["status"] == "cancelled"
    r = http.get(f"/v1/jobs/{job_id}/result")
    assert (r.status_code, r.json()["code"]) == (409, "job_cancelled")


def test_job_survives_gateway_restart_while_running(gw, tmp_path):
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        job_id = c.post("/v1/jobs", files=files(video=clip(tmp_path, 150), source=OBAMA)).json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/v1/jobs/{job_id}").json()["done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    gw.stop()
    gw.start()
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        j = wait_job(c, job_id)
        assert j["status"] == "done" and j["restarts"] == 1 and j["done"] == 150, j
        assert any("restarted" in w for w in j["warnings"])
        from bench.clips import probe

        out = tmp_path / "r.mp4"
        out.write_bytes(c.get(f"/v1/jobs/{job_id}/result").content)
        assert probe(out)["frames"] == 150
