"""Fixtures: real photos, model resolution with tiny stand-ins, a real embedded Triton server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from repository.layout import shared_dir

os.environ.setdefault("FACESWAP_STANDIN_SIZE", "tiny")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
IMAGES = Path(os.environ.get("FACESWAP_SHARED_IMAGES", SHARED / "images"))


def image_path(name: str) -> Path:
    """A real photo from ../shared/images; fails with what to provide when it is missing."""
    p = IMAGES / name
    if not p.exists():
        pytest.fail(f"test photo {p} is missing: provide ../shared/images (see DESIGN.md) or set "
                    "FACESWAP_SHARED_IMAGES to a folder holding it")
    return p


def load(name: str) -> np.ndarray:
    img = cv2.imread(str(image_path(name)))
    assert img is not None, name
    return img


def free_port_block(n: int = 3) -> int:
    """A base port with n free consecutive loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free loopback ports")


@pytest.fixture(scope="session")
def models():
    from repository.resolve import resolve

    resolved = resolve("tiny")
    if resolved["detector"].stand_in:
        pytest.fail("no real SCRFD detector: provide ../shared/models/det_2.5g.onnx or det_500m.onnx "
                    "(or set FACESWAP_SHARED_MODELS), or download det_10g with `make models`")
    return resolved


def start_triton(models: dict, run: Path):
    """A real tritonserver (embedded, CPU) serving ``models`` from a repository written under
    ``run``, on free loopback ports; ready when returned (stop it with ``.stop()``)."""
    from launch.server import Ports, TritonServer
    from repository.generate import build

    build(run / "model_repository", "cpu", models)
    base = free_port_block(3)
    return TritonServer(run / "model_repository", Ports(base, base + 1, base + 2), run_dir=run).start(240)


@pytest.fixture(scope="session")
def triton(models, tmp_path_factory):
    """A real tritonserver (embedded, CPU) with the tiny stand-ins, on free loopback ports."""
    server = start_triton(models, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


def served_precision(server, model: str) -> str:
    """The precision ``model`` serves in on ``server`` (Triton's metrics: the load-time self-check)."""
    import urllib.request

    from gateway.core.precision import parse

    page = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10).read().decode()
    return parse(page)[model]["precision"]


@pytest.fixture(scope="session")
def source_latent(triton):
    from client import FaceSwapClient

    with FaceSwapClient(triton.http_url) as c:
        return c.embed(image_path("portrait_obama_official.jpg")).largest().latent


@pytest.fixture(params=["http", "grpc"])
def client(request, triton):
    from client import FaceSwapClient

    url = triton.http_url if request.param == "http" else triton.grpc_url
    with FaceSwapClient(url, request.param, timeout=300) as c:
        yield c
