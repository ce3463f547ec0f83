"""Checks on uploaded images before anything is decoded: format from the bytes, size from the header."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.core.errors import APIError
from media.formats import HEAD
from pipeline.codec import SUPPORTED_INPUT, ImageError, header_size, sniff_format


@dataclass(frozen=True)
class ImageMeta:
    """Format ("jpeg", "png", ...) judged from the bytes, and the size the header declares."""

    fmt: str
    width: int
    height: int


def inspect_image(data: bytes, max_pixels: int, field: str = "image") -> ImageMeta:
    """Validate an upload without decoding its pixels.

    Raises:
        APIError: 400 empty_file; 415 unsupported_media_type (naming the supported formats);
            422 corrupt_image (the header cannot be read); 413 image_too_large (more pixels
            than ``max_pixels``, from the header: decompression bombs never get decoded).
    """
    if not data:
        raise APIError(400, "empty_file", f"The {field} file is empty (0 bytes).")
    fmt = sniff_format(data[:HEAD])
    if fmt is None:
        raise APIError(415, "unsupported_media_type",
                       f"The {field} is not a supported image: send one of {', '.join(SUPPORTED_INPUT)} "
                       "(judged from the file's bytes, not its name or content type).")
    try:
        width, height = header_size(np.frombuffer(data, np.uint8))  # the header only, as Triton checks it
    except ImageError as exc:
        raise APIError(422, "corrupt_image", f"The {field} looks like {fmt} but: {exc}") from None
    if width * height > max_pixels:
        raise APIError(413, "image_too_large",
                       f"The {field} is {width}x{height} pixels; the limit is {max_pixels} pixels.")
    if width < 1 or height < 1:
        raise APIError(422, "corrupt_image", f"The {field} declares an empty size {width}x{height}.")
    return ImageMeta(fmt, width, height)
