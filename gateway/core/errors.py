"""Error bodies: every error is JSON ``{"code": <machine-readable>, "message": <a sentence>}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from client.errors import (
    FaceSwapError,
    InvalidInput,
    ModelFailed,
    ModelOutputInvalid,
    NoFaceError,
    Overloaded,
    RequestTimeout,
    ServerUnavailable,
)

log = logging.getLogger("gateway")


class ErrorBody(BaseModel):
    """Every error answer."""

    code: str = Field(description="machine-readable", examples=["no_face_in_source"])
    message: str = Field(description="a sentence for a person", examples=["No face was found in the source image."])


#: What a call into Triton can come back as (:func:`from_triton`), with the admission and deadline
#: answers of the routes that run the pipeline.
PIPELINE_CODES = ("unsupported_media_type", "image_too_large", "corrupt_image", "no_face_in_source",
                  "invalid_option", "overloaded", "triton_unavailable", "deadline_exceeded", "model_failed",
                  "model_output_invalid", "triton_error")
#: The checks of an uploaded image before it is decoded (gateway.core.images).
UPLOAD_CODES = ("empty_file", "unsupported_media_type", "image_too_large", "corrupt_image")


def errors(*codes: str) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the error codes a route answers itself, one per HTTP
    status (from ``gateway.core.codes``). ``gateway.api.openapi`` adds the codes every route
    shares (signatures, body size, validation, the last-resort 500) and turns ``x-codes`` into
    an ``enum`` of the body's ``code``."""
    from gateway.core.codes import http_status

    by_status: dict[int | str, dict] = {}
    for code in codes:
        entry = by_status.setdefault(http_status(code), {"model": ErrorBody, "x-codes": []})
        entry["x-codes"].append(code)
    return by_status


class APIError(Exception):
    """A known failure: HTTP status, machine-readable code and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def deadline_exceeded(settings) -> APIError:
    """504 ``deadline_exceeded``, saying how to get more time."""
    return APIError(504, "deadline_exceeded", "The request did not finish within its deadline "
                    f"({settings.request_timeout_s:g} s by default; send X-Request-Timeout to allow up to "
                    f"{settings.max_request_timeout_s:g} s, or swap fewer faces with max_faces).")


def storage_errors() -> tuple[type[Exception], ...]:
    """The exception types of Redis and the S3 client that mean "the store is unreachable"
    (empty when the scale-out libraries are not installed)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # the scale-out libraries are optional for the one-machine default
        return ()
    return RedisConnectionError, RedisTimeoutError, BotoCoreError, ClientError


def is_storage_error(exc: BaseException) -> bool:
    """True for a Redis or S3 failure (see :func:`storage_errors`)."""
    return isinstance(exc, storage_errors())


def from_triton(exc: FaceSwapError, settings=None) -> APIError:
    """Map the client library's typed errors (from Triton) to HTTP (``settings`` None: default
    Retry-After values)."""
    msg = str(exc)
    if settings is None:
        from gateway.core.config import Settings

        settings = Settings.model_construct()
    if isinstance(exc, Overloaded):
        return APIError(503, "overloaded", "The inference server is at capacity; retry after "
                        f"{settings.overload_retry_after_s} s.", {"Retry-After": str(settings.overload_retry_after_s)})
    if isinstance(exc, ModelOutputInvalid):
        log.error("non-finite network output inside Triton: %s", msg)
        model = msg.split(":", 1)[1].split()[0] if ":" in msg else "a network"
        return APIError(502, "model_output_invalid", f"The network {model} returned invalid values (NaN or "
                        "infinite) for this request; no image was made from them. It has been logged.")
    if isinstance(exc, ModelFailed):
        log.error("model failed inside Triton: %s", msg)
        return APIError(502, "model_failed", "A model inside the inference server failed on this request; "
                        "it has been logged.")
    if isinstance(exc, NoFaceError):
        return APIError(422, "no_face_in_source", "No face was found in the source image.")
    if isinstance(exc, InvalidInput):
        low = msg.lower()
        if "unsupported image format" in low:
            return APIError(415, "unsupported_media_type", msg)
        if "too large" in low:
            return APIError(413, "image_too_large", msg)
        if "corrupt" in low or "empty image" in low:
            return APIError(422, "corrupt_image", msg)
        if "face_index" in low:
            return APIError(422, "face_index_out_of_range", msg)
        return APIError(422, "invalid_option", msg)
    if isinstance(exc, ServerUnavailable):
        return APIError(503, "triton_unavailable", "The inference server is not available; retry shortly.",
                        {"Retry-After": str(settings.retry_after_s)})
    if isinstance(exc, RequestTimeout):
        return deadline_exceeded(settings)
    return APIError(502, "triton_error", f"The inference server failed: {msg}")


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """The HTTP methods of every route whose path matches the request's (a path may have several
    routes, one per method), HEAD with GET as Starlette serves it."""
    methods: set[str] = set()
    routes = list(app.router.routes)
    while routes:  # FastAPI keeps an included router's routes in it (the routers carry their prefix)
        route = routes.pop()
        if isinstance(route, Route):
            if route.methods and route.matches({**scope, "type": "http"})[0] != Match.NONE:
                methods |= route.methods
        elif getattr(route, "original_router", None) is not None:
            routes.extend(route.original_router.routes)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


def install(app: FastAPI) -> None:
    """Register the exception handlers (known errors; validation; HTTP; the last-resort 500)."""

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(FaceSwapError)
    async def _triton(request: Request, exc: FaceSwapError) -> JSONResponse:
        err = from_triton(exc, request.app.state.settings)
        if err.status >= 500:  # the service failed; 4xx are the caller's input (counted by status)
            request.app.state.metrics.triton_errors.labels(err.code).inc()
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_form", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 415: "unsupported_media_type"}  # 400: Starlette's multipart parser (form limits, bad boundary)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: every 405 says which methods the resource takes
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers)

    backends = storage_errors()

    async def _backend(request: Request, exc: Exception) -> JSONResponse:
        # Redis (the job queue, the shared face store) or the S3 media store is unreachable
        log.error("storage backend failed: %s: %s", type(exc).__name__, exc)
        retry = str(request.app.state.settings.retry_after_s)
        return error_response(503, "storage_unavailable", "The service's job or face storage is not reachable "
                              "right now; retry shortly.", {"Retry-After": retry})

    for kind in backends:
        app.add_exception_handler(kind, _backend)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")
