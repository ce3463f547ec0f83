"""The compose stack from the built images, under podman-compose: ``docker-compose.yml`` with
``deploy/compose/cpu.yml`` (gateway, 2 job workers, Redis, SeaweedFS, the CPU Triton image).

``make test-images`` runs it (``-m images``; ``make test`` does not: it needs podman, the images
of ``make images``, about 5 minutes to build them on 2 cores, and this machine's root). The stack
gets a project name of its own, free loopback ports and tiny stand-ins (the real detector where
``../shared/models`` has one). The test registers a face, swaps an image, runs a short video job
to the end, reads ``/readyz``, kills the worker container that runs a second job and sees the
other finish it, then takes everything down and checks that no container, volume or network of
the project is left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import av
import httpx
import pytest

from client.signing import signed_headers
from launch.services import free_port
from repository.layout import ROOT, shared_models_dir
from tests.support.photos import image_path

pytestmark = pytest.mark.images

SOURCE = image_path("portrait_astronaut_eileen_collins.png")
TARGET = image_path("group_insightface_t1.jpg")
VIDEO = image_path("video_astronaut_zoompan_384.mp4")
IMAGES = ("localhost/faceswap-gateway:0.1.0", "localhost/faceswap-triton-cpu:0.1.0",
          "localhost/faceswap-redis:0.1.0", "localhost/faceswap-seaweedfs:0.1.0")
SECRET = uuid.uuid4().hex
HEARTBEAT_S = 4
UP_TIMEOUT_S = 300


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def tools() -> str:
    """podman-compose's path; fails with what to install when podman, it or the images are missing."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `apt-get install podman runc` (Debian 12; as root), set "
                    "runtime = \"runc\" and default_ulimits = [] in /etc/containers/containers.conf "
                    "(docs/containers.md), then `make images`")
    compose = Path(sys.executable).parent / "podman-compose"
    if not compose.exists():
        pytest.fail("podman-compose is not installed in this environment: `make setup` (requirements.lock pins it)")
    missing = [i for i in IMAGES if subprocess.run(["podman", "image", "exists", i]).returncode != 0]
    if missing:
        pytest.fail(f"images missing: {', '.join(missing)}: run `make images` first")
    return str(compose)


class Stack:
    """One compose project in a folder of its own (the compose files copied there, so the
    checkout is not written), named ``name``, on free loopback ports."""

    def __init__(self, work: Path) -> None:
        self.compose = tools()
        self.name = f"fstest{uuid.uuid4().hex[:8]}"
        self.dir = work
        for rel in ("docker-compose.yml", "deploy/compose/cpu.yml", "deploy/compose/seaweedfs.sh"):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
        models = work / "deploy/compose/detector"
        models.mkdir(parents=True, exist_ok=True)
        real = next((p for p in (shared_models_dir() / "det_2.5g.onnx", shared_models_dir() / "det_500m.onnx")
                     if p.is_file()), None)
        if real is not None:
            shutil.copy2(real, models / real.name)
        self.gateway_port, self.s3_port = free_port(), free_port()
        base = free_port(also_free=(1, 2))
        self.env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": str(work),
                    "FACESWAP_GATEWAY_HMAC_SECRET": SECRET, "FACESWAP_GATEWAY_S3_ACCESS_KEY_ID": "faceswap",
                    "FACESWAP_GATEWAY_S3_SECRET_ACCESS_KEY": uuid.uuid4().hex,
                    "FACESWAP_GATEWAY_JOB_HEARTBEAT_S": str(HEARTBEAT_S), "FACESWAP_STANDIN_SIZE": "tiny",
                    "GATEWAY_PORT": str(self.gateway_port), "S3_PORT": str(self.s3_port),
                    "TRITON_HTTP_PORT": str(base), "TRITON_GRPC_PORT": str(base + 1),
                    "TRITON_METRICS_PORT": str(base + 2)}
        self.url = f"http://127.0.0.1:{self.gateway_port}"
        self._last: dict[tuple[str, str], int] = {}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        files = ["-f", "docker-compose.yml", "-f", "deploy/compose/cpu.yml"]
        return subprocess.run([self.compose, "-p", self.name, *files, *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def containers(self, service: str | None = None, all_states: bool = False) -> list[dict]:
        args = ["ps", "--format", "json", "--filter", f"label=io.podman.compose.project={self.name}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return json.loads(podman(*args, *(["-a"] if all_states else [])) or "[]")

    def logs(self, name: str) -> str:
        r = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60)
        return r.stdout + r.stderr

    def states(self) -> str:
        """Every container of the project with its state and the tail of its log (for failures)."""
        return "\n".join(f"{c['Names'][0]}: {c['State']} {c.get('Status', '')}\n{self.logs(c['Names'][0])[-800:]}"
                         for c in self.containers(all_states=True))

    def down(self) -> subprocess.CompletedProcess:
        return self.run("down", "-v", "-t", "15", timeout=240)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=io.podman.compose.project={self.name}"
        return {"containers": [c["Names"][0] for c in self.containers(all_states=True)],
                "volumes": podman("volume", "ls", "-q", "--filter", label).split(),
                "networks": [n for n in podman("network", "ls", "--format", "{{.Name}}").split()
                             if n.startswith(self.name)]}

    # --- signed calls to the gateway (the stack has an HMAC secret, as compose requires) ---

    def call(self, method: str, path: str, timeout: float = 120, **kw) -> httpx.Response:
        # a signature's timestamp is in whole seconds of the wall clock: the same request again
        # within that second would be a replay (401)
        while int(time.time()) <= self._last.get((method, path), 0):
            time.sleep(0.05)
        self._last[(method, path)] = int(time.time())
        with httpx.Client(base_url=self.url, timeout=timeout) as c:
            req = c.build_request(method, path, **kw)
            body = req.read()
            req.headers.update(signed_headers(SECRET, method, req.url.raw_path.decode(), body,
                                              self._last[(method, path)]))
            return c.send(req)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("compose"))
    t0 = time.monotonic()
    try:
        up = s.run("up", "-d", timeout=UP_TIMEOUT_S)
        assert up.returncode == 0, f"podman-compose up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        end, last = time.monotonic() + UP_TIMEOUT_S, None
        while time.monotonic() < end:
            try:
                last = httpx.get(s.url + "/readyz", timeout=5)
                if last.status_code == 200:
                    break
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(2)
        else:
            logs = {c["Names"][0]: s.logs(c["Names"][0])[-1500:] for c in s.containers(all_states=True)}
            raise AssertionError(f"/readyz not 200 within {UP_TIMEOUT_S} s: {last!r}\n{json.dumps(logs, indent=1)}")
        s.up_s = time.monotonic() - t0
        print(f"compose stack ready in {s.up_s:.0f} s")  # noqa: T201
        yield s
    finally:
        s.down()


def wait_job(stack: Stack, job_id: str, until, timeout: float = 240) -> dict:
    end = time.monotonic() + timeout
    while True:
        try:
            j = stack.call("GET", f"/v1/jobs/{job_id}").json()
        except httpx.HTTPError as exc:
            raise AssertionError(f"the gateway did not answer ({exc!r}); containers:\n{stack.states()}") from None
        if until(j):
            return j
        assert j["status"] != "failed", f"the job failed: {j}; containers:\n{stack.states()}"
        assert time.monotonic() < end, f"job never reached the state wanted: {j}"
        time.sleep(0.5)


def post_job(stack: Stack) -> str:
    r = stack.call("POST", "/v1/jobs", files={"video": ("v.mp4", VIDEO.read_bytes()),
                                              "source": ("s.png", SOURCE.read_bytes())})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def frames(data: bytes, path: Path) -> int:
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def result_bytes(stack: Stack, job_id: str) -> bytes:
    """The job's result: the gateway answers 307 to a presigned URL on the compose network's
    ``s3:8333``; fetched through the published port with the Host it was signed for."""
    r = stack.call("GET", f"/v1/jobs/{job_id}/result")
    assert r.status_code == 307, r.text
    loc = httpx.URL(r.headers["location"])
    assert loc.host == "s3", loc
    got = httpx.get(loc.copy_with(host="127.0.0.1", port=stack.s3_port), headers={"Host": f"{loc.host}:{loc.port}"},
                    timeout=60)
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4", got.text[:300]
    return got.content


def test_every_service_runs_from_the_built_images_as_non_root(stack):
    running = {c["Labels"]["com.docker.compose.service"]: c for c in stack.containers()}
    assert set(running) == {"triton", "redis", "s3", "gateway", "worker"}, running.keys()
    assert len(stack.containers("worker")) == 2
    for svc, image in (("gateway", IMAGES[0]), ("worker", IMAGES[0]), ("triton", IMAGES[1]),
                       ("redis", IMAGES[2]), ("s3", IMAGES[3])):
        assert running[svc]["Image"] == image, (svc, running[svc]["Image"])
        uid = podman("exec", running[svc]["Names"][0], "id", "-u").strip()
        assert uid != "0", f"{svc} runs as root"
    ready = httpx.get(stack.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text


def test_register_a_face_and_swap_an_image(stack):
    r = stack.call("POST", "/v1/faces", files={"image": ("s.png", SOURCE.read_bytes())})
    assert r.status_code == 200, r.text
    face_id = r.json()["faces"][0]["id"]
    swap = stack.call("POST", "/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes())},
                      data={"source_face_id": face_id})
    assert swap.status_code == 200 and swap.headers["content-type"] == "image/jpeg", swap.text[:300]
    assert swap.content[:3] == b"\xff\xd8\xff" and len(swap.content) > 10_000
    unsigned = httpx.post(stack.url + "/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes())},
                          data={"source_face_id": face_id}, timeout=30)
    assert unsigned.status_code == 401, unsigned.text  # the secret compose requires is enforced


def test_a_short_video_job_runs_to_the_end(stack, tmp_path):
    job_id = post_job(stack)
    j = wait_job(stack, job_id, lambda j: j["status"] in ("done", "failed"))
    assert j["status"] == "done" and j["done"] == j["total"] == 48, j
    assert frames(result_bytes(stack, job_id), tmp_path / "out.mp4") == 48


def test_a_worker_container_killed_mid_job_leaves_the_job_to_the_other(stack, tmp_path):
    job_id = post_job(stack)
    wait_job(stack, job_id, lambda j: j["status"] == "running" and j["done"] >= 4)
    workers = [c["Names"][0] for c in stack.containers("worker")]
    runner = [w for w in workers if job_id in stack.logs(w)]
    assert len(runner) == 1, f"which worker took {job_id}? {workers}"
    (other,) = [w for w in workers if w != runner[0]]
    podman("kill", runner[0])
    killed = time.monotonic()
    j = wait_job(stack, job_id, lambda j: j["status"] in ("done", "failed"), 300)
    print(f"job finished {time.monotonic() - killed:.1f} s after the kill (heartbeat {HEARTBEAT_S} s)")  # noqa: T201
    assert j["status"] == "done" and j["restarts"] == 1, j
    assert any("started again" in w for w in j["warnings"]), j
    assert job_id in stack.logs(other), "the other worker's log does not name the job"
    assert frames(result_bytes(stack, job_id), tmp_path / "out.mp4") == 48


def test_down_leaves_nothing_behind(stack):
    t0 = time.monotonic()
    r = stack.down()
    assert r.returncode == 0, r.stderr[-2000:]
    print(f"compose down in {time.monotonic() - t0:.0f} s")  # noqa: T201
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


# --- the images themselves (no stack) ---------------------------------------------------------------

@pytest.mark.parametrize("image", IMAGES[:2])
def test_runtime_images_hold_no_installer_test_tool_or_compiler(image):
    tools()
    probe = ("for t in pip pip3 gcc cc c++ make pytest perf_analyzer ruff; do command -v $t; done; "
             "python -c 'import pip' 2>/dev/null && echo pip-module; "
             "python -c 'import pytest' 2>/dev/null && echo pytest; "
             "id -u")
    out = podman("run", "--rm", "--entrypoint", "sh", image, "-c", probe).split()
    assert out[:-1] == [], f"{image} holds {out[:-1]}"
    assert out[-1] != "0", f"{image} runs as root"
    check = json.loads(podman("image", "inspect", image))[0].get("Healthcheck")  # podman's key
    assert check and check["Test"][0] == "CMD" and "http://127.0.0.1:" in check["Test"][-1], f"{image}: {check}"


def test_runpod_worker_runs_a_test_input_inside_the_triton_image(tmp_path):
    """The SDK's local test mode in the CPU Triton image: the worker starts its embedded Triton,
    runs the job of ``test_input.json`` and exits 0 (the same image a RunPod endpoint runs)."""
    tools()
    import base64

    job = {"input": {"task": "swap", "source": {"base64": base64.b64encode(SOURCE.read_bytes()).decode()},
                     "target": {"base64": base64.b64encode(TARGET.read_bytes()).decode()}}}
    (tmp_path / "test_input.json").write_text(json.dumps(job))
    tmp_path.chmod(0o755)
    shared = shared_models_dir()
    if not any((shared / f).is_file() for f in ("det_2.5g.onnx", "det_500m.onnx")):
        pytest.fail(f"no real SCRFD detector in {shared} (a stand-in detector finds no face to swap): "
                    "set FACESWAP_SHARED_MODELS")
    r = subprocess.run(["podman", "run", "--rm", "--shm-size", "1g", "-v", f"{tmp_path}:/job:ro", "-w", "/job",
                        "-v", f"{shared}:/shared/models:ro", IMAGES[1], "python", "-m", "runpod_worker"],
                       capture_output=True, text=True, timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "Job local_test completed successfully." in log and "'faces_swapped': 6" in log
    assert "tritonserver stopped" in log
