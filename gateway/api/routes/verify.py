"""POST /v1/verify: what a file says about being AI-made (C2PA, XMP, watermark)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from gateway.core.errors import APIError, errors
from gateway.core.images import inspect_image

router = APIRouter(prefix="/v1", tags=["provenance"])


@router.post("/verify", summary="Check a file for AI-made marks", responses=errors(400, 401, 413, 415, 422, 503))
async def verify_file(request: Request,
                      file: Annotated[UploadFile, File(description="An image (JPEG, PNG, WebP) or video (MP4)")]
                      ) -> dict:
    """The C2PA manifest (present, valid, signer, trusted, actions), the XMP DigitalSourceType,
    the invisible watermark (found, payload: service id and result id, confidence), and, when
    the watermark names this service and a result it still remembers, when that result was made
    (``result``: ``{"ours", "known", "created_at", "kind"}``). An ordinary photo says
    ``"marks_found": []``."""
    from provenance import verify
    from provenance.verify import sniff

    data = await file.read()
    if not data:
        raise APIError(400, "empty_file", "The file is empty (0 bytes).")
    fmt = sniff(data)  # from the bytes only: a name says nothing about what a file is
    if fmt is None:
        raise APIError(415, "unsupported_media_type", "The file is not a JPEG, PNG, WebP or MP4 (judged from the "
                                                      "bytes).")
    if fmt != "mp4":  # the image limits of every upload (pixels from the header: bombs are never decoded)
        inspect_image(data, request.app.state.settings.max_pixels, "file")
    marker = request.app.state.marker
    try:
        report = await asyncio.to_thread(verify, data, None, service_id=marker.service_id)
    except ValueError as exc:
        raise APIError(415, "unsupported_media_type", f"{exc} (judged from the bytes).") from None
    payload = report["watermark"].get("payload")
    result = {"ours": False, "known": False}
    if payload and marker.service_id is not None and payload["service_id"] == marker.service_id:
        seen = await asyncio.to_thread(request.app.state.results.lookup, payload["result_id"])
        result = {"ours": True, "known": seen is not None, **(seen or {})}
    report["result"] = result
    return report
