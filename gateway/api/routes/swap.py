"""/v1/swap: swap faces of a target image with a source face (or many-to-many pairs)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from client import AsyncFaceSwapClient
from gateway.api import deps
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.errors import APIError, errors
from gateway.core.metrics import Metrics
from gateway.storage.faces import FaceStore

router = APIRouter(prefix="/v1", tags=["swap"])
MEDIA = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class Pair(BaseModel):
    """Target faces most similar to ``reference_face_id`` get the identity of ``source_face_id``."""

    reference_face_id: str
    source_face_id: str


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


@router.post("/swap", summary="Swap faces", responses={
    200: {"model": SwapJSON, "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
          "description": "The image (X-Faces-Detected, X-Faces-Swapped, X-Truncated, X-Faces, X-Stand-In-Models "
                         "headers), or JSON with Accept: application/json"},
    **errors(400, 401, 404, 413, 415, 422, 502, 503, 504)})
async def swap(
    request: Request,
    target: Annotated[UploadFile, File(description="Image whose faces are replaced")],
    source: Annotated[UploadFile | None, File(description="Photo of the wanted face (its largest face)")] = None,
    source_face_id: Annotated[str | None, Form(description="A face registered with POST /v1/faces",
                                               examples=["5f1c0e9a2b7d4c6f8e3a1b2c3d4e5f60"])] = None,
    pairs: Annotated[str | None, Form(description='JSON list of {"reference_face_id", "source_face_id"}',
                                      examples=['[{"reference_face_id": "ab..", "source_face_id": "cd.."}]'])] = None,
    selection: Annotated[Literal["all", "largest", "index"], Form(examples=["largest"])] = "all",
    face_index: Annotated[int | None, Form(ge=0, description="detection order (score); implies selection=index")
                          ] = None,
    max_faces: Annotated[int, Form(ge=0, description="0 = server cap (64)", examples=[4])] = 0,
    output_format: Annotated[Literal["auto", "jpeg", "png", "webp"], Form(description="auto = the target's format",
                                                                          examples=["png"])] = "auto",
    quality: Annotated[int, Form(ge=1, le=100, description="jpeg/webp quality", examples=[90])] = 95,
    threshold: Annotated[float, Form(ge=-1, le=1, description="min cosine similarity for pairs",
                                     examples=[0.35])] = 0.3,
    pixel_boost: Annotated[int, Form(description="face swapped at 128, 256, 384 or 512 px", examples=[256])] = 128,
    triton: AsyncFaceSwapClient = Depends(deps.triton),
    store: FaceStore = Depends(deps.store),
    settings: Settings = Depends(deps.settings),
    metrics: Metrics = Depends(deps.metrics),
    admission: Admission = Depends(deps.admission),
) -> Response:
    """Swap the target's faces with one source (image or registered face), or many-to-many pairs."""
    target_bytes, pixels = await deps.read_image(target, settings, "target")
    source_bytes = None
    if source is not None:
        source_bytes, source_pixels = await deps.read_image(source, settings, "source")
        pixels += source_pixels
    reference = None
    if face_index is not None and selection not in ("all", "index"):
        raise APIError(422, "invalid_option", f"face_index goes with selection=index, not selection={selection}.")
    if face_index is not None:
        selection = "index"
    opts = {"selection": selection, "face_index": face_index or 0, "max_faces": max_faces,
            "output_format": output_format, "quality": quality, "pixel_boost": pixel_boost}
    given = [x is not None for x in (source, source_face_id, pairs)]
    if sum(given) != 1:
        raise APIError(422, "missing_source", "Send exactly one of: a source image, source_face_id, or pairs.")
    if pairs is not None:
        try:
            raw = json.loads(pairs)
            if not isinstance(raw, list):
                raise TypeError
            plist = [Pair.model_validate(p) for p in raw]
        except (ValueError, TypeError, ValidationError):
            raise APIError(422, "invalid_option", 'pairs must be a JSON list of objects like '
                           '{"reference_face_id": "...", "source_face_id": "..."}.') from None
        if not plist:
            raise APIError(422, "invalid_option", "pairs is empty.")
        sources = [deps.face_or_404(store, p.source_face_id) for p in plist]
        latents, embeddings = np.stack([f.latent for f in sources]), np.stack([f.embedding for f in sources])
        reference = np.stack([deps.face_or_404(store, p.reference_face_id).embedding for p in plist])
        opts.update(selection="pairs", threshold=threshold)
    elif source_face_id is not None:
        face = deps.face_or_404(store, source_face_id)
        latents, embeddings = face.latent[None], face.embedding[None]
    with admission.pixels_reserved(pixels):
        if source_bytes is not None:
            face = await deps.source_face(request, source_bytes, triton)
            latents, embeddings = face.latent[None], face.embedding[None]
        # the source embeddings let face_paster report identity transfer per swapped face
        res = await deps.triton_call(request, triton.swap, target_bytes, latents, reference_embedding=reference,
                                     source_embedding=embeddings, **opts)
    metrics.faces_swapped.inc(res.faces_swapped)
    # every output with a swapped face says it is AI-made: C2PA manifest, XMP, watermark
    # (gateway.core.marking); an image where nothing was swapped comes back as it was
    image = res.image if not res.faces_swapped else await asyncio.to_thread(
        request.app.state.marker.image, res.image, res.format, target_bytes, res.stand_in_models, "image",
        int(opts.get("quality") or 95))
    chosen = set(res.selected)
    quality = {q.face: q for q in res.face_quality or []}
    faces = [SwapFace(box=[round(float(v), 2) for v in f.box], score=round(f.score, 4), swapped=i in chosen,
                      identity_transfer=quality[i].identity_transfer if i in quality else None,
                      identity_leakage=quality[i].identity_leakage if i in quality else None)
             for i, f in enumerate(res.faces)]
    if "application/json" in request.headers.get("accept", ""):
        body = SwapJSON(faces=faces, faces_detected=len(faces), faces_swapped=res.faces_swapped,
                        truncated=res.truncated, format=res.format, width=res.width, height=res.height,
                        stand_in_models=res.stand_in_models, image=base64.b64encode(image).decode())
        return JSONResponse(body.model_dump())
    headers = {"X-Faces-Detected": str(len(faces)), "X-Faces-Swapped": str(res.faces_swapped),
               "X-Truncated": str(res.truncated).lower(),
               "X-Faces": json.dumps([f.model_dump() for f in faces], separators=(",", ":")),
               "X-Stand-In-Models": ",".join(res.stand_in_models)}
    return Response(image, media_type=MEDIA[res.format], headers=headers)
