"""Live face swap over a WebSocket (``GET /v1/stream``): one session per connection.

Protocol (also in docs/live.md and the OpenAPI description):

1. the client's first message is text JSON, :class:`StreamConfig` (the source face and options);
2. the server answers ``{"type": "ready", ...}``, or ``{"type": "error", "code", "message"}``
   and closes with a 4xxx code (:data:`CLOSE_CODES`);
3. then each binary message from the client is one encoded frame (JPEG or WebP); for each frame
   it processes the server sends text ``{"type": "frame", "seq", "faces", "latency_ms",
   "dropped", "format", "detected"}`` then one binary message with the swapped frame
   (``faces``: ``{"box": [x1, y1, x2, y2] pixels, "score", "swapped": bool}`` of the last
   detection; ``kps``: the (smoothed) 5 key points, pixels, of each face swapped in this frame;
   ``detected``: whether the detector ran on this frame). A frame that cannot be
   swapped (corrupt, Triton full) gets ``{"type": "frame_error", "seq", "code", "message"}``
   instead and the stream goes on. The client ends with text ``{"type": "stop"}``: the frames
   already sent are answered, the server sends ``{"type": "end", "received", "dropped",
   "processed"}`` and closes with 1000.

Latest frame wins: while a frame is in work, a newer one replaces an older pending one (counted
in ``dropped``); one frame per stream is in work at a time and at most one waits, so nothing
queues without bound and a stream runs at the pace Triton gives it (or ``max_fps``). Each frame
takes an admission slot like a request (waiting in the same first-come-first-served line, so
streams and requests share the service fairly); when none frees within ``stream_slot_wait_s``
the frame is dropped.

Every swapped frame is marked as the other outputs are (``gateway.core.marking``: watermark,
XMP, C2PA); a frame with no face to swap comes back as it was sent. Faces are tracked across
frames with the video path's :class:`media.tracking.FaceTracker` (One-Euro key-point
smoothing, the same identity policy). With ``detect_every`` k > 1 the
detector runs on every k-th frame and the frames between reuse the tracked key points.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from client import AsyncFaceSwapClient
from media.formats import sniff
from media.tracking import FaceTracker
from pipeline.follow import TrackHint

#: WebSocket close codes of the stream (4000 + the HTTP status they stand for).
CLOSE_CODES = {
    "bad_request": 4400, "missing_signature": 4401, "bad_signature": 4401, "stale_signature": 4401,
    "replayed_signature": 4401, "forbidden": 4403, "face_not_found": 4404, "idle_timeout": 4408,
    "frame_too_large": 4413, "unsupported_media_type": 4415, "no_face_in_source": 4422, "invalid_option": 4422,
    "corrupt_image": 4422, "overloaded": 4503, "triton_unavailable": 4503, "internal_error": 4500,
}
#: The frame formats a client may send.
FRAME_FORMATS = ("jpeg", "webp")


class StreamError(Exception):
    """Ends a stream: sent as ``{"type": "error", "code", "message"}``, then close with
    ``CLOSE_CODES[code]``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class StreamConfig(BaseModel):
    """The first message of a stream (text JSON). Exactly one of ``source_face_id`` and
    ``source`` (a base64 image; its largest face is used)."""

    model_config = {"extra": "forbid"}

    source_face_id: str | None = Field(None, description="A face registered with POST /v1/faces")
    source: str | None = Field(None, description="Base64 of a photo (JPEG/PNG/WebP); its largest face")
    selection: Literal["largest", "all"] = Field("largest", description="One tracked person, or every face")
    reference_face_id: str | None = Field(None, description="Swap the person most similar to this registered face")
    max_fps: float = Field(30.0, gt=0, le=60, description="Frames processed per second at most")
    output_format: Literal["jpeg", "webp"] = "jpeg"
    quality: int = Field(85, ge=1, le=100, description="JPEG/WebP quality of the swapped frames")
    smoothing: bool = Field(True, description="One-Euro key-point smoothing against flicker")
    detect_every: int = Field(1, ge=1, le=10, description="Run the detector on every k-th frame; the frames "
                                                          "between reuse the tracked key points")


def parse_config(text: str | None) -> StreamConfig:
    """The first message as a config.

    Raises:
        StreamError: bad_request (not JSON, unknown or invalid field, both or neither source).
    """
    if text is None:
        raise StreamError("bad_request", "The first message must be text JSON with the source and options.")
    try:
        cfg = StreamConfig.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise StreamError("bad_request", f"The first message is not JSON: {exc.msg}.") from None
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise StreamError("bad_request", "Invalid stream options: " + "; ".join(parts)) from None
    if (cfg.source is None) == (cfg.source_face_id is None):
        raise StreamError("bad_request", "Send exactly one of: source_face_id, source (base64 image).")
    return cfg


def decode_source(b64: str, max_bytes: int) -> bytes:
    """Bytes of a base64 source image (raises StreamError bad_request / frame_too_large)."""
    if len(b64) > max_bytes * 4 // 3 + 4:
        raise StreamError("frame_too_large", f"The source image is over {max_bytes} bytes.")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise StreamError("bad_request", "source is not valid base64.") from None


def frame_format(data: bytes) -> str | None:
    """"jpeg", "webp" or None (judged from the bytes)."""
    fmt = sniff(data)
    return fmt.name if fmt is not None and fmt.name in FRAME_FORMATS else None


@dataclass
class Pending:
    """The newest frame not yet taken (latest wins)."""

    data: bytes
    seq: int
    arrived: float


@dataclass
class LatestFrame:
    """A one-frame mailbox: :meth:`put` replaces what is there (counting a drop); :meth:`take`
    waits for a frame."""

    on_drop: Callable[[], None] = lambda: None
    frame: Pending | None = None
    dropped: int = 0
    received: int = 0
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def drop(self) -> None:
        """Count a frame that was not processed."""
        self.dropped += 1
        self.on_drop()

    def put(self, data: bytes) -> None:
        if self.frame is not None:
            self.drop()
        self.frame = Pending(data, self.received, time.monotonic())
        self.received += 1
        self._event.set()

    closed: bool = False

    def close(self) -> None:
        """No more frames will come (the client sent ``stop``): :meth:`take` returns None once
        the pending frame is taken."""
        self.closed = True
        self._event.set()

    async def take(self) -> Pending | None:
        while self.frame is None:
            if self.closed:
                return None
            self._event.clear()
            await self._event.wait()
        frame, self.frame = self.frame, None
        return frame


#: Seconds of stream time between two frames the content gate checks (the first swapped frame
#: is checked, then one a second; after a refusal, every frame until one passes).
CONTENT_CHECK_S = 1.0


class StreamSession:
    """The per-connection swap state: source latent, tracker, frame counter.

    Args:
        client: the gateway's Triton client.
        latent: float32 [512] source latent.
        reference: float32 [512] normed embedding for "similar" selection, or None.
        cfg: the stream's options.
        call_timeout_s: deadline of each Triton call.
    """

    def __init__(self, client: AsyncFaceSwapClient, latent: np.ndarray, reference: np.ndarray | None,
                 cfg: StreamConfig, call_timeout_s: float, marker=None, gate=None) -> None:
        self.client, self.latent, self.cfg, self.call_timeout_s = client, latent, cfg, call_timeout_s
        self.marker, self.gate = marker, gate
        self._gate_at: float | None = None  # stream time of the last frame the content gate passed
        selection = "similar" if reference is not None else cfg.selection
        self.tracker = FaceTracker(selection, reference, cfg.smoothing)
        self.frames = 0
        self.stand_ins: list[str] = []
        self._kps: list[np.ndarray] = []
        self._faces: list[dict] = []
        self._t0 = time.monotonic()

    async def process(self, frame: Pending) -> tuple[dict, bytes]:
        """Swap one frame; returns (the ``frame`` message without latency/dropped, the image).

        A detected frame whose target track continues from the previous one is detected and
        swapped in one ``face_swap`` call (``pipeline.follow``: the target's box and filter state
        go with it); the tracker then checks that it chose that very face, else the frame is
        swapped again at the tracker's key points. Other frames: ``face_embed`` (faces only; ArcFace
        when the tracker must fix or find the identity), the tracker, then ``face_swap_kps``.

        Raises:
            FaceSwapError: from Triton (mapped by the route).
        """
        t = frame.arrived - self._t0
        detect = self.frames % self.cfg.detect_every == 0
        self.frames += 1
        # a swapped frame says it is AI-made: watermarked inside Triton before its one encode, XMP
        # and C2PA added here (gateway.core.marking)
        rid, watermark = self.marker.payload() if self.marker is not None else (None, "")
        gated = self.gate is not None and (self._gate_at is None or t - self._gate_at >= CONTENT_CHECK_S)
        common = {"output_format": self.cfg.output_format, "quality": self.cfg.quality,
                  "face_quality": False,  # live: latency first (a batched ArcFace call)
                  "watermark": watermark,
                  "content_policy": self.gate.options()["content_policy"] if gated else "off"}
        out = None
        if detect:
            hint = self.tracker.follow_hint(t)
            spec = expected = None
            if hint is not None:  # detect and swap the target in one call, checked below
                spec = await self.client.swap(frame.data, self.latent, timeout=self.call_timeout_s, track=hint,
                                              **common)
                if gated:
                    self._gated(spec, t)
                    gated, common["content_policy"] = False, "off"  # this frame is checked
                res, target = spec, self.tracker.target
                if len(spec.selected) == 1:
                    expected = TrackHint.parse(hint).smoothed(spec.faces[spec.selected[0]].kps)
            else:
                # the faces only; ArcFace when the tracker must fix or find the identity
                res = await self.client.embed(frame.data, embeddings=False, timeout=self.call_timeout_s)
            if self.tracker.wants_embeddings(res.faces):
                res = await self.client.embed(frame.data, timeout=self.call_timeout_s)
            self.stand_ins = res.stand_in_models
            chosen = self.tracker.update_tracks(t, res.faces)
            self._kps = [k for _, k in chosen]
            self._faces = [{"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 3),
                            "swapped": _chosen(f.kps, f.box, self._kps)} for f in res.faces]
            if (expected is not None and len(chosen) == 1 and chosen[0][0] == target
                    and np.array_equal(chosen[0][1], expected)):
                out = spec  # the tracker chose the face face_swap swapped, at the same key points
        meta = {"type": "frame", "seq": frame.seq, "faces": self._faces, "detected": detect,
                "kps": [np.round(k, 2).tolist() for k in self._kps]}
        if not self._kps:
            return {**meta, "format": frame_format(frame.data)}, frame.data
        if out is None:
            out = await self.client.swap_at(frame.data, self.latent, np.stack(self._kps), timeout=self.call_timeout_s,
                                            **common)
            if gated:
                self._gated(out, t)
        image = out.image
        if self.marker is not None and self.marker.enabled and out.faces_swapped:
            image = await asyncio.to_thread(self.marker.swapped_image, out, None, rid, "stream", self.cfg.quality)
        return {**meta, "format": out.format}, image

    def _gated(self, out, t: float) -> None:
        """ContentRefused (422 content_refused) when the gate refused this frame: its answer is a
        frame_error; else the gate's clock restarts."""
        self.gate.check({"content_refused": out.content_refused, "content_policy": out.content_policy}, "stream")
        self._gate_at = t

def _chosen(kps: np.ndarray, box: np.ndarray, swapped: list[np.ndarray]) -> bool:
    """Whether a detected face is one of those swapped (its key points within a quarter of its
    width of a swapped face's smoothed key points)."""
    tol = 0.25 * float(box[2] - box[0])
    return any(float(np.abs(np.asarray(kps) - k).max()) <= tol for k in swapped)
