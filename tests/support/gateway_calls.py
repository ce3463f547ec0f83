"""Requests to the gateway that many tests make, and the files they send."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import httpx

from tests.support.photos import image_path, load

#: The HMAC secret of the tests' signed gateways.
SECRET = "test-secret-0123456789"


#: The shared portrait (one face, the tests' source) and group photo (six faces, their target).
OBAMA = image_path("portrait_obama_official.jpg")
GROUP = image_path("group_insightface_t1.jpg")


def files(**kw) -> dict:
    """Multipart ``files=`` from paths or bytes, each as ``<field>.bin`` (application/octet-stream)."""
    out = {}
    for k, v in kw.items():
        data = v.read_bytes() if isinstance(v, Path) else v
        out[k] = (f"{k}.bin", data, "application/octet-stream")
    return out


def swap(http: httpx.Client, target, source=None, accept=None, **form) -> httpx.Response:
    """``POST /v1/swap`` with ``target`` (and ``source``) files and the other form fields."""
    f = files(target=target, **({"source": source} if source is not None else {}))
    headers = {"Accept": accept} if accept else {}
    return http.post("/v1/swap", files=f, data={k: str(v) for k, v in form.items()}, headers=headers)


def wait_job(c: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 300) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until its status is one of ``states``; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    j: dict = {}
    while time.monotonic() < deadline:
        j = c.get(f"/v1/jobs/{job_id}").json()
        if j["status"] in states:
            return j
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck: {j}")


def solid_png(w: int, h: int) -> bytes:
    """A black ``w`` x ``h`` greyscale PNG, written by hand (cheap even at huge sizes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * w
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def clip(tmp_path: Path, n: int = 24, size=(480, 270)) -> bytes:
    """An MP4 of ``n`` frames (H.264 + AAC) with the portrait's face moving across."""
    from bench.clips import moving_face_frames, write_clip

    p = tmp_path / f"clip_{n}.mp4"
    write_clip(p, moving_face_frames(load("portrait_obama_official.jpg"), size, n), audio=[("aac", 48000, n / 30)])
    return p.read_bytes()
