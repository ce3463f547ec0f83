"""``/v1/faces``: register every face of an image (embedding, swap latent, thumbnail)."""

from __future__ import annotations

import hashlib

import cv2
from fastapi import Request, UploadFile

from client import AsyncFaceSwapClient
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.services.common import read_image, triton_call
from gateway.storage.faces import FaceStore, StoredFace


async def register(request: Request, image: UploadFile, triton: AsyncFaceSwapClient, store: FaceStore,
                   settings: Settings, admission: Admission) -> tuple[list[StoredFace], list[str]]:
    """Detect the image's faces (``face_embed``, within the pixel budget and deadline) and keep
    each in the store with a ``thumbnail_size`` JPEG of its aligned crop; returns the stored
    faces and the stand-in models that computed them.

    Raises:
        APIError: 400/413/415 for the upload. client.FaceSwapError: Triton's errors.
    """
    data, pixels = await read_image(image, settings, "image")
    with admission.pixels_reserved(pixels):
        res = await triton_call(request, triton.embed, data)
    sha = hashlib.sha256(data).hexdigest()
    stored = []
    for f in res.faces:
        thumb = cv2.resize(f.aligned, (settings.thumbnail_size, settings.thumbnail_size), interpolation=cv2.INTER_AREA)
        jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        stored.append(store.add(f.box.tolist(), f.score, f.embedding, f.latent, jpeg, sha, bool(res.stand_in_models)))
    return stored, res.stand_in_models
