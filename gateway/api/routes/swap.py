"""/v1/swap: swap faces of a target image with a source face (or many-to-many pairs)."""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from gateway.api.deps import AdmissionDep, GateDep, MarkerDep, MetricsDep, SettingsDep, StoreDep, TritonDep
from gateway.api.forms import SwapForm, body_rules
from gateway.core.errors import PIPELINE_CODES, UPLOAD_CODES, errors
from gateway.services import swap as service

router = APIRouter(prefix="/v1", tags=["swap"])
MEDIA = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class SwapFace(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 pixels", examples=[[745.81, 339.19, 845.65, 480.63]])
    score: float = Field(description="detection score, 0..1", examples=[0.917])
    swapped: bool = Field(examples=[True])
    identity_transfer: float | None = Field(None, description="swapped faces: cosine of the output face's ArcFace "
                                            "embedding to the source's (null without a source embedding)",
                                            examples=[0.62])
    identity_leakage: float | None = Field(None, description="swapped faces: cosine of the output face's ArcFace "
                                           "embedding to the original face's", examples=[0.11])


class SwapJSON(BaseModel):
    """The JSON answer (send ``Accept: application/json``)."""

    faces: list[SwapFace]
    faces_detected: int = Field(examples=[6])
    faces_swapped: int = Field(examples=[6])
    truncated: bool = Field(description="faces beyond max_faces / the server cap were left alone", examples=[False])
    format: str = Field(examples=["jpeg"])
    width: int = Field(examples=[1280])
    height: int = Field(examples=[886])
    stand_in_models: list[str] = Field(description="non-empty: NOT a real swap", examples=[[]])
    image: str = Field(description="base64 of the encoded image", examples=["/9j/4AAQSkZJRg..."])


@router.post("/swap", summary="Swap faces", openapi_extra=body_rules(SwapForm.rules), responses={
    200: {"model": SwapJSON, "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
          "description": "The image (X-Faces-Detected, X-Faces-Swapped, X-Truncated, X-Faces, X-Stand-In-Models "
                         "headers), or JSON with Accept: application/json"},
    **errors(*UPLOAD_CODES, *PIPELINE_CODES, "missing_source", "face_not_found", "face_index_out_of_range",
             "storage_unavailable")})
async def swap(request: Request, form: Annotated[SwapForm, Depends()], triton: TritonDep, store: StoreDep,
               settings: SettingsDep, metrics: MetricsDep, admission: AdmissionDep, marker: MarkerDep,
               gate: GateDep) -> Response:
    """Swap the target's faces with one source (image or registered face), or many-to-many pairs."""
    out = await service.swap(request, form, triton, store, settings, metrics, admission, marker, gate)
    res, faces = out.result, [SwapFace(**f) for f in out.faces]
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(SwapJSON(faces=faces, faces_detected=len(faces), faces_swapped=res.faces_swapped,
                                     truncated=res.truncated, format=res.format, width=res.width, height=res.height,
                                     stand_in_models=res.stand_in_models,
                                     image=base64.b64encode(out.image).decode()).model_dump())
    headers = {"X-Faces-Detected": str(len(faces)), "X-Faces-Swapped": str(res.faces_swapped),
               "X-Truncated": str(res.truncated).lower(),
               "X-Faces": json.dumps([f.model_dump() for f in faces], separators=(",", ":")),
               "X-Stand-In-Models": ",".join(res.stand_in_models)}
    return Response(out.image, media_type=MEDIA[res.format], headers=headers)
