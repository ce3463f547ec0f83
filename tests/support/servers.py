"""Real servers for the tests, through the project's one launcher (``launch``): tritonserver
and ``python -m gateway`` on free loopback ports, stopped by pid."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from launch.server import TritonServer, free_ports
from launch.services import ManagedProcess, free_port, http_ok
from repository.generate import build
from repository.layout import ROOT


def start_triton(models: dict, run: Path, profile: str = "cpu") -> TritonServer:
    """A real tritonserver (embedded, CPU) serving ``models`` from a repository of ``profile``
    ("cpu" or "torch") written under ``run``, on free loopback ports; ready when returned (stop
    it with ``.stop()``)."""
    build(run / "model_repository", profile, models)
    return TritonServer(run / "model_repository", free_ports(), run_dir=run).start(240)


def served_precision(server: TritonServer, model: str) -> str:
    """The precision ``model`` serves in on ``server`` (Triton's metrics: the load-time self-check)."""
    from gateway.core.precision import parse

    page = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10).read().decode()
    return parse(page)[model]["precision"]


class Gateway:
    """``python -m gateway`` on a free loopback port (a :class:`launch.services.ManagedProcess`),
    restartable: change ``env`` between ``stop()`` and ``start()``. The log of the latest start is
    ``log`` (beside ``store``)."""

    def __init__(self, triton_grpc: str, store: Path, secret: str | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, "FACESWAP_GATEWAY_PORT": str(self.port), "FACESWAP_GATEWAY_TRITON_URL": triton_grpc,
                    "FACESWAP_GATEWAY_STORE_PATH": str(store), "FACESWAP_GATEWAY_REQUEST_TIMEOUT_S": "60",
                    "FACESWAP_GATEWAY_MAX_UPLOAD_BYTES": str(12 * 1024 * 1024),
                    "FACESWAP_GATEWAY_MAX_PIXELS": str(30_000_000)}
        self.env.pop("FACESWAP_GATEWAY_HMAC_SECRET", None)
        if secret:
            self.env["FACESWAP_GATEWAY_HMAC_SECRET"] = secret
        self._process = ManagedProcess(store.parent, f"{store.stem}.{self.port}", [], hint="gateway")
        self.log = self._process.log_file
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The gateway's pid while it runs."""
        return self._process.pid if self._process.alive() else None

    def start(self) -> Gateway:
        """Start with the current ``env``; ready when ``/healthz`` answers (RuntimeError with the log's tail)."""
        self._process = ManagedProcess(self._process.run_dir, self._process.name,
                                       [sys.executable, "-m", "gateway"], env=self.env, hint="gateway", cwd=ROOT,
                                       ready=lambda _: http_ok(f"{self.url}/healthz"), stop_timeout=20)
        self._process.start(60)
        return self

    def stop(self) -> None:
        self._process.stop()


def jobs_gateway(triton_grpc: str, d: Path) -> Gateway:
    """A started gateway whose face store, jobs (``.jobs_dir``) and development C2PA chain live
    in folder ``d``."""
    g = Gateway(triton_grpc, d / "faces.sqlite3")
    g.env.update({"FACESWAP_GATEWAY_JOBS_DIR": str(d / "jobs"), "FACESWAP_GATEWAY_C2PA_DEV_DIR": str(d / "c2pa")})
    g.jobs_dir = d / "jobs"
    return g.start()
