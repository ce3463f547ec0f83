"""Pixel boost: inswapper at N x 128 through N x N sub-pixel-shifted 128x128 crops.

inswapper works at 128x128. With ``pixel_boost`` = 128 N (N = 2, 3, 4) the face is aligned at
128 N x 128 N instead (the 128 matrix scaled by N: insightface's template at 128 N is the one at
128 times N), and that crop is split into N x N crops of 128 x 128 by taking every N-th pixel:
sub-crop k = i N + j holds the pixels ``crop[i::N, j::N]``, the whole face seen with a shift of
(i / N, j / N) of a 128-pixel. Each goes through the swapper with the face's source latent; the
outputs are interleaved back into a 128 N face, pasted back with the 128 N matrix. FaceFusion
does the same one sub-crop per model call; here the sub-crops of every face of a request are
rows of the same batched swapper calls (``stages.pasted_frame``).

Cost: N x N swapper rows per face (1, 4, 9, 16), and a larger paste-back warp.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Valid values of the ``pixel_boost`` option (output face side in pixels); 128 = off.
PIXEL_BOOSTS = (128, 256, 384, 512)
CROP = 128


def boost_factor(pixel_boost: int) -> int:
    """N = pixel_boost / 128 (1 to 4).

    Raises:
        ValueError: a value not in ``PIXEL_BOOSTS``.
    """
    if pixel_boost not in PIXEL_BOOSTS:
        raise ValueError(f"pixel_boost {pixel_boost!r} is not one of {', '.join(map(str, PIXEL_BOOSTS))}")
    return pixel_boost // CROP


def boosted_crops(image: np.ndarray, affines: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces aligned at 128 n.

    Args:
        image: uint8 [H, W, 3] BGR frame.
        affines: float [M, 2, 3] matrices of the faces' 128x128 crops (``align.norm_crop``).
        n: the boost factor (1 to 4).

    Returns:
        (uint8 [M, 128 n, 128 n, 3] BGR crops, float64 [M, 2, 3] their matrices = n * affines).
    """
    mats = np.asarray(affines, np.float64).reshape(-1, 2, 3) * n
    side = CROP * n
    crops = [cv2.warpAffine(image, m, (side, side), borderValue=0.0) for m in mats]
    out = np.stack(crops) if crops else np.zeros((0, side, side, 3), np.uint8)
    return out, mats


def explode(crops: np.ndarray, n: int) -> np.ndarray:
    """[M, 128 n, 128 n, C] -> [M n n, 128, 128, C] (same dtype): row ``f n n + i n + j`` is
    ``crops[f, i::n, j::n]``."""
    m, side = crops.shape[0], crops.shape[1]
    s = side // n
    return (crops.reshape(m, s, n, s, n, -1).transpose(0, 2, 4, 1, 3, 5)
            .reshape(m * n * n, s, s, crops.shape[-1]))


def implode(subs: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`explode`: [M n n, 128, 128, C] -> [M, 128 n, 128 n, C]."""
    s = subs.shape[1]
    m = subs.shape[0] // (n * n)
    return np.ascontiguousarray(subs.reshape(m, n, n, s, s, -1).transpose(0, 3, 1, 4, 2, 5)
                                .reshape(m, s * n, s * n, subs.shape[-1]))
