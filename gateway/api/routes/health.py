"""Liveness, readiness (Triton and every model, within ``health_timeout_s``; optionally a real
pipeline run) and metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import MetricsDep, SettingsDep, TritonDep
from gateway.core.metrics import set_precision
from gateway.services import health as service

router = APIRouter(tags=["health"])
log = logging.getLogger("gateway.health")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """``/readyz``'s answer (200 ready, 503 degraded)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "degraded"]
    error: str | None = Field(None, description="degraded: why (triton_timeout, triton_unreachable, "
                                                "models_not_ready, or the deep check's code)")
    stand_ins: list[str] | None = Field(None, description="the stand-in models Triton serves (not real models)")
    precision: dict | None = Field(None, description="per Triton, what each network serves in and what chose it")
    deep: dict | None = Field(None, description="deep=1: the pipeline run's result")
    content_gate: dict | None = Field(None, description="the content gate: enabled, policy, classes, threshold "
                                                        "(off only by the server setting content_gate)")
    models_not_ready: list[str] | None = None


@router.get("/healthz", summary="The process lives")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="Triton live and ready, every model ready; ?deep=1 also runs the pipeline",
            responses={200: {"model": Readiness},
                       503: {"model": Readiness, "description": "degraded (with Retry-After)",
                             "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
async def readyz(request: Request, triton: TritonDep, settings: SettingsDep, metrics: MetricsDep,
                 deep: Annotated[bool, Query(description="also run the pipeline end to end (single-flight, "
                                                         "cached)")] = False) -> JSONResponse:
    """200 {"status": "ready"} or 503 {"status": "degraded", "error": <code>} within
    ``health_timeout_s`` whatever Triton does (deep: plus the pipeline run's own time limit).
    Error codes: triton_timeout, triton_unreachable, models_not_ready, and the deep check's
    (pipeline_timeout, pipeline_failed, no_face_found, output_not_finite, ...).
    ``precision``: per Triton (``triton-<i>``, in the order of the metrics URLs the gateway logs
    at start), the precision each network serves in and what chose it (``self-check``,
    ``cache``, ``setting``, ``no probe``); deep: with the probe's figures. ``content_gate``:
    whether the content gate is on, and its policy."""
    status, body = await service.readiness(triton, settings, request.app.state.precision, metrics,
                                           request.app.state.deep if deep else None)
    body["content_gate"] = request.app.state.content_gate.state()
    headers = {"Retry-After": str(settings.retry_after_s)} if status != 200 else None
    return JSONResponse(body, status_code=status, headers=headers)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": f"Prometheus' text exposition format ({CONTENT_TYPE_LATEST})"}})
async def metrics(request: Request, m: MetricsDep) -> Response:
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
