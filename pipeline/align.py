"""Face alignment: similarity transform of 5 key points to the ArcFace template.

Follows insightface 0.7.3 ``utils/face_align.py`` (``estimate_norm``, ``norm_crop2``). The
transform is the least-squares similarity of Umeyama (1991), which is what
``skimage.transform.SimilarityTransform.estimate`` computes; we implement it in numpy so the
server needs no scikit-image. Tests check M against insightface to 1e-4.
"""

from __future__ import annotations

import cv2
import numpy as np

#: 5-point template for 112x112 crops, from insightface utils/face_align.py (arcface_dst).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Args:
        src, dst: float [N, 2] corresponding points.

    Returns:
        float64 [3, 3] homogeneous matrix T with dst ~ T @ [src, 1] (scikit-image's
        ``_umeyama`` with ``estimate_scale=True``).
    """
    # Arithmetic stays in the inputs' dtype (float32 key points) exactly as scikit-image does;
    # casting to float64 moves M by ~1e-4 px, enough to flip OpenCV's fixed-point rounding.
    src = np.asarray(src)
    dst = np.asarray(dst)
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / num
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, v = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        return np.full_like(t, np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(v) > 0:
            t[:dim, :dim] = u @ v
        else:
            s_ = d[dim - 1]
            d[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ v
            d[dim - 1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ v
    scale = 1.0 / src_d.var(axis=0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t


def estimate_norm(kps: np.ndarray, image_size: int = 112) -> np.ndarray:
    """2x3 float64 affine matrix mapping image pixels to an aligned ``image_size`` crop.

    Same template scaling as insightface: sizes divisible by 112 scale the template; sizes
    divisible by 128 (inswapper's 128) scale by size/128 and shift x by 8*size/128.

    Raises:
        ValueError: kps is not [5, 2] or the size is not a multiple of 112 or 128.
    """
    kps = np.asarray(kps, dtype=np.float32)
    if kps.shape != (5, 2):
        raise ValueError(f"expected 5 key points [5, 2], got {kps.shape}")
    if image_size % 112 == 0:
        ratio, diff_x = image_size / 112.0, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128.0
        diff_x = 8.0 * ratio
    else:
        raise ValueError(f"crop size must be a multiple of 112 or 128, got {image_size}")
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    return umeyama(kps, dst)[0:2, :]


def norm_crop(img_bgr: np.ndarray, kps: np.ndarray, image_size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop (insightface norm_crop2): uint8 [S, S, 3] BGR and its 2x3 matrix M."""
    m = estimate_norm(kps, image_size)
    return cv2.warpAffine(img_bgr, m, (image_size, image_size), borderValue=0.0), m


def crops_to_blob(crops_bgr: np.ndarray, mean: float, std: float) -> np.ndarray:
    """float32 [N, 3, S, S] RGB blob (x - mean) / std from uint8 [N, S, S, 3] BGR crops.

    Equivalent to ``cv2.dnn.blobFromImages(crops, 1/std, (S, S), (mean,)*3, swapRB=True)``,
    which insightface uses (ArcFace: 127.5/127.5; inswapper: 0/255).
    """
    if crops_bgr.shape[0] == 0:
        s = crops_bgr.shape[1] if crops_bgr.ndim == 4 else 0
        return np.zeros((0, 3, s, s), np.float32)
    size = (crops_bgr.shape[2], crops_bgr.shape[1])
    return cv2.dnn.blobFromImages(list(crops_bgr), 1.0 / std, size, (mean, mean, mean), swapRB=True)
