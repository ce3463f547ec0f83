"""ArcFace embeddings and inswapper latents (insightface 0.7.3 app/common.py, inswapper.py)."""

from __future__ import annotations

import numpy as np

#: ArcFace input normalisation for w600k_r50 (insightface arcface_onnx.py): (x - 127.5) / 127.5, RGB.
ARCFACE_MEAN = 127.5
ARCFACE_STD = 127.5
#: inswapper input normalisation (insightface inswapper.py): x / 255, RGB.
SWAP_MEAN = 0.0
SWAP_STD = 255.0
EMBED_DIM = 512


def normed(embeddings: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 [N, 512] (insightface ``Face.normed_embedding``)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def swap_latents(normed_embeddings: np.ndarray, emap: np.ndarray) -> np.ndarray:
    """inswapper source latents: ``normed @ emap``, re-normalised per row.

    Args:
        normed_embeddings: float32 [N, 512] L2-normalised ArcFace embeddings.
        emap: float32 [512, 512], the last initializer of inswapper_128.onnx.

    Returns:
        float32 [N, 512] unit-norm latents, the ``source`` input of inswapper.
    """
    lat = np.asarray(normed_embeddings, np.float32) @ np.asarray(emap, np.float32)
    return lat / np.maximum(np.linalg.norm(lat, axis=1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix float32 [len(a), len(b)] of two embedding sets."""
    return normed(np.atleast_2d(a)) @ normed(np.atleast_2d(b)).T
