"""The content gate end to end, through a real Triton and gateway: the refusal path with the
test-only detector that flags everything (``FACESWAP_CONTENT_DETECTOR=flag-all``; no intimate
image is made or stored), in ``/v1/swap``, batch jobs (per item), video jobs (the job fails,
nothing kept) and live streams (a frame_error, the stream goes on); and the gate turned off by
the server setting only. The real detector's false-positive figure is every other server test:
they swap the shared photos through it."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile

import httpx
import pytest

from client.live import read_frames, stream_frames
from repository.resolve import resolve
from tests.support.photos import image_path
from tests.support.servers import Gateway, jobs_gateway, start_triton

SOURCE = image_path("portrait_astronaut_eileen_collins.png")
TARGET = image_path("group_insightface_t1.jpg")
CLIP = image_path("video_astronaut_zoompan_384.mp4")


@pytest.fixture(scope="module")
def flag_all_triton(tmp_path_factory):
    server = start_triton(resolve("tiny", content="flag-all"), tmp_path_factory.mktemp("gate_triton"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(flag_all_triton, tmp_path_factory):
    g = jobs_gateway(flag_all_triton.grpc_url, tmp_path_factory.mktemp("gate"))
    yield g
    g.stop()


def refused_total(gw, route: str) -> float:
    for line in httpx.get(gw.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f'gateway_content_refused_total{{route="{route}"}}'):
            return float(line.split()[-1])
    return 0.0


def wait_job(c: httpx.Client, job_id: str) -> dict:
    end = time.monotonic() + 180
    while (j := c.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < end, j
        time.sleep(0.3)
    return j


def test_a_refused_target_is_422_naming_the_policy_and_counted(gw):
    before = refused_total(gw, "/v1/swap")
    r = httpx.post(gw.url + "/v1/swap", files={"source": ("s.png", SOURCE.read_bytes()),
                                               "target": ("t.jpg", TARGET.read_bytes())}, timeout=120)
    assert r.status_code == 422 and r.json()["code"] == "content_refused", r.text
    assert "intimate-imagery" in r.json()["message"] and "EXPOSED" not in r.text  # the policy, not the classes
    assert refused_total(gw, "/v1/swap") == before + 1
    ready = httpx.get(gw.url + "/readyz", timeout=30).json()
    assert ready["content_gate"]["enabled"] and ready["content_gate"]["policy"] == "intimate-imagery"


def test_a_video_job_fails_and_keeps_nothing(gw):
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        job = c.post("/v1/jobs", files={"video": ("v.mp4", CLIP.read_bytes()),
                                        "source": ("s.png", SOURCE.read_bytes())}).json()
        j = wait_job(c, job["id"])
        assert j["status"] == "failed" and j["error_code"] == "content_refused", j
        assert c.get(f"/v1/jobs/{job['id']}/result").status_code >= 400
    folder = gw.jobs_dir / job["id"]
    left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert not [p for p in left if p.suffix in (".mp4", ".part")], left  # neither the upload nor a partial result
    assert refused_total(gw, "video") >= 1


def test_a_batch_refuses_each_item_and_writes_none(gw):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.jpg", TARGET.read_bytes())
        z.writestr("b.jpg", TARGET.read_bytes())
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        job = c.post("/v1/jobs", files={"archive": ("in.zip", buf.getvalue(), "application/zip"),
                                        "source": ("s.png", SOURCE.read_bytes())}).json()
        j = wait_job(c, job["id"])
        assert j["status"] == "done", j
        out = zipfile.ZipFile(io.BytesIO(c.get(f"/v1/jobs/{job['id']}/result").content))
    report = json.loads(out.read("batch_report.json"))
    assert [i["error"].split(":")[0] for i in report["items"]] == ["content_refused"] * 2, report
    assert sorted(out.namelist()) == ["batch_report.json"]
    assert refused_total(gw, "batch") >= 2


def test_a_stream_answers_refused_frames_with_frame_error_and_goes_on(gw):
    frames, times, _ = read_frames(CLIP)
    rep = asyncio.run(stream_frames(gw.url.replace("http", "ws"), frames[:6], times[:6],
                                    source=SOURCE.read_bytes(), realtime=False, lockstep=True))
    assert rep.frame_errors >= 5 and rep.error_codes == {"content_refused": rep.frame_errors}, rep
    assert rep.received + rep.frame_errors == 6  # every frame answered: the stream went on
    assert refused_total(gw, "stream") >= 5


def test_only_the_server_setting_turns_the_gate_off_and_readyz_says_so(flag_all_triton, tmp_path):
    g = Gateway(flag_all_triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env.update({"FACESWAP_GATEWAY_CONTENT_GATE": "false", "FACESWAP_GATEWAY_C2PA_DEV_DIR": str(tmp_path / "c2pa")})
    g.start()
    try:
        r = httpx.post(g.url + "/v1/swap", files={"source": ("s.png", SOURCE.read_bytes()),
                                                  "target": ("t.jpg", TARGET.read_bytes())}, timeout=120)
        assert r.status_code == 200 and int(r.headers["x-faces-swapped"]) > 0, r.text[:300]
        assert httpx.get(g.url + "/readyz", timeout=30).json()["content_gate"]["enabled"] is False
        assert "CONTENT GATE IS OFF" in g.log.read_text()
    finally:
        g.stop()
