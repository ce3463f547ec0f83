"""A client of the gateway's live stream (``GET /v1/stream``, WebSocket): sends a video file's
frames at their own pace, as a camera would, and collects the swapped frames.

Used by ``faceswap live``, the tests and ``bench.live``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from client.errors import FaceSwapError, InvalidInput, ServerUnavailable
from client.signing import signed_headers


class StreamClosed(FaceSwapError):
    """The gateway ended the stream with an error: ``code`` (e.g. ``no_face_in_source``) and
    ``close_code`` (4xxx)."""

    def __init__(self, code: str, message: str, close_code: int | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.close_code = code, close_code


@dataclass
class LiveReport:
    """What one stream did. Latencies are milliseconds from a frame's arrival at the gateway
    to its answer (``latency_ms``) and from its send to its receipt here (``round_trip_ms``)."""

    sent: int = 0
    received: int = 0
    dropped: int = 0
    frame_errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)
    faces_swapped: int = 0
    stand_in_models: list[str] = field(default_factory=list)
    sizes_kept: bool = True

    @property
    def fps(self) -> float:
        """Swapped frames received per second of streaming."""
        return self.received / self.seconds if self.seconds else 0.0

    def percentile(self, q: float, which: str = "round_trip_ms") -> float | None:
        values = getattr(self, which)
        return float(np.percentile(values, q)) if values else None

    def summary(self) -> str:
        p50, p95 = self.percentile(50), self.percentile(95)
        lat = f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms" if p50 is not None else "no frame came back"
        return (f"{self.sent} frames sent, {self.received} swapped frames back ({self.fps:.1f} fps), "
                f"{self.dropped} dropped by the server (latest frame wins), {self.frame_errors} frame errors"
                + (f" ({', '.join(f'{k}: {v}' for k, v in self.error_codes.items())})" if self.error_codes else "")
                + f"; {lat}")


def read_frames(path: Path, max_side: int | None = None) -> tuple[list[np.ndarray], list[float], float]:
    """Decode a video: BGR uint8 [H, W, 3] frames, their times (s from the first), frame rate.

    Raises:
        InvalidInput: the file cannot be read or has no video frames.
    """
    frames, times = [], []
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            rate = float(stream.average_rate or 30)
            for f in c.decode(stream):
                img = f.to_ndarray(format="bgr24")
                if max_side and max(img.shape[:2]) > max_side:
                    s = max_side / max(img.shape[:2])
                    img = cv2.resize(img, (round(img.shape[1] * s / 2) * 2, round(img.shape[0] * s / 2) * 2),
                                     interpolation=cv2.INTER_AREA)
                frames.append(img)
                times.append(float(f.time) if f.time is not None else len(times) / rate)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise InvalidInput(f"{path}: cannot read the video ({exc})") from None
    if not frames:
        raise InvalidInput(f"{path}: no video frames")
    t0 = times[0]
    return frames, [t - t0 for t in times], rate


async def stream_frames(url: str, frames: list[np.ndarray | bytes], times: list[float], *,
                        source: bytes | None = None,
                        source_face_id: str | None = None, options: dict | None = None, secret: str | None = None,
                        quality: int = 85, realtime: bool = True, repeat: int = 1, lockstep: bool = False,
                        on_frame: Callable[[dict, bytes], None] | None = None, open_timeout: float = 30.0,
                        drain_timeout: float = 15.0) -> LiveReport:
    """Stream ``frames`` (BGR uint8, encoded here as JPEG at ``quality``; or JPEG/WebP bytes, sent
    as they are: a camera's own encoder) to ``url`` (``ws://host:port/v1/stream``), each sent at its
    time (``times``, seconds) when ``realtime``; ``on_frame(meta, image_bytes)`` gets each
    swapped frame. ``lockstep``: one frame in flight (send, wait for its answer or its
    ``frame_error``, send the next), what a caller measuring the latency of one stream does.
    After the last frame it sends ``stop`` and waits (at most ``drain_timeout`` seconds) for the
    answers to the frames in work; returns the report.

    Raises:
        StreamClosed: the gateway refused the stream or ended it with an error.
        ServerUnavailable: the gateway cannot be reached.
    """
    import websockets

    # a nonce in the (signed) query: two streams opened in the same second are not replays
    path = f"/v1/stream?nonce={uuid.uuid4().hex}"
    headers = {}
    if secret:
        headers = signed_headers(secret, "GET", path)
    first = {**(options or {})}
    if source is not None:
        first["source"] = base64.b64encode(source).decode()
    if source_face_id is not None:
        first["source_face_id"] = source_face_id
    rep = LiveReport()
    sent_at: dict[int, float] = {}
    answered = asyncio.Event()  # lockstep: the frame in flight was answered
    first_frame = frames[0] if len(frames) else None
    if isinstance(first_frame, (bytes, bytearray)):
        first_frame = cv2.imdecode(np.frombuffer(first_frame, np.uint8), cv2.IMREAD_COLOR)
    shape = first_frame.shape[:2] if first_frame is not None else None
    try:
        base = url.rstrip("/").removesuffix("/v1/stream")
        # compression=None: frames are JPEG/WebP, deflating them again costs both sides CPU for nothing
        ws = await websockets.connect(base + path, additional_headers=headers, max_size=16 << 20,
                                      open_timeout=open_timeout, compression=None)
    except (OSError, websockets.exceptions.InvalidHandshake, asyncio.TimeoutError) as exc:
        raise ServerUnavailable(f"cannot open the stream at {url}: {exc}") from None

    async def expect_ready() -> None:
        msg = json.loads(await ws.recv())
        if msg.get("type") != "ready":
            await ws.wait_closed()
            raise StreamClosed(msg.get("code", "error"), msg.get("message", str(msg)), ws.close_code)
        rep.stand_in_models = msg.get("stand_in_models", [])

    async def receive() -> None:
        while True:
            try:
                msg = await ws.recv()
            except websockets.exceptions.ConnectionClosedOK:
                return  # the server closed after "stop"
            if isinstance(msg, bytes):
                continue
            meta = json.loads(msg)
            if meta["type"] == "end":
                rep.dropped = meta["dropped"]
                continue
            if meta["type"] == "error":
                raise StreamClosed(meta["code"], meta["message"], None)
            if meta["type"] == "frame_error":
                rep.frame_errors += 1
                rep.error_codes[meta["code"]] = rep.error_codes.get(meta["code"], 0) + 1
                answered.set()
                continue
            image = await ws.recv()
            rep.received += 1
            rep.dropped = meta["dropped"]
            rep.latency_ms.append(meta["latency_ms"])
            if meta["seq"] in sent_at:
                rep.round_trip_ms.append((time.monotonic() - sent_at.pop(meta["seq"])) * 1000)
            rep.faces_swapped += sum(f["swapped"] for f in meta["faces"])
            if rep.received <= 3 or rep.received % 10 == 0:  # decoding every frame here would cost the caller
                img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
                rep.sizes_kept &= img is not None and img.shape[:2] == shape
            if on_frame is not None:
                on_frame(meta, image)
            answered.set()

    try:
        await ws.send(json.dumps(first))
        await expect_ready()
        receiver = asyncio.create_task(receive())
        t0 = time.monotonic()
        seq = 0

        def encode(img: np.ndarray | bytes) -> bytes:
            if isinstance(img, (bytes, bytearray)):
                return bytes(img)
            return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()

        order = [(img, (times[-1] + 1 / 30) * r + t) for r in range(repeat) for img, t in zip(frames, times)]
        # the next frame is encoded while the answer to this one is awaited (as a camera's
        # encoder works ahead), so lockstep measures the server, not this process's encoder
        upcoming = asyncio.ensure_future(asyncio.to_thread(encode, order[0][0])) if order else None
        for i, (_img, t) in enumerate(order):
            if receiver.done():
                break
            if realtime:
                await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
            data = await upcoming
            upcoming = asyncio.ensure_future(asyncio.to_thread(encode, order[i + 1][0])) if i + 1 < len(order) else None
            answered.clear()
            sent_at[seq] = time.monotonic()
            await ws.send(data)
            seq += 1
            if lockstep:
                waiter = asyncio.ensure_future(answered.wait())
                await asyncio.wait([waiter, receiver], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        if upcoming is not None:
            upcoming.cancel()
        rep.sent = seq
        if not receiver.done():
            await ws.send(json.dumps({"type": "stop"}))  # the server answers what was sent, then closes
        try:
            await asyncio.wait_for(asyncio.shield(receiver), drain_timeout)
        except asyncio.TimeoutError:
            receiver.cancel()
        rep.seconds = time.monotonic() - t0
        if receiver.done() and not receiver.cancelled() and receiver.exception():
            raise receiver.exception()
    except websockets.exceptions.ConnectionClosedError as exc:
        raise StreamClosed("closed", f"the gateway closed the stream ({exc})", ws.close_code) from None
    finally:
        await ws.close()
    return rep


def write_video(path: Path, frames: list[tuple[float, bytes]], rate: float) -> int:
    """Write swapped frames (time s, encoded image) as H.264 MP4 at their times (a dropped
    frame holds the previous one). Returns the frames written."""
    if not frames:
        return 0
    with av.open(str(path), "w") as out:
        first = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
        h, w = first.shape[:2]
        st = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        st.width, st.height, st.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        st.codec_context.time_base = Fraction(1, 1000)
        last = -1
        for t, data in frames:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            pts = int(round(t * 1000))
            if img is None or pts <= last:
                continue
            f = av.VideoFrame.from_ndarray(img[: st.height, : st.width], format="bgr24")
            f.pts, f.time_base, last = pts, Fraction(1, 1000), pts
            out.mux(st.encode(f))
        out.mux(st.encode())
    return len(frames)
