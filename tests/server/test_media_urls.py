"""A real gateway fetches job media only from URLs its prefixes allow, from a real HTTP server
(redirects not followed)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support.gateway_calls import wait_job
from tests.support.photos import ROOT

# -- a real gateway fetching from a real HTTP server -------------------------------------------


class _Media(BaseHTTPRequestHandler):
    seen: list[str] = []
    clip: bytes = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        if self.path.startswith("/media/redirect"):
            self.send_response(302)
            self.send_header("Location", "/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = type(self).clip if self.path.startswith("/media/clip") else b"secret"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def media_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Media)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


def test_gateway_fetches_only_what_its_prefixes_allow(triton, tmp_path, media_server):
    from tests.support.gateway_calls import clip
    from tests.support.photos import image_path
    from tests.support.servers import Gateway

    _Media.clip = clip(tmp_path, 6)
    base = f"http://127.0.0.1:{media_server}"
    gw = Gateway(triton.grpc_url, tmp_path / "faces.sqlite3")
    gw.env["FACESWAP_GATEWAY_MEDIA_URL_PREFIXES"] = f"{base}/media/"
    gw.env["FACESWAP_GATEWAY_JOBS_DIR"] = str(tmp_path / "jobs")
    source = image_path("portrait_obama_official.jpg").read_bytes()
    try:
        gw.start()
        with httpx.Client(base_url=gw.url, timeout=60) as c:
            def post(**form):
                return c.post("/v1/jobs", files={"source": ("s.jpg", source)}, data=form)

            attacks = {
                f"{base}/media/../secret": "media_url_not_allowed",
                f"{base}/media/%2e%2e/secret": "media_url_invalid",
                f"{base}/media/..%2fsecret": "media_url_invalid",
                f"http://127.0.0.1:{media_server}@127.0.0.1:{media_server}/secret": "media_url_invalid",
                f"http://127.0.0.1:{media_server}0/media/clip.mp4": "media_url_invalid",  # a port over 65535
                f"http://localhost:{media_server}/secret": "media_url_not_allowed",
                f"http://2130706433:{media_server}/secret": "media_url_invalid",
            }
            for url, code in attacks.items():
                for field in ("video_url", "result_url"):
                    form = {field: url} if field == "video_url" else {"video_url": f"{base}/media/clip.mp4",
                                                                       field: url}
                    r = post(**form)
                    assert (r.status_code, r.json()["code"]) == (422, code), (url, field, r.text)
            assert not [p for p in _Media.seen if "secret" in p], _Media.seen
            # a redirect from an allowed URL is not followed: the job fails with a code
            r = post(video_url=f"{base}/media/redirect.mp4")
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["id"])
            assert (job["status"], job["error_code"]) == ("failed", "input_fetch_failed"), job
            assert "/secret" not in _Media.seen
            # the allowed URL, given with dot segments, is fetched normalised and the job runs
            r = post(video_url=f"{base}/media/x/../clip.mp4?sig=1")
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["id"])
            assert job["status"] == "done", job
            assert "/media/clip.mp4?sig=1" in _Media.seen
    finally:
        gw.stop()


def test_gateway_with_a_prefix_without_path_does_not_start():
    env = {**os.environ, "FACESWAP_GATEWAY_MEDIA_URL_PREFIXES": "http://127.0.0.1:9000",
           "FACESWAP_GATEWAY_PORT": "1"}
    r = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "has no path" in r.stderr, r.stderr[-2000:]
