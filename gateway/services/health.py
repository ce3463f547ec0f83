"""``/readyz``: Triton live and ready, every model ready, what each network serves in, and
(deep) a real pipeline run."""

from __future__ import annotations

import asyncio
import logging

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.core.config import Settings
from gateway.core.health import DeepCheck
from gateway.core.metrics import Metrics, set_precision
from gateway.core.precision import PrecisionReport, public

log = logging.getLogger("gateway.health")


async def _shallow(triton: AsyncFaceSwapClient) -> tuple[dict, list[str]]:
    h = await triton.health()
    if h["live"] and h["ready"]:
        stand = (await triton.model_parameters("face_swap")).get("stand_in_models", "")
        return h, [s for s in stand.split(",") if s]
    return h, []


async def readiness(triton: AsyncFaceSwapClient, settings: Settings, precision: PrecisionReport,
                    metrics: Metrics, deep: DeepCheck | None) -> tuple[int, dict]:
    """(200 or 503, the body): ``{"status": "ready", "stand_ins", "precision"[, "deep"]}`` or
    ``{"status": "degraded", "error": <code>, ...}``, within ``health_timeout_s`` whatever Triton
    does (deep: plus the pipeline run's own time limit)."""
    def degraded(error: str, **extra) -> tuple[int, dict]:
        return 503, {"status": "degraded", "error": error, **extra}

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
        report = await asyncio.wait_for(precision.read(), settings.health_timeout_s)
    except asyncio.TimeoutError:
        report = {"-": {"error": "metrics_timeout"}}
    set_precision(metrics, report)
    body: dict = {"status": "ready", "stand_ins": stand_ins, "precision": public(report, figures=deep is not None)}
    if deep is not None:
        body["deep"] = await deep.result(triton, stand_ins)
        if not body["deep"]["ok"]:
            return degraded(body["deep"]["error"], deep=body["deep"], stand_ins=stand_ins)
    return 200, body
