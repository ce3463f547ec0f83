"""The model download tool against a loopback HTTP server: retries, resume, checksum, offline."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from repository.download import DownloadError, ModelEntry, download, how_to_provide

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(BaseHTTPRequestHandler):
    fail_first = 0
    ranges: list = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if Handler.fail_first > 0:
            Handler.fail_first -= 1
            self.send_error(503)
            return
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        body, status = PAYLOAD, 200
        rng = self.headers.get("Range")
        Handler.ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            body, status = PAYLOAD[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    Handler.fail_first, Handler.ranges = 0, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def entry(urls, sha=hashlib.sha256(PAYLOAD).hexdigest()) -> ModelEntry:
    return ModelEntry("m", "m.onnx", "swapper", len(PAYLOAD), sha, tuple(urls))


def test_retries_then_succeeds_with_atomic_rename(server, tmp_path):
    Handler.fail_first = 2
    path = download(entry([f"{server}/m.onnx"]), tmp_path, retries=4, progress=False)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "m.onnx.part").exists()


def test_resumes_a_partial_file(server, tmp_path):
    (tmp_path / "m.onnx.part").write_bytes(PAYLOAD[:1000])
    path = download(entry([f"{server}/m.onnx"]), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and Handler.ranges == ["bytes=1000-"]


def test_checksum_mismatch_deletes_and_fails(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download(entry([f"{server}/m.onnx"], sha="0" * 64), tmp_path, retries=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_mirror(server, tmp_path):
    path = download(entry([f"{server}/missing", f"{server}/m.onnx"]), tmp_path, retries=1, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_offline_gives_one_clear_line(tmp_path):
    e = entry(["http://127.0.0.1:9/m.onnx"])
    with pytest.raises(DownloadError):
        download(e, tmp_path, retries=1, timeout=1, progress=False)
    line = how_to_provide(e, tmp_path)
    assert "\n" not in line and "m.onnx" in line and "make models" in line
