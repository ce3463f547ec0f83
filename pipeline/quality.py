"""Quality figures of a swap: identity transfer and leakage per swapped face, flicker per video track.

Per swapped face (computed by ``face_paster``, inside the swap ensembles):

- ``identity_transfer``: cosine similarity between the ArcFace embedding of the output face and
  the source embedding (how much of the source identity arrived); ``None`` when the caller sent
  no source embedding.
- ``identity_leakage``: cosine similarity between the ArcFace embedding of the output face and
  that of the original target face (how much of the target identity is left).

Both embeddings come from one batched recognizer call on 2M crops: the M original faces (cut
from the input frame) and the M swapped faces (cut from the frame after paste-back, before it
is encoded), each aligned with ``norm_crop`` at 112 on the key points the face was swapped at.
That is what insightface 0.7.3 computes with ``ArcFaceONNX.get(img, face)`` on the same
images and key points (tests: to 1e-3 on the cosines).

The source identity: the swap ensembles receive inswapper's source *latent*
(``normed(embedding @ emap)``), from which the embedding could only be recovered through the
inverse of ``emap``; that is exact only where ``emap`` is well conditioned, which cannot be
checked here on the real inswapper (the stand-in's ``emap`` is random). So the caller sends the
source embedding it already has (``face_embed`` gives it beside the latent; the gateway's face
store keeps it) in the optional ``source_embeddings`` input, one row per source latent; without
it the transfer figure is ``None`` and the leakage figure is still computed.

With stand-in models these numbers mean nothing about quality (random weights); they are
still exactly the computation the real models would get.

Per video track (``media.video``): mean and minimum of both figures over the frames the track
was swapped in, and ``flicker_score``: the mean absolute frame-to-frame change of luminance
inside the swapped face's region divided by the same outside every swapped region (see
:func:`flicker_ratio`), on the output frames; ``flicker_input`` is the same on the input frames,
the baseline of the scene itself.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pipeline.align import crops_to_blob, estimate_norm, norm_crop
from pipeline.embedding import ARCFACE_MEAN, ARCFACE_STD, normed

QUALITY_SIZE = 112
#: Side of the longest edge of the grey frames the flicker score is computed on (cheap: a
#: 1080p frame becomes 480x270 before differencing).
FLICKER_SIDE = 480
#: Added to both means of the flicker ratio (grey levels): keeps it finite and near 1 on a
#: still scene, where both changes are sensor noise.
FLICKER_FLOOR = 1.0
#: The swapped region of a face: its 128x128 inswapper crop mapped back to the frame.
SWAP_CROP = 128

EmbedFn = Callable[[np.ndarray], np.ndarray]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio of ``a`` against ``b`` in dB, ``10 log10(peak^2 / MSE)`` (in float64).

    ``peak`` is the largest value a sample can take: 255 for uint8 images (the default), 1 for
    arrays in [0, 1]. Identical inputs give ``inf``.
    """
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def _chunked(fn: EmbedFn, limit: int, blob: np.ndarray) -> np.ndarray:
    step = max(int(limit), 1)
    return np.concatenate([fn(blob[i:i + step]) for i in range(0, blob.shape[0], step)], axis=0)


def quality_crops(original: np.ndarray, output: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """uint8 [2M, 112, 112, 3] BGR: the M original faces of ``original``, then the M faces of
    ``output``, aligned on the same key points (float32 [M, 5, 2])."""
    kps = np.asarray(kps, np.float32).reshape(-1, 5, 2)
    crops = [norm_crop(img, k, QUALITY_SIZE)[0] for img in (original, output) for k in kps]
    return np.stack(crops) if crops else np.zeros((0, QUALITY_SIZE, QUALITY_SIZE, 3), np.uint8)


def source_rows(source_embeddings: np.ndarray | None, n_latents: int) -> np.ndarray | None:
    """The source embeddings as float32 [K, 512] (K = number of source latents), or None when
    none were sent.

    Raises:
        ValueError: a row count other than the source latents', or NaN/inf values.
    """
    if source_embeddings is None or np.asarray(source_embeddings).size == 0:
        return None
    src = np.asarray(source_embeddings, np.float32).reshape(-1, 512)
    if src.shape[0] != n_latents:
        raise ValueError(f"source_embeddings needs one row per source latent: got {src.shape[0]} for "
                         f"{n_latents} source latent(s)")
    if not np.isfinite(src).all():
        raise ValueError("source_embeddings holds NaN or infinite values")
    return src


def face_quality(original: np.ndarray, output: np.ndarray, kps: np.ndarray, selected: np.ndarray,
                 latent_index: np.ndarray, embed_fn: EmbedFn, batch: int,
                 source_embeddings: np.ndarray | None = None) -> list[dict]:
    """Identity transfer and leakage of each swapped face, with one batched recognizer call.

    Args:
        original: uint8 [H, W, 3] BGR input frame.
        output: uint8 [H, W, 3] BGR frame after paste-back (what is encoded).
        kps: float32 [M, 5, 2] key points of the swapped faces (in swap order).
        selected: int [M] face index of each swapped face (reported as ``face``).
        latent_index: int [M] source latent (and source embedding) row of each face.
        embed_fn: ArcFace, float32 [N, 3, 112, 112] -> [N, 512] raw embeddings (N <= batch).
        batch: the recognizer's batch limit (2M crops go in chunks of it; one call for M <= 16
            with the default 32).
        source_embeddings: float32 [K, 512] (validated with :func:`source_rows`), or None.

    Returns:
        One dict per swapped face, in swap order (empty when M is 0: no call): ``face`` (its
        index among the faces found), ``identity_transfer`` (cosine to the source, or None
        without source embeddings) and ``identity_leakage`` (cosine to the original face).
    """
    m = int(np.asarray(kps).reshape(-1, 5, 2).shape[0])
    if m == 0:
        return []
    crops = quality_crops(original, output, kps)
    emb = normed(_chunked(embed_fn, batch, crops_to_blob(crops, ARCFACE_MEAN, ARCFACE_STD)))
    return quality_figures(emb, selected, latent_index, source_embeddings)


def quality_figures(emb: np.ndarray, selected: np.ndarray, latent_index: np.ndarray,
                    source_embeddings: np.ndarray | None = None) -> list[dict]:
    """``face_quality``'s result from the normed embeddings of its 2M crops (float32 [2M, 512]:
    the M original faces, then the M output faces, as ``quality_crops`` orders them); the GPU
    profile cuts those crops on its device and calls this too."""
    m = emb.shape[0] // 2
    before, after = emb[:m], emb[m:]
    leakage = np.sum(before * after, axis=1)
    transfer = None
    if source_embeddings is not None:
        src = normed(np.asarray(source_embeddings, np.float32).reshape(-1, 512))
        transfer = np.sum(after * src[np.asarray(latent_index, np.int64).reshape(-1)], axis=1)
    sel = np.asarray(selected).reshape(-1)
    return [{"face": int(sel[i]), "identity_transfer": None if transfer is None else round(float(transfer[i]), 6),
             "identity_leakage": round(float(leakage[i]), 6)} for i in range(m)]


def swap_region(kps: np.ndarray, frame_hw: tuple[int, int], scale: float = 1.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounding box of the face's 128x128 inswapper crop mapped back into a
    frame of ``frame_hw`` (paste-back changes nothing outside it), in pixels times ``scale``,
    clipped to the frame."""
    m_inv = cv2.invertAffineTransform(estimate_norm(np.asarray(kps, np.float32), SWAP_CROP))
    corners = np.array([[0, 0, 1], [SWAP_CROP, 0, 1], [0, SWAP_CROP, 1], [SWAP_CROP, SWAP_CROP, 1]], np.float64)
    pts = corners @ m_inv.T * scale
    h, w = frame_hw
    x0, y0 = max(int(np.floor(pts[:, 0].min())), 0), max(int(np.floor(pts[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 1, w), min(int(np.ceil(pts[:, 1].max())) + 1, h)
    return x0, y0, x1, y1


def face_psnr(a: np.ndarray, b: np.ndarray, kps: np.ndarray) -> list[float]:
    """PSNR (dB) of ``b`` against ``a`` (uint8 [H, W, 3] frames of one size) on each face's
    ``swap_region`` (``kps``: float [M, 5, 2], the faces swapped): how two swaps of the same
    frame compare where they changed it (tests and ``bench.gpu_run``'s parity)."""
    out = []
    for k in np.asarray(kps, np.float32).reshape(-1, 5, 2):
        x0, y0, x1, y1 = swap_region(k, a.shape[:2])
        out.append(psnr(a[y0:y1, x0:x1], b[y0:y1, x0:x1]))
    return out


def small_grey(frame_bgr: np.ndarray, side: int = FLICKER_SIDE) -> tuple[np.ndarray, float]:
    """(float32 grey frame with its longest side at most ``side``, the scale applied)."""
    h, w = frame_bgr.shape[:2]
    scale = min(1.0, side / max(h, w))
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)),
                          interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32), scale


def flicker_ratio(prev: np.ndarray, cur: np.ndarray, regions: dict[int, tuple[int, int, int, int]],
                  exclude: list[tuple[int, int, int, int]] | tuple = (), floor: float = FLICKER_FLOOR
                  ) -> dict[int, float]:
    """Per region: (mean |cur - prev| inside it + floor) / (mean |cur - prev| outside every
    region and every ``exclude`` box + floor), on grey frames of the same size (see
    :func:`small_grey`).

    1 means the face changes from one frame to the next as much as the rest of the picture
    (camera motion, noise); a swap that flickers (a crop that jumps, a face that changes
    colour) makes it larger. A moving face raises it on the input too: compare with the same
    ratio of the input frames. A frame whose regions cover it entirely has no outside: its
    outside change counts as 0.
    """
    diff = np.abs(cur - prev)
    outside = np.ones(diff.shape, bool)
    for x0, y0, x1, y1 in [*regions.values(), *exclude]:
        outside[y0:y1, x0:x1] = False
    out_mean = float(diff[outside].mean()) if outside.any() else 0.0
    ratios = {}
    for key, (x0, y0, x1, y1) in regions.items():
        inside = diff[y0:y1, x0:x1]
        if inside.size:
            ratios[key] = (float(inside.mean()) + floor) / (out_mean + floor)
    return ratios


class TrackFigures:
    """A video's quality figures per face track: ``add`` each swapped face's figures and each
    frame pair's flicker ratios, then ``report()``."""

    def __init__(self) -> None:
        self._faces: dict[int, dict[str, list[float]]] = {}

    def _track(self, track: int) -> dict[str, list[float]]:
        return self._faces.setdefault(track, {"transfer": [], "leakage": [], "flicker": [], "flicker_input": []})

    def add(self, track: int, identity_transfer: float | None, identity_leakage: float) -> None:
        t = self._track(track)
        if identity_transfer is not None:
            t["transfer"].append(identity_transfer)
        t["leakage"].append(identity_leakage)

    def add_flicker(self, track: int, output_ratio: float, input_ratio: float) -> None:
        t = self._track(track)
        t["flicker"].append(output_ratio)
        t["flicker_input"].append(input_ratio)

    def report(self) -> list[dict]:
        """Per track (id order): ``track``, ``frames`` (swapped with figures), mean and minimum of
        ``identity_transfer`` (null without a source embedding) and ``identity_leakage``,
        ``flicker_score`` (mean output ratio over consecutive swapped frames, see
        :func:`flicker_ratio`) and ``flicker_input`` (the same on the input frames), null when
        the track was never swapped in two consecutive frames."""

        def mean(v: list[float]) -> float | None:
            return round(float(np.mean(v)), 6) if v else None

        def low(v: list[float]) -> float | None:
            return round(float(np.min(v)), 6) if v else None

        return [{"track": k, "frames": len(t["leakage"]),
                 "identity_transfer_mean": mean(t["transfer"]), "identity_transfer_min": low(t["transfer"]),
                 "identity_leakage_mean": mean(t["leakage"]), "identity_leakage_min": low(t["leakage"]),
                 "flicker_score": mean(t["flicker"]), "flicker_input": mean(t["flicker_input"])}
                for k, t in sorted(self._faces.items())]
