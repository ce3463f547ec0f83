"""The RunPod serverless worker (``python -m runpod_worker``) in the runpod SDK's own local modes:
``test_input.json`` (one job, then exit) and the local API server (``--rp_serve_api``,
``POST /runsync``), each with its embedded tritonserver (tiny stand-ins, the real detector).

Real parts: the SDK 1.12.0, tritonserver, SeaweedFS as the S3 bucket (results too large to return
inline, and the video's URL). RunPod's own job API does not run here: the SDK posts progress
updates to ``RUNPOD_WEBHOOK_POST_OUTPUT``, which points at a small recording HTTP server of this
test. A bad input and a model failure (a swapper that returns NaN, served by a real Triton) each
fail the job with a clear error.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from launch.services import ManagedProcess, S3Server, free_port, log_contains, pid_alive
from repository.generate import build
from repository.layout import ROOT
from tests.support.broken_models import nan_swapper
from tests.support.photos import image_path

SOURCE = image_path("portrait_obama_official.jpg")
TARGET = image_path("group_insightface_t1.jpg")
VIDEO = image_path("video_astronaut_zoompan_384.mp4")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def worker_env(run: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESWAP_GATEWAY_", "RUNPOD_"))}
    env.update(FACESWAP_CONTAINER_WORK_DIR=str(run / "work"), FACESWAP_GATEWAY_STORE_PATH=str(run / "faces.sqlite3"),
               FACESWAP_STANDIN_SIZE="tiny", PYTHONUNBUFFERED="1", **extra)
    return env


class Recorder(BaseHTTPRequestHandler):
    """Stands in for RunPod's job API: keeps the JSON bodies the SDK posts (progress updates)."""

    posts: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            type(self).posts.append(json.loads(body))
        except ValueError:
            type(self).posts.append({"raw": body.decode(errors="replace")})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/job-done"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start(60)
    yield server
    server.stop()


def start_worker(run: Path, env: dict[str, str]) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(run, "runpod_worker", [sys.executable, "-m", "runpod_worker", "--rp_serve_api",
                                                 "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
                          env=env, ready=log_contains("Uvicorn running on"), hint="runpod_worker",
                          stop_timeout=40.0)
    return proc.start(300), f"http://127.0.0.1:{port}"


def triton_pid(run: Path) -> int:
    return int((run / "work" / "triton.pid").read_text().split()[0])


@pytest.fixture(scope="module")
def api(tmp_path_factory, s3, recorder):
    run = tmp_path_factory.mktemp("runpod_api")
    info = s3.info()
    env = worker_env(run, FACESWAP_GATEWAY_S3_ENDPOINT_URL=s3.endpoint, FACESWAP_GATEWAY_S3_BUCKET=info["bucket"],
                     FACESWAP_GATEWAY_S3_ACCESS_KEY_ID=info["access_key"],
                     FACESWAP_GATEWAY_S3_SECRET_ACCESS_KEY=info["secret_key"],
                     FACESWAP_GATEWAY_S3_REGION=info["region"],
                     FACESWAP_GATEWAY_MEDIA_URL_PREFIXES=f"{s3.endpoint}/{info['bucket']}/",
                     RUNPOD_WEBHOOK_POST_OUTPUT=recorder)
    proc, url = start_worker(run, env)
    pid = triton_pid(run)
    try:
        yield url
    finally:
        proc.stop()
    # the worker stopped its embedded Triton on SIGTERM
    assert not pid_alive(pid, "tritonserver"), "the worker left its tritonserver running"


def runsync(api: str, job_input: dict, timeout: float = 300) -> dict:
    r = httpx.post(f"{api}/runsync", json={"input": job_input}, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def decode(b64text: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64text), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the result is not an image"
    return img


def test_register_then_swap_by_face_id_returns_the_image_inline(api):
    reg = runsync(api, {"task": "register", "image": {"base64": b64(SOURCE)}})
    assert reg["status"] == "COMPLETED", reg
    faces = reg["output"]["faces"]
    assert len(faces) == 1 and len(faces[0]["id"]) == 32
    out = runsync(api, {"task": "swap", "source_face_id": faces[0]["id"], "target": {"base64": b64(TARGET)},
                        "options": {"selection": "all"}})
    assert out["status"] == "COMPLETED", out
    o = out["output"]
    assert o["faces_found"] == 6 and o["faces_swapped"] == 6 and o["stand_in_models"], o
    img = decode(o["image"]["base64"])
    target = cv2.imread(str(TARGET))
    assert img.shape == target.shape and o["image"]["content_type"] == "image/jpeg"
    assert float(np.abs(img.astype(np.int16) - target.astype(np.int16)).mean()) > 0.5  # faces were replaced


def test_inline_source_and_a_result_too_large_to_inline_goes_to_the_bucket(api, s3):
    out = runsync(api, {"task": "swap", "source": {"base64": b64(SOURCE)}, "target": {"base64": b64(TARGET)},
                        "options": {"output_format": "png"}, "max_inline_bytes": 0})
    assert out["status"] == "COMPLETED", out
    res = out["output"]["image"]
    assert "base64" not in res and res["url"].startswith(s3.endpoint) and res["content_type"] == "image/png"
    got = httpx.get(res["url"], timeout=30)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n" and len(got.content) == res["bytes"]


def test_video_by_url_runs_to_the_end_with_progress_updates(api, s3):
    info = s3.info()
    s3.client().upload_file(str(VIDEO), info["bucket"], "incoming/clip.mp4")
    url = s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": info["bucket"], "Key": "incoming/clip.mp4"}, ExpiresIn=600)
    Recorder.posts.clear()
    out = runsync(api, {"task": "video", "video_url": url, "source": {"base64": b64(SOURCE)}}, timeout=600)
    assert out["status"] == "COMPLETED", out
    o = out["output"]
    assert o["frames"] == 48 and o["frames_swapped"] > 0 and o["video"]["content_type"] == "video/mp4", o
    data = base64.b64decode(o["video"]["base64"]) if "base64" in o["video"] else httpx.get(o["video"]["url"]).content
    assert data[4:8] == b"ftyp"
    progress = [p["output"] for p in Recorder.posts if p.get("status") == "IN_PROGRESS"]
    assert progress, f"no progress update was posted: {Recorder.posts[:3]}"
    assert progress[-1]["total"] == 48 and all(0 <= p["done"] <= p["total"] for p in progress)


@pytest.mark.parametrize("job_input, message", [
    ({"task": "swap", "source": {"base64": "x"}}, "invalid_input: input: task 'swap' takes target"),
    ({"task": "swap", "target": {"base64": "aGk="}, "source_face_id": "0" * 32, "colour": "red"},
     "invalid_input: colour: Extra inputs are not permitted"),
    ({"task": "swap", "target": {"base64": "aGk="}, "source": {"base64": "not base64!"}},
     "invalid_input: source.base64 is not valid base64"),
    ({"task": "swap", "target": {"base64": "aGk="}, "source_face_id": "0" * 32}, "face_not_found: no registered face"),
    ({"task": "fly"}, "invalid_input: task: Input should be 'register', 'swap' or 'video'"),
])
def test_a_bad_input_fails_the_job_with_a_clear_error(api, job_input, message):
    out = runsync(api, job_input)
    assert out["status"] == "FAILED" and message in out["error"], out


def test_a_video_url_outside_the_allowed_prefixes_is_refused(api):
    reg = runsync(api, {"task": "register", "image": {"base64": b64(SOURCE)}})
    face_id = reg["output"]["faces"][0]["id"]
    out = runsync(api, {"task": "video", "video_url": "http://169.254.169.254/latest", "source_face_id": face_id})
    assert out["status"] == "FAILED" and out["error"].startswith("media_url_not_allowed: video_url"), out


def test_corrupt_image_is_the_inputs_fault(api):
    out = runsync(api, {"task": "swap", "source": {"base64": b64(SOURCE)},
                        "target": {"base64": base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg").decode()}})
    assert out["status"] == "FAILED" and out["error"].startswith("invalid_input: "), out


def test_a_model_failure_fails_the_job_naming_the_model(models, tmp_path):
    """A swapper that returns NaN (tests/support/broken_models.py), served by the worker's own
    Triton from a repository built here (FACESWAP_RUNPOD_REPOSITORY)."""
    nan_swapper(models["swapper"].path, str(tmp_path / "nan_swapper.onnx"))
    broken = {**models, "swapper": dataclasses.replace(models["swapper"], path=str(tmp_path / "nan_swapper.onnx"))}
    build(tmp_path / "repository", "cpu", broken)
    proc, url = start_worker(tmp_path, worker_env(tmp_path, FACESWAP_RUNPOD_REPOSITORY=str(tmp_path / "repository")))
    try:
        out = runsync(url, {"task": "swap", "source": {"base64": b64(SOURCE)}, "target": {"base64": b64(TARGET)}})
    finally:
        proc.stop()
    assert out["status"] == "FAILED" and out["error"].startswith("model_output_invalid: ") and \
        "face_swapper" in out["error"], out


def test_sdk_test_input_runs_one_job_and_exits(tmp_path):
    """``test_input.json`` in the working folder: the SDK runs that one job, exits 0, and the
    worker stops its Triton on the way out."""
    (tmp_path / "test_input.json").write_text(json.dumps(
        {"input": {"task": "swap", "source": {"base64": b64(SOURCE)}, "target": {"base64": b64(TARGET)}}}))
    import subprocess

    r = subprocess.run([sys.executable, "-m", "runpod_worker"], cwd=tmp_path, env={
        **worker_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=400)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "Job local_test completed successfully." in log and "'faces_swapped': 6" in log
    pid = int(re.search(r"triton started \(pid (\d+)\)", log).group(1))
    assert "tritonserver stopped" in log and not pid_alive(pid, "tritonserver")
