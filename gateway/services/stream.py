"""``/v1/stream``: one live stream's run: its first message and source, then frames received
and processed concurrently, newest frame first (protocol: ``gateway.core.stream``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import WebSocket, WebSocketDisconnect

from client import FaceSwapError, NoFaceError, Overloaded
from client.errors import InvalidInput
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.content import ContentRefused
from gateway.core.errors import APIError, from_triton
from gateway.core.images import inspect_image
from gateway.core.metrics import Metrics
from gateway.core.stream import (
    CLOSE_CODES,
    LatestFrame,
    StreamConfig,
    StreamError,
    StreamSession,
    decode_source,
    frame_format,
    parse_config,
)

log = logging.getLogger("gateway.stream")


async def fail(ws: WebSocket, code: str, message: str) -> None:
    """Send the error message and close with its 4xxx code (the socket may be gone already)."""
    try:
        await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(CLOSE_CODES.get(code, 4500), code)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


async def _source(ws: WebSocket, cfg: StreamConfig, settings: Settings) -> tuple:
    """(latent, reference embedding or None, stand-in models) of the stream's source."""
    store, triton = ws.app.state.store, ws.app.state.triton
    reference = None
    if cfg.reference_face_id is not None:
        ref = store.get(cfg.reference_face_id)
        if ref is None:
            raise StreamError("face_not_found", f"No face {cfg.reference_face_id!r}: unknown, deleted or expired.")
        reference = ref.embedding
    if cfg.source_face_id is not None:
        face = store.get(cfg.source_face_id)
        if face is None:
            raise StreamError("face_not_found", f"No face {cfg.source_face_id!r}: unknown, deleted or expired.")
        return face.latent, reference, []
    data = decode_source(cfg.source, settings.max_upload_bytes)
    try:
        inspect_image(data, settings.max_pixels, "source")
    except APIError as exc:
        raise StreamError("unsupported_media_type" if exc.status == 415 else "bad_request", exc.message) from None
    res = await triton.embed(data, timeout=settings.request_timeout_s)
    if not res.faces:
        raise StreamError("no_face_in_source", "No face was found in the source image.")
    return max(res.faces, key=lambda f: f.area).latent, reference, res.stand_in_models


async def _open(ws: WebSocket, settings: Settings) -> tuple[StreamConfig, tuple] | None:
    """The first message and the source it names; None (after closing with the reason) when
    they fail or do not come."""
    try:
        first = await asyncio.wait_for(ws.receive(), settings.stream_idle_timeout_s)
        if first["type"] == "websocket.disconnect":
            return None
        cfg = parse_config(first.get("text"))
        return cfg, await _source(ws, cfg, settings)
    except asyncio.TimeoutError:
        await fail(ws, "idle_timeout", f"No first message within {settings.stream_idle_timeout_s:g} s.")
    except StreamError as exc:
        await fail(ws, exc.code, exc.message)
    except FaceSwapError as exc:
        err = from_triton(exc, settings)
        await fail(ws, err.code, err.message)
    return None


class StreamRun:
    """One stream after its first message: ``receive_frames`` keeps the newest frame in
    ``box`` (older ones are dropped and counted), ``process_frames`` swaps it at most
    ``max_fps`` times a second, each frame through an admission slot."""

    def __init__(self, ws: WebSocket, cfg: StreamConfig, session: StreamSession, settings: Settings,
                 metrics: Metrics, admission: Admission) -> None:
        self.ws, self.cfg, self.session = ws, cfg, session
        self.settings, self.metrics, self.admission = settings, metrics, admission
        self.box = LatestFrame(on_drop=metrics.stream_frames.labels("dropped").inc)

    async def receive_frames(self) -> None:
        """Until ``{"type": "stop"}`` (returns) or a protocol error (StreamError)."""
        s = self.settings
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), s.stream_idle_timeout_s)
            except asyncio.TimeoutError:
                raise StreamError("idle_timeout", f"No frame for {s.stream_idle_timeout_s:g} s.") from None
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            data = msg.get("bytes")
            if data is None:
                if _is_stop(msg.get("text")):
                    self.box.close()  # answer what was sent, then close
                    return
                raise StreamError("bad_request", "After the first message, send frames as binary messages "
                                                 '(or {"type": "stop"}).')
            self.box.put(_checked_frame(data, s))

    async def process_frames(self) -> None:
        """Until the box is closed and drained."""
        interval, next_at = 1.0 / self.cfg.max_fps, time.monotonic()
        box, s = self.box, self.settings
        while True:
            frame = await box.take()
            if frame is None:
                return  # stopped and drained
            wait = next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                if box.frame is not None:  # a newer frame came while pacing: it wins
                    box.drop()
                    frame = await box.take()
            next_at = max(time.monotonic(), next_at) + interval
            if not await self.admission.enter(s.stream_slot_wait_s, bounded_line=False):
                box.drop()  # the service is full: this frame is skipped, the stream goes on
                continue
            if box.frame is not None:  # a newer frame came while waiting for the slot: it wins, in our place
                box.drop()
                frame = await box.take()
            try:
                meta, image = await self.session.process(frame)
            except (InvalidInput, Overloaded, ContentRefused) as exc:  # this frame only: say so and go on
                err = exc if isinstance(exc, ContentRefused) else from_triton(exc, s)
                self.metrics.stream_frames.labels("failed").inc()
                await self.ws.send_text(json.dumps({"type": "frame_error", "seq": frame.seq, "code": err.code,
                                                    "message": err.message}))
                continue
            finally:
                self.admission.leave()
            latency = time.monotonic() - frame.arrived
            meta.update(latency_ms=round(latency * 1000, 1), dropped=box.dropped)
            self.metrics.stream_frames.labels("swapped").inc()
            self.metrics.stream_latency.observe(latency)
            await self.ws.send_text(json.dumps(meta))
            await self.ws.send_bytes(image)

    async def run(self) -> None:
        """Both loops; ends with ``{"type": "end"}`` and close 1000, or the error's close code."""
        receiver, processor = asyncio.create_task(self.receive_frames()), asyncio.create_task(self.process_frames())
        tasks = [receiver, processor]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            if receiver in done:  # "stop": let the processor answer the frames already sent
                await processor
            await self.ws.send_text(json.dumps({"type": "end", "received": self.box.received,
                                                "dropped": self.box.dropped, "processed": self.session.frames}))
            await self.ws.close(1000)
        except WebSocketDisconnect:
            pass  # the client left: the tasks (and any Triton call in flight) are cancelled below
        except StreamError as exc:
            await fail(self.ws, exc.code, exc.message)
        except NoFaceError as exc:
            await fail(self.ws, "no_face_in_source", str(exc))
        except FaceSwapError as exc:
            err = from_triton(exc, self.settings)
            await fail(self.ws, err.code, err.message)
        except Exception:
            log.exception("stream failed")
            await fail(self.ws, "internal_error", "The stream failed; it has been logged.")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _is_stop(text: str | None) -> bool:
    try:
        return json.loads((text or "").strip()).get("type") == "stop"
    except (json.JSONDecodeError, AttributeError):
        return False


def _checked_frame(data: bytes, s: Settings) -> bytes:
    """A frame within the limits (bytes, JPEG or WebP, pixels from its header), else StreamError."""
    if len(data) > s.stream_max_frame_bytes:
        raise StreamError("frame_too_large", f"A frame is {len(data)} bytes; the limit is {s.stream_max_frame_bytes}.")
    if frame_format(data) is None:
        raise StreamError("unsupported_media_type", "Frames must be JPEG or WebP (judged from the bytes).")
    try:
        inspect_image(data, s.stream_max_frame_pixels, "frame")
    except APIError as exc:
        raise StreamError("frame_too_large" if exc.status == 413 else "corrupt_image", exc.message) from None
    return data


async def serve(ws: WebSocket, settings: Settings, metrics: Metrics, admission: Admission) -> None:
    """One accepted stream, from its first message to its close."""
    opened = await _open(ws, settings)
    if opened is None:
        return
    cfg, (latent, reference, stand_ins) = opened
    session = StreamSession(ws.app.state.triton, latent, reference, cfg, settings.stream_frame_timeout_s,
                            ws.app.state.marker, ws.app.state.content_gate)
    await ws.send_text(json.dumps({"type": "ready", "max_fps": cfg.max_fps, "detect_every": cfg.detect_every,
                                   "max_frame_bytes": settings.stream_max_frame_bytes,
                                   "max_frame_pixels": settings.stream_max_frame_pixels,
                                   "stand_in_models": stand_ins}))
    await StreamRun(ws, cfg, session, settings, metrics, admission).run()
