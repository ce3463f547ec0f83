"""Start, wait for and stop the embedded ``tritonserver`` (nvidia-pytriton wheel), CPU only.

The wheel ships a real Triton 2.51 binary with the Python backend. To run it outside
pytriton we (see DESIGN.md): copy the Python backend into ``.run/backends/python`` with the
stub built for this interpreter; put this interpreter's own ``libpython`` folder first on
``LD_LIBRARY_PATH`` (so the stub and the virtual environment run one and the same Python),
then the wheel's ``nvidia_pytriton.libs``; put the virtual environment's ``bin`` first on
``PATH``; and put the project root on ``PYTHONPATH`` so the models import ``pipeline``.
Everything listens on loopback only. ``make serve``/``make stop``, the demo and the tests
all use this module.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one server: HTTP (KServe v2 REST), gRPC and Prometheus metrics."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise RuntimeError("nvidia-pytriton is not installed: run `make setup` (it ships tritonserver)") from exc
    return Path(pytriton.__file__).resolve().parent


def prepare_backends(run_dir: Path = RUN) -> Path:
    """Copy the Python backend with this interpreter's stub into ``run_dir/backends``."""
    pt = _pytriton_dir() / "tritonserver"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pt / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {ver}")
    dst = run_dir / "backends" / "python"
    if not (dst / "triton_python_backend_stub").exists():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(pt / "backends" / "python", dst)
        shutil.copy2(stub, dst / "triton_python_backend_stub")
    return dst.parent


def server_env() -> dict[str, str]:
    """Environment for tritonserver and the Python stubs it starts."""
    env = dict(os.environ)
    pt = _pytriton_dir()
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(pt.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}".rstrip(":")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


class TritonServer:
    """One embedded tritonserver process on loopback.

    Args:
        repository: model repository folder (see ``tools.repository``).
        ports: loopback ports.
        log_file: where the server's stdout/stderr go.
    """

    def __init__(self, repository: Path, ports: Ports = Ports(), log_file: Path | None = None,
                 run_dir: Path = RUN) -> None:
        self.repository = Path(repository)
        self.ports = ports
        self.run_dir = run_dir
        self.log_file = log_file or run_dir / f"triton_{ports.http}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def command(self) -> list[str]:
        binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
        return [
            str(binary), f"--model-repository={self.repository}",
            f"--backend-directory={prepare_backends(self.run_dir)}",
            "--http-address=127.0.0.1", f"--http-port={self.ports.http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.ports.grpc}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--metrics-address=127.0.0.1",
            f"--metrics-port={self.ports.metrics}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=67108864",
            "--exit-timeout-secs=10", "--log-verbose=0",
        ]

    def start(self, timeout: float = 180.0) -> "TritonServer":
        """Start the server and wait until it is ready.

        Raises:
            RuntimeError: the process exited or was not ready in time (the log's tail is included).
        """
        busy = [p for p in (self.ports.http, self.ports.grpc, self.ports.metrics) if not port_free(p)]
        if busy:
            raise RuntimeError(f"loopback port(s) {busy} already in use (another tritonserver? `make stop`, "
                               "or choose other ports)")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=server_env(),
                                     start_new_session=True)
        (self.run_dir / f"triton_{self.ports.http}.pid").write_text(str(self.proc.pid))
        try:
            self.wait_ready(timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.http_url}/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                time.sleep(0.2)
                if self.proc is not None and self.proc.poll() is not None:
                    continue  # exited: reported at the top of the loop
                return
            time.sleep(0.5)
        raise RuntimeError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server (and its stubs); SIGKILL after ``timeout`` s."""
        if self.proc is None:
            return
        _terminate(self.proc.pid, timeout)
        self.proc = None
        (self.run_dir / f"triton_{self.ports.http}.pid").unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def embedded(name: str, models: dict, http_port: int) -> Iterator[TritonServer]:
    """Write the CPU repository ``.run/<name>`` for ``models`` (tools.resolve) and run a server
    on ``http_port`` (gRPC +1, metrics +2) for the ``with`` block."""
    from tools.repository import build

    build(RUN / name, "cpu", models)
    with TritonServer(RUN / name, Ports(http_port, http_port + 1, http_port + 2)) as server:
        yield server


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the process group (tritonserver and its Python stubs), wait, then SIGKILL the
    group so that no stub outlives the server."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _kill_group(pid)  # stubs may survive their server
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_pidfile(pidfile: Path, timeout: float) -> bool:
    """Stop the process group named by a pidfile; True if there was one."""
    if not pidfile.exists():
        return False
    _terminate(int(pidfile.read_text()), timeout)
    pidfile.unlink(missing_ok=True)
    return True


def stop_from_pidfile(ports: Ports = Ports(), run_dir: Path = RUN) -> bool:
    """Stop a server started by ``serve`` in another process; True if one was running."""
    return _stop_pidfile(run_dir / f"triton_{ports.http}.pid", 30.0)


def start_gateway(port: int, triton_grpc: str, run_dir: Path = RUN, timeout: float = 60.0,
                  triton_metrics: str | None = None) -> int:
    """Start ``python -m gateway`` in the background on loopback; return its pid.
    ``triton_metrics``: Triton's metrics URL (default: the gateway's guess, gRPC port + 1).

    Raises:
        RuntimeError: the port is busy or the gateway did not answer /healthz in time.
    """
    if not port_free(port):
        raise RuntimeError(f"gateway port {port} already in use (`make stop`, or FACESWAP_GATEWAY_PORT)")
    env = {**os.environ, "FACESWAP_GATEWAY_PORT": str(port), "FACESWAP_GATEWAY_TRITON_URL": triton_grpc}
    if triton_metrics:
        env["FACESWAP_GATEWAY_TRITON_METRICS_URL"] = triton_metrics
    env.setdefault("FACESWAP_GATEWAY_HOST", "127.0.0.1")
    log_file = run_dir / f"gateway_{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log_file.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with code {proc.returncode}; see {log_file}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                (run_dir / f"gateway_{port}.pid").write_text(str(proc.pid))
                return proc.pid
        except httpx.HTTPError:
            time.sleep(0.3)
    _terminate(proc.pid, 5)
    raise RuntimeError(f"gateway not answering after {timeout:.0f} s; see {log_file}")


def stop_gateway(port: int, run_dir: Path = RUN) -> bool:
    """Stop a gateway started by ``start_gateway``; True if one was running."""
    return _stop_pidfile(run_dir / f"gateway_{port}.pid", 15.0)


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the embedded Triton server (CPU, loopback) and the gateway.")
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("--gateway-port", type=int, default=int(os.environ.get("FACESWAP_GATEWAY_PORT", 8080)))
    ap.add_argument("--no-gateway", action="store_true", help="start Triton only")
    ap.add_argument("--http-port", type=int, default=int(os.environ.get("TRITON_HTTP_PORT", 8000)))
    ap.add_argument("--grpc-port", type=int, default=int(os.environ.get("TRITON_GRPC_PORT", 8001)))
    ap.add_argument("--metrics-port", type=int, default=int(os.environ.get("TRITON_METRICS_PORT", 8002)))
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    if args.action == "stop":
        print("gateway stopped" if stop_gateway(args.gateway_port) else "no gateway was running")
        print("tritonserver stopped" if stop_from_pidfile(ports) else "no tritonserver was running")
        return 0
    server = TritonServer(RUN / "model_repository", ports)
    if args.action == "status":
        print("ready" if server.is_ready() else "not ready")
        return 0 if server.is_ready() else 1
    from tools.repository import build
    from tools.resolve import resolve

    models = resolve(args.standin_size)
    for m in models.values():
        print(m.describe())
    try:
        build(RUN / "model_repository", "cpu", models)
    except ValueError as exc:  # a bad setting (FACESWAP_PRECISION, FACESWAP_ENGINE): one line, not a traceback
        log.error("%s", exc)
        return 2
    try:
        server.start()
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    print(f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, "
          f"metrics 127.0.0.1:{ports.metrics}; log {server.log_file}")
    if not args.no_gateway:
        try:
            start_gateway(args.gateway_port, server.grpc_url,
                          triton_metrics=f"http://127.0.0.1:{ports.metrics}/metrics")
        except RuntimeError as exc:
            log.error("%s", exc)
            server.stop()
            return 1
        print(f"gateway ready: http://127.0.0.1:{args.gateway_port} (OpenAPI at /docs); "
              f"log {RUN / f'gateway_{args.gateway_port}.log'}")
    print("stop with `make stop`")
    server.proc = None  # leave it running
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
