"""Live stream (``GET /v1/stream``) through a real gateway and Triton (tiny stand-ins): the
protocol's errors and close codes, a real clip at 24 fps, a client hanging up mid-stream,
ten streams at once, signatures on the upgrade request, key-point jitter on a still clip."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid

import cv2
import httpx
import numpy as np
import pytest
import websockets

from client.live import read_frames, stream_frames
from client.signing import signed_headers
from tests.support.photos import image_path
from tests.support.servers import Gateway

SECRET = "stream-secret-0123456789"
CLIP = image_path("video_astronaut_zoompan_384.mp4")
SOURCE = image_path("portrait_astronaut_eileen_collins.png")
MAX_STREAMS = 10


@pytest.fixture(scope="module")
def gw(triton, tmp_path_factory):
    g = Gateway(triton.grpc_url, tmp_path_factory.mktemp("stream") / "faces.sqlite3", secret=SECRET)
    g.env.update({"FACESWAP_GATEWAY_STREAM_IDLE_TIMEOUT_S": "3", "FACESWAP_GATEWAY_MAX_STREAMS": str(MAX_STREAMS),
                  "FACESWAP_GATEWAY_MAX_IN_FLIGHT": "2", "FACESWAP_GATEWAY_MAX_WAITING": "4"})
    g.start()
    yield g
    g.stop()


def ws_url(gw) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/stream"


def metric(gw, name: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


async def refused(gw, first: str | None, frames: list[bytes] = (), sign: bool = True) -> tuple[dict, int]:
    """Open a stream, send ``first`` (and frames); return the error message and close code."""
    path = f"/v1/stream?nonce={uuid.uuid4().hex}"
    headers = signed_headers(SECRET, "GET", path) if sign else {}
    async with websockets.connect(gw.url.replace("http://", "ws://") + path, additional_headers=headers) as ws:
        if first is not None:
            try:
                await ws.send(first)
            except websockets.exceptions.ConnectionClosed:
                pass  # refused at once (e.g. too many streams): the error message is still there to read
        msg = json.loads(await ws.recv())
        if msg["type"] == "ready":
            for f in frames:
                await ws.send(f)
            msg = json.loads(await ws.recv())
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await ws.recv()
        return msg, ws.close_code


def test_frames_are_not_deflated_again(gw):
    """JPEG/WebP frames do not compress: the gateway declines permessage-deflate even when the
    client offers it (websockets offers it by default)."""

    async def offered() -> str:
        path = f"/v1/stream?nonce={uuid.uuid4().hex}"
        async with websockets.connect(ws_url(gw).removesuffix("/v1/stream") + path,
                                      additional_headers=signed_headers(SECRET, "GET", path)) as ws:
            assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
            return ws.response.headers.get("Sec-WebSocket-Extensions", "")

    assert "deflate" not in asyncio.run(offered())


def test_protocol_errors_close_with_4xxx_codes(gw):
    src = base64.b64encode(SOURCE.read_bytes()).decode()
    png = SOURCE.read_bytes()
    cases = [
        ("not json", None, "bad_request", 4400),
        (json.dumps({"source": src, "colour": "blue"}), None, "bad_request", 4400),
        (json.dumps({"source": src, "output_format": "png"}), None, "bad_request", 4400),
        (json.dumps({"source": src, "source_face_id": "x"}), None, "bad_request", 4400),
        (json.dumps({"source_face_id": "0" * 32}), None, "face_not_found", 4404),
        (json.dumps({"source": base64.b64encode(image_path("noface_cat_chelsea.png").read_bytes()).decode()}),
         None, "no_face_in_source", 4422),
        (json.dumps({"source": src}), [png], "unsupported_media_type", 4415),
        (json.dumps({"source": src}), [b"\xff\xd8\xff" + b"\0" * (5 << 20)], "frame_too_large", 4413),
    ]
    for first, frames, code, close in cases:
        msg, got = asyncio.run(refused(gw, first, frames or []))
        assert (msg["type"], msg["code"], got) == ("error", code, close), (first[:60], msg, got)
        assert msg["message"]


def test_unsigned_or_idle_streams_are_closed(gw):
    msg, code = asyncio.run(refused(gw, None, sign=False))
    assert (msg["code"], code) == ("missing_signature", 4401)
    t = time.monotonic()
    msg, code = asyncio.run(refused(gw, None))  # signed, then silent
    assert (msg["code"], code) == ("idle_timeout", 4408) and time.monotonic() - t < 10


def test_a_real_clip_at_24_fps_comes_back_swapped_around_the_faces(gw):
    frames, times, rate = read_frames(CLIP)
    got: dict[int, tuple[dict, bytes]] = {}
    rep = asyncio.run(stream_frames(ws_url(gw), frames, times, source=SOURCE.read_bytes(), secret=SECRET,
                                    on_frame=lambda meta, img: got.__setitem__(meta["seq"], (meta, img))))
    assert rate == pytest.approx(24, abs=0.1) and rep.sent == len(frames) == 48
    assert rep.received >= 3 and rep.sizes_kept, rep.summary()
    assert rep.received + rep.dropped + rep.frame_errors == rep.sent, rep.summary()  # every frame accounted for
    assert rep.latency_ms and all(0 < v < 10_000 for v in rep.latency_ms)
    assert rep.stand_in_models  # tiny stand-ins: said so in "ready"
    swapped = 0
    for seq, (meta, data) in got.items():
        out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        sent = cv2.imdecode(cv2.imencode(".jpg", frames[seq], [cv2.IMWRITE_JPEG_QUALITY, 85])[1], cv2.IMREAD_COLOR)
        assert out.shape == sent.shape
        diff = np.abs(out.astype(np.int16) - sent.astype(np.int16)).max(axis=2)
        mask = np.zeros(diff.shape, bool)
        for f in meta["faces"]:
            x1, y1, x2, y2 = f["box"]
            w, h = x2 - x1, y2 - y1
            mask[max(int(y1 - h), 0):int(y2 + h), max(int(x1 - w), 0):int(x2 + w)] = True
        if meta["kps"]:
            swapped += 1
            assert diff[mask].mean() > 8, "the face region did not change"
        assert diff[~mask].mean() < 4, "pixels away from the faces changed"
    assert swapped >= 3


def test_a_client_hanging_up_mid_stream_leaves_nothing_behind(gw, triton):
    frames, _, _ = read_frames(CLIP)
    jpgs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames[:20]]

    async def hang_up() -> None:
        path = f"/v1/stream?nonce={uuid.uuid4().hex}"
        ws = await websockets.connect(gw.url.replace("http://", "ws://") + path,
                                      additional_headers=signed_headers(SECRET, "GET", path))
        await ws.send(json.dumps({"source": base64.b64encode(SOURCE.read_bytes()).decode()}))
        assert json.loads(await ws.recv())["type"] == "ready"
        for j in jpgs:
            await ws.send(j)
        await asyncio.sleep(0.05)  # a frame is in work inside Triton now
        ws.transport.abort()  # no close handshake: the way a crashed client leaves

    asyncio.run(hang_up())
    end = time.monotonic() + 5
    while time.monotonic() < end and (metric(gw, "gateway_streams") or metric(gw, "gateway_in_flight_requests")):
        time.sleep(0.1)
    assert metric(gw, "gateway_streams") == 0
    assert metric(gw, "gateway_in_flight_requests") == 0
    pending = httpx.get(f"http://127.0.0.1:{triton.ports.metrics}/metrics", timeout=5).text
    assert all(float(v) == 0 for v in re.findall(r"^nv_inference_pending_request_count\{[^}]*\} (\S+)", pending,
                                                  re.M))


def test_ten_streams_at_once_stay_bounded_and_the_eleventh_is_refused(gw):
    frames, times, _ = read_frames(CLIP)
    frames, times = frames[:36], times[:36]  # 1.5 s at 24 fps, each
    peak = {"in_flight": 0.0}

    async def watch(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=5) as c:
            while not stop.is_set():
                text = (await c.get(gw.url + "/metrics")).text
                v = float(re.search(r"^gateway_in_flight_requests (\S+)$", text, re.M).group(1))
                peak["in_flight"] = max(peak["in_flight"], v)
                await asyncio.sleep(0.1)

    async def main():
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        reps = await asyncio.gather(*(stream_frames(ws_url(gw), frames, times, source=SOURCE.read_bytes(),
                                                    secret=SECRET) for _ in range(MAX_STREAMS)),
                                    refused_later(), return_exceptions=True)
        stop.set()
        await watcher
        return reps

    async def refused_later():
        await asyncio.sleep(1.0)  # the ten are open by now
        return await refused(gw, json.dumps({"source": base64.b64encode(SOURCE.read_bytes()).decode()}))

    *reps, eleventh = asyncio.run(main())
    for r in reps:
        assert not isinstance(r, BaseException), r
        # every frame is answered or dropped, but for at most one still in work when the stream stopped
        assert r.received >= 1 and r.sent - 1 <= r.received + r.dropped + r.frame_errors <= r.sent, r.summary()
    assert not isinstance(eleventh, BaseException), repr(eleventh)
    assert eleventh[0]["code"] == "overloaded" and eleventh[1] == 4503, eleventh
    assert peak["in_flight"] <= 2  # the gateway's admission bound (MAX_IN_FLIGHT) held with ten streams
    assert metric(gw, "gateway_streams") == 0


def jitter(kps_per_frame: list[np.ndarray]) -> float:
    """Mean over the 5 key points of the standard deviation of their position (pixels) across
    frames, after removing nothing: the clip is still, so any spread is jitter."""
    k = np.stack(kps_per_frame)  # [T, 5, 2]
    return float(np.linalg.norm(k.std(axis=0), axis=1).mean())


def test_still_clip_key_point_jitter_is_lower_with_smoothing(gw):
    """A still face with sensor-like noise (Gaussian, sigma 4) on each of 48 frames."""
    still = cv2.imread(str(SOURCE))
    still = cv2.resize(still, (still.shape[1] // 2 * 2 // 2, still.shape[0] // 2 * 2 // 2))
    rng = np.random.default_rng(7)
    frames = [np.clip(still + rng.normal(0, 4, still.shape), 0, 255).astype(np.uint8) for _ in range(48)]
    times = [i / 24 for i in range(48)]
    result = {}
    for smoothing in (False, True):
        kps: list[np.ndarray] = []

        def keep(meta: dict, _img: bytes, kps: list = kps) -> None:
            kps.extend(np.asarray(k) for k in meta["kps"][:1])

        asyncio.run(stream_frames(ws_url(gw), frames, times, source=SOURCE.read_bytes(), secret=SECRET,
                                  options={"smoothing": smoothing}, on_frame=keep))
        assert len(kps) >= 5
        result[smoothing] = jitter(kps[1:])  # the first frame starts the filter
    print(f"still clip key-point jitter: {result[False]:.3f} px raw, {result[True]:.3f} px smoothed")  # noqa: T201
    assert result[True] < result[False]


def test_plain_get_says_upgrade_and_the_protocol_is_documented(gw):
    r = httpx.get(gw.url + "/v1/stream", headers=signed_headers(SECRET, "GET", "/v1/stream"), timeout=10)
    assert r.status_code == 426 and r.headers["upgrade"] == "websocket" and r.json()["code"] == "upgrade_required"
    doc = httpx.get(gw.url + "/openapi.json", timeout=10).json()["paths"]["/v1/stream"]["get"]["description"]
    assert "latest frame wins" in doc.lower() and "4422 no_face_in_source" in doc and "`detect_every`" in doc
