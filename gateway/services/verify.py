"""``POST /v1/verify``: what a file says about being AI-made, and whether this service made it."""

from __future__ import annotations

import asyncio

from gateway.core.errors import APIError
from gateway.core.images import inspect_image
from gateway.core.marking import Marker
from gateway.storage.faces import ResultLog


async def verify(data: bytes, max_pixels: int, marker: Marker, results: ResultLog) -> dict:
    """The report of ``provenance.verify`` (C2PA manifest, XMP DigitalSourceType, watermark)
    plus ``result``: ``{"ours", "known", "created_at", "kind"}`` when the watermark names this
    service and a result it still remembers.

    Raises:
        APIError: 400 ``empty_file``; 415 ``unsupported_media_type`` (judged from the bytes);
            413 for an image over ``max_pixels`` (from its header: bombs are never decoded).
    """
    from provenance import verify as verify_file
    from provenance.verify import sniff

    if not data:
        raise APIError(400, "empty_file", "The file is empty (0 bytes).")
    fmt = sniff(data)  # from the bytes only: a name says nothing about what a file is
    if fmt is None:
        raise APIError(415, "unsupported_media_type", "The file is not a JPEG, PNG, WebP or MP4 (judged from the "
                                                      "bytes).")
    if fmt != "mp4":  # the image limits of every upload
        inspect_image(data, max_pixels, "file")
    try:
        report = await asyncio.to_thread(verify_file, data, None, service_id=marker.service_id)
    except ValueError as exc:
        raise APIError(415, "unsupported_media_type", f"{exc} (judged from the bytes).") from None
    payload = report["watermark"].get("payload")
    result = {"ours": False, "known": False}
    if payload and marker.service_id is not None and payload["service_id"] == marker.service_id:
        seen = await asyncio.to_thread(results.lookup, payload["result_id"])
        result = {"ours": True, "known": seen is not None, **(seen or {})}
    report["result"] = result
    return report
