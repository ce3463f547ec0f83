"""A visible "AI-generated" label burned into the pixels (issue 21, opt-in per request).

The three invisible marks (C2PA, XMP, watermark) need a tool to be read; the badge is for a
person looking at the picture. It is drawn in the bottom-right corner: a dark, mostly opaque
rounded box with the text ``AI-generated`` in white, its height about 4.5% of the image's
shorter side (at least 14 px), inset from the edges by a third of its height. OpenCV's Hershey
font, anti-aliased; no font file is read.

In the pixel path it goes after the swap and **before the watermark and the one encode**
(the watermark then covers the badge's pixels too; the C2PA manifest hashes the encoded file).
"""

from __future__ import annotations

import cv2
import numpy as np

#: The label's text.
TEXT = "AI-generated"
#: Badge height as a fraction of the image's shorter side, and its least height in pixels.
HEIGHT_FRACTION, MIN_HEIGHT = 0.045, 14
#: Box colour (BGR), its opacity (0-1) and the text colour (BGR).
BOX_BGR, BOX_OPACITY, TEXT_BGR = (32, 32, 32), 0.78, (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_DUPLEX


def badge_box(width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the badge on an image of this size, or None when the image is too
    small to hold it (the badge would take more than 90% of its width)."""
    h = max(MIN_HEIGHT, int(round(min(width, height) * HEIGHT_FRACTION)))
    scale = cv2.getFontScaleFromHeight(_FONT, int(h * 0.55), 1)
    thick = max(1, h // 14)
    (tw, _), _ = cv2.getTextSize(TEXT, _FONT, scale, thick)
    w = tw + h  # half the height of padding on each side
    inset = max(2, h // 3)
    if w > width * 0.9 - 2 * inset or h > height - 2 * inset:
        return None
    return width - inset - w, height - inset - h, width - inset, height - inset


def burn_badge(bgr: np.ndarray) -> np.ndarray:
    """The image with the visible "AI-generated" badge in its bottom-right corner.

    Args:
        bgr: uint8 [H, W, 3] image in BGR order (OpenCV's); not modified.

    Returns:
        A new uint8 [H, W, 3] BGR image, equal to ``bgr`` outside the badge's box
        (``badge_box``). An image too small for the badge (narrower than about 100 px) comes
        back unchanged (a copy).

    Raises:
        ValueError: not a uint8 [H, W, 3] array.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] BGR image, got {bgr.dtype} {bgr.shape}")
    out = bgr.copy()
    box = badge_box(bgr.shape[1], bgr.shape[0])
    if box is None:
        return out
    x1, y1, x2, y2 = box
    out[y1:y2, x1:x2] = badge_pixels(out[y1:y2, x1:x2])
    return out


def badge_pixels(region: np.ndarray) -> np.ndarray:
    """The badge drawn over the pixels of its box (``badge_box``): what ``burn_badge`` puts
    there. The GPU profile burns it this way, copying only the box to the host and back.

    Args:
        region: uint8 [h, w, 3] BGR, the image's pixels inside the badge's box (h, w > 0).

    Returns:
        A new uint8 [h, w, 3] BGR array.
    """
    out = np.ascontiguousarray(region).copy()
    h, w = out.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    r = max(2, h // 4)
    cv2.rectangle(mask, (r, 0), (w - 1 - r, h - 1), 255, -1)
    cv2.rectangle(mask, (0, r), (w - 1, h - 1 - r), 255, -1)
    for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255.0 * BOX_OPACITY)[..., None]
    out[:] = (out * (1 - alpha) + np.array(BOX_BGR, np.float32) * alpha).round().astype(np.uint8)
    scale = cv2.getFontScaleFromHeight(_FONT, int(h * 0.55), 1)
    thick = max(1, h // 14)
    (tw, th), base = cv2.getTextSize(TEXT, _FONT, scale, thick)
    org = ((w - tw) // 2, (h + th) // 2 - max(1, base // 3))
    cv2.putText(out, TEXT, org, _FONT, scale, TEXT_BGR, thick, cv2.LINE_AA)
    return out
