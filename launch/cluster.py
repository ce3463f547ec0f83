"""The local multi-process topology of docs/scale.md, with real servers on loopback.

``make cluster`` (``python -m launch.cluster start``) starts, in this order: Redis, the S3 store
(SeaweedFS), N tritonservers (embedded, CPU, in parallel; tiny stand-ins unless
``FACESWAP_STANDIN_SIZE`` says otherwise), N gateways (``python -m gateway``; each waits for
``/healthz``), M job workers (``python -m gateway.worker``; each waits for "worker ready" in its
log) and HAProxy in front of the gateways. Every server binds to 127.0.0.1 on a free port.
Everything lives under ``.run/cluster/``: pid files, logs, data, and ``topology.json`` (ports,
pids, URLs, S3 keys; mode 0600). ``make cluster-stop`` stops everything by pid and is safe to run
twice; ``python -m launch.cluster status`` says what is up.

On success ``start`` prints one line per component on stdout (everything else goes to stderr)::

    balancer http://127.0.0.1:PORT
    gateway http://127.0.0.1:PORT          (one per replica)
    triton grpc 127.0.0.1:PORT             (one per server)
    worker pid PID                         (one per worker)
    redis redis://127.0.0.1:PORT
    s3 http://127.0.0.1:PORT

On a failure it stops what it started and exits 1 with the failing component's log tail.
Tests use :func:`start_cluster` and the :class:`Topology` it returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from launch.server import RUN, Ports, TritonServer, prepare_backends
from launch.services import (
    HAProxy,
    ManagedProcess,
    RedisServer,
    S3Server,
    Service,
    free_port,
    http_ok,
    log_contains,
    pid_alive,
    tcp_open,
)

log = logging.getLogger("launch.cluster")
ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = RUN / "cluster"
TRITON_TIMEOUT_S = 300.0
GATEWAY_TIMEOUT_S = 90.0
WORKER_TIMEOUT_S = 90.0


class ClusterError(RuntimeError):
    """A component did not start; ``component`` names it, the message has its log tail."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component


class Topology:
    """The running cluster: its components (live objects in the process that started them, or rebuilt
    from ``topology.json`` to stop them) and what scripts need to reach them.

    Attributes:
        run_dir: folder of every pid file, log and datum, and of ``topology.json``.
        redis, s3, balancer: the servers (None until started).
        tritons, gateways, workers: replicas, in start order (a killed one stays in its slot).
        env: the environment given to gateways and workers (less the per-replica port and folders).
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.redis: RedisServer | None = None
        self.s3: S3Server | None = None
        self.tritons: list[TritonServer] = []
        self.gateways: list[ManagedProcess] = []
        self.workers: list[ManagedProcess] = []
        self.balancer: HAProxy | None = None
        self.env: dict[str, str] = {}
        self.state = "starting"
        self.stand_ins: list[str] = []

    # -- what scripts read -------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """``<run_dir>/topology.json``."""
        return self.run_dir / "topology.json"

    @property
    def balancer_url(self) -> str:
        """``http://127.0.0.1:PORT`` of HAProxy."""
        assert self.balancer is not None
        return self.balancer.url

    @property
    def gateway_urls(self) -> list[str]:
        """``http://127.0.0.1:PORT`` of each gateway (direct, not through the balancer)."""
        return [_gw_url(g) for g in self.gateways]

    @property
    def triton_grpc(self) -> list[str]:
        """``127.0.0.1:PORT`` of each tritonserver's gRPC endpoint."""
        return [t.grpc_url for t in self.tritons]

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers that run now."""
        return [w.pid for w in self.workers if w.pid is not None and w.alive()]

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        assert self.redis is not None
        return self.redis.url

    def lines(self) -> list[str]:
        """The component lines ``start`` prints (see the module docstring)."""
        out = []
        if self.balancer is not None:
            out.append(f"balancer {self.balancer.url}")
        out += [f"gateway {u}" for u in self.gateway_urls]
        out += [f"triton grpc {g}" for g in self.triton_grpc]
        out += [f"worker pid {w.pid}" for w in self.workers if w.pid is not None]
        if self.redis is not None:
            out.append(f"redis {self.redis.url}")
        if self.s3 is not None:
            out.append(f"s3 {self.s3.endpoint}")
        return out

    def to_dict(self) -> dict:
        """Everything in ``topology.json``: ports, pids, URLs, logs, S3 keys (no HMAC secret)."""
        def rec(svc: Service, **extra) -> dict:
            pid = svc.pid
            return {"name": svc.name, "pid": pid, "last_pid": pid or svc.last_pid, "log": str(svc.log_file), **extra}

        return {
            "state": self.state, "run_dir": str(self.run_dir), "written_at": time.time(),
            "stand_in_models": self.stand_ins,
            "balancer": rec(self.balancer, url=self.balancer.url, port=self.balancer.port,
                            stats_url=self.balancer.stats_url, stats_port=self.balancer.stats_port,
                            backends=self.balancer.backends) if self.balancer else None,
            "gateways": [rec(g, url=_gw_url(g), port=g.port) for g in self.gateways],  # type: ignore[attr-defined]
            "tritons": [rec(t, grpc=t.grpc_url, http=t.http_url, metrics_port=t.ports.metrics,
                            ports={"http": t.ports.http, "grpc": t.ports.grpc, "metrics": t.ports.metrics},
                            repository=str(t.repository)) for t in self.tritons],
            "workers": [rec(w) for w in self.workers],
            "redis": rec(self.redis, url=self.redis.url, port=self.redis.port) if self.redis else None,
            "s3": rec(self.s3, **self.s3.info()) if self.s3 else None,
        }

    def save(self) -> None:
        """Write ``topology.json`` (mode 0600: it holds the S3 secret) atomically."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        tmp.replace(self.path)

    @classmethod
    def load(cls, run_dir: Path | str = RUN_DIR) -> Topology:
        """Rebuild the topology written by ``start`` (to stop it or ask its status).

        Raises:
            FileNotFoundError: no ``topology.json`` there.
        """
        topo = cls(run_dir)
        d = json.loads(topo.path.read_text())
        topo.state = d.get("state", "unknown")
        topo.stand_ins = d.get("stand_in_models", [])
        rd = topo.run_dir

        def pid(svc: Service, rec: dict) -> Service:
            svc._pid = rec.get("pid")
            svc.last_pid = rec.get("last_pid")
            return svc

        if d.get("redis"):
            topo.redis = pid(RedisServer(rd, d["redis"]["port"], name=d["redis"]["name"]), d["redis"])
        if d.get("s3"):
            s = d["s3"]
            topo.s3 = pid(S3Server(rd, s["port"], s["access_key"], s["secret_key"], s["bucket"], s["region"],
                                   name=s["name"], ports=s["ports"]), s)
        for t in d.get("tritons", []):
            ports = Ports(t["ports"]["http"], t["ports"]["grpc"], t["ports"]["metrics"])
            topo.tritons.append(pid(TritonServer(Path(t["repository"]), ports, rd, t["name"]), t))
        for g in d.get("gateways", []):
            gw = ManagedProcess(rd, g["name"], [], hint="gateway")
            gw.port = g["port"]  # type: ignore[attr-defined]
            topo.gateways.append(pid(gw, g))
        for w in d.get("workers", []):
            topo.workers.append(pid(ManagedProcess(rd, w["name"], [], hint="gateway.worker"), w))
        if d.get("balancer"):
            b = d["balancer"]
            topo.balancer = pid(HAProxy(rd, b["port"], b["backends"], stats_port=b.get("stats_port"),
                                        name=b["name"]), b)
        return topo

    # -- lifecycle ---------------------------------------------------------------------------

    def components(self) -> list[tuple[str, Service]]:
        """``(kind, service)`` in start order."""
        out: list[tuple[str, Service]] = []
        if self.redis:
            out.append(("redis", self.redis))
        if self.s3:
            out.append(("s3", self.s3))
        out += [("triton", t) for t in self.tritons]
        out += [("gateway", g) for g in self.gateways]
        out += [("worker", w) for w in self.workers]
        if self.balancer:
            out.append(("balancer", self.balancer))
        return out

    def stop(self) -> list[str]:
        """Stop every component by pid, the balancer first and Redis last (SIGTERM, then SIGKILL).
        Safe to call twice; returns the names of those that were running."""
        stopped: list[str] = []

        def one(svc: Service) -> None:
            try:
                if svc.stop():
                    stopped.append(svc.name)
            except OSError as exc:  # keep stopping the others
                log.warning("stopping %s: %s", svc.name, exc)

        groups: list[list[Service]] = []  # one group per kind, the replicas of a kind at once
        last = None
        for kind, svc in reversed(self.components()):
            if kind != last:
                groups.append([])
                last = kind
            groups[-1].append(svc)
        for group in groups:
            if len(group) == 1:
                one(group[0])
            else:
                with ThreadPoolExecutor(max_workers=len(group)) as pool:
                    list(pool.map(one, group))
        self.state = "stopped"
        if self.run_dir.exists():
            self.save()
        return stopped

    def status(self) -> list[tuple[str, str, bool]]:
        """``(kind, address, up)`` per component: the process runs and answers (HTTP health,
        PING, S3 port, Triton ready)."""
        out = []
        for kind, svc in self.components():
            up = svc.alive()
            if up and kind in ("gateway",):
                up = http_ok(f"{_gw_url(svc)}/healthz")
            elif up and kind in ("redis", "triton", "balancer"):
                up = svc.is_ready()
            elif up and kind == "s3":
                up = tcp_open(svc.port)  # type: ignore[attr-defined]
            addr = {"redis": lambda s: s.url, "s3": lambda s: s.endpoint, "triton": lambda s: f"grpc {s.grpc_url}",
                    "gateway": _gw_url, "worker": lambda s: f"pid {s.pid or s.last_pid}",
                    "balancer": lambda s: s.url}[kind](svc)
            out.append((kind, addr, up))
        return out

    def kill_worker(self, i: int) -> int:
        """SIGKILL worker ``i`` (its whole process group), like a crash; returns its pid.

        Raises:
            IndexError: no such worker.
        """
        w = self.workers[i]
        pid = w.pid
        w.kill()
        self.save()
        return pid  # type: ignore[return-value]

    def kill_triton(self, i: int) -> int:
        """SIGKILL tritonserver ``i`` and its Python stubs, like a crash; returns its pid."""
        t = self.tritons[i]
        pid = t.pid
        t.kill()
        self.save()
        return pid  # type: ignore[return-value]

    def kill_gateway(self, i: int) -> int:
        """SIGKILL gateway ``i``, like a crash; returns its pid."""
        g = self.gateways[i]
        pid = g.pid
        g.kill()
        self.save()
        return pid  # type: ignore[return-value]

    def restart_triton(self, i: int, timeout: float = TRITON_TIMEOUT_S) -> TritonServer:
        """Start tritonserver ``i`` again on its ports (after :meth:`kill_triton`); waits until ready.

        Raises:
            RuntimeError: it did not come up (log tail included).
        """
        old = self.tritons[i]
        if old.alive():
            old.stop()
        t = TritonServer(old.repository, old.ports, self.run_dir, old.name)
        t.start(timeout)
        self.tritons[i] = t
        self.save()
        return t

    def restart_gateway(self, i: int, timeout: float = GATEWAY_TIMEOUT_S) -> ManagedProcess:
        """Start gateway ``i`` again on its port (the balancer's health check takes it back within
        about 2 s); waits for ``/healthz``.

        Raises:
            RuntimeError: it did not come up (log tail included).
        """
        old = self.gateways[i]
        if old.alive():
            old.stop()
        g = _gateway(self.run_dir, i, self.env, port=old.port)  # type: ignore[attr-defined]
        g.start(timeout)
        self.gateways[i] = g
        self.save()
        return g

    def start_worker(self, timeout: float = WORKER_TIMEOUT_S) -> int:
        """Start one more job worker (e.g. to replace a killed one); returns its index in ``workers``.

        Raises:
            RuntimeError: it exited or logged no "worker ready" in ``timeout`` s (log tail included).
        """
        i = len(self.workers)
        w = _worker(self.run_dir, i, self.env)
        self.workers.append(w)
        try:
            w.start(timeout)
        finally:
            self.save()
        return i

    def detach(self) -> None:
        """Leave every server running after this process exits (``python -m launch.cluster start``)."""
        for _, svc in self.components():
            svc.detach()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _gw_url(g: Service) -> str:
    return f"http://127.0.0.1:{g.port}"  # type: ignore[attr-defined]


def _worker(run_dir: Path, i: int, env: Mapping[str, str]) -> ManagedProcess:
    home = run_dir / f"worker{i}"
    home.mkdir(parents=True, exist_ok=True)
    wenv = dict(env)
    wenv.setdefault("FACESWAP_GATEWAY_STORE_PATH", str(home / "faces.sqlite3"))
    wenv.setdefault("FACESWAP_GATEWAY_JOBS_DIR", str(home / "jobs"))
    port = free_port()
    w = ManagedProcess(run_dir, f"worker{i}", [sys.executable, "-m", "gateway.worker", "--metrics-port", str(port)],
                       env=wenv, ready=log_contains("worker ready"), hint="gateway.worker", cwd=ROOT)
    w.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    return w


def _gateway(run_dir: Path, i: int, env: Mapping[str, str], port: int | None = None) -> ManagedProcess:
    home = run_dir / f"gateway{i}"
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    genv = dict(env)
    genv.setdefault("FACESWAP_GATEWAY_STORE_PATH", str(home / "faces.sqlite3"))
    genv.setdefault("FACESWAP_GATEWAY_JOBS_DIR", str(home / "jobs"))
    genv["FACESWAP_GATEWAY_PORT"] = str(port)
    g = ManagedProcess(run_dir, f"gateway{i}", [sys.executable, "-m", "gateway"], env=genv,
                       ready=lambda p: http_ok(f"http://127.0.0.1:{port}/healthz"), hint="gateway", cwd=ROOT)
    g.port = port  # type: ignore[attr-defined]
    return g


def start_cluster(run_dir: Path | str = RUN_DIR, tritons: int = 2, gateways: int = 2, workers: int = 2,
                  standin_size: str | None = "tiny", env_extra: Mapping[str, str] | None = None,
                  triton_timeout: float = TRITON_TIMEOUT_S) -> Topology:
    """Start the whole topology on loopback and return it (stop it with ``Topology.stop()`` or a
    ``with`` block). ``topology.json`` is written after each stage.

    Args:
        run_dir: folder of everything (created).
        tritons, gateways, workers: replica counts (workers may be 0; gateways and tritons >= 1).
        standin_size: "tiny" or "full" stand-ins where real models are missing (None: from
            ``FACESWAP_STANDIN_SIZE``, default tiny).
        env_extra: more environment for gateways and workers (applied over the cluster's own,
            except each gateway's port).
        triton_timeout: seconds each tritonserver may take to become ready.

    Raises:
        ClusterError: a component did not start (its log tail is in the message); everything
            started before it has been stopped.
        ValueError: a count out of range.
    """
    if tritons < 1 or gateways < 1 or workers < 0:
        raise ValueError("need at least one triton and one gateway (workers >= 0)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    topo = Topology(run_dir)
    try:
        _start(topo, tritons, gateways, workers, standin_size, env_extra or {}, triton_timeout)
    except BaseException:
        topo.stop()
        raise
    topo.state = "running"
    topo.save()
    return topo


def _step(component: str, fn):
    try:
        return fn()
    except RuntimeError as exc:
        if isinstance(exc, ClusterError):
            raise
        raise ClusterError(component, str(exc)) from exc


def _start(topo: Topology, n_tritons: int, n_gateways: int, n_workers: int, standin_size: str | None,
           env_extra: Mapping[str, str], triton_timeout: float) -> None:
    from repository.generate import build
    from repository.resolve import resolve

    rd = topo.run_dir
    t0 = time.monotonic()
    topo.redis = RedisServer(rd)
    _step("redis", lambda: topo.redis.start(15))
    log.info("redis up: %s (%.1f s)", topo.redis.url, time.monotonic() - t0)
    topo.save()

    topo.s3 = S3Server(rd)
    _step("s3", lambda: topo.s3.start(60))
    log.info("s3 up: %s bucket %s (%.1f s)", topo.s3.endpoint, topo.s3.bucket, time.monotonic() - t0)
    topo.save()

    models = _step("models", lambda: resolve(standin_size))
    for m in models.values():
        log.info("%s", m.describe())
    topo.stand_ins = [m.name for m in models.values() if m.stand_in]
    repo = rd / "model_repository"
    build(repo, "cpu", models)
    prepare_backends(rd)  # once, before the servers start in parallel
    for i in range(n_tritons):
        ports = Ports(free_port(), free_port(), free_port())
        topo.tritons.append(TritonServer(repo, ports, rd, f"triton{i}"))
    topo.save()
    with ThreadPoolExecutor(max_workers=n_tritons) as pool:
        futures = [pool.submit(t.start, triton_timeout) for t in topo.tritons]
        errors = []
        for t, f in zip(topo.tritons, futures):
            try:
                f.result()
            except RuntimeError as exc:
                errors.append((t.name, exc))
    if errors:
        name, exc = errors[0]
        raise ClusterError(name, str(exc))
    log.info("tritons up: %s (%.1f s)", ", ".join(topo.triton_grpc), time.monotonic() - t0)
    topo.save()

    env = {k: v for k, v in os.environ.items() if k != "FACESWAP_GATEWAY_PORT"}
    s3 = topo.s3
    env.update({
        "FACESWAP_GATEWAY_HOST": "127.0.0.1",
        "FACESWAP_GATEWAY_TRITON_URL": ",".join(topo.triton_grpc),
        "FACESWAP_GATEWAY_REDIS_URL": topo.redis.url,
        "FACESWAP_GATEWAY_S3_ENDPOINT_URL": s3.endpoint,
        "FACESWAP_GATEWAY_S3_BUCKET": s3.bucket,
        "FACESWAP_GATEWAY_S3_ACCESS_KEY_ID": s3.access_key,
        "FACESWAP_GATEWAY_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "FACESWAP_GATEWAY_S3_REGION": s3.region,
        # jobs may read and write presigned URLs of the cluster's own bucket (path-style)
        "FACESWAP_GATEWAY_MEDIA_URL_PREFIXES": f"{s3.endpoint}/{s3.bucket}/",
    })
    env.update(env_extra)
    env.pop("FACESWAP_GATEWAY_PORT", None)
    topo.env = env

    for i in range(n_gateways):
        g = _gateway(rd, i, env)
        topo.gateways.append(g)
        topo.save()
        _step(g.name, lambda g=g: g.start(GATEWAY_TIMEOUT_S))
    log.info("gateways up: %s (%.1f s)", ", ".join(topo.gateway_urls), time.monotonic() - t0)

    for i in range(n_workers):
        w = _worker(rd, i, env)
        topo.workers.append(w)
        topo.save()
        _step(w.name, lambda w=w: w.start(WORKER_TIMEOUT_S))
    if n_workers:
        log.info("workers up: pids %s (%.1f s)", topo.worker_pids, time.monotonic() - t0)

    topo.balancer = HAProxy(rd, free_port(), topo.gateway_urls, health_path="/healthz", stats_port=free_port())
    topo.save()
    _step("balancer", lambda: topo.balancer.start(15))
    log.info("balancer up: %s (stats %s/stats, metrics %s/metrics) (%.1f s)", topo.balancer.url,
             topo.balancer.stats_url, topo.balancer.stats_url, time.monotonic() - t0)


def _running(run_dir: Path) -> Topology | None:
    try:
        topo = Topology.load(run_dir)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return topo if any(svc.pid and pid_alive(svc.pid, svc.hint) for _, svc in topo.components()) else None


SUPERVISED_LINE = "cluster: all up, supervising"


def _supervisor(run_dir: Path, cmd: list[str] | None = None) -> ManagedProcess:
    """The ``python -m launch.cluster run`` process (pid and log ``<run_dir>/supervisor.*``)."""
    return ManagedProcess(run_dir, "supervisor", cmd or [], hint="launch.cluster", stop_timeout=90.0,
                          ready=log_contains(SUPERVISED_LINE), env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _run_supervised(run_dir: Path, tritons: int, gateways: int, workers: int, standin_size: str | None) -> int:
    """``python -m launch.cluster run``: start the cluster as children of this process, then restart
    any component that dies (``launch.supervise``; ``topology.json`` follows the new pids) until
    SIGTERM/SIGINT, which stops everything."""
    from launch.supervise import Supervisor, interrupt_on_signals

    interrupt_on_signals()  # while starting: start_cluster stops what it started
    try:
        topo = start_cluster(run_dir, tritons, gateways, workers, standin_size)
    except ClusterError as exc:
        log.error("cluster start failed at %s: %s", exc.component, exc)
        return 1
    except KeyboardInterrupt:
        log.error("stopped while starting")
        return 130
    sup = Supervisor([svc for _, svc in topo.components()], on_restart=lambda _: topo.save())
    log.info("%s (pid %d)", SUPERVISED_LINE, os.getpid())
    sup.run_until_signalled()
    log.info("stopping the cluster")
    topo.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m launch.cluster start|stop|status``; returns the exit status."""
    ap = argparse.ArgumentParser(description="Local cluster on loopback: Redis, S3 (SeaweedFS), tritonservers, "
                                 "gateways behind HAProxy, job workers.")
    ap.add_argument("action", choices=["start", "stop", "status", "run"],
                    help="start (in the background under a supervisor that restarts what dies; returns when all is "
                         "up), stop, status; run is what start runs")
    ap.add_argument("--tritons", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--run-dir", type=Path, default=RUN_DIR)
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=None,
                    help="stand-ins where real models are missing (default: FACESWAP_STANDIN_SIZE, else tiny)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("launch.services").setLevel(logging.WARNING)
    run_dir = args.run_dir.resolve()

    if args.action == "run":
        return _run_supervised(run_dir, args.tritons, args.gateways, args.workers, args.standin_size)

    if args.action == "stop":
        supervisor = _supervisor(run_dir)
        was_supervised = supervisor.stop()  # it stops every component itself
        try:
            topo = Topology.load(run_dir)
        except FileNotFoundError:
            print(f"no cluster in {run_dir}", file=sys.stderr)
            return 0
        stopped = topo.stop() + (["supervisor"] if was_supervised else [])
        print(f"cluster stopped ({len(stopped)} running: {', '.join(stopped) or 'none'})", file=sys.stderr)
        return 0

    if args.action == "status":
        try:
            topo = Topology.load(run_dir)
        except FileNotFoundError:
            print(f"no cluster in {run_dir}", file=sys.stderr)
            return 1
        rows = topo.status()
        for kind, addr, up in rows:
            print(f"{kind} {addr} {'up' if up else 'down'}")
        return 0 if rows and all(up for _, _, up in rows) else 1

    if _running(run_dir) is not None:
        print(f"a cluster is already running from {run_dir} (`make cluster-stop` first)", file=sys.stderr)
        return 1
    old = None
    try:
        old = Topology.load(run_dir)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    if old is not None:
        old.stop()  # leftovers of a crashed run (orphaned groups)
    cmd = [sys.executable, "-m", "launch.cluster", "run", f"--run-dir={run_dir}", f"--tritons={args.tritons}",
           f"--gateways={args.gateways}", f"--workers={args.workers}"]
    if args.standin_size:
        cmd.append(f"--standin-size={args.standin_size}")
    supervisor = _supervisor(run_dir, cmd)
    try:
        supervisor.start(TRITON_TIMEOUT_S + 300)
    except RuntimeError as exc:
        print(f"cluster start failed; everything started was stopped.\n{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    supervisor.detach()
    topo = Topology.load(run_dir)
    for line in topo.lines():
        print(line)
    sys.stdout.flush()
    print(f"topology: {topo.path}; logs in {run_dir}; supervised (a component that dies is restarted, see "
          f"{supervisor.log_file}); stop with `make cluster-stop`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
