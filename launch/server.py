"""Start, wait for and stop the embedded ``tritonserver`` (nvidia-pytriton wheel), CPU only.

The wheel ships a real Triton 2.51 binary with the Python backend. To run it outside
pytriton we (docs/architecture.md, "Facts verified the hard way"): copy the Python backend into
``.run/backends/python`` with the stub built for this interpreter; put this interpreter's own
``libpython`` folder first on ``LD_LIBRARY_PATH`` (so the stub and the virtual environment run one and the same Python),
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
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from launch.services import ROOT, ManagedProcess, Service, free_port, http_ok, log_contains, port_free

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
RUN = ROOT / ".run"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one server: HTTP (KServe v2 REST), gRPC and Prometheus metrics."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_ports() -> Ports:
    """Three consecutive free loopback ports for a Triton server (HTTP, gRPC, metrics): a gateway
    given only the gRPC address looks for the metrics on the next port."""
    base = free_port(also_free=(1, 2))
    return Ports(base, base + 1, base + 2)


def cuda_pool_args() -> list[str]:
    """``--cuda-memory-pool-byte-size`` for GPU 0 from ``FACESWAP_CUDA_POOL_MB`` (unset: Triton's
    64 MB). The ``torch`` profile on a GPU passes tensors between Python-backend stubs in that
    pool (a 64-face swapper batch is 12.6 MB, a detector blob 4.9 MB, per request in flight);
    ``bench.gpu_run`` sets 1024.

    Raises:
        ValueError: set but not a positive integer.
    """
    from repository.layout import env_int

    mb = env_int("FACESWAP_CUDA_POOL_MB", 0)
    return [f"--cuda-memory-pool-byte-size=0:{mb << 20}"] if mb else []


def package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it; None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def _pytriton_dir() -> Path:
    """The ``pytriton`` package's folder, not imported (its own imports need packages the server
    does not; bench.gpu_run carries only its ``tritonserver`` part)."""
    found = package_dir("pytriton")
    if found is None:
        raise RuntimeError("nvidia-pytriton is not installed: run `make setup` (it ships tritonserver)")
    return found


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


# Memory after a burst of large requests (docs/benchmarks.md, "Memory after a burst"). glibc
# raises its mmap threshold to the size of each large block freed (up to 32 MiB), so after the
# first burst every request body below that (a 25 MiB PNG) is served from the per-thread arenas,
# which keep the freed pages: tritonserver's own memory stayed 190-260 MiB above warm. A fixed
# threshold keeps blocks of 16 MiB and more on mmap, returned to the system when freed (glibc
# mallopt(3), M_MMAP_THRESHOLD). Frames up to 2560x1440 BGR stay below it, so the stubs' hot
# path is unchanged.
MALLOC_MMAP_THRESHOLD = 16 * 2**20
# Triton's gRPC frontend keeps up to this many request/response objects for reuse, each holding
# the capacity of the largest message it carried (protobuf keeps a string's buffer on Clear()).
# Zero: a request's buffers go when it is answered.
GRPC_ALLOCATION_POOL = 0


def server_env() -> dict[str, str]:
    """Environment for tritonserver and the Python stubs it starts."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MALLOC_MMAP_THRESHOLD))
    pt = _pytriton_dir()
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(pt.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}".rstrip(":")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


SHM_DIR = Path("/dev/shm")
#: The Python backend's shared-memory regions (one per model instance, ``shm-default-byte-size``
#: and up: 16 MiB here): Triton removes them when it stops; a tritonserver killed with SIGKILL
#: (the OOM killer, a crash, the group kill after the stop timeout) leaves them in /dev/shm, a
#: tmpfs held in memory (64 MB by default in Docker): a server that crashes and restarts in a
#: loop fills it, and then no new stub starts.
SHM_PREFIX = "triton_python_backend_shm_region_"
SHM_SETTLE_S = 0.2  # a starting server maps the region it creates within microseconds: checked twice


def mapped_regions(pids: Iterable[int] | None = None) -> set[str]:
    """The ``SHM_PREFIX`` files (paths) that the processes ``pids`` map, or any live process
    (None), as ``/proc/<pid>/maps`` says (its sixth field is the mapped file)."""
    files = Path("/proc").glob("[0-9]*/maps") if pids is None else (Path(f"/proc/{p}/maps") for p in pids)
    mapped: set[str] = set()
    for maps in files:
        try:
            with maps.open() as f:
                fields = (line.split(maxsplit=5) for line in f if SHM_PREFIX in line)
                mapped.update(parts[5].strip() for parts in fields if len(parts) == 6)
        except OSError:  # a process that ended while read, or another user's
            continue
    return mapped


def stale_shm_regions(shm_dir: Path = SHM_DIR, settle_s: float = SHM_SETTLE_S) -> list[Path]:
    """The Python-backend regions in ``shm_dir`` (``SHM_PREFIX``) owned by this user that no live
    process maps (as ``/proc/<pid>/maps`` says), checked twice ``settle_s`` apart (a region a
    starting server has just created is mapped by then): the leftovers of tritonservers that
    were killed. Regions of running servers, ours or others', are mapped by them and never
    listed."""
    uid = os.getuid()

    def unmapped() -> list[Path]:
        mapped, out = mapped_regions(), []
        for path in sorted(shm_dir.glob(SHM_PREFIX + "*")):
            try:
                if path.stat().st_uid == uid and str(path) not in mapped:
                    out.append(path)
            except OSError:
                continue
        return out

    first = unmapped()
    if not first:
        return []
    time.sleep(settle_s)
    again = set(unmapped())
    return [p for p in first if p in again]


def sweep_stale_shm(shm_dir: Path = SHM_DIR, settle_s: float = SHM_SETTLE_S) -> tuple[int, int]:
    """Remove ``stale_shm_regions`` and log how many and how much; (regions, bytes) removed."""
    count = size = 0
    for path in stale_shm_regions(shm_dir, settle_s):
        try:
            n = path.stat().st_size
            path.unlink()
        except OSError:
            continue
        count, size = count + 1, size + n
    if count:
        log.warning("removed %d stale Python-backend shared-memory region(s) (%.0f MiB) that a killed tritonserver "
                    "left in %s", count, size / 2**20, shm_dir)
    return count, size


class TritonServer(Service):
    """One embedded tritonserver process on loopback, a :class:`launch.services.Service`: its own
    process group (with the Python-backend stubs it starts), pid file ``<run_dir>/<name>.pid``,
    log ``<run_dir>/<name>.log``, stopped by pid (SIGTERM, then SIGKILL to the whole group).
    Before each start (a supervisor's restart too) and after each stop, the Python backend's
    shared memory that killed servers left is removed (``sweep_stale_shm``).

    Args:
        repository: model repository folder (see ``repository.generate``).
        ports: loopback ports.
        run_dir: folder of the pid file and the log.
        name: file stem (default ``triton_<http port>``).
        address: the address every endpoint binds (HTTP, gRPC, metrics); loopback unless a
            container's own network namespace is the boundary (``launch.container``: 0.0.0.0).
    """

    hint = "tritonserver"
    stop_timeout = 30.0

    def __init__(self, repository: Path, ports: Ports = Ports(), run_dir: Path = RUN, name: str | None = None,
                 address: str = "127.0.0.1") -> None:
        super().__init__(run_dir, name or f"triton_{ports.http}")
        self.repository = Path(repository)
        self.ports = ports
        self.address = address

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
            f"--http-address={self.address}", f"--http-port={self.ports.http}",
            f"--grpc-address={self.address}", f"--grpc-port={self.ports.grpc}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={self.address}",
            f"--metrics-port={self.ports.metrics}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=67108864",
            f"--grpc-infer-allocation-pool-size={GRPC_ALLOCATION_POOL}",
            "--exit-timeout-secs=10", "--log-verbose=0",
            *cuda_pool_args(),
        ]

    def env(self) -> dict[str, str]:
        return server_env()

    def cwd(self) -> Path:
        return ROOT

    def prepare(self) -> None:
        busy = [p for p in (self.ports.http, self.ports.grpc, self.ports.metrics) if not port_free(p)]
        if busy:
            raise RuntimeError(f"{self.name}: loopback port(s) {busy} already in use (another tritonserver? "
                               "`make stop`, or choose other ports)")
        sweep_stale_shm()  # a restart after a crash: the dead server's regions would hold /dev/shm

    def after_stop(self) -> None:
        """A server that had to be killed leaves its shared memory: removed once no stub maps it."""
        sweep_stale_shm()

    def start(self, timeout: float = 300.0) -> TritonServer:
        """Start the server and wait until it is ready (``/v2/health/ready``).

        Raises:
            RuntimeError: a port is busy, the process exited or was not ready in time (the log's
                tail is included); nothing is left running then.
        """
        super().start(timeout)
        return self

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.http_url}/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def embedded(name: str, models: dict, http_port: int) -> Iterator[TritonServer]:
    """Write the CPU repository ``.run/<name>`` for ``models`` (repository.resolve) and run a server
    on ``http_port`` (gRPC +1, metrics +2) for the ``with`` block."""
    from repository.generate import build

    build(RUN / name, "cpu", models)
    with TritonServer(RUN / name, Ports(http_port, http_port + 1, http_port + 2)) as server:
        yield server


def gateway_service(port: int, triton_grpc: str, run_dir: Path = RUN, triton_metrics: str | None = None
                    ) -> ManagedProcess:
    """``python -m gateway`` on 127.0.0.1:``port`` as a :class:`launch.services.ManagedProcess`
    (pid file and log ``<run_dir>/gateway_<port>.*``), ready when ``/healthz`` answers.
    ``triton_metrics``: Triton's metrics URL (default: the gateway's guess, gRPC port + 1)."""
    env = {**os.environ, "FACESWAP_GATEWAY_PORT": str(port), "FACESWAP_GATEWAY_TRITON_URL": triton_grpc}
    if triton_metrics:
        env["FACESWAP_GATEWAY_TRITON_METRICS_URL"] = triton_metrics
    env.setdefault("FACESWAP_GATEWAY_HOST", "127.0.0.1")
    g = ManagedProcess(run_dir, f"gateway_{port}", [sys.executable, "-m", "gateway"], env=env, hint="gateway",
                       ready=lambda _: http_ok(f"http://127.0.0.1:{port}/healthz"), cwd=ROOT)
    g.port = port  # type: ignore[attr-defined]
    return g


def start_gateway(port: int, triton_grpc: str, run_dir: Path = RUN, timeout: float = 60.0,
                  triton_metrics: str | None = None) -> int:
    """Start the gateway (:func:`gateway_service`) in the background; return its pid.

    Raises:
        RuntimeError: the port is busy or the gateway did not answer /healthz in time.
    """
    if not port_free(port):
        raise RuntimeError(f"gateway port {port} already in use (`make stop`, or FACESWAP_GATEWAY_PORT)")
    g = gateway_service(port, triton_grpc, run_dir, triton_metrics).start(timeout)
    pid = g.pid
    g.detach()
    return pid


def stop_gateway(port: int, run_dir: Path = RUN) -> bool:
    """Stop a gateway started by ``start_gateway``; True if one was running."""
    return ManagedProcess(run_dir, f"gateway_{port}", [], hint="gateway").stop(15.0)


def stop_from_pidfile(ports: Ports = Ports(), run_dir: Path = RUN) -> bool:
    """Stop a server started by ``serve`` in another process; True if one was running."""
    return TritonServer(run_dir / "model_repository", ports, run_dir).stop()


# -- make serve: a supervisor process that starts Triton and the gateway and keeps them up ------

READY_LINE = "supervisor: all up"


def _supervisor(ports: Ports, run_dir: Path, cmd: list[str] | None = None) -> ManagedProcess:
    """The ``python -m launch.server supervise`` process of the servers on ``ports`` (pid and log
    ``<run_dir>/supervisor_<http port>.*``, so that several ``make serve`` stacks on other ports
    keep apart, as their servers' own files do)."""
    return ManagedProcess(run_dir, f"supervisor_{ports.http}", cmd or [], hint="launch.server", stop_timeout=60.0,
                          ready=log_contains(READY_LINE), env={**os.environ, "PYTHONUNBUFFERED": "1"})


def supervise(repository: Path, ports: Ports, gateway_port: int | None, run_dir: Path = RUN) -> int:
    """The body of ``python -m launch.server supervise``: start tritonserver and the gateway (as
    children of this process), log :data:`READY_LINE`, then restart either when it dies
    (``launch.supervise``) until SIGTERM/SIGINT, which stops both (the gateway first)."""
    from launch.supervise import Supervisor, interrupt_on_signals

    interrupt_on_signals()
    triton = TritonServer(repository, ports, run_dir)
    services: list[Service] = [triton]
    try:
        triton.start()
        log.info("tritonserver ready: HTTP %s, gRPC %s, metrics 127.0.0.1:%d; log %s", triton.http_url,
                 triton.grpc_url, ports.metrics, triton.log_file)
        if gateway_port is not None:
            gw = gateway_service(gateway_port, triton.grpc_url, run_dir,
                                 f"http://127.0.0.1:{ports.metrics}/metrics").start(90)
            services.append(gw)
            log.info("gateway ready: http://127.0.0.1:%d; log %s", gateway_port, gw.log_file)
    except (RuntimeError, KeyboardInterrupt) as exc:
        log.error("%s", exc or "stopped while starting")
        for svc in reversed(services):
            svc.stop()
        return 1
    sup = Supervisor(services)
    log.info("%s (pid %d): restarting what dies; `make stop` ends it", READY_LINE, os.getpid())
    sup.run_until_signalled()
    log.info("stopping")
    for svc in reversed(services):
        svc.stop()
    return 0


def start_supervised(repository: Path, ports: Ports, gateway_port: int | None, run_dir: Path = RUN,
                     timeout: float = 900.0) -> int:
    """Start ``python -m launch.server supervise`` in its own session and wait for
    :data:`READY_LINE` in its log; returns its pid.

    Raises:
        RuntimeError: it exited, or did not get ready in ``timeout`` s (the log's tail included;
            it is stopped then).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "launch.server", "supervise", f"--repository={repository}",
           f"--http-port={ports.http}", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}",
           f"--run-dir={run_dir}"]
    if gateway_port is not None:
        cmd.append(f"--gateway-port={gateway_port}")
    sup = _supervisor(ports, run_dir, cmd)
    sup.start(timeout)
    pid = sup.pid
    sup.detach()
    return pid


def stop_supervised(ports: Ports, gateway_port: int, run_dir: Path = RUN) -> list[str]:
    """Stop what ``make serve`` started: the supervisor (which stops its servers), then any server
    left from an older run by its pid file. Returns what was running."""
    stopped = []
    if _supervisor(ports, run_dir).stop():
        stopped.append("supervisor")
    if stop_gateway(gateway_port, run_dir):
        stopped.append("gateway")
    if stop_from_pidfile(ports, run_dir):
        stopped.append("tritonserver")
    return stopped


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Run the embedded Triton server (CPU, loopback) and the gateway under a supervisor that "
                    "restarts either when it dies (log .run/supervisor_<http port>.log).")
    ap.add_argument("action", choices=["start", "stop", "status", "supervise"],
                    help="start (background, returns when ready), stop, status; supervise is what start runs")
    ap.add_argument("--gateway-port", type=int, default=int(os.environ.get("FACESWAP_GATEWAY_PORT", 8080)))
    ap.add_argument("--no-gateway", action="store_true", help="start Triton only")
    ap.add_argument("--http-port", type=int, default=int(os.environ.get("TRITON_HTTP_PORT", 8000)))
    ap.add_argument("--grpc-port", type=int, default=int(os.environ.get("TRITON_GRPC_PORT", 8001)))
    ap.add_argument("--metrics-port", type=int, default=int(os.environ.get("TRITON_METRICS_PORT", 8002)))
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=None)
    ap.add_argument("--profile", choices=["cpu", "torch"], default=os.environ.get("FACESWAP_PROFILE", "cpu"),
                    help="cpu (default): networks on ONNX Runtime/OpenVINO, frames on the host; torch: networks "
                         "in PyTorch on the GPU where there is one and frames kept there (env FACESWAP_PROFILE)")
    ap.add_argument("--repository", type=Path, default=RUN / "model_repository", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, default=RUN, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s" if args.action == "supervise"
                        else "%(message)s")
    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    run_dir = args.run_dir
    if args.action == "supervise":
        return supervise(args.repository, ports, None if args.no_gateway else args.gateway_port, run_dir)
    if args.action == "stop":
        stopped = stop_supervised(ports, args.gateway_port, run_dir)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    server = TritonServer(args.repository, ports, run_dir)
    if args.action == "status":
        print("ready" if server.is_ready() else "not ready")
        return 0 if server.is_ready() else 1
    from repository.generate import build
    from repository.resolve import resolve

    if args.profile == "torch" and package_dir("torch") is None:
        log.error("profile torch needs PyTorch in this environment: `FACESWAP_PROFILE=torch make serve` installs "
                  "the pinned version (Makefile TORCH_STAMP), or pip install torch==2.13.0 (PyPI's build is CUDA's; "
                  "torchvision too for JPEG decode and encode on the GPU)")
        return 2
    models = resolve(args.standin_size)
    for m in models.values():
        print(m.describe())
    try:
        build(args.repository, args.profile, models)
    except ValueError as exc:  # a bad setting (FACESWAP_PRECISION, FACESWAP_ENGINE): one line, not a traceback
        log.error("%s", exc)
        return 2
    try:
        start_supervised(args.repository, ports, None if args.no_gateway else args.gateway_port, run_dir)
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    print(f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, "
          f"metrics 127.0.0.1:{ports.metrics}; log {server.log_file}")
    if not args.no_gateway:
        print(f"gateway ready: http://127.0.0.1:{args.gateway_port} (OpenAPI at /docs); "
              f"log {run_dir / f'gateway_{args.gateway_port}.log'}")
    print(f"supervised: a server that dies is restarted (log {_supervisor(ports, run_dir).log_file}); "
          "stop with `make stop`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
