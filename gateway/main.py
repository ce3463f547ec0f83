"""The gateway app: a thin REST face over the Triton ensembles (through ``client``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.api.routes import faces, health, jobs, swap
from gateway.core import errors
from gateway.core.admission import Admission, AdmissionMiddleware
from gateway.core.config import Settings, get_settings
from gateway.core.guard import RequestGuard
from gateway.core.health import DeepCheck
from gateway.core.jobs import JobRunner, JobStore
from gateway.core.metrics import Metrics, ObserveMiddleware
from gateway.core.store import FaceStore

log = logging.getLogger("gateway")
#: Requests that take an admission slot (they run the pipeline); jobs have their own bound.
COMPUTE_ROUTES = {("POST", "/v1/swap"), ("POST", "/v1/faces")}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _fitting_in_flight(triton: AsyncFaceSwapClient) -> int:
    """Twice the paste-back instances of the Triton we talk to (each keeps one request in work and
    one waiting), or 4 when Triton cannot tell within 5 s."""
    try:
        return 2 * await asyncio.wait_for(triton.instance_count("face_paster"), 5)
    except (asyncio.TimeoutError, FaceSwapError, ValueError) as exc:
        log.warning("could not read face_paster's instance count from Triton (%s): at most 4 requests in work "
                    "(set FACESWAP_GATEWAY_MAX_IN_FLIGHT)", exc)
        return 4


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without an HMAC secret it only serves loopback callers and says so."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = AsyncFaceSwapClient(settings.triton_url, "grpc", timeout=settings.request_timeout_s)
        app.state.store = FaceStore(settings.store_path, settings.face_ttl_s)
        app.state.jobs = JobRunner(JobStore(settings.store_path), settings.jobs_dir, settings.triton_url,
                                   settings.job_timeout_s, settings.max_concurrent_jobs, settings.job_in_flight)
        if not settings.max_in_flight:
            app.state.admission.max_in_flight = await _fitting_in_flight(app.state.triton)
        resumed = app.state.jobs.recover()
        if resumed:
            log.warning("%d job(s) left by an earlier run queued again", resumed)
        if settings.hmac_secret is None:
            log.warning("no HMAC secret configured (FACESWAP_GATEWAY_HMAC_SECRET): serving loopback callers only")
        log.info("gateway ready: Triton gRPC %s, face store %s; at most %d requests and %.0f M pixels in work, "
                 "deadline %g s (X-Request-Timeout up to %g s)", settings.triton_url, settings.store_path,
                 app.state.admission.max_in_flight, settings.max_pixels_in_flight / 1e6, settings.request_timeout_s,
                 settings.max_request_timeout_s)
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
    app.state.deep = DeepCheck(settings)
    app.state.admission = Admission(settings.max_in_flight, settings.max_pixels_in_flight,
                                    settings.overload_retry_after_s, app.state.metrics)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(faces.router)
    app.include_router(swap.router)
    app.include_router(jobs.router)

    # Outermost last: Observe (counts every answer) -> RequestGuard (size, signature) ->
    # AdmissionMiddleware (slots, deadline) -> the routes.
    app.add_middleware(AdmissionMiddleware, admission=app.state.admission, paths=COMPUTE_ROUTES,
                       default_timeout_s=settings.request_timeout_s, max_timeout_s=settings.max_request_timeout_s)
    secret = settings.hmac_secret.get_secret_value() if settings.hmac_secret else None
    app.add_middleware(RequestGuard, max_body=settings.max_upload_bytes, secret=secret,
                       large_bodies={"/v1/jobs": settings.max_job_upload_bytes},
                       max_age_s=settings.signature_max_age_s)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics, paths=lambda: [*app.openapi()["paths"],
                                                                        *(getattr(r, "path", "") for r in app.routes)])
    return app
