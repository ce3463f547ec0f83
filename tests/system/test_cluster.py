"""Scale-out on one machine with real servers on loopback (``launch.cluster``): Redis, SeaweedFS
(S3), 2 tritonservers (tiny stand-ins), 2 gateways behind HAProxy, 2 job workers.

What it shows: a job made through one gateway is read and cancelled through the other; a
face registered on one is used on the other; a job worker killed with SIGKILL mid-video has its
job finished by the other worker (every frame, one result object in S3, the result handed out
as a presigned S3 URL); URL media (presigned S3 GET/PUT URLs) work end to end; a tritonserver
killed under a steady load of image swaps fails at most the calls in flight on it, and both
servers' metrics show they served.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import av
import httpx
import pytest

from tests.support.photos import image_path

VIDEO = image_path("video_astronaut_zoompan_384.mp4")
SOURCE = image_path("portrait_astronaut_eileen_collins.png")
TARGET = image_path("group_insightface_t1.jpg")
HEARTBEAT_S = 4


def frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from launch.cluster import start_cluster

    run_dir = tmp_path_factory.mktemp("cluster")
    topo = start_cluster(run_dir, tritons=2, gateways=2, workers=2, standin_size="tiny",
                         env_extra={"FACESWAP_GATEWAY_JOB_HEARTBEAT_S": str(HEARTBEAT_S),
                                    "FACESWAP_GATEWAY_MAX_IN_FLIGHT": "4", "FACESWAP_GATEWAY_MAX_WAITING": "8"})
    try:
        yield topo
    finally:
        topo.stop()


@pytest.fixture(scope="module")
def s3(cluster):
    import boto3

    info = cluster.s3.info()
    return boto3.client("s3", endpoint_url=cluster.s3.endpoint, aws_access_key_id=info["access_key"],
                        aws_secret_access_key=info["secret_key"], region_name=info["region"]), info["bucket"]


def post_job(base: str, video: Path = VIDEO, **data) -> dict:
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/v1/jobs", files={"video": ("v.mp4", video.read_bytes()), "source": ("s.png", SOURCE.read_bytes())},
                   data=data)
    assert r.status_code == 202, r.text
    return r.json()


def wait_job(base: str, job_id: str, until, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=10) as c:
        while True:
            j = c.get(f"/v1/jobs/{job_id}").json()
            if until(j):
                return j
            assert time.monotonic() < end, f"job never reached the state wanted: {j}"
            time.sleep(0.3)


def test_cluster_lines_name_every_component(cluster):
    lines = cluster.lines()
    assert sum(ln.startswith("gateway http://127.0.0.1:") for ln in lines) == 2
    assert sum(ln.startswith("triton grpc 127.0.0.1:") for ln in lines) == 2
    assert sum(re.fullmatch(r"worker pid \d+", ln) is not None for ln in lines) == 2
    assert any(ln.startswith("balancer http://127.0.0.1:") for ln in lines)
    assert any(ln.startswith("redis redis://127.0.0.1:") for ln in lines)
    assert any(ln.startswith("s3 http://127.0.0.1:") for ln in lines)
    for url in cluster.gateway_urls:
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert 'gateway_jobs{status="queued"} 0.0' in httpx.get(url + "/metrics", timeout=10).text


def test_job_made_on_one_gateway_is_read_and_cancelled_on_the_other(cluster):
    a, b = cluster.gateway_urls
    job = post_job(a)
    seen = wait_job(b, job["id"], lambda j: j["status"] == "running" and j["done"] > 0)
    assert seen["id"] == job["id"] and seen["kind"] == "video"
    r = httpx.delete(f"{b}/v1/jobs/{job['id']}", timeout=30)
    assert r.status_code == 202 and r.json()["status"] in ("cancelled", "cancelling"), r.text
    final = wait_job(a, job["id"], lambda j: j["status"] not in ("running", "cancelling"), 15)
    if final["status"] == "done" and r.json()["status"] == "cancelling" and final["done"] == final["total"]:
        # the 48-frame job ended before its worker saw the abort (it looks once a second): a cancel
        # answered "cancelling" may come too late, and the job then stands done, whole
        return
    assert final["status"] == "cancelled", final
    assert httpx.get(f"{a}/v1/jobs/{job['id']}/result", timeout=10).json()["code"] == "job_cancelled"
    # it stays cancelled: no worker takes it up again
    time.sleep(HEARTBEAT_S * 2)
    assert httpx.get(f"{b}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "cancelled"


def test_face_registered_on_one_gateway_swaps_on_the_other(cluster):
    a, b = cluster.gateway_urls
    r = httpx.post(a + "/v1/faces", files={"image": ("s.png", SOURCE.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    face_id = r.json()["faces"][0]["id"]
    assert httpx.get(f"{b}/v1/faces/{face_id}", timeout=10).status_code == 200
    swap = httpx.post(b + "/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes())},
                      data={"source_face_id": face_id}, timeout=60)
    assert swap.status_code == 200 and swap.headers["content-type"].startswith("image/"), swap.text[:300]
    assert httpx.delete(f"{b}/v1/faces/{face_id}", timeout=10).status_code == 204
    assert httpx.get(f"{a}/v1/faces/{face_id}", timeout=10).json()["code"] == "face_not_found"


def _runner_index(cluster, job_id: str) -> int:
    """Which worker's log says it took the job."""
    for i, w in enumerate(cluster.workers):
        if w.alive() and job_id in w.log_file.read_text(errors="replace"):
            return i
    raise AssertionError("no live worker logged the job")


def test_killed_worker_job_is_finished_by_the_other(cluster, s3, tmp_path):
    client, bucket = s3
    job = post_job(cluster.balancer_url)
    j = wait_job(cluster.balancer_url, job["id"], lambda j: j["status"] == "running" and j["done"] >= 4)
    victim = _runner_index(cluster, job["id"])
    cluster.kill_worker(victim)
    killed_at = time.monotonic()
    j = wait_job(cluster.balancer_url, job["id"], lambda j: j["status"] == "running" and j["restarts"] == 1, 60)
    resumed_s = time.monotonic() - killed_at
    j = wait_job(cluster.balancer_url, job["id"], lambda j: j["status"] in ("done", "failed"), 180)
    assert j["status"] == "done", j
    assert j["restarts"] == 1 and any("started again" in w for w in j["warnings"]), j
    print(f"killed worker's job resumed on the other after {resumed_s:.1f} s (heartbeat {HEARTBEAT_S} s)")  # noqa: T201
    assert resumed_s < HEARTBEAT_S * 3 + 10
    # the result: a 307 to a presigned URL of the S3 object, every frame of the input
    r = httpx.get(f"{cluster.balancer_url}/v1/jobs/{job['id']}/result", timeout=30)
    assert r.status_code == 307 and r.headers["location"].startswith(cluster.s3.endpoint), r.headers
    got = httpx.get(r.headers["location"], timeout=60)
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(got.content)
    assert frames(out) == frames(VIDEO)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job['id']}/")["Contents"]]
    assert sorted(keys) == [f"jobs/{job['id']}/input.mp4", f"jobs/{job['id']}/result.mp4"], keys
    done = [httpx.get(w.metrics_url, timeout=5).text for w in cluster.workers if w.alive()]
    assert any(re.search(r'^faceswap_worker_jobs_total\{outcome="done"\} [1-9]', t, re.M) for t in done), done
    cluster.start_worker()  # back to two workers for the tests that follow


def test_url_media_jobs_read_and_write_presigned_s3_urls(cluster, s3, tmp_path):
    client, bucket = s3
    client.upload_file(str(VIDEO), bucket, "incoming/clip.mp4")
    get_url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "incoming/clip.mp4"},
                                            ExpiresIn=600)
    put_url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "outgoing/clip.mp4",
                                                                  "ContentType": "video/mp4"}, ExpiresIn=600)
    with httpx.Client(base_url=cluster.balancer_url, timeout=60) as c:
        r = c.post("/v1/jobs", files={"source": ("s.png", SOURCE.read_bytes())},
                   data={"video_url": get_url, "result_url": put_url})
        assert r.status_code == 202, r.text
        bad = c.post("/v1/jobs", files={"source": ("s.png", SOURCE.read_bytes())},
                     data={"video_url": "http://169.254.169.254/latest/meta-data"})
        assert bad.status_code == 422 and bad.json()["code"] == "media_url_not_allowed"
    j = wait_job(cluster.balancer_url, r.json()["id"], lambda j: j["status"] in ("done", "failed"), 180)
    assert j["status"] == "done" and j["result_url_used"] is True, j
    assert "video_url" not in str(j) and "X-Amz-Signature" not in str(j)  # no signed URL is shown back
    out = tmp_path / "out.mp4"
    client.download_file(bucket, "outgoing/clip.mp4", str(out))
    assert frames(out) == frames(VIDEO)
    # a URL that does not answer fails the job with a code, not a crash
    gone = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "incoming/none.mp4"})
    r = httpx.post(cluster.balancer_url + "/v1/jobs", files={"source": ("s.png", SOURCE.read_bytes())},
                   data={"video_url": gone}, timeout=60)
    j = wait_job(cluster.balancer_url, r.json()["id"], lambda j: j["status"] in ("done", "failed"), 60)
    assert (j["status"], j["error_code"]) == ("failed", "input_fetch_failed"), j


def _served(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    m = re.search(r'^nv_inference_request_success\{model="face_swap",version="1"\} (\d+)', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_killing_one_triton_under_load_fails_only_calls_in_flight(cluster):
    """4 callers swap images through the balancer for 16 s; one tritonserver is killed at 6 s."""
    concurrency, duration, kill_at = 4, 16.0, 6.0
    target, source = TARGET.read_bytes(), SOURCE.read_bytes()
    r = httpx.post(cluster.balancer_url + "/v1/faces", files={"image": ("s.png", source)}, timeout=60)
    face_id = r.json()["faces"][0]["id"]
    results: list[tuple[float, float, int, str]] = []  # (start, end, status, code)
    served_before: list[float] = []

    async def caller(c: httpx.AsyncClient, t0: float) -> None:
        while time.monotonic() - t0 < duration:
            start = time.monotonic() - t0
            res = await c.post("/v1/swap", files={"target": ("t.jpg", target)}, data={"source_face_id": face_id})
            code = "" if res.status_code == 200 else res.json().get("code", "")
            results.append((start, time.monotonic() - t0, res.status_code, code))

    async def killer(t0: float) -> float:
        await asyncio.sleep(kill_at)
        served_before.extend(_served(t.ports.metrics) for t in cluster.tritons)
        cluster.kill_triton(1)
        return time.monotonic() - t0

    async def main() -> float:
        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=cluster.balancer_url, timeout=60) as c:
            out = await asyncio.gather(killer(t0), *(caller(c, t0) for _ in range(concurrency)))
        return out[0]

    killed = asyncio.run(main())
    assert all(n > 0 for n in served_before), f"both tritonservers must have served before the kill: {served_before}"
    failed = [r for r in results if r[2] != 200]
    in_flight_at_kill = [r for r in results if r[0] <= killed <= r[1]]
    print(f"{len(results)} swaps, {len(failed)} failed, {len(in_flight_at_kill)} in flight at the kill; "  # noqa: T201
          f"face_swap served before the kill: {served_before}")
    assert len(results) >= 10
    # a failure may only be a call that was in flight on the killed server when it died
    assert all(r[0] <= killed <= r[1] for r in failed), failed
    assert len(failed) <= concurrency
    after = [r for r in results if r[0] > killed + 1.0]
    assert after and all(r[2] == 200 for r in after), after
    assert _served(cluster.tritons[0].ports.metrics) > served_before[0]


def test_redis_killed_and_restarted_loses_nothing(cluster):
    """Redis runs with an append-only file (fsync every second). Killed with SIGKILL while a
    face is registered, jobs run and one waits: swaps with an inline source keep working, the
    routes that need Redis answer 503 storage_unavailable with Retry-After; after a restart on
    the same folder the face is there and every job finishes (issue 18)."""
    base = cluster.balancer_url
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/v1/faces", files={"image": ("s.png", SOURCE.read_bytes())})
        assert r.status_code == 200, r.text
        fid = r.json()["faces"][0]["id"]
    jobs = [post_job(base)["id"] for _ in range(3)]  # two workers: two run, one waits
    wait_job(base, jobs[0], lambda j: j["status"] == "running" and j["done"] > 0, 120)
    time.sleep(1.5)  # past the append-only file's one-second fsync
    assert cluster.redis.kill()
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.post("/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes()),
                                          "source": ("s.png", SOURCE.read_bytes())})
            assert r.status_code == 200, r.text
            for path in (f"/v1/faces/{fid}", f"/v1/jobs/{jobs[0]}"):
                r = c.get(path)
                assert (r.status_code, r.json()["code"]) == (503, "storage_unavailable"), (path, r.text)
                assert int(r.headers["retry-after"]) > 0
            r = c.post("/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes())}, data={"source_face_id": fid})
            assert (r.status_code, r.json()["code"]) == (503, "storage_unavailable"), r.text
            time.sleep(2)  # the workers meet a Redis that is away
    finally:
        cluster.redis.start(30)
    with httpx.Client(base_url=base, timeout=60) as c:
        deadline = time.monotonic() + 30
        while (r := c.get(f"/v1/faces/{fid}")).status_code != 200:  # the gateways' connections come back
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        r = c.post("/v1/swap", files={"target": ("t.jpg", TARGET.read_bytes())}, data={"source_face_id": fid})
        assert r.status_code == 200, r.text
    for job_id in jobs:
        j = wait_job(base, job_id, lambda j: j["status"] in ("done", "failed", "cancelled"), 240)
        assert j["status"] == "done", j


def test_s3_store_killed_mid_job_fails_it_with_a_code_and_recovers(cluster):
    """SeaweedFS killed while a job runs: the job fails with error_code storage_unavailable (its
    result cannot be stored), new uploads get 503 storage_unavailable with Retry-After, and once
    the store is back (same data folder) jobs run again (issue 18)."""
    base = cluster.balancer_url
    job = post_job(base)["id"]
    wait_job(base, job, lambda j: j["status"] == "running" and j["done"] > 0, 120)
    assert cluster.s3.kill()
    try:
        j = wait_job(base, job, lambda j: j["status"] in ("done", "failed"), 180)
        assert (j["status"], j["error_code"]) == ("failed", "storage_unavailable"), j
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.post("/v1/jobs", files={"video": ("v.mp4", VIDEO.read_bytes()),
                                          "source": ("s.png", SOURCE.read_bytes())})
            assert (r.status_code, r.json()["code"]) == (503, "storage_unavailable"), r.text
            assert int(r.headers["retry-after"]) > 0
    finally:
        cluster.s3.start(60)
    j = wait_job(base, post_job(base)["id"], lambda j: j["status"] in ("done", "failed"), 180)
    assert j["status"] == "done", j
