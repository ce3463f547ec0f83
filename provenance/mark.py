"""Marking one output: watermark in the pixels, then XMP, then the signed C2PA manifest.

The order keeps each mark valid: the watermark changes pixels, so it comes first and the image
is encoded once after it; XMP is written next, so the C2PA hash covers it; signing comes last
and changes nothing it hashed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from pipeline import watermark
from pipeline.codec import decode_image, encode_image
from pipeline.watermark import Payload

from . import c2pa_manifest, xmp
from .c2pa_manifest import GENERATOR, ProvenanceSigner, generator_version

log = logging.getLogger("provenance")

#: Accepted spellings of each output format.
_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "image/jpeg": "jpeg", "png": "png", "image/png": "png",
            "webp": "webp", "image/webp": "webp", "mp4": "mp4", "video/mp4": "mp4"}


def normalise_format(fmt: str) -> str:
    """"jpeg", "png", "webp" or "mp4" for a name or MIME type; ValueError for anything else."""
    try:
        return _FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"marking supports JPEG, PNG, WebP and MP4, not {fmt!r}") from None


def output_xmp_packet() -> bytes:
    """The XMP packet every output carries (DigitalSourceType compositeWithTrainedAlgorithmicMedia, CreatorTool)."""
    return xmp.xmp_packet(f"{GENERATOR} {generator_version()}")


def watermark_frame(bgr: np.ndarray, payload: Payload) -> np.ndarray:
    """Mark one video frame inside the encoder loop.

    Args:
        bgr: (H, W, 3) uint8 frame in BGR order (PyAV: ``frame.to_ndarray(format="bgr24")``).
        payload: ``Payload(signer.service_id, result_id)``.

    Returns:
        A new (H, W, 3) uint8 BGR frame; a frame under ``watermark.MIN_SIDE`` px on a side is
        returned unmarked (the same array).

    Raises:
        ValueError: not a uint8 (H, W, 3|4) array.

    Cost: about 6 ms per 1280x720 frame on an idle core, 11 ms on the busy 2-core dev machine
    (``python -m bench.marking``), against about 35-50 ms for libx264 veryfast to encode
    the frame; so every frame is marked, and any few seconds of a clip carry the mark.
    ``verify`` reads 8 frames (every 3rd from the start) and averages them.
    """
    return watermark.embed_if_fits(bgr, payload)


def mark_image(data: bytes, fmt: str, target: bytes | None, models: list[dict], result_id: int,
               signer: ProvenanceSigner, *, quality: int = 95) -> bytes:
    """All three marks on one output image.

    Args:
        data: the encoded output (any format ``pipeline.codec.decode_image`` reads).
        fmt: output format, "jpeg"/"jpg", "png" or "webp" (or the MIME type).
        target: the target image's bytes as uploaded (ingredient, by SHA-256), or None.
        models: ``[{"name": str, "sha256": 64 hex, "stand_in": bool}, ...]``, the models used.
        result_id: unsigned 32-bit id of this result, carried by the watermark and the manifest.
        signer: the service's ``ProvenanceSigner`` (its ``service_id`` goes into the watermark).
        quality: JPEG/WebP quality of the one re-encode (1-100; as ``pipeline.codec``, 95).
            PNG is lossless; a WebP with alpha is written lossless (as ``pipeline.codec`` does).

    Returns:
        The marked file's bytes: watermark in the pixels (BGR, alpha kept), XMP
        ``DigitalSourceType`` compositeWithTrainedAlgorithmicMedia, embedded signed C2PA manifest. An image under
        ``watermark.MIN_SIDE`` px on a side gets XMP and C2PA only.

    Raises:
        ValueError: unknown format, bad ``result_id`` or models.
        pipeline.codec.ImageError: ``data`` cannot be decoded.
        c2pa.C2paError: the SDK could not sign.
    """
    fmt = normalise_format(fmt)
    if fmt == "mp4":
        raise ValueError("mark_image takes images; for MP4 use watermark_frame + mark_video_file")
    payload = Payload(signer.service_id, result_id)
    img = decode_image(data)
    pixels = img.bgr
    if min(pixels.shape[:2]) >= watermark.MIN_SIDE:
        pixels = watermark.embed(pixels, payload)
    else:
        log.info("image %dx%d too small to carry a watermark: XMP and C2PA only", pixels.shape[1], pixels.shape[0])
    encoded = encode_image(pixels, fmt, quality=quality, alpha=img.alpha)
    return mark_encoded(encoded, fmt, target, models, result_id, signer)


def mark_encoded(data: bytes, fmt: str, target: bytes | None, models: list[dict], result_id: int,
                 signer: ProvenanceSigner) -> bytes:
    """XMP and the signed C2PA manifest on an encoded image whose pixels already carry the
    watermark of ``result_id`` (``face_swap`` marks them before its one encode:
    ``pipeline.frames``); nothing is decoded or encoded again.

    Args:
        data: the encoded image, "jpeg", "png" or "webp" (``fmt``, or its MIME type).
        target, models, result_id, signer: as ``mark_image``.

    Returns:
        The file's bytes with XMP ``DigitalSourceType`` and the embedded signed manifest.

    Raises:
        ValueError: unknown format, bad ``result_id`` or models.
        c2pa.C2paError: the SDK could not sign.
    """
    fmt = normalise_format(fmt)
    if fmt == "mp4":
        raise ValueError("mark_encoded takes images; for MP4 use mark_video_file")
    encoded = xmp.add_xmp(data, fmt, output_xmp_packet())
    return c2pa_manifest.sign_bytes(encoded, fmt, target=target, models=models, result_id=result_id,
                                    signer=signer)


def mark_video_file(path: str | Path, target_path: str | Path | None, models: list[dict], result_id: int,
                    signer: ProvenanceSigner, out_path: str | Path | None = None) -> Path:
    """XMP and the signed C2PA manifest on an MP4 whose frames went through ``watermark_frame``.

    Args:
        path: the encoded MP4 (left as it is when ``out_path`` is given, replaced otherwise).
        target_path: the target video as uploaded (ingredient by SHA-256), or None.
        models, result_id, signer: as ``mark_image``.
        out_path: where to write the marked file; default: replace ``path`` (atomically).

    Returns:
        The marked file's path.

    Raises:
        ValueError: not an MP4; bad ids or models.
        c2pa.C2paError: the SDK could not parse or sign it.
        OSError: a file cannot be read or written.
    """
    path = Path(path)
    dst = Path(out_path) if out_path is not None else path
    fd, tmp_xmp = tempfile.mkstemp(prefix=".xmp-", suffix=".mp4", dir=dst.parent)
    os.close(fd)
    tmp_signed = Path(tmp_xmp).with_name(Path(tmp_xmp).name.replace(".xmp-", ".c2pa-"))
    try:
        with open(path, "rb") as src, open(tmp_xmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        xmp.append_mp4_xmp(tmp_xmp, output_xmp_packet())
        c2pa_manifest.sign_file(tmp_xmp, tmp_signed, "mp4", target_path=target_path, models=models,
                                result_id=result_id, signer=signer)
        os.replace(tmp_signed, dst)
    finally:
        for p in (Path(tmp_xmp), tmp_signed):
            p.unlink(missing_ok=True)
    return dst
