"""/v1/faces: register the faces of an image; read and delete them."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gateway.api.deps import AdmissionDep, SettingsDep, StoreDep, TritonDep
from gateway.core.errors import PIPELINE_CODES, UPLOAD_CODES, APIError, errors
from gateway.services import faces as service
from gateway.services.common import face_or_404
from gateway.storage.faces import StoredFace

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
             responses=errors(*UPLOAD_CODES, *PIPELINE_CODES, "consent_required", "storage_unavailable"))
async def register_faces(image: Annotated[UploadFile, File(description="A photo (jpeg, png, webp, bmp, tiff)")],
                         request: Request, triton: TritonDep, store: StoreDep, settings: SettingsDep,
                         admission: AdmissionDep,
                         consent: Annotated[bool, Form(description="true: the caller states that the people whose "
                                                                   "faces are registered consented to their use as "
                                                                   "source faces. Required when the operator sets "
                                                                   "CONSENT_REQUIRED (else 422 consent_required)",
                                                       examples=[True])] = False) -> FacesOut:
    """Detect the faces of an image, keep each one's embedding and swap latent in the face store.
    With the server setting ``consent_required``, ``consent=true`` must be sent (checked before
    the image is decoded or the pipeline runs)."""
    if settings.consent_required and not consent:
        raise APIError(422, "consent_required", "This service registers a face only when you state that the person "
                       "consented: send consent=true with the image.")
    stored, stand_ins = await service.register(request, image, triton, store, settings, admission)
    return FacesOut(faces=[face_out(f) for f in stored], stand_in_models=stand_ins)


@router.get("/{face_id}", response_model=FaceOut, summary="Read a registered face",
            responses=errors("face_not_found", "storage_unavailable"))
async def get_face(face_id: str, store: StoreDep) -> FaceOut:
    """A registered face (404 when unknown or expired)."""
    return face_out(face_or_404(store, face_id))


@router.delete("/{face_id}", status_code=204, summary="Delete a registered face",
               responses=errors("face_not_found", "storage_unavailable"))
async def delete_face(face_id: str, store: StoreDep) -> Response:
    """Forget a registered face (404 when unknown)."""
    if not store.delete(face_id):
        raise APIError(404, "face_not_found", f"No face {face_id!r}: unknown, deleted or expired.")
    return Response(status_code=204)
