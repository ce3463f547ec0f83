"""POST /v1/verify: what a file says about being AI-made (C2PA, XMP, watermark)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from gateway.api.deps import MarkerDep, ResultsDep, SettingsDep
from gateway.core.errors import UPLOAD_CODES, errors
from gateway.services import verify as service

router = APIRouter(prefix="/v1", tags=["provenance"])


@router.post("/verify", summary="Check a file for AI-made marks",
             responses=errors(*UPLOAD_CODES, "overloaded", "storage_unavailable"))
async def verify_file(file: Annotated[UploadFile, File(description="An image (JPEG, PNG, WebP) or video (MP4)")],
                      settings: SettingsDep, marker: MarkerDep, results: ResultsDep) -> dict:
    """The C2PA manifest (present, valid, signer, trusted, actions), the XMP DigitalSourceType,
    the invisible watermark (found, payload: service id and result id, confidence), and, when
    the watermark names this service and a result it still remembers, when that result was made
    (``result``: ``{"ours", "known", "created_at", "kind"}``). An ordinary photo says
    ``"marks_found": []``."""
    return await service.verify(await file.read(), settings.max_pixels, marker, results)
