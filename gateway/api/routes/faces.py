"""/v1/faces: register the faces of an image; read and delete them."""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated

import cv2
from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from client import AsyncFaceSwapClient
from gateway.api import deps
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.errors import APIError, errors
from gateway.storage.faces import FaceStore, StoredFace

router = APIRouter(prefix="/v1/faces", tags=["faces"])


class FaceOut(BaseModel):
    """A registered face."""

    id: str = Field(examples=["5f1c0e9a2b7d4c6f8e3a1b2c3d4e5f60"])
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the uploaded image (as displayed)",
                             examples=[[378.5, 82.8, 607.2, 428.8]])
    score: float = Field(description="detection score, 0..1", examples=[0.87])
    thumbnail: str = Field(description="JPEG data URL of the aligned face")
    created_at: float = Field(description="Unix seconds")
    expires_at: float = Field(description="Unix seconds; the face is deleted after")
    stand_in: bool = Field(description="computed with stand-in models (not a real embedding)")


class FacesOut(BaseModel):
    faces: list[FaceOut]
    stand_in_models: list[str] = Field(default_factory=list)


def face_out(f: StoredFace) -> FaceOut:
    return FaceOut(id=f.id, box=f.box, score=f.score, created_at=f.created_at, expires_at=f.expires_at,
                   stand_in=f.stand_in, thumbnail="data:image/jpeg;base64," + base64.b64encode(f.thumbnail).decode())


@router.post("", response_model=FacesOut, summary="Register every face of an image",
             responses=errors(400, 401, 413, 415, 422, 502, 503, 504))
async def register_faces(
    image: Annotated[UploadFile, File(description="A photo (jpeg, png, webp, bmp, tiff)")],
    request: Request,
    triton: AsyncFaceSwapClient = Depends(deps.triton),
    store: FaceStore = Depends(deps.store),
    settings: Settings = Depends(deps.settings),
    admission: Admission = Depends(deps.admission),
) -> FacesOut:
    """Detect the faces of an image, keep each one's embedding and swap latent in the face store."""
    data, pixels = await deps.read_image(image, settings, "image")
    with admission.pixels_reserved(pixels):
        res = await deps.triton_call(request, triton.embed, data)
    sha = hashlib.sha256(data).hexdigest()
    stored = []
    for f in res.faces:
        thumb = cv2.resize(f.aligned, (settings.thumbnail_size, settings.thumbnail_size), interpolation=cv2.INTER_AREA)
        jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        stored.append(store.add(f.box.tolist(), f.score, f.embedding, f.latent, jpeg, sha, bool(res.stand_in_models)))
    return FacesOut(faces=[face_out(f) for f in stored], stand_in_models=res.stand_in_models)


@router.get("/{face_id}", response_model=FaceOut, summary="Read a registered face", responses=errors(401, 404))
async def get_face(face_id: str, store: FaceStore = Depends(deps.store)) -> FaceOut:
    """A registered face (404 when unknown or expired)."""
    return face_out(deps.face_or_404(store, face_id))


@router.delete("/{face_id}", status_code=204, summary="Delete a registered face", responses=errors(401, 404))
async def delete_face(face_id: str, store: FaceStore = Depends(deps.store)) -> Response:
    """Forget a registered face (404 when unknown)."""
    if not store.delete(face_id):
        raise APIError(404, "face_not_found", f"No face {face_id!r}: unknown, deleted or expired.")
    return Response(status_code=204)
