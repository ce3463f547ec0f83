"""The work of each Triton Python stage as plain functions (no Triton import).

The Python models in ``model_repository/`` call these; tests call them directly with
onnxruntime sessions in place of the BLS calls. Networks are injected as callables:

- ``embed_fn(blob)``: float32 [N, 3, 112, 112] -> float32 [N, 512] raw ArcFace embeddings;
- ``swap_fn(blob, latents)``: float32 [N, 3, 128, 128] + [N, 512] -> float32 [N, 3, 128, 128].

Both are called only with N >= 1 and N <= the network's batch limit (``chunked``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.align import crops_to_blob, estimate_norm, norm_crop
from pipeline.codec import encode_image
from pipeline.detection import (
    NMS_THRESH,
    Detections,
    decode_scrfd,
    detect_tiles,
    letterbox_blob,
)
from pipeline.embedding import ARCFACE_MEAN, ARCFACE_STD, SWAP_MEAN, SWAP_STD, normed, swap_latents
from pipeline.paste import paste_back, swapper_output_to_bgr
from pipeline.pixel_boost import boost_factor, boosted_crops, explode, implode
from pipeline.selection import SwapOptions, select_faces

EmbedFn = Callable[[np.ndarray], np.ndarray]
SwapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
SWAP_SIZE = 128
EMBED_SIZE = 112


def chunked(fn: Callable[..., np.ndarray], limit: int, *arrays: np.ndarray,
            concat: Callable = np.concatenate) -> np.ndarray:
    """Run ``fn`` on row chunks of at most ``limit`` rows (limit <= 0: one row at a time)
    and concatenate with ``concat`` (``torch.cat`` for tensors); never calls ``fn`` with zero
    rows. All arrays share their row count."""
    n = arrays[0].shape[0]
    step = max(int(limit), 1)
    outs = [fn(*(a[i:i + step] for a in arrays)) for i in range(0, n, step)]
    return concat(outs) if outs else np.zeros((0,), np.float32)


DetectFn = Callable[[np.ndarray], list[np.ndarray]]


def detect_stage(heads: list[np.ndarray], det_blob_hw: tuple[int, int], det_scale: float, det_thresh: float,
                 nms_thresh: float = NMS_THRESH, image: np.ndarray | None = None,
                 detect_fn: DetectFn | None = None, tiles: bool = True) -> Detections:
    """Decode SCRFD heads into faces (see ``detection.decode_scrfd``), with two extra passes
    where one letterbox of the whole image cannot see the faces.

    Args:
        heads: the detector's 9 raw outputs (float32 [K, C] or [1, K, C]) on the letterboxed
            whole image.
        det_blob_hw: detector input (height, width) in pixels.
        det_scale: the letterbox scale (detector pixels per image pixel).
        det_thresh, nms_thresh: score threshold and NMS IoU, used by every pass.
        image: uint8 [H, W, 3] BGR, the frame the heads were computed on (needed by the extra
            passes).
        detect_fn: the detector, float32 [1, 3, H, W] blob -> its 9 heads; None: no extra pass.
        tiles: allow the tiled pass (below).

    Returns:
        Detections in image pixels, score descending (insightface's order).

    Tiles (elongated images): the whole-image letterbox maps a 64x4000 strip to 640x10 pixels,
    so its faces fall under the detector's floor (about 16-24 px at its input). Where
    the windows of ``detection.tile_windows`` see faces more than 2.5x larger than the
    whole-image pass (images whose long side is over 2.5x the short side, and over 800 px
    with the 640 detector), we also detect on 3 to 16 (cap) overlapping windows spanning the
    short side: each about short x short (at least 320 px along the long side, so never
    magnified more than 2x), overlapping by >= 25% and by >= 24 detector pixels of the whole-
    image pass, letterboxed to the detector's input like the whole image. A window's faces
    cut by an edge shared with a neighbour are dropped, and so are the first pass's faces no
    longer than that overlap (whole in a window, where they are seen better); the rest are
    merged by NMS (``nms_thresh``) and ordered by score (``detection.detect_tiles``). Cost:
    one detector run per window (16 at most; about 65 ms each for det_2.5g on 2 CPU cores).

    Close-ups: SCRFD misses a face that fills the frame (insightface >= 1.0 adds a pass at
    128x128 for this). Where an image is not tiled, insightface 0.7.3 finds no face and
    ``detect_fn`` is given, we detect once more on ``image`` centred on a black canvas twice
    its size, and map the faces back. A tiled image gets no close-up pass: no face fills a
    frame 2.5x longer than high, and one filling its short side is seen by the first pass
    (>= 24 px there up to 26:1) or, in thinner strips, by the windows (16 of them span more
    than the short side).

    On images that are not tiled and have a face in the first pass the result is exactly
    insightface 0.7.3's.
    """
    dets = decode_scrfd(heads, det_blob_hw, det_scale, det_thresh, nms_thresh)
    if detect_fn is None or image is None:
        return dets
    h, w = image.shape[:2]
    det_wh = (det_blob_hw[1], det_blob_hw[0])
    tiled = detect_tiles(image, dets, detect_fn, det_wh, det_thresh, nms_thresh) if tiles else None
    if tiled is not None:
        return tiled
    if len(dets):
        return dets

    def padded_blob(py: int, px: int) -> tuple[np.ndarray, float]:
        return letterbox_blob(cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_CONSTANT, value=0), det_wh)

    return close_up_pass((h, w), padded_blob, detect_fn, det_blob_hw, det_thresh, nms_thresh)


def close_up_pass(image_hw: tuple[int, int], padded_blob: Callable, detect_fn: Callable, det_blob_hw: tuple[int, int],
                  det_thresh: float, nms_thresh: float = NMS_THRESH) -> Detections:
    """``detect_stage``'s close-up pass: the image of ``image_hw`` centred on a black canvas twice
    its size, detected once more, the faces mapped back to image pixels.

    ``padded_blob(py, px)`` gives (the detector's blob, its letterbox scale) of the image with
    ``py`` black rows above and below and ``px`` columns left and right (the host's OpenCV
    letterbox here, the device's in ``pipeline.tensor_frames``); ``detect_fn(blob)`` the 9 heads."""
    h, w = image_hw
    py, px = h // 2, w // 2
    blob, scale = padded_blob(py, px)
    found = decode_scrfd(detect_fn(blob), det_blob_hw, scale, det_thresh, nms_thresh)
    if len(found) == 0:
        return found
    offset = np.array([px, py], np.float32)
    return Detections(found.boxes - np.tile(offset, 2), found.scores, found.kps - offset)


def _embed_crops(image: np.ndarray, dets: Detections, embed_fn: EmbedFn, batch: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 112, 112, 3] aligned BGR crops, float32 [N, 512] normed embeddings)."""
    if len(dets) == 0:
        return np.zeros((0, EMBED_SIZE, EMBED_SIZE, 3), np.uint8), np.zeros((0, 512), np.float32)
    crops = np.stack([norm_crop(image, k, EMBED_SIZE)[0] for k in dets.kps])
    return crops, normed(chunked(embed_fn, batch, crops_to_blob(crops, ARCFACE_MEAN, ARCFACE_STD)))


def embed_faces(image: np.ndarray, dets: Detections, embed_fn: EmbedFn, batch: int) -> np.ndarray:
    """Normed ArcFace embeddings float32 [N, 512] of every face in ``dets``."""
    return _embed_crops(image, dets, embed_fn, batch)[1]


@dataclass
class Aligned:
    """Faces chosen for swapping, their 128x128 crops and the matrices that made them."""

    dets: Detections  # every face found
    selected: np.ndarray  # int64 [M] indices into dets
    latent_index: np.ndarray  # int64 [M] source latent of each selected face
    crops: np.ndarray  # uint8 [M, 128, 128, 3] BGR
    affines: np.ndarray  # float32 [M, 2, 3]
    truncated: bool  # faces beyond the cap were left alone
    no_match: bool = False  # "similar"/"pairs": faces found, none with cosine >= threshold (none swapped)


def align_stage(image: np.ndarray, dets: Detections, opts: SwapOptions, cap: int,
                embed_fn: EmbedFn | None = None, embed_batch: int = 1,
                reference: np.ndarray | None = None) -> Aligned:
    """Select the faces to swap and crop them to inswapper's 128x128 template.

    ``no_match`` of the result is True when selection "similar" or "pairs" found faces but
    none reached ``opts.threshold`` (then nothing is selected): the ``align_info`` JSON should
    carry it as ``no_match`` so the ``result`` says why nothing was swapped.

    Raises:
        selection.OptionsError: face_index out of range, or "similar" without a reference.
    """
    embeddings = None
    if opts.selection in ("similar", "pairs") and len(dets) and embed_fn is not None:
        embeddings = embed_faces(image, dets, embed_fn, embed_batch)
    sel = select_faces(dets, opts, cap, embeddings, reference)
    crops, affines = [], []
    for i in sel.indices:
        crop, m = norm_crop(image, dets.kps[i], SWAP_SIZE)
        crops.append(crop)
        affines.append(m)
    crops_a = np.stack(crops) if crops else np.zeros((0, SWAP_SIZE, SWAP_SIZE, 3), np.uint8)
    aff_a = np.asarray(affines, np.float32).reshape(-1, 2, 3)
    return Aligned(dets, sel.indices, sel.latent_index, crops_a, aff_a, sel.truncated, sel.no_match)


#: Largest key-point coordinate a caller may send (pixels, either sign): far beyond any frame,
#: short of where the alignment's arithmetic overflows.
KPS_LIMIT = 1e6
#: Largest norm of a source latent row (inswapper's latents are unit vectors, ``normed(emb @ emap)``;
#: a little slack for callers that send them unnormed).
LATENT_NORM_LIMIT = 1000.0


def caller_kps(kps: np.ndarray) -> Detections:
    """The faces a caller places by their key points (``face_swap_kps``): float32 [M, 5, 2]
    checked, as ``Detections`` (boxes around the points, scores 1).

    Raises:
        ValueError: NaN or infinite values, values beyond ``KPS_LIMIT``, or a face whose five
            points define no alignment (all at one point).
    """
    kps = np.asarray(kps, np.float32).reshape(-1, 5, 2)
    if not np.isfinite(kps).all():
        raise ValueError("face_kps holds NaN or infinite values")
    if kps.size and np.abs(kps).max() > KPS_LIMIT:
        raise ValueError(f"face_kps holds values beyond +-{KPS_LIMIT:g} pixels")
    with np.errstate(all="ignore"):
        bad = [i for i, k in enumerate(kps) if not np.isfinite(estimate_norm(k, SWAP_SIZE)).all()]
    if bad:
        raise ValueError(f"face_kps of face {bad[0]}: the five points define no alignment (all at one point)")
    m = kps.shape[0]
    boxes = np.concatenate([kps.min(axis=1), kps.max(axis=1)], axis=1) if m else np.zeros((0, 4), np.float32)
    return Detections(boxes.astype(np.float32), np.ones((m,), np.float32), kps)


def place_stage(image: np.ndarray, kps: np.ndarray) -> Aligned:
    """Crops for faces whose key points the caller supplies (float32 [M, 5, 2], e.g. smoothed
    across video frames; checked by ``caller_kps``); every given face is swapped with source
    latent 0."""
    dets = caller_kps(kps)
    kps, m = dets.kps, len(dets)
    crops, affines = [], []
    for k in kps:
        crop, mat = norm_crop(image, k, SWAP_SIZE)
        crops.append(crop)
        affines.append(mat)
    crops_a = np.stack(crops) if crops else np.zeros((0, SWAP_SIZE, SWAP_SIZE, 3), np.uint8)
    idx = np.arange(m, dtype=np.int64)
    return Aligned(dets, idx, np.zeros_like(idx), crops_a, np.asarray(affines, np.float32).reshape(-1, 2, 3), False)


def swap_crops(crops: np.ndarray, latents: np.ndarray, swap_fn: SwapFn, batch: int) -> np.ndarray:
    """uint8 [M, 128, 128, 3] BGR swapped crops of uint8 [M, 128, 128, 3] BGR crops;
    ``latents`` float32 [M, 512] (one per crop); ``swap_fn`` called on chunks of <= ``batch``."""
    if crops.shape[0] == 0:
        return crops
    blob = crops_to_blob(crops, SWAP_MEAN, SWAP_STD)
    pred = chunked(swap_fn, batch, blob, np.ascontiguousarray(latents, np.float32))
    return swapper_output_to_bgr(pred)


def output_format(opts: SwapOptions, input_fmt: str) -> str:
    """The format to encode: the requested one, or for "auto" the input's (png if not jpeg/png/webp)."""
    if opts.output_format != "auto":
        return opts.output_format
    return input_fmt if input_fmt in ("jpeg", "png", "webp") else "png"


def swapped_faces(image: np.ndarray, aligned_crops: np.ndarray, affines: np.ndarray, latents: np.ndarray,
                  swap_fn: SwapFn, batch: int, pixel_boost: int = SWAP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The swapped faces and the matrices to paste them with.

    Args:
        image: uint8 [H, W, 3] BGR frame.
        aligned_crops: uint8 [M, 128, 128, 3] BGR crops; affines: float [M, 2, 3] their matrices.
        latents: float32 [M, 512], one source latent per crop.
        swap_fn, batch: the swapper, called on chunks of at most ``batch`` rows.
        pixel_boost: 128 (the crops as given) or 128 n (n = 2..4: each face aligned again at 128 n
            from ``image`` and swapped as n x n sub-crops, ``pipeline.pixel_boost``); the sub-crops
            of all faces go through ``swap_fn`` together, face after face.

    Returns:
        (uint8 [M, S, S, 3] BGR swapped faces, S = pixel_boost; float [M, 2, 3] frame -> face matrices).

    Raises:
        ValueError: pixel_boost not one of 128, 256, 384, 512.
    """
    n = boost_factor(int(pixel_boost))
    if n == 1:
        return swap_crops(aligned_crops, latents, swap_fn, batch), affines
    crops, mats = boosted_crops(image, affines, n)
    subs = swap_crops(explode(crops, n), np.repeat(np.asarray(latents, np.float32), n * n, axis=0), swap_fn, batch)
    return implode(subs, n), mats


def paste_faces(image: np.ndarray, fakes: np.ndarray, mats: np.ndarray, grey: bool = False,
                in_place: bool = False) -> np.ndarray:
    """The frame with every swapped face pasted back (``paste.paste_back``), made grey again when
    the input was; ``in_place`` pastes into ``image`` itself (no copy of the frame).

    Args:
        image: uint8 [H, W, 3] BGR frame.
        fakes: uint8 [M, S, S, 3] BGR swapped faces; mats: float [M, 2, 3] frame -> face matrices.
    """
    out = image if in_place else image.copy()
    for fake, m in zip(fakes, mats):
        paste_back(out, fake, m)
    if grey:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out


def pasted_frame(image: np.ndarray, info: dict, aligned_crops: np.ndarray, affines: np.ndarray,
                 latents: np.ndarray, swap_fn: SwapFn, batch: int, pixel_boost: int = SWAP_SIZE
                 ) -> np.ndarray | None:
    """A copy of ``image`` with the swapped faces (``swapped_faces``, same arguments) pasted back
    (grey when ``info["grey"]``), or None when there is no crop (the swapper is not called)."""
    if aligned_crops.shape[0] == 0:
        return None
    fakes, mats = swapped_faces(image, aligned_crops, affines, latents, swap_fn, batch, pixel_boost)
    return paste_faces(image, fakes, mats, bool(info.get("grey")))


def encode_stage(image: np.ndarray, original: bytes | np.ndarray, info: dict, pasted: np.ndarray | None,
                 opts: SwapOptions,
                 alpha: np.ndarray | None = None) -> tuple[bytes, str]:
    """(encoded output, its format): ``pasted``, or with no face swapped (None) the input itself:
    its own bytes (``original``: bytes or a uint8 array; pixel-identical, metadata kept) when the
    output format is the input's. ``alpha`` (uint8 [H, W]) is kept in png/webp output."""
    input_fmt = info.get("format", "")
    fmt = output_format(opts, input_fmt)
    keep_alpha = alpha if alpha is not None and alpha.size else None
    if pasted is None:
        if fmt == input_fmt:
            return bytes(original), fmt
        return encode_image(image, fmt, opts.quality, keep_alpha), fmt
    return encode_image(pasted, fmt, opts.quality, keep_alpha), fmt


def latents_for(latent_index: np.ndarray, source_latents: np.ndarray) -> np.ndarray:
    """One source latent per selected face, float32 [M, 512]: ``source_latents[latent_index]``.

    Raises:
        ValueError: no source latent, a non-finite one, or an index past the last one (pairs
            need one source latent per reference embedding).
    """
    src = np.asarray(source_latents, np.float32).reshape(-1, 512)
    idx = np.asarray(latent_index, np.int64).reshape(-1)
    if src.shape[0] == 0:
        raise ValueError("source_latents is empty: embed a source face first (face_embed)")
    if not np.isfinite(src).all():
        raise ValueError("source_latents holds NaN or infinite values")
    norms = np.linalg.norm(src.astype(np.float64), axis=1)
    if (norms > LATENT_NORM_LIMIT).any():
        raise ValueError(f"source_latents row {int(np.argmax(norms))} has norm {norms.max():.3g}: inswapper latents "
                         f"are unit vectors (face_embed's latents); at most {LATENT_NORM_LIMIT:g} is accepted")
    if idx.size and idx.max() >= src.shape[0]:
        raise ValueError(f"pairs need one source latent per reference embedding: got {src.shape[0]} source "
                         f"latent(s) for reference {int(idx.max())}")
    return src[idx]


def result_json(**fields) -> bytes:
    """The ``result`` tensor: a JSON summary (faces found/swapped, truncated, stand-ins, ...)."""
    return json.dumps(fields, sort_keys=True).encode()


def analyze_stage(image: np.ndarray, dets: Detections, embed_fn: EmbedFn, batch: int,
                  emap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normed embeddings and swap latents (float32 [N, 512]) and the aligned 112x112 BGR
    crops (uint8 [N, 112, 112, 3], usable as thumbnails) of every face."""
    crops, emb = _embed_crops(image, dets, embed_fn, batch)
    latents = swap_latents(emb, emap) if len(emb) else emb.copy()
    return emb, latents, crops
