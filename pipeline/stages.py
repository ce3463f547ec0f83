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

import numpy as np

from pipeline.align import crops_to_blob, norm_crop
from pipeline.codec import decode_image, encode_image
from pipeline.detection import Detections, decode_scrfd, detector_blob, letterbox
from pipeline.embedding import ARCFACE_MEAN, ARCFACE_STD, SWAP_MEAN, SWAP_STD, normed, swap_latents
from pipeline.paste import paste_back, swapper_output_to_bgr
from pipeline.selection import SwapOptions, select_faces

EmbedFn = Callable[[np.ndarray], np.ndarray]
SwapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
SWAP_SIZE = 128
EMBED_SIZE = 112


def chunked(fn: Callable[..., np.ndarray], limit: int, *arrays: np.ndarray) -> np.ndarray:
    """Run ``fn`` on row chunks of at most ``limit`` rows (limit <= 0: one row at a time)
    and concatenate; never calls ``fn`` with zero rows. All arrays share their row count."""
    n = arrays[0].shape[0]
    step = max(int(limit), 1)
    outs = [fn(*(a[i:i + step] for a in arrays)) for i in range(0, n, step)]
    return np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.float32)


@dataclass
class Decoded:
    """Output of the decode stage: the frame and the detector's letterboxed input."""

    image: np.ndarray  # uint8 [H, W, 3] BGR, EXIF orientation applied
    det_blob: np.ndarray  # float32 [1, 3, det_h, det_w]
    det_scale: float
    fmt: str  # "jpeg", "png", ...


def decode_stage(data: bytes | np.ndarray, det_size: int = 640) -> Decoded:
    """Decode image bytes and build the SCRFD input (raises ``codec.ImageError``)."""
    img, fmt = decode_image(data)
    det_img, det_scale = letterbox(img, (det_size, det_size))
    return Decoded(img, detector_blob(det_img), det_scale, fmt)


def detect_stage(heads: list[np.ndarray], det_blob_hw: tuple[int, int], det_scale: float, det_thresh: float,
                 nms_thresh: float = 0.4) -> Detections:
    """Decode SCRFD heads into faces (see ``detection.decode_scrfd``)."""
    return decode_scrfd(heads, det_blob_hw, det_scale, det_thresh, nms_thresh)


def embed_faces(image: np.ndarray, dets: Detections, embed_fn: EmbedFn, batch: int) -> np.ndarray:
    """Normed ArcFace embeddings float32 [N, 512] of every face in ``dets``."""
    if len(dets) == 0:
        return np.zeros((0, 512), np.float32)
    crops = np.stack([norm_crop(image, k, EMBED_SIZE)[0] for k in dets.kps])
    blob = crops_to_blob(crops, ARCFACE_MEAN, ARCFACE_STD)
    return normed(chunked(embed_fn, batch, blob))


@dataclass
class Aligned:
    """Faces chosen for swapping, their 128x128 crops and the matrices that made them."""

    dets: Detections  # every face found
    selected: np.ndarray  # int64 [M] indices into dets
    crops: np.ndarray  # uint8 [M, 128, 128, 3] BGR
    affines: np.ndarray  # float32 [M, 2, 3]
    truncated: bool  # faces beyond the cap were left alone


def align_stage(image: np.ndarray, dets: Detections, opts: SwapOptions, cap: int,
                embed_fn: EmbedFn | None = None, embed_batch: int = 1,
                reference: np.ndarray | None = None) -> Aligned:
    """Select the faces to swap and crop them to inswapper's 128x128 template.

    Raises:
        selection.OptionsError: face_index out of range, or "similar" without a reference.
    """
    embeddings = None
    if opts.selection == "similar" and len(dets) and embed_fn is not None:
        embeddings = embed_faces(image, dets, embed_fn, embed_batch)
    selected, truncated = select_faces(dets, opts, cap, embeddings, reference)
    crops, affines = [], []
    for i in selected:
        crop, m = norm_crop(image, dets.kps[i], SWAP_SIZE)
        crops.append(crop)
        affines.append(m)
    crops_a = np.stack(crops) if crops else np.zeros((0, SWAP_SIZE, SWAP_SIZE, 3), np.uint8)
    aff_a = np.asarray(affines, np.float32).reshape(-1, 2, 3)
    return Aligned(dets, selected.astype(np.int64), crops_a, aff_a, truncated)


def swap_crops(crops: np.ndarray, latents: np.ndarray, swap_fn: SwapFn, batch: int) -> np.ndarray:
    """uint8 [M, 128, 128, 3] BGR swapped crops; ``latents`` float32 [M, 512] (one per crop)."""
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


def paste_stage(image: np.ndarray, original: bytes, input_fmt: str, aligned_crops: np.ndarray, affines: np.ndarray,
                latents: np.ndarray, opts: SwapOptions, swap_fn: SwapFn, batch: int) -> tuple[bytes, str, int]:
    """Swap the aligned crops, paste them back and encode.

    With no face to swap and an output format equal to the input's, the original bytes come
    back untouched (pixel-identical, metadata kept).

    Returns:
        (encoded image, its format, faces swapped).
    """
    fmt = output_format(opts, input_fmt)
    n = aligned_crops.shape[0]
    if n == 0:
        if fmt == input_fmt:
            return bytes(original), fmt, 0
        return encode_image(image, fmt, opts.quality), fmt, 0
    fakes = swap_crops(aligned_crops, latents, swap_fn, batch)
    frame = image.copy()
    for fake, m in zip(fakes, affines):
        paste_back(frame, fake, m)
    return encode_image(frame, fmt, opts.quality), fmt, n


def latents_for(selected: int, source_latents: np.ndarray) -> np.ndarray:
    """One source latent per selected face: float32 [M, 512] from [1, 512] (or [M, 512])."""
    src = np.asarray(source_latents, np.float32).reshape(-1, 512)
    if src.shape[0] == 0:
        raise ValueError("source_latents is empty: embed a source face first (face_embed)")
    if src.shape[0] == 1 or src.shape[0] != selected:
        return np.repeat(src[:1], selected, axis=0)
    return src


def result_json(**fields) -> bytes:
    """The ``result`` tensor: a JSON summary (faces found/swapped, truncated, stand-ins, ...)."""
    return json.dumps(fields, sort_keys=True).encode()


def analyze_stage(image: np.ndarray, dets: Detections, embed_fn: EmbedFn, batch: int,
                  emap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normed embeddings and swap latents (both float32 [N, 512]) of every face."""
    emb = embed_faces(image, dets, embed_fn, batch)
    if emb.shape[0] == 0:
        return emb, emb.copy()
    return emb, swap_latents(emb, emap)
