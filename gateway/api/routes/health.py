"""Liveness, readiness (Triton and every model, within ``health_timeout_s``; optionally a real
pipeline run) and metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.api import deps
from gateway.core.config import Settings
from gateway.core.metrics import Metrics, set_precision
from gateway.core.precision import public

router = APIRouter(tags=["health"])
log = logging.getLogger("gateway.health")


@router.get("/healthz", summary="The process lives")
async def healthz() -> dict:
    return {"status": "ok"}


async def _shallow(triton: AsyncFaceSwapClient) -> tuple[dict, list[str]]:
    h = await triton.health()
    if h["live"] and h["ready"]:
        stand = (await triton.model_parameters("face_paster")).get("stand_in_models", "")
        return h, [s for s in stand.split(",") if s]
    return h, []


@router.get("/readyz", summary="Triton live and ready, every model ready; ?deep=1 also runs the pipeline")
async def readyz(request: Request, deep: bool = Query(False, description="also run the pipeline end to end "
                                                      "(single-flight, cached)"),
                 triton: AsyncFaceSwapClient = Depends(deps.triton),
                 settings: Settings = Depends(deps.settings)) -> JSONResponse:
    """200 {"status": "ready"} or 503 {"status": "degraded", "error": <code>} within
    ``health_timeout_s`` whatever Triton does (deep: plus the pipeline run's own time limit).
    Error codes: triton_timeout, triton_unreachable, models_not_ready, and the deep check's
    (pipeline_timeout, pipeline_failed, no_face_found, output_not_finite, ...).
    ``precision``: per Triton (``triton-<i>``, in the order of the metrics URLs the gateway logs
    at start), the precision each network serves in and what chose it (``self-check``,
    ``cache``, ``setting``, ``no probe``); deep: with the probe's figures."""
    retry = {"Retry-After": str(settings.retry_after_s)}

    def degraded(error: str, **extra) -> JSONResponse:
        return JSONResponse({"status": "degraded", "error": error, **extra}, status_code=503, headers=retry)

    try:
        h, stand_ins = await asyncio.wait_for(_shallow(triton), settings.health_timeout_s)
    except asyncio.TimeoutError:
        log.warning("readyz: Triton %s did not answer within %g s", settings.triton_url, settings.health_timeout_s)
        return degraded("triton_timeout")
    except FaceSwapError as exc:
        log.warning("readyz: %s", exc)
        return degraded("triton_unreachable")
    if not h["live"] or not h["ready"]:
        if h.get("error"):
            log.warning("readyz: %s", h["error"])
            return degraded("triton_unreachable")
        not_ready = [m for m, ok in h.get("models", {}).items() if not ok]
        log.warning("readyz: models not ready: %s (real models expected in %s)", not_ready, settings.models_dir)
        return degraded("models_not_ready", models_not_ready=not_ready)
    try:
        report = await asyncio.wait_for(request.app.state.precision.read(), settings.health_timeout_s)
    except asyncio.TimeoutError:
        report = {"-": {"error": "metrics_timeout"}}
    set_precision(request.app.state.metrics, report)
    body: dict = {"status": "ready", "stand_ins": stand_ins, "precision": public(report, figures=deep)}
    if deep:
        body["deep"] = await request.app.state.deep.result(triton, stand_ins)
        if not body["deep"]["ok"]:
            return degraded(body["deep"]["error"], deep=body["deep"], stand_ins=stand_ins)
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request, m: Metrics = Depends(deps.metrics)) -> Response:
    try:
        for status, n in (await asyncio.wait_for(request.app.state.jobs.counts(), 2)).items():
            m.jobs.labels(status).set(n)
    except Exception as exc:  # Redis away or slow: the other metrics still answer
        log.warning("job counts unavailable for /metrics: %s", exc)
    try:  # what each network serves in (cached CACHE_S by PrecisionReport)
        set_precision(m, await asyncio.wait_for(request.app.state.precision.read(), 2))
    except asyncio.TimeoutError:
        log.warning("Triton's metrics did not answer within 2 s: gateway_network_precision not refreshed")
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
