"""Overload: admission control, deadlines, cancellation, honest health and metrics.

Real servers on loopback: a tritonserver of this module's own (its execution counts are read,
and one test stalls it with SIGSTOP) and gateways under uvicorn with small limits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from client import FaceSwapClient, Overloaded, RequestTimeout
from client.signing import signed_headers
from tests.support.gateway_calls import GROUP, OBAMA, SECRET, files, swap
from tests.support.hostile import anon_rss_mb, tree_rss_mb
from tests.support.servers import Gateway


@pytest.fixture(scope="module")
def ov_triton(gw_triton):
    """This module's own Triton (conftest's gw_triton: tests here stall, fill and stop it)."""
    return gw_triton


@pytest.fixture(scope="module")
def latent(ov_triton):
    with FaceSwapClient(ov_triton.grpc_url, "grpc") as c:
        return c.embed(OBAMA).largest().latent


def executions(url: str) -> dict[str, int]:
    """Triton's execution count per model, once the counts have stopped moving (statistics are
    updated just after a response is sent)."""
    time.sleep(0.5)
    with FaceSwapClient(url, "grpc") as c:
        return {k: int(v.get("execution_count", 0)) for k, v in c.statistics().items()}


def wait_pending(server, model: str, n: int, timeout: float = 30.0) -> None:
    """Until ``model`` has at least ``n`` requests waiting in Triton's queue (its metrics)."""
    import re

    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5).text
        m = re.search(rf'^nv_inference_pending_request_count\{{model="{model}",version="1"\}} (\S+)', text, re.M)
        if m and float(m.group(1)) >= n:
            return
        assert time.monotonic() < deadline, f"{model}: fewer than {n} requests waiting after {timeout} s"
        time.sleep(0.02)


def busy(url: str, latent: np.ndarray, n: int, data: bytes | None = None) -> list[threading.Thread]:
    """n direct face_swap calls in threads (``data``: the group photo by default), started now;
    join them later."""
    data = data or GROUP.read_bytes()

    def one():
        with FaceSwapClient(url, "grpc", timeout=120) as c:
            c.swap(data, latent)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def gateway(ov_triton, tmp_path, **env) -> Gateway:
    g = Gateway(ov_triton.grpc_url, tmp_path / "faces.sqlite3", secret=env.pop("secret", None))
    g.env.update({f"FACESWAP_GATEWAY_{k.upper()}": str(v) for k, v in env.items()})
    return g.start()


def test_direct_grpc_callers_get_unavailable_fast_when_triton_is_full(ov_triton, latent):
    data, outcomes = GROUP.read_bytes(), []

    def one():
        t = time.monotonic()
        try:
            with FaceSwapClient(ov_triton.grpc_url, "grpc", timeout=120) as c:
                c.swap(data, latent)
            outcomes.append(("ok", time.monotonic() - t))
        except Overloaded:
            outcomes.append(("overloaded", time.monotonic() - t))

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    kinds = [k for k, _ in outcomes]
    assert len(outcomes) == 30 and kinds.count("ok") >= 8 and kinds.count("overloaded") >= 5, kinds
    assert max(s for k, s in outcomes if k == "overloaded") < 2.0


def test_a_request_past_its_deadline_is_not_computed(ov_triton, latent):
    before = executions(ov_triton.grpc_url)
    threads = busy(ov_triton.grpc_url, latent, 6)
    time.sleep(0.3)
    with FaceSwapClient(ov_triton.grpc_url, "grpc") as c, pytest.raises(RequestTimeout):
        c.swap(GROUP.read_bytes(), latent, timeout=0.05)
    for t in threads:
        t.join(120)
    time.sleep(0.5)
    after = executions(ov_triton.grpc_url)
    # the six callers' requests ran; the late one never left face_swap's queue
    assert after["face_swap"] - before["face_swap"] == 6
    assert after["face_swapper"] - before["face_swapper"] == 6


def test_full_gateway_answers_503_with_retry_after_at_once(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path, max_in_flight=1)
    try:
        async def run():
            async with httpx.AsyncClient(base_url=g.url, timeout=120) as c:
                async def one():
                    t = time.monotonic()
                    r = await c.post("/v1/swap", files=files(target=GROUP, source=OBAMA))
                    return r, time.monotonic() - t
                return await asyncio.gather(*[one() for _ in range(6)])

        results = asyncio.run(run())
        codes = [r.status_code for r, _ in results]
        assert codes.count(200) >= 1 and codes.count(503) >= 3, codes
        for r, secs in results:
            if r.status_code == 503:
                assert r.json()["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
                assert secs < 1.0
        metrics = httpx.get(f"{g.url}/metrics").text
        assert 'gateway_rejected_total{reason="requests"}' in metrics
        assert 'route="/v1/swap",status="503"' in metrics and "gateway_in_flight_requests 0.0" in metrics
    finally:
        g.stop()


def test_requests_wait_in_a_short_line_before_being_refused(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path, max_in_flight=1, max_waiting=3)
    try:
        async def run(n):
            async with httpx.AsyncClient(base_url=g.url, timeout=120) as c:
                return await asyncio.gather(*[c.post("/v1/faces", files=files(image=GROUP)) for _ in range(n)])

        assert [r.status_code for r in asyncio.run(run(4))] == [200] * 4  # one in work, three waited
        codes = [r.status_code for r in asyncio.run(run(8))]
        assert codes.count(200) >= 4 and codes.count(503) >= 1, codes
        assert "gateway_waiting_requests 0.0" in httpx.get(f"{g.url}/metrics").text
    finally:
        g.stop()


def test_pixels_in_flight_are_bounded(ov_triton, tmp_path):
    group_pixels = 1280 * 886
    g = gateway(ov_triton, tmp_path, max_in_flight=8, max_pixels_in_flight=int(group_pixels * 1.5))
    try:
        async def run():
            async with httpx.AsyncClient(base_url=g.url, timeout=120) as c:
                return await asyncio.gather(*[c.post("/v1/faces", files=files(image=GROUP)) for _ in range(4)])

        codes = sorted(r.status_code for r in asyncio.run(run()))
        assert codes[0] == 200 and codes[-1] == 503, codes
        metrics = httpx.get(f"{g.url}/metrics").text
        assert "gateway_in_flight_pixels 0.0" in metrics and 'gateway_rejected_total{reason="pixels"}' in metrics
    finally:
        g.stop()


def test_deadline_header_travels_and_is_504_with_a_clear_code(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path)
    try:
        with httpx.Client(base_url=g.url, timeout=60) as c:
            r = c.post("/v1/swap", files=files(target=GROUP, source=OBAMA), headers={"X-Request-Timeout": "0.01"})
            assert (r.status_code, r.json()["code"]) == (504, "deadline_exceeded")
            assert "X-Request-Timeout" in r.json()["message"]
            r = c.post("/v1/swap", files=files(target=GROUP, source=OBAMA), headers={"X-Request-Timeout": "nan"})
            assert (r.status_code, r.json()["code"]) == (422, "invalid_request")
            assert swap(c, GROUP, OBAMA).status_code == 200
    finally:
        g.stop()


def test_cancelled_http_request_cancels_its_triton_call(ov_triton, latent, tmp_path):
    g = gateway(ov_triton, tmp_path)
    try:
        with httpx.Client(base_url=g.url, timeout=120) as c:
            fid = c.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
        before = executions(ov_triton.grpc_url)
        # 8 calls on the group photo upscaled 2x: 1.5-3 s of work queued ahead, by the CPU (the
        # photo as it is was only 0.6 s once each image was decoded once)
        big = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(GROUP)), None, fx=2, fy=2))[1].tobytes()
        threads = busy(ov_triton.grpc_url, latent, 8, big)
        # every busy call in the pipeline, ahead of ours at every stage: both face_swap instances
        # at work and six waiting (a fixed 0.5 s was too short once on a loaded 2-core machine)
        wait_pending(ov_triton, "face_swap", 6)
        with pytest.raises(httpx.ReadTimeout):  # hung up long before our turn, even on a fast CPU
            httpx.post(f"{g.url}/v1/swap", files=files(target=GROUP), data={"source_face_id": fid}, timeout=0.3)
        for t in threads:
            t.join(120)
        time.sleep(1.0)
        after = executions(ov_triton.grpc_url)
        # the busy callers' only: the cancelled request left face_swap's queue uncomputed, or
        # face_swap saw the cancellation before its next step (no network call after it)
        assert after["face_swapper"] - before["face_swapper"] == 8
        assert after["face_swap"] - before["face_swap"] <= 9
        assert "gateway_cancelled_total 1.0" in httpx.get(f"{g.url}/metrics").text
    finally:
        g.stop()


def test_readyz_answers_503_in_time_while_triton_is_stalled(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path)
    try:
        assert httpx.get(f"{g.url}/readyz", timeout=30).status_code == 200
        os.kill(ov_triton.pid, signal.SIGSTOP)
        try:
            t = time.monotonic()
            r = httpx.get(f"{g.url}/readyz", timeout=30)
            took = time.monotonic() - t
        finally:
            os.kill(ov_triton.pid, signal.SIGCONT)
        body = r.json()
        # the content gate's state is the gateway's own: said whatever Triton does
        assert r.status_code == 503 and body.pop("content_gate")["enabled"] is True
        assert body == {"status": "degraded", "error": "triton_timeout"}
        assert took < 3.0 and r.headers["retry-after"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{g.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "not ready again after SIGCONT"
            time.sleep(0.3)
    finally:
        g.stop()


def test_concurrent_deep_checks_run_the_pipeline_once(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path, deep_check_ttl_s=60)
    try:
        before = executions(ov_triton.grpc_url)

        async def run():
            async with httpx.AsyncClient(base_url=g.url, timeout=120) as c:
                return await asyncio.gather(*[c.get("/readyz", params={"deep": 1}) for _ in range(20)])

        results = asyncio.run(run())
        after = executions(ov_triton.grpc_url)
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        deep = results[0].json()["deep"]
        assert deep["ok"] and deep["face_probe"] and deep["faces"] >= 1
        assert after["face_embed"] - before["face_embed"] == 1  # one run for twenty callers
        assert after["face_swap"] - before["face_swap"] == 2  # face-less probe + the real face
        body = results[0].text
        assert "/" not in body.replace('"status"', "")  # no paths, no URLs in a public health body
    finally:
        g.stop()


def test_deep_check_failure_is_cached_and_public_body_names_a_code(ov_triton, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 120, 60)).save(blank)
    g = gateway(ov_triton, tmp_path, deep_check_ttl_s=60, deep_check_image=blank)
    try:
        first = httpx.get(f"{g.url}/readyz", params={"deep": 1}, timeout=60)
        second = httpx.get(f"{g.url}/readyz", params={"deep": 1}, timeout=60)
        assert first.status_code == second.status_code == 503
        assert first.json()["error"] == "no_face_found" and second.json()["deep"]["cached"]
    finally:
        g.stop()
    for bad in (tmp_path / "missing.png", Path(__file__)):  # no file; a file that is no image
        g = gateway(ov_triton, tmp_path, deep_check_image=bad)
        try:
            r = httpx.get(f"{g.url}/readyz", params={"deep": 1}, timeout=60)
            assert r.status_code == 503 and r.json()["error"] == "deep_check_image_unreadable", r.text
        finally:
            g.stop()


def test_guard_answers_are_counted_in_metrics(ov_triton, tmp_path):
    g = gateway(ov_triton, tmp_path, secret=SECRET, max_upload_bytes=1000)
    try:
        with httpx.Client(base_url=g.url, timeout=60) as c:
            assert c.post("/v1/swap", files=files(target=b"x" * 10)).status_code == 401
            big = b"x" * 5000  # signed (the signature is checked first), then too large
            assert c.post("/v1/swap", content=big,
                          headers=signed_headers(SECRET, "POST", "/v1/swap", big)).status_code == 413
            assert c.get("/v1/faces/abc").status_code == 401
            text = c.get("/metrics").text
        assert 'gateway_requests_total{method="POST",route="/v1/swap",status="401"} 1.0' in text
        assert 'gateway_requests_total{method="POST",route="/v1/swap",status="413"} 1.0' in text
        assert 'gateway_requests_total{method="GET",route="/v1/faces/{face_id}",status="401"} 1.0' in text
    finally:
        g.stop()


def test_triton_exports_queue_time(ov_triton):
    text = httpx.get(f"http://127.0.0.1:{ov_triton.ports.metrics}/metrics", timeout=10).text
    assert 'nv_inference_queue_duration_us{model="face_swapper"' in text


def test_triton_memory_returns_after_near_limit_images(ov_triton, latent, tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (120, 100, 90)).save(buf, "PNG")  # 36 M pixels in ~120 KB
    big = buf.getvalue()
    for t in busy(ov_triton.grpc_url, latent, 2):
        t.join(60)
    time.sleep(1)
    warm = tree_rss_mb(ov_triton.pid)

    def one():
        with FaceSwapClient(ov_triton.grpc_url, "grpc", timeout=300) as c:
            c.swap(big, latent)

    for _ in range(2):
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    time.sleep(2)
    after = tree_rss_mb(ov_triton.pid)
    # before full frames were kept out of the stages' shared memory this grew by gigabytes
    # issue 24's bound; measured +0.1% (1245.5 -> 1247.0 MiB). Large request *bodies* are the
    # next test's: the Python backend's shared-memory pools keep the pages they grew to.
    assert after < warm * 1.05, (warm, after)


def test_tritonserver_gives_back_large_request_bodies(ov_triton, latent):
    """Four 25 MiB PNG bodies at once, twice: tritonserver's own heap returns near its warm size.
    Before launch/server.py fixed glibc's mmap threshold and emptied the gRPC allocation pool it
    kept 190-260 MiB of freed bodies (per-thread arenas and reused protobuf strings)."""
    face = cv2.imread(str(OBAMA))
    big = cv2.resize(face, (6320, 6320), interpolation=cv2.INTER_CUBIC)
    body = cv2.imencode(".png", big, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    assert len(body) > 20 * 2**20, len(body)  # above the 16 MiB threshold, below glibc's 32 MiB cap
    for t in busy(ov_triton.grpc_url, latent, 1):
        t.join(60)
    warm = anon_rss_mb(ov_triton.pid)
    grown = []
    for _ in range(2):
        for t in busy(ov_triton.grpc_url, latent, 4, data=body):
            t.join(300)
        time.sleep(1)
        grown.append(anon_rss_mb(ov_triton.pid) - warm)
    assert max(grown) < 64, (warm, grown)  # MiB; four bodies alone are 100


def test_finished_jobs_and_faces_expire_and_disk_is_budgeted(ov_triton, tmp_path):
    import sqlite3

    g = gateway(ov_triton, tmp_path, job_ttl_s=1, sweep_interval_s=0.3, face_ttl_s=1, jobs_dir=tmp_path / "jobs")
    try:
        with httpx.Client(base_url=g.url, timeout=120) as c:
            fid = c.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
            job = c.post("/v1/jobs", files=[("images", ("a.jpg", GROUP.read_bytes(), "image/jpeg")),
                                            ("source_face_id", (None, fid))]).json()
            deadline = time.monotonic() + 60
            while c.get(f"/v1/jobs/{job['id']}").json()["status"] != "done":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert (tmp_path / "jobs" / job["id"]).exists()
            time.sleep(2.5)
            r = c.get(f"/v1/jobs/{job['id']}")
            assert (r.status_code, r.json()["code"]) == (404, "job_expired")
            assert c.get(f"/v1/jobs/{job['id']}/result").json()["code"] == "job_expired"
            assert not (tmp_path / "jobs" / job["id"]).exists()
            assert c.get(f"/v1/faces/{fid}").status_code == 404
        rows = sqlite3.connect(tmp_path / "faces.sqlite3").execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        assert rows == 0  # swept, not only hidden
    finally:
        g.stop()
    g = gateway(ov_triton, tmp_path, max_jobs_disk_bytes=1, jobs_dir=tmp_path / "jobs2")
    try:
        (tmp_path / "jobs2" / "leftover").mkdir(parents=True, exist_ok=True)
        (tmp_path / "jobs2" / "leftover" / "x.bin").write_bytes(b"x" * 100)
        r = httpx.post(f"{g.url}/v1/jobs", files=files(archive=b"PK\x03\x04", source=OBAMA), timeout=60)
        assert (r.status_code, r.json()["code"]) == (503, "storage_full") and r.headers["retry-after"]
    finally:
        g.stop()


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_jobs_disk_budget_is_exact_to_the_byte(ov_triton, tmp_path):
    """The budget counts each upload as it arrives and the expected result (as large as the
    input) before a job is accepted: a job that lands exactly on the budget is taken, one byte
    less of budget refuses it, and concurrent uploads never push the folder past it (issue 18)."""
    archive = b"PK\x03\x04" + os.urandom(300_000)  # a zip that fails at once: its input stays, no result
    size = len(archive)

    def post(c, fid):
        return c.post("/v1/jobs", files=[("archive", ("a.zip", archive, "application/zip")),
                                         ("source_face_id", (None, fid))])

    def settle(c, job_id):
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["status"] not in ("failed", "done"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

    for budget, accepted in ((2 * size, True), (2 * size - 1, False)):
        jobs = tmp_path / f"jobs{budget}"
        g = gateway(ov_triton, tmp_path, max_jobs_disk_bytes=budget, jobs_dir=jobs)
        try:
            with httpx.Client(base_url=g.url, timeout=60) as c:
                fid = c.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
                r = post(c, fid)
                if not accepted:
                    assert (r.status_code, r.json()["code"]) == (503, "storage_full"), r.text
                    assert _folder_bytes(jobs) == 0
                    continue
                assert r.status_code == 202, r.text
                settle(c, r.json()["id"])
                assert _folder_bytes(jobs) == size  # its input; the result's reservation is back
                r = post(c, fid)  # size on disk + size upload + size expected result > 2 size
                assert (r.status_code, r.json()["code"]) == (503, "storage_full"), r.text
                assert _folder_bytes(jobs) == size  # the refused upload left nothing
        finally:
            g.stop()

    # twelve uploads at once against room for four: the folder never passes the budget
    jobs = tmp_path / "jobs_concurrent"
    budget = 8 * size + 1000
    g = gateway(ov_triton, tmp_path, max_jobs_disk_bytes=budget, jobs_dir=jobs, max_concurrent_jobs=1)
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _folder_bytes(jobs))
            except FileNotFoundError:  # a file renamed or deleted while walking
                pass
            time.sleep(0.002)

    try:
        with httpx.Client(base_url=g.url, timeout=60) as c:
            fid = c.post("/v1/faces", files=files(image=OBAMA)).json()["faces"][0]["id"]
        sampler = threading.Thread(target=sample)
        sampler.start()
        codes = []

        def one():
            with httpx.Client(base_url=g.url, timeout=60) as c:
                codes.append(post(c, fid).status_code)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)
        stop.set()
        sampler.join()
        assert set(codes) <= {202, 503} and codes.count(202) >= 4, codes
        assert peak[0] <= budget, (peak[0], budget)
    finally:
        stop.set()
        g.stop()
