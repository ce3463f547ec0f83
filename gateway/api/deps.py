"""Dependencies shared by the routes."""

from __future__ import annotations

import numpy as np
from fastapi import Request, UploadFile

from client import AsyncFaceSwapClient, NoFaceError
from gateway.core.config import Settings
from gateway.core.errors import APIError
from gateway.core.images import inspect_image
from gateway.core.metrics import Metrics
from gateway.core.store import FaceStore, StoredFace


def triton(request: Request) -> AsyncFaceSwapClient:
    return request.app.state.triton


def store(request: Request) -> FaceStore:
    return request.app.state.store


def settings(request: Request) -> Settings:
    return request.app.state.settings


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def face_or_404(store: FaceStore, face_id: str) -> StoredFace:
    """A registered face, or 404 ``face_not_found``."""
    face = store.get(face_id)
    if face is None:
        raise APIError(404, "face_not_found", f"No face {face_id!r}: unknown, deleted or expired.")
    return face


async def source_latent(upload: UploadFile, triton: AsyncFaceSwapClient, settings: Settings) -> np.ndarray:
    """The swap latent of the largest face of an uploaded source photo (422 no_face_in_source)."""
    data = await upload.read()
    inspect_image(data, settings.max_pixels, "source")
    faces = (await triton.embed(data)).faces
    if not faces:
        raise NoFaceError("no face found in the source image")
    return max(faces, key=lambda f: f.area).latent
