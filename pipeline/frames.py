"""One frame through the whole pipeline, decoded once and encoded once: the work of the
``face_swap``, ``face_swap_kps`` and ``face_embed`` entry points as plain functions (no Triton import).

A request's encoded image is decoded here once; the detector's letterbox, the faces' crops,
the paste-back, the quality figures, the invisible watermark and the one encode all read the
same pixels, and only the encoded result leaves. The networks are injected as callables (BLS
in Triton; onnxruntime sessions in the tests), so the frame itself never crosses a stage
boundary: that kept the Python backend's shared-memory pools small when each stage decoded
the bytes again, and now it also saves those decodes (``docs/architecture.md``).

- ``detect_fn(blob)``: float32 [1, 3, H, W] -> SCRFD's 9 heads;
- ``embed_fn(blob)``: float32 [N, 3, 112, 112] -> float32 [N, 512] raw ArcFace embeddings;
- ``swap_fn(blob, latents)``: float32 [N, 3, 128, 128] + [N, 512] -> float32 [N, 3, 128, 128].
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from pipeline.badge import burn_badge
from pipeline.codec import MAX_PIXELS, decode_image
from pipeline.content import ContentPolicy, gate_images, policy_from_options
from pipeline.detection import (
    DET_SIZE,
    DET_THRESH,
    MAX_FACES,
    NMS_THRESH,
    Detections,
    letterbox_blob,
    tile_windows,
)
from pipeline.follow import TrackHint
from pipeline.quality import face_quality, source_rows
from pipeline.selection import SwapOptions
from pipeline.stages import (
    SWAP_SIZE,
    Aligned,
    DetectFn,
    EmbedFn,
    SwapFn,
    align_stage,
    analyze_stage,
    detect_stage,
    encode_stage,
    latents_for,
    paste_faces,
    place_stage,
    swapped_faces,
)


@dataclass(frozen=True)
class Networks:
    """The three networks as callables and the rows each takes per call (0: one at a time).
    ``detect_fn`` None: no detector (``swap_frame`` then needs the caller's key points)."""

    detect_fn: DetectFn | None
    embed_fn: EmbedFn
    swap_fn: SwapFn | None = None
    embed_batch: int = 0
    swap_batch: int = 0
    #: the content gate's detector, float32 [1, 3, 320, 320] -> [1, 22, anchors] (``pipeline.content``)
    content_fn: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class DetectSettings:
    """How faces are found (``pipeline.contracts.DetectorCall``: the stage's config parameters)."""

    det_size: int = DET_SIZE
    det_thresh: float = DET_THRESH
    nms_thresh: float = NMS_THRESH
    #: the extra passes of ``stages.detect_stage`` (tiles for elongated images, close-ups)
    close_up_retry: bool = True
    max_faces: int = MAX_FACES
    max_pixels: int = MAX_PIXELS


class Timer:
    """Milliseconds per step of one frame and in each network called (``stage_ms`` of the
    ``result`` JSON: ``{"steps": {...}, "networks": {...}}``): where the time around the
    networks goes, reported by ``make bench``. A step's time includes the networks it calls."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.ms: dict[str, float] = {}
        self.net_ms: dict[str, float] = {}
        #: called at the end of each step before its time is read (a GPU: wait for its kernels,
        #: so each step is charged its own work; ``pipeline.tensor_frames``)
        self.sync = sync

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def network(self, name: str, fn: Callable, check: Callable[[], None] | None = None) -> Callable:
        """``fn`` (a network) whose calls are timed under ``name``; ``check()`` runs first."""

        def call(*args):
            if check is not None:
                check()
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.net_ms[name] = self.net_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

        return call

    def rounded(self) -> dict[str, dict[str, float]]:
        return {"steps": {k: round(v, 2) for k, v in self.ms.items()},
                "networks": {k: round(v, 2) for k, v in self.net_ms.items()}}


def watermark_fn(payload_hex: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """The invisible mark of ``SwapOptions.watermark`` (16 hex digits) as a function of a BGR
    uint8 [H, W, 3] frame (``pipeline.watermark.embed``; a frame under ``MIN_SIDE`` px on a
    side is returned as it is: the same array); None for "" (no mark)."""
    if not payload_hex:
        return None
    from pipeline.watermark import Payload, embed_if_fits

    payload = Payload.from_bytes(bytes.fromhex(payload_hex))
    return lambda bgr: embed_if_fits(bgr, payload)


def content_policy(opts: SwapOptions) -> ContentPolicy | None:
    """The content gate's policy for a request (``SwapOptions.content_policy``, validated):
    None when the caller (the gateway's explicit setting) says "off", the default policy when it
    says nothing."""
    return policy_from_options({} if opts.content_policy is None else {"content_policy": opts.content_policy})


def no_gate(_blob) -> np.ndarray:
    """The content gate's network where a stage has none: raises RuntimeError when called."""
    raise RuntimeError("the content gate is on but this stage has no content detector")


def nothing_aligned() -> Aligned:
    """No face chosen (a refused target)."""
    empty = np.zeros((0,), np.int64)
    return Aligned(Detections.empty(), empty, empty.copy(), np.zeros((0, SWAP_SIZE, SWAP_SIZE, 3), np.uint8),
                   np.zeros((0, 2, 3), np.float32), False)


def followed(image: np.ndarray, dets: Detections, hint: TrackHint) -> Aligned:
    """The face of ``dets`` that ``hint``'s track continues into, cropped at its smoothed key
    points (``pipeline.follow``), or no face."""
    found = hint.follow(dets)
    if found is None:
        none = nothing_aligned()
        return Aligned(dets, none.selected, none.latent_index, none.crops, none.affines, False)
    index, kps = found
    placed = place_stage(image, kps[None])
    return Aligned(dets, np.array([index], np.int64), placed.latent_index, placed.crops, placed.affines, False)


def find_faces(image: np.ndarray, nets: Networks, s: DetectSettings, det_thresh: float = 0.0) -> Detections:
    """Every face of a uint8 [H, W, 3] BGR frame, score descending (insightface 0.7.3's
    ``SCRFD.detect`` on a 640 letterbox, plus the tiled and close-up passes of
    ``stages.detect_stage``); ``det_thresh`` 0: ``s.det_thresh``."""
    blob, det_scale = letterbox_blob(image, (s.det_size, s.det_size))
    heads = nets.detect_fn(blob)
    thresh = det_thresh or s.det_thresh
    return detect_stage(heads, (s.det_size, s.det_size), det_scale, thresh, s.nms_thresh, image,
                        nets.detect_fn if s.close_up_retry else None)


@dataclass
class FrameResult:
    """What ``swap_frame`` made.

    Attributes:
        data: the encoded output (``fmt``); the input's own bytes when no face was swapped and
            the format is unchanged.
        fmt: "jpeg", "png", "webp" or "bmp".
        dets: every face found (or placed, with the caller's key points).
        aligned: the faces chosen and their crops (``stages.Aligned``).
        quality: the swapped faces' figures (``pipeline.quality.face_quality``), or None when
            not asked for.
        watermarked: the invisible mark is in the output's pixels.
        content: the gate's fields for the ``result`` JSON, ``{"content_refused": bool,
            "content_policy": name}``, or {} when the gate was off for this request.
        width, height, grey: the frame's.
        stage_ms: milliseconds per step (decode, detect, align, swap, paste, quality,
            watermark, encode; the networks' calls counted in their steps).
    """

    data: bytes
    fmt: str
    dets: Detections
    aligned: Aligned
    quality: list[dict] | None
    watermarked: bool
    width: int
    height: int
    grey: bool
    stage_ms: dict = field(default_factory=dict)
    content: dict = field(default_factory=dict)


def swap_frame(data: bytes | np.ndarray, opts: SwapOptions, nets: Networks, s: DetectSettings,
               source_latents: np.ndarray, reference: np.ndarray | None = None,
               source_embeddings: np.ndarray | None = None, face_kps: np.ndarray | None = None,
               check: Callable[[], None] | None = None) -> FrameResult:
    """Decode, find (or place) the faces, select, align, swap, paste back, measure, mark, encode.

    The visible badge (``opts.badge``) and then the invisible watermark of ``opts.watermark``
    (when set) go into the pasted frame's pixels before the one encode; a frame with no face
    swapped is neither marked nor re-encoded when its format stays the same (its own bytes come
    back).

    Args:
        data: the encoded image (JPEG, PNG, WebP, BMP or TIFF bytes; uint8 array accepted).
        opts: validated ``SwapOptions``.
        nets: the networks (``swap_fn`` required; ``detect_fn`` unless ``face_kps`` is given).
        s: detection settings and limits (the stage's parameters).
        source_latents: float32 [K, 512] inswapper latents (one per source identity).
        reference: float32 [K, 512] normed embeddings for selections "similar" and "pairs".
        source_embeddings: float32 [K, 512] normed source embeddings (identity transfer figure).
        face_kps: float32 [M, 5, 2] key points given by the caller (video, live: tracked and
            smoothed): no detection, every face swapped with source latent 0.
        check: called first and before every network call; raises to stop (a caller who has gone).

    Returns:
        ``FrameResult``. A target the content gate refuses (``opts.content_policy``, on unless
        "off") comes back with no face, no output bytes and ``content["content_refused"]``.

    Raises:
        codec.ImageError: the bytes are not an image we decode, or too many pixels.
        selection.OptionsError: options that contradict the faces (e.g. face_index out of range).
        ValueError: bad latents, key points or embeddings.
    """
    if check is not None:
        check()  # a caller who has gone before its turn costs nothing
    t = Timer()
    with t.step("decode"):
        d = decode_image(data, s.max_pixels, alpha=True)
    image = d.bgr
    content = {}
    policy = content_policy(opts)
    if policy is not None:  # the content gate: a refused target is not swapped, nothing is kept
        with t.step("content"):
            decision = gate_images([image], t.network("content", nets.content_fn or no_gate, check), policy)[0]
        content = decision.result_fields()
        if decision.refused:
            return FrameResult(b"", "", Detections.empty(), nothing_aligned(), None, False, int(image.shape[1]),
                               int(image.shape[0]), d.grey, t.rounded(), content)
    embed = t.network("recognizer", nets.embed_fn, check)
    if face_kps is not None:
        with t.step("align"):
            aligned = place_stage(image, face_kps)
        dets = aligned.dets
    else:
        with t.step("detect"):
            dets = find_faces(image, Networks(t.network("detector", nets.detect_fn, check), embed), s,
                              opts.det_thresh)
        with t.step("align"):
            if opts.track is not None:  # a live stream's target: the face it continues into, or none
                aligned = followed(image, dets, TrackHint.parse(opts.track))
            else:
                aligned = align_stage(image, dets, opts, s.max_faces, embed, nets.embed_batch,
                                      reference if reference is not None and np.asarray(reference).size else None)
    m = aligned.crops.shape[0]
    src = np.asarray(source_latents, np.float32).reshape(-1, 512)
    latents = latents_for(aligned.latent_index, src) if m else np.zeros((0, 512), np.float32)
    sources = source_rows(source_embeddings, src.shape[0])
    pasted, quality, watermarked = None, None, False
    if m:
        with t.step("swap"):
            fakes, mats = swapped_faces(image, aligned.crops, aligned.affines, latents,
                                        t.network("swapper", nets.swap_fn, check), nets.swap_batch, opts.pixel_boost)
        with t.step("paste"):
            # the original is needed after the paste only for the quality figures' crops
            pasted = paste_faces(image, fakes, mats, d.grey, in_place=not opts.face_quality)
        if opts.face_quality:
            kps = dets.kps[aligned.selected]
            with t.step("quality"):
                quality = face_quality(image, pasted, kps, aligned.selected, aligned.latent_index, embed,
                                       nets.embed_batch, sources)
        if opts.badge:
            with t.step("badge"):
                pasted = burn_badge(pasted)
        mark = watermark_fn(opts.watermark)
        if mark is not None:
            with t.step("watermark"):
                marked = mark(pasted)
            watermarked = marked is not pasted
            pasted = marked
    elif opts.face_quality:
        quality = []
    with t.step("encode"):
        out, fmt = encode_stage(image, data, {"format": d.fmt}, pasted, opts, d.alpha)
    return FrameResult(out, fmt, dets, aligned, quality, watermarked, int(image.shape[1]), int(image.shape[0]),
                       d.grey, t.rounded(), content)


@dataclass
class Analysis:
    """What ``analyze_frame`` found: every face, its normed ArcFace embedding and inswapper
    latent (float32 [N, 512] each), its aligned 112x112 BGR crop (uint8 [N, 112, 112, 3])."""

    dets: Detections
    embeddings: np.ndarray
    latents: np.ndarray
    crops: np.ndarray
    stage_ms: dict = field(default_factory=dict)


def analyze_frame(data: bytes | np.ndarray, nets: Networks, s: DetectSettings, emap: np.ndarray,
                  embeddings: bool = True) -> Analysis:
    """Decode once, find the faces and (``embeddings``) embed each one.

    ``embeddings`` False (a tracker that needs boxes and key points only): no ArcFace call;
    ``embeddings``, ``latents`` and ``crops`` then have 0 rows, and a JPEG larger than twice the
    detector's input is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) for the
    letterbox; boxes and key points then move by about a pixel against a full decode
    (``tests/unit/test_frames.py`` bounds it).

    Raises:
        codec.ImageError: as ``codec.decode_image``.
    """
    t = Timer()
    with t.step("decode"):
        # boxes and key points only: the detector's letterbox is all that reads the pixels, so a
        # large JPEG is decoded at a reduced scale (``codec.decode_image``'s ``fit_within``)
        d = decode_image(data, s.max_pixels, alpha=False, fit_within=None if embeddings else (s.det_size, s.det_size))
        image = d.bgr
        full = (image.shape[0] * d.reduced, image.shape[1] * d.reduced)
        if d.reduced > 1 and len(tile_windows(*full, s.det_size)):  # elongated: the tiles want every pixel
            d = decode_image(data, s.max_pixels, alpha=False)
            image = d.bgr
    with t.step("detect"):
        dets = find_faces(image, Networks(t.network("detector", nets.detect_fn), nets.embed_fn), s)
        if d.reduced > 1:
            dets = dets.scaled(d.reduced)
    if not embeddings:
        z = np.zeros((0, 512), np.float32)
        return Analysis(dets, z, z.copy(), np.zeros((0, 112, 112, 3), np.uint8), t.rounded())
    with t.step("embed"):
        emb, lat, crops = analyze_stage(image, dets, t.network("recognizer", nets.embed_fn), nets.embed_batch, emap)
    return Analysis(dets, emb, lat, crops, t.rounded())


def embed_options(raw: bytes) -> bool:
    """Whether to embed the faces, from the optional ``options`` JSON ({"embeddings": true|false}).

    Raises:
        ValueError: not a JSON object, an unknown key or a value that is not a boolean.
    """
    if not raw:
        return True
    try:
        opts = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"options must be a JSON object: {exc}") from None
    if not isinstance(opts, dict) or set(opts) - {"embeddings"} or not isinstance(opts.get("embeddings", True), bool):
        raise ValueError('face_embed takes one option, {"embeddings": true|false}')
    return opts.get("embeddings", True)
