"""The gateway app: a thin REST face over the Triton ensembles (through ``client``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.api import openapi
from gateway.api.routes import faces, health, jobs, stream, swap, verify
from gateway.backends import make_jobs
from gateway.core import errors
from gateway.core.admission import Admission, AdmissionMiddleware
from gateway.core.config import Settings, get_settings
from gateway.core.content import ContentGate
from gateway.core.guard import RequestGuard
from gateway.core.health import DeepCheck
from gateway.core.marking import Marker
from gateway.core.metrics import Metrics, ObserveMiddleware
from gateway.core.precision import PrecisionReport
from gateway.core.urls import MediaURLPolicy
from gateway.storage.faces import make_face_store, make_results

log = logging.getLogger("gateway")
#: Requests that take an admission slot (they run the pipeline); jobs have their own bound.
COMPUTE_ROUTES = {("POST", "/v1/swap"), ("POST", "/v1/faces"), ("POST", "/v1/verify")}
#: Where the Swagger UI and ReDoc assets of /docs and /redoc are served (by the gateway, no CDN).
DOCS_STATIC = "/docs-static"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _advised_admission(triton: AsyncFaceSwapClient) -> tuple[int, int]:
    """(requests in work, requests waiting) that fit the Triton we talk to: the
    ``admission_in_flight`` / ``admission_waiting`` parameters that ``repository.generate`` writes
    into face_swap's config for its profile, else face_swap's instance count for both, else
    (2, 2) when Triton cannot tell within 5 s."""
    try:
        params = await asyncio.wait_for(triton.model_parameters("face_swap"), 5)
        if "admission_in_flight" in params:
            return int(params["admission_in_flight"]), int(params.get("admission_waiting", "0"))
        n = await asyncio.wait_for(triton.instance_count("face_swap"), 5)
        return n, n
    except (asyncio.TimeoutError, FaceSwapError, ValueError) as exc:
        log.warning("could not read the advised admission bounds from Triton (%s): 2 requests in work, 2 waiting "
                    "(set FACESWAP_GATEWAY_MAX_IN_FLIGHT / MAX_WAITING)", exc)
        return 2, 2


def _no_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part (for the log)."""
    return re.sub(r"//[^/@]*@", "//", url)


async def _sweep_forever(app: FastAPI, settings: Settings) -> None:
    """Every ``sweep_interval_s``: expire finished jobs past ``job_ttl_s`` and expired faces."""
    while True:
        try:
            await app.state.jobs.expire(settings.job_ttl_s)
            await asyncio.to_thread(app.state.store.sweep)
        except Exception:  # a failed sweep is logged and tried again next time
            log.exception("sweep failed")
        await asyncio.sleep(settings.sweep_interval_s)


def _log_precision(nets: dict) -> None:
    """One log line per network and Triton: the precision it serves in and what chose it."""
    if not nets:
        log.info("precision of the networks unknown: set FACESWAP_GATEWAY_TRITON_METRICS_URL to Triton's "
                 "metrics URL(s) for /readyz to show it")
    for i, (url, models) in enumerate(nets.items()):
        for model, net in sorted(models.items()):
            if isinstance(net, dict):
                log.info("%s on triton-%d (%s): %s (%s, %s)", model, i, _no_credentials(url),
                         net.get("precision"), net.get("engine"), net.get("chosen_by"))
            else:
                log.warning("precision of the networks on triton-%d (%s) unknown: %s", i, _no_credentials(url), net)


async def _start(app: FastAPI, settings: Settings) -> asyncio.Task:
    """The parts that talk to other services (Triton, the stores, the job backend); returns the sweeper task."""
    app.state.triton = AsyncFaceSwapClient(settings.triton_url, "grpc", timeout=settings.request_timeout_s)
    app.state.store = await asyncio.to_thread(make_face_store, settings)
    app.state.results = await asyncio.to_thread(make_results, settings)
    app.state.marker = await Marker.start(settings, app.state.triton, app.state.results)
    app.state.content_gate.log_start()
    app.state.jobs = await asyncio.to_thread(make_jobs, settings)
    app.state.jobs.marker = app.state.marker
    app.state.jobs.gate = app.state.content_gate
    advised = await _advised_admission(app.state.triton)
    app.state.admission.resize(settings.max_in_flight or advised[0],
                               settings.max_waiting if settings.max_waiting >= 0 else advised[1])
    _log_precision(await app.state.precision.read())
    resumed = await app.state.jobs.start()
    if resumed:
        log.warning("%d job(s) left by an earlier run queued again", resumed)
    if settings.hmac_secret is None:
        log.warning("no HMAC secret configured (FACESWAP_GATEWAY_HMAC_SECRET): serving loopback callers only")
    log.info("gateway ready: Triton gRPC %s, jobs %s, face store %s; at most %d requests in work and %d waiting, "
             "%.0f M pixels in work, deadline %g s (X-Request-Timeout up to %g s)", settings.triton_url,
             f"on the Redis queue {settings.redis_url} (faceswap-worker processes)" if settings.redis_url
             else "in this process", "Redis" if settings.redis_url else settings.store_path,
             app.state.admission.max_in_flight, app.state.admission.max_waiting,
             settings.max_pixels_in_flight / 1e6, settings.request_timeout_s, settings.max_request_timeout_s)
    return asyncio.create_task(_sweep_forever(app, settings))


async def _stop(app: FastAPI, sweeper: asyncio.Task) -> None:
    sweeper.cancel()
    await app.state.jobs.close()
    app.state.results.close()
    await app.state.triton.close()
    app.state.store.close()


def _middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost last: Observe (counts every answer) -> RequestGuard (size, signature) ->
    AdmissionMiddleware (slots, deadline) -> the routes."""
    app.add_middleware(AdmissionMiddleware, admission=app.state.admission, paths=COMPUTE_ROUTES,
                       default_timeout_s=settings.request_timeout_s, max_timeout_s=settings.max_request_timeout_s)
    secret = settings.hmac_secret.get_secret_value() if settings.hmac_secret else None
    app.add_middleware(RequestGuard, max_body=settings.max_upload_bytes, secret=secret,
                       large_bodies={"/v1/jobs": settings.max_job_upload_bytes,
                                     "/v1/verify": settings.max_verify_bytes},
                       max_age_s=settings.signature_max_age_s)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics, paths=lambda: [*app.openapi()["paths"],
                                                                        *(getattr(r, "path", "") for r in app.routes),
                                                                        DOCS_STATIC + "/{file:path}"])


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without an HMAC secret it only serves loopback callers and says so."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = await _start(app, settings)
        yield
        await _stop(app, sweeper)

    # /docs (Swagger UI) and /redoc load their JS/CSS from the gateway itself (bundled by
    # fastapi-offline, under DOCS_STATIC), never from a CDN: the pages work offline.
    app = FastAPIOffline(title="faceswap gateway", version="0.1.0", lifespan=lifespan, static_url=DOCS_STATIC,
                         description="REST face of the Triton face-swap ensembles. Errors are JSON "
                                     '{"code", "message"}; requests are signed with HMAC-SHA256 when a secret is set.')
    app.state.settings = settings
    app.state.media_urls = MediaURLPolicy(settings.media_url_prefixes)
    app.state.metrics = Metrics()
    app.state.content_gate = ContentGate(settings, app.state.metrics)
    app.state.streams = 0
    app.state.deep = DeepCheck(settings)
    app.state.precision = PrecisionReport(settings.triton_url, settings.triton_metrics_url, settings.health_timeout_s)
    app.state.admission = Admission(settings.max_in_flight, settings.max_pixels_in_flight,
                                    settings.overload_retry_after_s, app.state.metrics)
    errors.install(app)
    for router in (health.router, faces.router, swap.router, jobs.router, stream.router, verify.router):
        app.include_router(router)
    openapi.install(app)
    _middleware(app, settings)
    return app
