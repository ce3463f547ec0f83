"""Liveness, readiness (Triton and every model; optionally a real pipeline run) and metrics."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.api import deps
from gateway.core.config import Settings
from gateway.core.metrics import Metrics

router = APIRouter(tags=["health"])


def probe_image() -> bytes:
    """A small built-in PNG (a colour gradient, 96x64) for the deep check."""
    import cv2

    x = np.linspace(0, 255, 96, dtype=np.uint8)
    img = np.dstack([np.tile(x, (64, 1)), np.tile(x[::-1], (64, 1)), np.full((64, 96), 128, np.uint8)])
    return cv2.imencode(".png", img)[1].tobytes()


@router.get("/healthz", summary="The process lives")
async def healthz() -> dict:
    return {"status": "ok"}


async def _deep(triton: AsyncFaceSwapClient) -> dict:
    t = time.perf_counter()
    img = probe_image()
    await triton.embed(img)
    res = await triton.swap(img, np.full((1, 512), 1 / np.sqrt(512), np.float32), output_format="png")
    if res.image != img:
        raise FaceSwapError("the deep check's face-less image did not come back unchanged")
    await triton.probe_networks()
    return {"ok": True, "seconds": round(time.perf_counter() - t, 3)}


@router.get("/readyz", summary="Triton live and ready, every model ready; ?deep=1 also runs the pipeline")
async def readyz(request: Request, deep: bool = Query(False, description="also run the pipeline end to end"),
                 triton: AsyncFaceSwapClient = Depends(deps.triton),
                 settings: Settings = Depends(deps.settings)) -> JSONResponse:
    """200 {"status": "ready"} or 503 {"status": "degraded", ...} saying what is missing."""
    h = await triton.health()
    body: dict = {"status": "ready", "triton": settings.triton_url, "models_dir": str(settings.models_dir)}
    not_ready = [m for m, ok in h.get("models", {}).items() if not ok]
    if not h["live"] or not h["ready"]:
        body.update(status="degraded", triton_live=h["live"], models_not_ready=not_ready or "unknown",
                    error=h.get("error"))
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
    try:
        stand = (await triton.model_parameters("face_paster")).get("stand_in_models", "")
        body["stand_ins"] = [s for s in stand.split(",") if s]
        if deep:
            cache = request.app.state.deep_cache
            if cache and time.monotonic() - cache[0] < settings.deep_check_ttl_s:
                body["deep"] = {**cache[1], "cached": True}
            else:
                result = await _deep(triton)
                request.app.state.deep_cache = (time.monotonic(), result)
                body["deep"] = result
    except FaceSwapError as exc:
        body.update(status="degraded", error=str(exc))
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(m: Metrics = Depends(deps.metrics)) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
