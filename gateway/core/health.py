"""Readiness probes: a bounded shallow check and a single-flight, cached deep check.

The deep check runs a real face through both ensembles (``face_embed`` then ``face_swap``)
and each network once, and checks that what comes back is finite and sane. Concurrent
callers share one run; its result, failure included, is cached for ``deep_check_ttl_s``.
Public answers carry short codes; the backend's own messages go to the log only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.core.config import Settings

log = logging.getLogger("gateway.health")
DETECTOR_STAND_IN = "det_10g"


class ProbeFailed(Exception):
    """The deep check ran but an output was wrong; ``code`` is public, the message is logged."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def gradient_image() -> bytes:
    """A small face-less PNG (a colour gradient, 96x64): it must come back byte-identical."""
    x = np.linspace(0, 255, 96, dtype=np.uint8)
    img = np.dstack([np.tile(x, (64, 1)), np.tile(x[::-1], (64, 1)), np.full((64, 96), 128, np.uint8)])
    return cv2.imencode(".png", img)[1].tobytes()


def face_image(settings: Settings) -> bytes | None:
    """The deep check's photo with a face: ``deep_check_image``, else insightface's
    ``data/images/Tom_Hanks_54745.png`` when the package is installed, else None."""
    if settings.deep_check_image is not None:
        return Path(settings.deep_check_image).read_bytes()
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "Tom_Hanks_54745.png"
    return p.read_bytes() if p.exists() else None


async def run_pipeline(triton: AsyncFaceSwapClient, face: bytes | None, stand_ins: list[str]) -> dict:
    """One end-to-end run; returns figures, raises ProbeFailed or FaceSwapError."""
    t = time.perf_counter()
    out: dict = {"face_probe": face is not None}
    plain = gradient_image()
    res = await triton.swap(plain, np.full((1, 512), 1 / np.sqrt(512), np.float32), output_format="png")
    if res.image != plain:
        raise ProbeFailed("output_changed", "the face-less probe image did not come back unchanged")
    if face is not None:
        img = cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ProbeFailed("deep_check_image_unreadable", "deep_check_image is not an image OpenCV can decode")
        h, w = img.shape[:2]
        faces = (await triton.embed(face)).faces
        if not faces and DETECTOR_STAND_IN not in stand_ins:
            raise ProbeFailed("no_face_found", "the real detector found no face in the probe photo")
        for f in faces:
            if not (np.isfinite(f.embedding).all() and np.isfinite(f.latent).all() and np.isfinite(f.box).all()):
                raise ProbeFailed("output_not_finite", "face_embed returned non-finite values")
            if abs(float(np.linalg.norm(f.embedding)) - 1) > 1e-3:
                raise ProbeFailed("embedding_not_normed", f"embedding norm {np.linalg.norm(f.embedding):.4f}")
        out["faces"] = len(faces)
        if faces:
            best = max(faces, key=lambda f: f.area)
            swapped = await triton.swap(face, best.latent, selection="largest", output_format="png")
            dec = cv2.imdecode(np.frombuffer(swapped.image, np.uint8), cv2.IMREAD_COLOR)
            if dec is None or dec.shape[:2] != (h, w) or swapped.faces_swapped != 1:
                raise ProbeFailed("swap_output_invalid", "face_swap returned no image of the input's size "
                                  "or swapped no face")
            x1, y1, x2, y2 = (int(v) for v in np.clip(best.box, 0, [w, h, w, h]))
            before, after = img[y1:y2, x1:x2], dec[y1:y2, x1:x2]
            if after.size and (after.max(axis=2) < 4).mean() > (before.max(axis=2) < 4).mean() + 0.25:
                raise ProbeFailed("swap_output_black", "the swapped face region came back black")
    await triton.probe_networks()
    out["seconds"] = round(time.perf_counter() - t, 3)
    return out


class DeepCheck:
    """``/readyz?deep=1``: single-flight and cached (successes and failures alike)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._task: asyncio.Task | None = None
        self._cache: tuple[float, dict] | None = None
        self.runs = 0

    async def result(self, triton: AsyncFaceSwapClient, stand_ins: list[str]) -> dict:
        """{"ok": bool, ...}; at most one pipeline run at a time, cached for deep_check_ttl_s."""
        if self._cache and time.monotonic() - self._cache[0] < self.settings.deep_check_ttl_s:
            return {**self._cache[1], "cached": True}
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run(triton, stand_ins))
        return await asyncio.shield(self._task)  # a caller who hangs up does not cancel the others' run

    async def _run(self, triton: AsyncFaceSwapClient, stand_ins: list[str]) -> dict:
        self.runs += 1
        try:
            try:
                face = face_image(self.settings)
            except OSError as exc:
                raise ProbeFailed("deep_check_image_unreadable", f"deep_check_image unreadable: {exc}") from exc
            result = {"ok": True, **await asyncio.wait_for(run_pipeline(triton, face, stand_ins),
                                                           self.settings.deep_check_timeout_s)}
        except asyncio.TimeoutError:
            log.warning("deep check: no answer within %g s", self.settings.deep_check_timeout_s)
            result = {"ok": False, "error": "pipeline_timeout"}
        except ProbeFailed as exc:
            log.warning("deep check failed (%s): %s", exc.code, exc)
            result = {"ok": False, "error": exc.code}
        except FaceSwapError as exc:
            log.warning("deep check: Triton failed: %s", exc)
            result = {"ok": False, "error": "pipeline_failed"}
        self._cache = (time.monotonic(), result)
        return result
