"""The gateway app: a thin REST face over the Triton ensembles (through ``client``)."""

from __future__ import annotations

import ipaddress
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from client import AsyncFaceSwapClient
from gateway.api.routes import faces, health, jobs, swap
from gateway.core import errors
from gateway.core.config import Settings, get_settings
from gateway.core.guard import RequestGuard
from gateway.core.jobs import JobRunner, JobStore
from gateway.core.metrics import Metrics
from gateway.core.store import FaceStore

log = logging.getLogger("gateway")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without an HMAC secret it only serves loopback callers and says so."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = AsyncFaceSwapClient(settings.triton_url, "grpc", timeout=settings.triton_timeout_s)
        app.state.store = FaceStore(settings.store_path, settings.face_ttl_s)
        app.state.jobs = JobRunner(JobStore(settings.store_path), settings.jobs_dir, settings.triton_url,
                                   settings.triton_timeout_s, settings.max_concurrent_jobs, settings.job_in_flight)
        resumed = app.state.jobs.recover()
        if resumed:
            log.warning("%d job(s) left by an earlier run queued again", resumed)
        if settings.hmac_secret is None:
            log.warning("no HMAC secret configured (FACESWAP_GATEWAY_HMAC_SECRET): serving loopback callers only")
        log.info("gateway ready: Triton gRPC %s, face store %s", settings.triton_url, settings.store_path)
        yield
        app.state.jobs.shutdown()
        app.state.jobs.store.close()
        await app.state.triton.close()
        app.state.store.close()

    app = FastAPI(title="faceswap gateway", version="0.1.0", lifespan=lifespan,
                  description="REST face of the Triton face-swap ensembles. Errors are JSON "
                              '{"code", "message"}; requests are signed with HMAC-SHA256 when a secret is set.')
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.deep_cache = None
    errors.install(app)
    app.include_router(health.router)
    app.include_router(faces.router)
    app.include_router(swap.router)
    app.include_router(jobs.router)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or (request.url.path if response.status_code < 400 else "unmatched")
        app.state.metrics.requests.labels(name, request.method, str(response.status_code)).inc()
        app.state.metrics.latency.labels(name).observe(time.perf_counter() - t)
        return response

    secret = settings.hmac_secret.get_secret_value() if settings.hmac_secret else None
    app.add_middleware(RequestGuard, max_body=settings.max_upload_bytes, secret=secret,
                       large_bodies={"/v1/jobs": settings.max_job_upload_bytes},
                       max_age_s=settings.signature_max_age_s)
    return app
