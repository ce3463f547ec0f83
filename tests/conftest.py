"""Fixtures of every tier, and the tiers themselves.

Tests live in three folders, each its own marker (``pytest -m unit`` or ``pytest tests/unit``):

- ``unit/``: no server process (a unit test that starts tritonserver, the gateway, Redis,
  SeaweedFS or HAProxy fails at once, see ``_no_servers``); well under a minute;
- ``server/``: a real tritonserver (embedded, CPU, tiny stand-ins) and the gateway;
- ``system/``: Redis, the S3 store, HAProxy, the supervisor, the cluster (and, in
  ``worker/``, the browser).

Helpers the tests share live in ``tests/support``; no test module imports another.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.support.photos import image_path
from tests.support.servers import Gateway, start_triton

os.environ.setdefault("FACESWAP_STANDIN_SIZE", "tiny")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network

@pytest.fixture(scope="session")
def models():
    from repository.resolve import resolve

    resolved = resolve("tiny")
    if resolved["detector"].stand_in:
        pytest.fail("no real SCRFD detector: provide ../shared/models/det_2.5g.onnx or det_500m.onnx "
                    "(or set FACESWAP_SHARED_MODELS), or download det_10g with `make models`")
    return resolved


@pytest.fixture(scope="session")
def triton(models, tmp_path_factory):
    """A real tritonserver (embedded, CPU) with the tiny stand-ins, on free loopback ports."""
    server = start_triton(models, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


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


# --- the gateway (tests/server) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def gw_triton(models, tmp_path_factory):
    """A Triton server of the module's own, so that a test can stop and restart it."""
    server = start_triton(models, tmp_path_factory.mktemp("gw_triton"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(gw_triton, tmp_path_factory):
    """``python -m gateway`` in front of ``gw_triton`` (no secret), for the module."""
    g = Gateway(gw_triton.grpc_url, tmp_path_factory.mktemp("gw") / "faces.sqlite3").start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def http(gw):
    """An httpx client of ``gw``."""
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        yield c


# --- tiers ------------------------------------------------------------------------------------

TIERS = ("unit", "server", "system")
#: What a unit test may not start: these programs, or ``python -m`` of these modules.
SERVER_PROGRAMS = ("tritonserver", "redis-server", "weed", "haproxy", "nginx", "chromium")
SERVER_MODULES = ("gateway", "gateway.worker", "launch.server", "launch.cluster", "uvicorn")


def _starts_a_server(args) -> bool:
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    if not argv:
        return False
    if os.path.basename(argv[0]) in SERVER_PROGRAMS:
        return True
    return any(a == "-m" and m in SERVER_MODULES for a, m in zip(argv, argv[1:]))


def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's tier."""
    for item in items:
        parts = item.nodeid.split("/")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else None
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _no_servers(request, monkeypatch):
    """In ``unit/``, starting a server process is an error naming the tier it belongs to."""
    if request.node.get_closest_marker("unit") is None:
        return
    import subprocess

    real = subprocess.Popen.__init__

    def guarded(self, args, *a, **kw):
        if _starts_a_server(args):
            line = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
            pytest.fail(f"a unit test started a server ({line[:120]}): move it to tests/server or tests/system")
        real(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
