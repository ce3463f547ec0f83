"""GET /v1/stream: live face swap over a WebSocket (protocol in gateway.core.stream)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from client import FaceSwapError, NoFaceError, Overloaded
from client.errors import InvalidInput
from gateway.core import stream as protocol
from gateway.core.errors import APIError, from_triton
from gateway.core.images import inspect_image
from gateway.core.stream import (
    CLOSE_CODES,
    LatestFrame,
    StreamError,
    StreamSession,
    decode_source,
    frame_format,
    parse_config,
)

log = logging.getLogger("gateway.stream")
router = APIRouter(tags=["stream"])


async def _fail(ws: WebSocket, code: str, message: str) -> None:
    """Send the error message and close with its 4xxx code (the socket may be gone already)."""
    try:
        await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(CLOSE_CODES.get(code, 4500), code)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


async def _source(ws: WebSocket, cfg, settings) -> tuple:
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


@router.get("/v1/stream", summary="Live face swap (WebSocket)", status_code=426,
            description=protocol.__doc__.split("\n\n", 1)[1].replace("``", "`").replace(":class:", "")
            .replace(":data:", "") + "\n\nFirst message (`StreamConfig`): "
            + "; ".join(f"`{k}` (default {f.default!r}){': ' + f.description if f.description else ''}"
                        for k, f in protocol.StreamConfig.model_fields.items()) + ".\n\nClose codes: "
            + ", ".join(f"{v} {k}" for k, v in sorted(protocol.CLOSE_CODES.items(), key=lambda kv: kv[1])) + ".",
            responses={426: {"description": "Not a WebSocket upgrade: open it as a WebSocket"}})
async def stream_info() -> JSONResponse:
    """A plain HTTP GET is answered 426 with how to open the stream."""
    return JSONResponse({"code": "upgrade_required", "message": "GET /v1/stream is a WebSocket: open it with a "
                         "WebSocket client (ws:// or wss://); the protocol is in the API documentation."},
                        status_code=426, headers={"Upgrade": "websocket"})


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Live face swap: see the module gateway.core.stream for the protocol. Signed like every
    call when a secret is set (the signature is on the upgrade request: ``GET /v1/stream``)."""
    app = ws.app
    settings, metrics, admission = app.state.settings, app.state.metrics, app.state.admission
    await ws.accept()
    if app.state.streams >= settings.max_streams:
        metrics.rejected.labels("streams").inc()
        await _fail(ws, "overloaded", f"The service runs {settings.max_streams} streams, its limit; retry later.")
        return
    app.state.streams += 1
    metrics.streams.set(app.state.streams)
    try:
        await _serve(ws, settings, metrics, admission)
    finally:
        app.state.streams -= 1
        metrics.streams.set(app.state.streams)


async def _serve(ws: WebSocket, settings, metrics, admission) -> None:
    try:
        first = await asyncio.wait_for(ws.receive(), settings.stream_idle_timeout_s)
        if first["type"] == "websocket.disconnect":
            return
        cfg = parse_config(first.get("text"))
        latent, reference, stand_ins = await _source(ws, cfg, settings)
    except asyncio.TimeoutError:
        await _fail(ws, "idle_timeout", f"No first message within {settings.stream_idle_timeout_s:g} s.")
        return
    except StreamError as exc:
        await _fail(ws, exc.code, exc.message)
        return
    except FaceSwapError as exc:
        err = from_triton(exc, settings)
        await _fail(ws, err.code, err.message)
        return
    session = StreamSession(ws.app.state.triton, latent, reference, cfg, settings.stream_frame_timeout_s,
                            ws.app.state.marker)
    box = LatestFrame(on_drop=metrics.stream_frames.labels("dropped").inc)
    await ws.send_text(json.dumps({"type": "ready", "max_fps": cfg.max_fps, "detect_every": cfg.detect_every,
                                   "max_frame_bytes": settings.stream_max_frame_bytes,
                                   "max_frame_pixels": settings.stream_max_frame_pixels,
                                   "stand_in_models": stand_ins}))

    async def receive_frames() -> None:
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), settings.stream_idle_timeout_s)
            except asyncio.TimeoutError:
                raise StreamError("idle_timeout", f"No frame for {settings.stream_idle_timeout_s:g} s.") from None
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            data = msg.get("bytes")
            if data is None:
                text = (msg.get("text") or "").strip()
                try:
                    stop = json.loads(text).get("type") == "stop"
                except (json.JSONDecodeError, AttributeError):
                    stop = False
                if stop:
                    box.close()  # answer what was sent, then close
                    return
                raise StreamError("bad_request", "After the first message, send frames as binary messages "
                                                 '(or {"type": "stop"}).')
            if len(data) > settings.stream_max_frame_bytes:
                raise StreamError("frame_too_large", f"A frame is {len(data)} bytes; the limit is "
                                                     f"{settings.stream_max_frame_bytes}.")
            if frame_format(data) is None:
                raise StreamError("unsupported_media_type", "Frames must be JPEG or WebP (judged from the bytes).")
            try:
                inspect_image(data, settings.stream_max_frame_pixels, "frame")
            except APIError as exc:
                raise StreamError("frame_too_large" if exc.status == 413 else "corrupt_image", exc.message) from None
            box.put(data)

    async def process_frames() -> None:
        interval, next_at = 1.0 / cfg.max_fps, time.monotonic()
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
            if not await admission.enter(settings.stream_slot_wait_s, bounded_line=False):
                box.drop()  # the service is full: this frame is skipped, the stream goes on
                continue
            if box.frame is not None:  # a newer frame came while waiting for the slot: it wins, in our place
                box.drop()
                frame = await box.take()
            try:
                meta, image = await session.process(frame)
            except (InvalidInput, Overloaded) as exc:  # this frame only: say so and go on
                err = from_triton(exc, settings)
                metrics.stream_frames.labels("failed").inc()
                await ws.send_text(json.dumps({"type": "frame_error", "seq": frame.seq, "code": err.code,
                                               "message": err.message}))
                continue
            finally:
                admission.leave()
            latency = time.monotonic() - frame.arrived
            meta.update(latency_ms=round(latency * 1000, 1), dropped=box.dropped)
            metrics.stream_frames.labels("swapped").inc()
            metrics.stream_latency.observe(latency)
            await ws.send_text(json.dumps(meta))
            await ws.send_bytes(image)

    receiver, processor = asyncio.create_task(receive_frames()), asyncio.create_task(process_frames())
    tasks = [receiver, processor]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
        if receiver in done:  # "stop": let the processor answer the frames already sent
            await processor
        await ws.send_text(json.dumps({"type": "end", "received": box.received, "dropped": box.dropped,
                                       "processed": session.frames}))
        await ws.close(1000)
    except WebSocketDisconnect:
        pass  # the client left: the tasks (and any Triton call in flight) are cancelled below
    except StreamError as exc:
        await _fail(ws, exc.code, exc.message)
    except NoFaceError as exc:
        await _fail(ws, "no_face_in_source", str(exc))
    except FaceSwapError as exc:
        err = from_triton(exc, settings)
        await _fail(ws, err.code, err.message)
    except Exception:
        log.exception("stream failed")
        await _fail(ws, "internal_error", "The stream failed; it has been logged.")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
