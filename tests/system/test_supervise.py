"""Servers that come back on their own (issue 18): ``launch.supervise.Supervisor`` on plain
processes, and ``make serve`` (``python -m launch.server start``) with a real tritonserver
killed with SIGKILL: no Python-backend stub is left, and the gateway swaps again within 30 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from launch.services import ManagedProcess, free_port, pid_alive, tcp_open
from launch.supervise import Supervisor
from tests.support.photos import ROOT, image_path
from tests.support.servers import free_ports


def group_members(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def test_only_the_unmapped_shared_memory_of_dead_servers_is_swept(tmp_path):
    """``launch.server.stale_shm_regions``: a region nobody maps is stale; one a live process
    maps is not, nor is a file that is not a Python-backend region."""
    import mmap

    from launch.server import SHM_PREFIX, stale_shm_regions, sweep_stale_shm

    def region(name: str) -> Path:
        path = tmp_path / f"{SHM_PREFIX}{name}"
        path.write_bytes(b"\0" * 4096)
        return path

    dead, dead2, live = region("a_dead"), region("b_dead"), region("c_live")
    other = tmp_path / "not_a_region"
    other.write_bytes(b"x")
    with live.open("r+b") as f, mmap.mmap(f.fileno(), 4096):
        assert stale_shm_regions(tmp_path, 0.0) == [dead, dead2]
        assert sweep_stale_shm(tmp_path, 0.0) == (2, 8192)
        assert not dead.exists() and not dead2.exists() and live.exists() and other.exists()
        assert sweep_stale_shm(tmp_path, 0.0) == (0, 0)
    assert stale_shm_regions(tmp_path, 0.0) == [live]  # unmapped now


def wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < end, f"{what} not within {timeout} s"
        time.sleep(0.1)
    return got


def test_supervisor_restarts_with_backoff_and_kills_leftovers(tmp_path):
    # the leader starts a child in its group, as tritonserver starts its Python stubs
    svc = ManagedProcess(tmp_path, "napper", ["sh", "-c", "sleep 300 & exec sleep 301"], hint="sleep")
    svc.start(5)
    sup = Supervisor([svc], interval=0.05, backoff_s=0.3, max_backoff_s=1.2, stable_s=60).start()
    try:
        first = svc.pid
        wait_for(lambda: len(group_members(first)) == 2, 5, "the child")
        os.kill(first, signal.SIGKILL)  # the leader alone, as an OOM kill would
        t0 = time.monotonic()
        second = wait_for(lambda: svc.pid if svc.pid != first and svc.alive() else None, 5, "a restart")
        assert time.monotonic() - t0 >= 0.3  # after the backoff
        assert group_members(first) == []  # the orphaned child went with its leader
        assert sup.restarts["napper"] == 1
        # a second quick death doubles the pause
        os.kill(second, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: svc.pid not in (first, second) and svc.alive(), 5, "a second restart")
        assert time.monotonic() - t0 >= 0.6
        assert sup.restarts["napper"] == 2
    finally:
        sup.stop()
        svc.stop()
    assert not svc.alive()


def test_a_service_stopped_by_hand_is_left_down(tmp_path):
    svc = ManagedProcess(tmp_path, "napper", ["sleep", "300"], hint="sleep")
    svc.start(5)
    sup = Supervisor([svc], interval=0.05, backoff_s=0.1).start()
    try:
        pid = svc.pid
        # as another process stops it (make stop, launch.server.stop_gateway): by pid, pid file removed
        assert ManagedProcess(tmp_path, "napper", [], hint="sleep").stop()
        time.sleep(1.0)
        assert sup.restarts["napper"] == 0 and not svc.alive() and not pid_alive(pid)
        assert not (tmp_path / "napper.pid").exists()
    finally:
        sup.stop()
        svc.stop()


def test_make_serve_comes_back_after_tritonserver_is_killed(models, tmp_path):
    from launch.server import mapped_regions
    from repository.generate import build

    run = tmp_path / "run"
    build(run / "model_repository", "cpu", models)
    ports, gw_port = free_ports(), free_port()
    base = ports.http
    args = [f"--http-port={ports.http}", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}",
            f"--gateway-port={gw_port}", f"--run-dir={run}", f"--repository={run / 'model_repository'}"]
    env = {**os.environ, "FACESWAP_GATEWAY_STORE_PATH": str(tmp_path / "faces.sqlite3"),
           "FACESWAP_GATEWAY_JOBS_DIR": str(tmp_path / "jobs")}
    env.pop("FACESWAP_GATEWAY_HMAC_SECRET", None)
    # the supervise step directly (start would rebuild the repository from FACESWAP_STANDIN_SIZE)
    sup = ManagedProcess(run, "supervisor", [sys.executable, "-m", "launch.server", "supervise", *args],
                         env=env, hint="launch.server", stop_timeout=60, cwd=ROOT,
                         ready=lambda p: "supervisor: all up" in p.log_tail(200))
    sup.start(300)
    gateway = f"http://127.0.0.1:{gw_port}"
    files = {"target": ("t.jpg", image_path("group_insightface_t1.jpg").read_bytes()),
             "source": ("s.jpg", image_path("portrait_obama_official.jpg").read_bytes())}
    try:
        assert httpx.post(f"{gateway}/v1/swap", files=files, timeout=60).status_code == 200
        triton_pid = int((run / f"triton_{base}.pid").read_text())
        stubs = [p for p in group_members(triton_pid) if p != triton_pid]
        assert stubs, "expected Python-backend stubs in tritonserver's process group"
        regions = mapped_regions([triton_pid, *stubs])
        assert regions, "expected the stubs' shared-memory regions in /proc/<pid>/maps"
        gw_pid = int((run / f"gateway_{gw_port}.pid").read_text())
        os.kill(triton_pid, signal.SIGKILL)  # the server alone: its stubs would be orphans
        t0 = time.monotonic()
        r = httpx.post(f"{gateway}/v1/swap", files=files, timeout=60)
        assert (r.status_code, r.json()["code"]) == (503, "triton_unavailable"), r.text
        wait_for(lambda: not any(pid_alive(p) for p in stubs), 10, "the old stubs gone")

        def swapped() -> bool:
            try:
                return httpx.post(f"{gateway}/v1/swap", files=files, timeout=20).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(swapped, 30 - (time.monotonic() - t0), "the first 200 after the kill")
        assert int((run / f"triton_{base}.pid").read_text()) != triton_pid
        said = (run / "supervisor.log").read_text()
        assert f"triton_{base} (pid {triton_pid}) died after" in said and "signal SIGKILL" in said, said[-2000:]
        assert f"triton_{base} restarted" in said
        # the killed server's shared memory is not left to fill /dev/shm: removed at the restart
        assert not [r for r in regions if Path(r).exists()], regions
        assert "stale Python-backend shared-memory region(s)" in said, said[-2000:]
        # the gateway dies too: it comes back on its own
        os.kill(gw_pid, signal.SIGKILL)
        wait_for(swapped, 30, "the gateway back")
        assert int((run / f"gateway_{gw_port}.pid").read_text()) != gw_pid
    finally:
        sup.stop()
    # stopping the supervisor stops what it started: nothing left
    for name in (f"triton_{base}", f"gateway_{gw_port}"):
        assert not (run / f"{name}.pid").exists(), name
    assert not tcp_open(base) and not tcp_open(gw_port)


def test_make_cluster_restarts_what_dies_and_stops_everything(tmp_path):
    """``python -m launch.cluster start`` (what ``make cluster`` runs) leaves a supervisor behind:
    a job worker, Redis and a gateway killed with SIGKILL come back on their own (Redis with its
    data), and ``stop`` leaves nothing running."""
    import json

    run = tmp_path / "cluster"
    cli = [sys.executable, "-m", "launch.cluster"]
    env = {**os.environ, "FACESWAP_STANDIN_SIZE": "tiny"}
    r = subprocess.run([*cli, "start", f"--run-dir={run}", "--tritons=1", "--gateways=1", "--workers=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    try:
        topo = json.loads((run / "topology.json").read_text())
        balancer = topo["balancer"]["url"]
        with httpx.Client(base_url=balancer, timeout=60) as c:
            r = c.post("/v1/faces", files={"image": ("s.jpg", image_path("portrait_obama_official.jpg").read_bytes())})
            assert r.status_code == 200, r.text
            fid = r.json()["faces"][0]["id"]
        time.sleep(1.5)  # Redis' append-only file is fsynced every second
        killed = {kind: topo[kind][0]["pid"] if isinstance(topo[kind], list) else topo[kind]["pid"]
                  for kind in ("workers", "redis", "gateways")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)

        def all_back() -> bool:
            t = json.loads((run / "topology.json").read_text())
            now = {"workers": t["workers"][0]["pid"], "redis": t["redis"]["pid"], "gateways": t["gateways"][0]["pid"]}
            return all(now[k] not in (None, killed[k]) and pid_alive(now[k]) for k in killed)

        wait_for(all_back, 60, "the killed components restarted")

        def face_back() -> bool:
            try:
                return httpx.get(f"{balancer}/v1/faces/{fid}", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(face_back, 60, "the face, through a restarted gateway and Redis")
        status = subprocess.run([*cli, "status", f"--run-dir={run}"], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        said = (run / "supervisor.log").read_text()
        assert said.count("died after") >= 3 and said.count("restarted (pid") >= 3, said[-3000:]
    finally:
        stop = subprocess.run([*cli, "stop", f"--run-dir={run}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    assert stop.returncode == 0, stop.stderr
    topo = json.loads((run / "topology.json").read_text())
    pids = [t["last_pid"] for kind in ("tritons", "gateways", "workers") for t in topo[kind]]
    pids += [topo[k]["last_pid"] for k in ("redis", "s3", "balancer")]
    assert not [p for p in pids if p and pid_alive(p)], topo
    assert not (run / "supervisor.pid").exists()
