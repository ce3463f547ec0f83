"""The media URL allow-list compares URLs as URLs (issue 18): each attack that passed the old
string prefix, the usual SSRF forms, and a real gateway fetching from a real HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import ValidationError

from gateway.core.config import Settings
from gateway.core.urls import MediaURLPolicy, URLRefused, parse
from tests.conftest import ROOT

PREFIX = "http://127.0.0.1:9000/media/"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/media/clip.mp4",
    "http://127.0.0.1:9000/media/a/b/clip.mp4?X-Amz-Signature=abc%2F%3D&x=1",
    "HTTP://127.0.0.1:9000/media/clip.mp4",                 # scheme case
    "http://127.0.0.1:9000/media/./a/../clip.mp4",          # dot segments inside the prefix
    "http://127.0.0.1:9000/media/%41.mp4",                  # an ordinary escape
])
def test_urls_under_the_prefix_pass_normalised(url):
    got = MediaURLPolicy(PREFIX).check(url, "video_url")
    assert got.startswith(PREFIX) and "/./" not in got and "/../" not in got


def test_the_normalised_url_is_what_is_fetched():
    p = MediaURLPolicy("https://Media.Example.COM./r2/")
    assert p.check("https://media.example.com:443/r2/x/../y.mp4?sig=1", "video_url") == \
        "https://media.example.com/r2/y.mp4?sig=1"
    assert MediaURLPolicy("http://[0:0::1]:9000/m/").check("http://[::1]:9000/m/x", "f") == "http://[::1]:9000/m/x"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/media/../secret",                 # the reported attack
    "http://127.0.0.1:9000/media/a/../../secret",
    "http://127.0.0.1:9000/mediaX/clip.mp4",                 # not a whole segment
    "http://127.0.0.1:9000/media",                           # the folder's name without its slash
    "http://127.0.0.1:9001/media/clip.mp4",                  # another port
    "https://127.0.0.1:9000/media/clip.mp4",                 # another scheme
    "http://localhost:9000/media/clip.mp4",                  # another spelling of loopback: not equal
    "http://127.0.0.2:9000/media/clip.mp4",
    "http://[::1]:9000/media/clip.mp4",
    "http://[::ffff:127.0.0.1]:9000/media/clip.mp4",
    "http://169.254.169.254/latest/meta-data",
])
def test_urls_elsewhere_are_not_allowed(url):
    policy = MediaURLPolicy(PREFIX)
    with pytest.raises(PermissionError):
        policy.check(url, "video_url")


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:9000@127.0.0.1:9001/media/x", "user name"),  # the reported attack
    ("http://user:pw@127.0.0.1:9000/media/x", "user name"),
    ("http://127.0.0.1:9000/media/%2e%2e/secret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/%2E%2E/secret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..%2fsecret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..%5csecret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/%00x", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..\\secret", "backslash"),
    ("http://127.0.0.1:9000\\@evil.example/media/x", "backslash"),
    ("http://127.0.0.1:9000/media/a b", "space"),
    ("http://127.0.0.1:9000/media/x\r\nHost: evil", "control"),
    ("http://127.0.0.1:90000/media/x", "port"),              # the reported malformed port
    ("http://127.0.0.1:9000:1/media/x", "port"),
    ("http://127.0.0.1:abc/media/x", "port"),
    ("http://127.0.0.1:0/media/x", "port"),
    ("http://2130706433:9000/media/x", "IPv4 form"),         # integer loopback
    ("http://0x7f.1:9000/media/x", "IPv4 form"),
    ("http://0177.0.0.1:9000/media/x", "IPv4 form"),
    ("http://127.1:9000/media/x", "IPv4 form"),
    ("http://[fe80::1%25eth0]:9000/media/x", "zone"),
    ("http://[::1:9000/media/x", "malformed"),
    ("file:///etc/passwd", "http or https"),
    ("gopher://127.0.0.1:9000/media/x", "http or https"),
    ("http:///media/x", "no host"),
    ("http://127.0.0.1:9000/media/x#frag", "fragment"),
    ("http://127.0.0.1:9000/media/x%zz", "percent-escape"),
    ("http://ex\u0430mple.com/media/x", "non-ASCII"),
    ("http://-bad-.example/media/x", "DNS name"),
])
def test_malformed_or_ambiguous_urls_are_refused(url, why):
    with pytest.raises(URLRefused) as exc:
        MediaURLPolicy(PREFIX).check(url, "video_url")
    assert why.lower() in str(exc.value).lower()
    assert "video_url" in str(exc.value)


def test_prefix_without_path_is_refused_at_start():
    with pytest.raises(ValueError, match="has no path: write http://127.0.0.1:9000/ to allow the whole origin"):
        MediaURLPolicy("http://127.0.0.1:9000")
    with pytest.raises(ValidationError, match="has no path"):
        Settings(media_url_prefixes="http://127.0.0.1:9000/media/, http://127.0.0.1:9001")
    for bad in ("http://127.0.0.1:", "ftp://x/", "http://u@x/", "http://x/?sig=1"):
        with pytest.raises(ValueError):
            MediaURLPolicy(bad)
    # a whole origin, written out, allows every path there and nothing else
    whole = MediaURLPolicy("http://127.0.0.1:9000/")
    assert whole.check("http://127.0.0.1:9000/anything", "f") == "http://127.0.0.1:9000/anything"
    assert whole.check("http://127.0.0.1:9000", "f") == "http://127.0.0.1:9000/"
    with pytest.raises((PermissionError, URLRefused)):
        whole.check("http://127.0.0.1:9000.evil.example/x", "f")
    with pytest.raises(PermissionError):
        whole.check("http://127.0.0.1.evil.example:9000/x", "f")
    env = {**os.environ, "FACESWAP_GATEWAY_MEDIA_URL_PREFIXES": "http://127.0.0.1:9000",
           "FACESWAP_GATEWAY_PORT": "1"}
    r = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "has no path" in r.stderr, r.stderr[-2000:]


def test_parse_never_echoes_the_query():
    with pytest.raises(URLRefused) as exc:
        parse("http://127.0.0.1:9000/a/%2e?X-Amz-Signature=SECRET", what="result_url")
    assert "SECRET" not in str(exc.value)


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


@pytest.mark.server
def test_gateway_fetches_only_what_its_prefixes_allow(triton, tmp_path, media_server):
    from tests.conftest import image_path
    from tests.test_gateway import Gateway, _clip

    _Media.clip = _clip(tmp_path, 6)
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
            job = _wait(c, r.json()["id"])
            assert (job["status"], job["error_code"]) == ("failed", "input_fetch_failed"), job
            assert "/secret" not in _Media.seen
            # the allowed URL, given with dot segments, is fetched normalised and the job runs
            r = post(video_url=f"{base}/media/x/../clip.mp4?sig=1")
            assert r.status_code == 202, r.text
            job = _wait(c, r.json()["id"])
            assert job["status"] == "done", job
            assert "/media/clip.mp4?sig=1" in _Media.seen
    finally:
        gw.stop()


def _wait(c: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{job_id}").json()
        if j["status"] in ("done", "failed", "cancelled"):
            return j
        assert time.monotonic() < end, j
        time.sleep(0.3)
