"""What several services do: call Triton within the request's deadline, read an uploaded
image's header, find the source face, look up a registered face."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request, UploadFile

from client import AsyncFaceSwapClient, NoFaceError
from client.core import Face
from gateway.core.admission import remaining, until_disconnect
from gateway.core.config import Settings
from gateway.core.errors import APIError
from gateway.core.images import inspect_image
from gateway.storage.faces import FaceStore, StoredFace

T = TypeVar("T")


def face_or_404(store: FaceStore, face_id: str) -> StoredFace:
    """A registered face, or 404 ``face_not_found``."""
    face = store.get(face_id)
    if face is None:
        raise APIError(404, "face_not_found", f"No face {face_id!r}: unknown, deleted or expired.")
    return face


async def triton_call(request: Request, fn: Callable[..., Awaitable[T]], *args, **kwargs) -> T:
    """``fn(*args, timeout=<seconds left before the request's deadline>, **kwargs)``, cancelled
    if the HTTP caller hangs up (see gateway.core.admission)."""
    return await until_disconnect(request, fn(*args, timeout=remaining(request), **kwargs))


async def read_image(upload: UploadFile, settings: Settings, field: str) -> tuple[bytes, int]:
    """An uploaded image's bytes and pixel count, checked from its header (see inspect_image)."""
    data = await upload.read()
    meta = inspect_image(data, settings.max_pixels, field)
    return data, meta.width * meta.height


async def source_face(request: Request, data: bytes, triton: AsyncFaceSwapClient) -> Face:
    """The largest face of a source photo's bytes, with its swap latent and its normed ArcFace
    embedding (the identity the quality figures compare with); 422 no_face_in_source."""
    faces = (await triton_call(request, triton.embed, data)).faces
    if not faces:
        raise NoFaceError("no face found in the source image")
    return max(faces, key=lambda f: f.area)
