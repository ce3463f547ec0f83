"""Paste-back blending of swapped 128x128 crops into the full frame.

The arithmetic is insightface 0.7.3 ``INSwapper.get(paste_back=True)``: inverse affine warp
of the swapped crop and of a white mask, mask thresholded at 20, eroded by
``max(mask_size // 10, 10)``, Gaussian-blurred with kernel ``2 * max(mask_size // 20, 5) + 1``,
then ``mask * fake + (1 - mask) * target`` truncated to uint8.

Where we differ: insightface warps, erodes and blurs full-frame arrays for every face (about
400 ms per face on a 4K frame). We do the same operations on the face's region of interest
only: the bounding box of the warped crop, grown by the blur radius plus a margin and
clipped to the frame. Outside that region insightface's mask is exactly 0, so the result is
the same up to OpenCV's fixed-point warp rounding at a shifted origin (tests: PSNR >= 45 dB
against insightface on real photos). The blend itself runs only where the blurred mask is not
0 (elsewhere it gives the frame's pixels back), which is bit-identical and about a third
faster on a 4K frame (107 -> 71 ms for six faces). The unused ``fake_diff`` branch of
insightface is skipped since it never reaches the output.
"""

from __future__ import annotations

import cv2
import numpy as np


def _roi(m_inv: np.ndarray, crop_size: int, frame_hw: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    corners = np.array([[0, 0, 1], [crop_size, 0, 1], [0, crop_size, 1], [crop_size, crop_size, 1]], np.float64)
    pts = corners @ m_inv.T
    h, w = frame_hw
    x0 = int(np.floor(pts[:, 0].min())) - margin
    y0 = int(np.floor(pts[:, 1].min())) - margin
    x1 = int(np.ceil(pts[:, 0].max())) + margin + 1
    y1 = int(np.ceil(pts[:, 1].max())) + margin + 1
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def paste_back(frame_bgr: np.ndarray, fake_bgr: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Blend one swapped crop into the frame, in place, on the face's region only.

    Args:
        frame_bgr: uint8 [H, W, 3] BGR frame; modified in place and returned.
        fake_bgr: uint8 [S, S, 3] BGR swapped crop (inswapper output, S = 128).
        m: float [2, 3] matrix that mapped frame pixels to the crop (from ``norm_crop``).

    Returns:
        The same ``frame_bgr`` array.
    """
    size = fake_bgr.shape[0]
    h, w = frame_bgr.shape[:2]
    m_inv = cv2.invertAffineTransform(np.asarray(m, np.float64))
    # Scale of the crop in the frame bounds the mask size; the margin covers erosion-free
    # zeros plus the blur radius so that the ROI border sees the same zeros as a full frame.
    scale = float(np.sqrt(abs(np.linalg.det(m_inv[:, :2]))))
    blur_k = max(int(size * scale * 1.5) // 20, 5)
    margin = 2 * blur_k + 4
    x0, y0, x1, y1 = _roi(m_inv, size, (h, w), margin)
    if x1 <= x0 or y1 <= y0:
        return frame_bgr
    m_roi = m_inv.copy()
    m_roi[:, 2] -= (x0, y0)
    roi_wh = (x1 - x0, y1 - y0)
    white = np.full((size, size), 255, dtype=np.float32)
    fake_w = cv2.warpAffine(fake_bgr, m_roi, roi_wh, borderValue=0.0)
    mask = cv2.warpAffine(white, m_roi, roi_wh, borderValue=0.0)
    mask[mask > 20] = 255
    full = mask == 255
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if rows.size == 0:
        return frame_bgr
    mask_size = int(np.sqrt((rows[-1] - rows[0]) * (cols[-1] - cols[0])))
    k = max(mask_size // 10, 10)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8), iterations=1)
    k = max(mask_size // 20, 5)
    mask = cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0)
    # Blend only where the blurred mask is not 0: elsewhere insightface's arithmetic gives the
    # frame's own pixels back (0 * fake + 1 * frame, truncated), so the result is identical.
    nz = mask > 0
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if rows.size == 0:
        return frame_bgr
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = mask[r0:r1, c0:c1, None] / np.float32(255)
    region = frame_bgr[y0 + r0:y0 + r1, x0 + c0:x0 + c1]
    merged = m * fake_w[r0:r1, c0:c1] + (1 - m) * region.astype(np.float32)
    region[:] = merged.astype(np.uint8)
    return frame_bgr


def swapper_output_to_bgr(pred: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] BGR from inswapper's float32 [N, 3, S, S] RGB output in [0, 1]."""
    img = pred.transpose((0, 2, 3, 1))
    return np.clip(255 * img, 0, 255).astype(np.uint8)[:, :, :, ::-1]
