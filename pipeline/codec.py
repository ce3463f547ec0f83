"""Image decoding and encoding (OpenCV), judged from the bytes, never from a name.

Decoding applies the EXIF orientation (OpenCV's ``IMREAD_COLOR`` default does, for JPEG and
other formats carrying EXIF) so that detection sees the image as it is displayed. Output is
always BGR uint8; grey and 16-bit inputs are converted by OpenCV to 8-bit BGR.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Magic numbers of the formats we accept, checked before decoding.
_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
SUPPORTED_INPUT = ("jpeg", "png", "webp", "bmp", "tiff")
OUTPUT_FORMATS = ("jpeg", "png", "webp")
#: Largest image we decode, in pixels (width * height): 8K x 8K.
MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """The bytes are not an image we can decode; the message says why, for a person."""


def sniff_format(data: bytes) -> str | None:
    """The image format named by the leading bytes ("jpeg", "png", "webp", ...) or None."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


def _jpeg_truncated(buf: np.ndarray) -> bool:
    """True when no end-of-image marker (FFD9) follows the last start-of-scan (FFDA).

    libjpeg decodes a cut file to a grey-bottomed picture with only a warning; we refuse it.
    The last scan is the main image's (an EXIF thumbnail's markers come earlier).
    """
    data = buf.tobytes()
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def decode_image(data: bytes | np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode encoded image bytes to BGR uint8 [H, W, 3] with EXIF orientation applied.

    Raises:
        ImageError: empty input, an unknown format, too many pixels, or corrupt bytes.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data.reshape(-1)
    if buf.size == 0:
        raise ImageError("empty image: 0 bytes received")
    fmt = sniff_format(buf[:16].tobytes())
    if fmt is None:
        raise ImageError(f"unsupported image format: expected one of {', '.join(SUPPORTED_INPUT)}")
    if fmt == "jpeg" and _jpeg_truncated(buf):
        raise ImageError("corrupt image: the jpeg data ends before the image does (truncated file)")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"corrupt image: the {fmt} data could not be decoded")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"image too large: {img.shape[1]}x{img.shape[0]} exceeds {max_pixels} pixels")
    return img, fmt


def encode_image(img_bgr: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """Encode BGR uint8 [H, W, 3] as jpeg / png / webp; quality 1-100 for the lossy ones.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "jpeg":
        ok, out = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, out = cv2.imencode(".png", img_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif fmt == "webp":
        ok, out = cv2.imencode(".webp", img_bgr, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown output format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if not ok:
        raise ValueError(f"could not encode a {img_bgr.shape} image as {fmt}")
    return out.tobytes()
