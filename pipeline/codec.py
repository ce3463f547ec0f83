"""Image decoding and encoding (OpenCV), judged from the bytes, never from a name.

Decoding applies the EXIF orientation (OpenCV's ``IMREAD_COLOR`` default does, for JPEG and
other formats carrying EXIF) so that detection sees the image as it is displayed. Output is
always BGR uint8; grey and 16-bit inputs are converted by OpenCV to 8-bit BGR.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from media.formats import HEAD, sniff

#: The image formats we decode (judged by ``media.formats.sniff`` before decoding).
SUPPORTED_INPUT = ("jpeg", "png", "webp", "bmp", "tiff")
#: "bmp" is uncompressed: the video path uses it to move frames without loss or codec cost.
OUTPUT_FORMATS = ("jpeg", "png", "webp", "bmp")
#: Largest image we decode by default, in pixels (width * height); the server's
#: ``image_decoder`` takes its ``max_pixels`` parameter, the gateway the same default.
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """The bytes are not an image we can decode; the message says why, for a person."""


def sniff_format(data: bytes) -> str | None:
    """The image format named by the leading bytes ("jpeg", "png", "webp", ...) or None."""
    fmt = sniff(data)
    return fmt.name if fmt is not None and fmt.name in SUPPORTED_INPUT else None


def _jpeg_truncated(buf: np.ndarray) -> bool:
    """True when no end-of-image marker (FFD9) follows the last start-of-scan (FFDA).

    libjpeg decodes a cut file to a grey-bottomed picture with only a warning; we refuse it.
    The last scan is the main image's (an EXIF thumbnail's markers come earlier).
    """
    data = buf.tobytes()
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


@dataclass
class DecodedImage:
    """A decoded image.

    Attributes:
        bgr: uint8 [H, W, 3] BGR, EXIF orientation applied; grey, palette, 16-bit and CMYK
            inputs converted to 8-bit BGR by OpenCV.
        fmt: container format judged from the bytes ("jpeg", "png", "webp", "bmp", "tiff").
        alpha: uint8 [H, W] alpha channel of PNG/WebP/TIFF inputs that have one, else None.
        grey: True when the input has no colour (1-channel, or R=G=B within 2 levels).
    """

    bgr: np.ndarray
    fmt: str
    alpha: np.ndarray | None = None
    grey: bool = False
    #: ``bgr`` is the image at 1/reduced of its size on each side (``decode_image``'s ``fit_within``)
    reduced: int = 1


def _png_has_alpha(data: bytes) -> bool:
    color_type = data[25] if len(data) > 25 else 0
    head = data[: data.find(b"IDAT")] if b"IDAT" in data else data[:4096]
    return color_type in (4, 6) or b"tRNS" in head


def _webp_has_alpha(data: bytes) -> bool:
    """The extended header's alpha flag (VP8X), or a lossless bitstream's ``alpha_is_used`` bit
    (VP8L without VP8X: bit 28 of the 32 bits after its 0x2f signature; WebP container spec)."""
    if data[12:16] == b"VP8X":
        return len(data) > 20 and bool(data[20] & 0x10)
    return data[12:16] == b"VP8L" and len(data) >= 25 and bool(int.from_bytes(data[21:25], "little") >> 28 & 1)


def _is_grey(img: np.ndarray) -> bool:
    sample = img[:: max(img.shape[0] // 64, 1), :: max(img.shape[1] // 64, 1)].astype(np.int16)
    return bool(np.abs(sample[..., 0] - sample[..., 1]).max() <= 2
                and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2)


def header_size(buf: np.ndarray) -> tuple[int, int]:
    """(width, height) declared by the image header, read without decoding the pixels (Pillow).

    Raises:
        ImageError: the header cannot be read (corrupt).
    """
    saved = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.MAX_IMAGE_PIXELS = None  # we compare the size ourselves; nothing is decoded here
            with Image.open(io.BytesIO(buf.tobytes())) as im:
                return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: the header cannot be read ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def as_buffer(data: bytes | np.ndarray) -> np.ndarray:
    """uint8 [N] view of encoded bytes (bytes, bytearray or a uint8 array of any shape)."""
    return np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data.reshape(-1)


def check_image(buf: np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) of encoded bytes, checked before any pixel is decoded: every
    decoder of this project (OpenCV here, nvJPEG in ``pipeline.tensor_frames``) runs after it.

    Raises:
        ImageError: empty input, an unknown format, a truncated JPEG, a header that cannot be
            read, or more than ``max_pixels`` pixels.
    """
    if buf.size == 0:
        raise ImageError("empty image: 0 bytes received")
    fmt = sniff_format(buf[:HEAD].tobytes())
    if fmt is None:
        raise ImageError(f"unsupported image format: expected one of {', '.join(SUPPORTED_INPUT)}")
    if fmt == "jpeg" and _jpeg_truncated(buf):
        raise ImageError("corrupt image: the jpeg data ends before the image does (truncated file)")
    width, height = header_size(buf)
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} exceeds {max_pixels} pixels")
    return fmt, width, height


#: libjpeg's DCT scaling as OpenCV offers it: decode a JPEG at 1/2, 1/4 or 1/8 of its size.
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: bytes | np.ndarray, max_pixels: int = MAX_PIXELS, alpha: bool = True,
                 fit_within: tuple[int, int] | None = None) -> DecodedImage:
    """Decode encoded image bytes (see :class:`DecodedImage`); ``alpha=False`` skips reading the
    alpha channel (``DecodedImage.alpha`` is then None).

    ``fit_within`` (width, height): the pixels will only be resized to fit that box keeping
    their aspect ratio (the detector's letterbox), so a JPEG may be decoded at 1/2, 1/4 or 1/8
    of its size by libjpeg's DCT scaling, the largest reduction that still leaves at least the
    fitted size (``DecodedImage.reduced`` says which); cheaper than a full decode (1280x720 at
    1/2: about 2.6 against 4-7 ms here). Other formats, and JPEGs with EXIF (an orientation
    may swap the sides), decode whole.

    Raises:
        ImageError: empty input, an unknown format, too many pixels, or corrupt bytes.
    """
    buf = as_buffer(data)
    fmt, width, height = check_image(buf, max_pixels)
    raw = buf[:65536].tobytes()  # the headers: EXIF, PNG and WebP alpha flags
    reduced = _reduction(fmt, raw, width, height, fit_within)
    try:
        img = cv2.imdecode(buf, _REDUCED.get(reduced, cv2.IMREAD_COLOR))
    except cv2.error as exc:
        raise ImageError(f"corrupt image: the {fmt} data could not be decoded ({exc.err})") from None
    if img is None:
        raise ImageError(f"corrupt image: the {fmt} data could not be decoded")
    want_alpha, alpha = alpha, None
    if want_alpha and ((fmt == "png" and _png_has_alpha(raw)) or (fmt == "webp" and _webp_has_alpha(raw))
                       or fmt == "tiff"):
        full = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if full is not None and full.ndim == 3 and full.shape[2] == 4 and full.shape[:2] == img.shape[:2]:
            a = full[..., 3]
            alpha = (a >> 8).astype(np.uint8) if a.dtype == np.uint16 else a.astype(np.uint8)
    return DecodedImage(img, fmt, alpha, _is_grey(img), reduced)


def _reduction(fmt: str, head: bytes, width: int, height: int, fit_within: tuple[int, int] | None) -> int:
    """The DCT-scaling factor ``decode_image`` uses (1: none): at most the factor by which
    fitting into ``fit_within`` shrinks the image (the reduced sides, ceil(side / r), stay
    at least the fitted ones). ``head``: the file's first bytes, where an EXIF block would be."""
    if fit_within is None or fmt != "jpeg" or b"Exif" in head:
        return 1
    shrink = max(width / fit_within[0], height / fit_within[1])
    return next((r for r in (8, 4, 2) if r <= shrink), 1)


def encode_image(img_bgr: np.ndarray, fmt: str = "jpeg", quality: int = 95, alpha: np.ndarray | None = None) -> bytes:
    """Encode BGR uint8 [H, W, 3] as jpeg / png / webp; quality 1-100 for the lossy ones.

    ``alpha`` (uint8 [H, W]) is attached for png and webp (lossless then, to keep it exact);
    jpeg cannot hold it and drops it.

    Raises:
        ValueError: an unknown format.
    """
    if alpha is not None and fmt in ("png", "webp"):
        img_bgr = np.dstack([img_bgr, alpha])
        if fmt == "webp":
            quality = 101  # OpenCV: quality above 100 selects lossless WebP
    if fmt == "jpeg":
        ok, out = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, out = cv2.imencode(".png", img_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif fmt == "bmp":
        ok, out = cv2.imencode(".bmp", img_bgr)
    elif fmt == "webp":
        ok, out = cv2.imencode(".webp", img_bgr, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown output format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if not ok:
        raise ValueError(f"could not encode a {img_bgr.shape} image as {fmt}")
    return out.tobytes()
