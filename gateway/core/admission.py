"""Admission control: bounded work in flight, deadlines that travel, calls cancelled with their caller.

- **Slots.** Each compute request (``POST /v1/swap``, ``POST /v1/faces``) takes one of
  ``max_in_flight`` slots once its body has arrived. With none free it waits, first come first
  served, in a line of at most ``max_waiting`` (and no longer than its deadline); past that it
  is answered at once with 503 ``overloaded`` and ``Retry-After``. The short line keeps Triton
  busy between a request's end and the next arrival (without one, a loss system at twice its
  capacity idles a quarter of the time: Erlang B), while bounding the wait to a few service
  times.
- **Pixels.** Once an image's size is known from its header (``gateway.core.images``) the
  request reserves its pixels against ``max_pixels_in_flight``; a reservation that does not
  fit is 503 ``overloaded`` as well, except for a request that would be alone (so one
  largest-allowed image always passes). Memory in Triton grows with pixels in flight
  (about 30 bytes a pixel through decode, detection and paste-back), not with requests.
- **Deadline.** A request's deadline starts when its body has arrived: ``X-Request-Timeout`` (seconds,
  from the caller, capped by ``max_request_timeout_s``) or ``request_timeout_s``. Every
  Triton call gets the time that is left, as its gRPC deadline and as Triton's request
  timeout, so work for a caller who has gone is dropped from Triton's queues, not computed.
- **Cancellation.** A Triton call made through :func:`until_disconnect` is cancelled when the
  HTTP caller hangs up (checked every 0.2 s); cancelling the gRPC call makes Triton stop the
  ensemble before its next step.

Jobs (video, batch) do not take these slots: they have their own bound (``max_concurrent_jobs``
x ``job_in_flight`` Triton requests) and wait on a full Triton instead of failing, so that
interactive callers and jobs share Triton's capacity in that proportion.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from contextlib import contextmanager
from typing import TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import APIError, deadline_exceeded, error_response

T = TypeVar("T")
TIMEOUT_HEADER = "x-request-timeout"


class Admission:
    """Counters of the work in flight in one gateway process (asyncio: no locks needed).

    Args:
        max_in_flight: compute requests at once (slots).
        max_pixels: pixels (width x height, summed over the images of the requests) at once.
        retry_after_s: ``Retry-After`` seconds sent with 503 ``overloaded``.
        metrics: ``gateway.core.metrics.Metrics`` (gauges and the rejection counter).
    """

    def __init__(self, max_in_flight: int, max_pixels: int, retry_after_s: int, metrics,
                 max_waiting: int = 0) -> None:
        self.max_pixels, self.retry_after_s, self.metrics = max_pixels, retry_after_s, metrics
        self.in_flight = self.waiting = self.pixels = 0
        self.resize(max_in_flight, max_waiting)

    def resize(self, max_in_flight: int, max_waiting: int) -> None:
        """Set the bounds (before serving)."""
        self.max_in_flight, self.max_waiting = max(max_in_flight, 1), max(max_waiting, 0)
        self._slots = asyncio.Semaphore(self.max_in_flight)

    def overloaded(self, reason: str, detail: str) -> APIError:
        """503 ``overloaded``; ``reason`` ("requests" or "pixels") labels the metric (a fixed set,
        so the series stay few), ``detail`` goes into the message."""
        self.metrics.rejected.labels(reason).inc()
        return APIError(503, "overloaded", f"The service is at capacity ({detail}); retry after "
                        f"{self.retry_after_s} s.", {"Retry-After": str(self.retry_after_s)})

    async def enter(self, timeout: float, bounded_line: bool = True) -> bool:
        """Take a slot, waiting in line (at most ``max_waiting`` wait, each at most ``timeout``
        seconds); False when the line is full or the wait ran out. ``bounded_line=False``: wait
        even when the line is full (live stream frames: at most one per stream waits, and the
        streams are bounded by ``max_streams``)."""
        if self._slots.locked() or self.waiting:
            if bounded_line and self.waiting >= self.max_waiting:
                return False
            self.waiting += 1
            self.metrics.waiting.set(self.waiting)
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout)
            except asyncio.TimeoutError:
                return False
            finally:
                self.waiting -= 1
                self.metrics.waiting.set(self.waiting)
        else:
            await self._slots.acquire()
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)
        self._slots.release()

    @contextmanager
    def pixels_reserved(self, pixels: int):
        """Hold ``pixels`` for the ``with`` block; raises APIError 503 ``overloaded`` when they
        do not fit beside what is in flight (a request alone always fits)."""
        if self.pixels and self.pixels + pixels > self.max_pixels:
            raise self.overloaded("pixels", f"{self.pixels / 1e6:.0f} M pixels in work, limit "
                                  f"{self.max_pixels / 1e6:.0f} M")
        self.pixels += pixels
        self.metrics.pixels_in_flight.set(self.pixels)
        try:
            yield
        finally:
            self.pixels -= pixels
            self.metrics.pixels_in_flight.set(self.pixels)


class AdmissionMiddleware:
    """ASGI, inside the signature/size guard (so after the body has arrived): slot admission for
    ``paths`` and the request's deadline.

    The deadline (``time.monotonic()`` seconds) is put in ``scope["state"]["deadline"]``
    (``request.state.deadline``) for every request.
    """

    def __init__(self, app: ASGIApp, admission: Admission, paths: set[tuple[str, str]], default_timeout_s: float,
                 max_timeout_s: float) -> None:
        self.app, self.admission, self.paths = app, admission, paths
        self.default_timeout_s, self.max_timeout_s = default_timeout_s, max_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = self.default_timeout_s
        for k, v in scope.get("headers", []):
            if k.decode().lower() == TIMEOUT_HEADER:
                try:
                    timeout = float(v.decode())
                except ValueError:
                    timeout = math.nan
                if not math.isfinite(timeout) or timeout <= 0:
                    await error_response(422, "invalid_request", "X-Request-Timeout must be a positive number of "
                                         "seconds.")(scope, receive, send)
                    return
                timeout = min(timeout, self.max_timeout_s)
        scope.setdefault("state", {})["deadline"] = time.monotonic() + timeout
        if (scope["method"], scope["path"]) not in self.paths:
            await self.app(scope, receive, send)
            return
        if not await self.admission.enter(timeout):
            err = self.admission.overloaded("requests", f"{self.admission.max_in_flight} requests in work, "
                                            f"{self.admission.max_waiting} waiting")
            await error_response(err.status, err.code, err.message, err.headers)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()


def remaining(request: Request) -> float:
    """Seconds left before the request's deadline; raises APIError 504 ``deadline_exceeded`` when none."""
    left = request.state.deadline - time.monotonic()
    if left <= 0:
        raise deadline_exceeded(request.app.state.settings)
    return left


async def until_disconnect(request: Request, call: Awaitable[T]) -> T:
    """Await ``call``; cancel it (and so its gRPC call) if the HTTP caller hangs up first.

    Raises:
        APIError: 499 ``client_closed_request`` when the caller went away (nobody reads it;
            it is what the logs and metrics count).
    """
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                request.app.state.metrics.cancelled.inc()
                raise APIError(499, "client_closed_request", "The caller closed the connection; its work was "
                               "cancelled.")
    finally:
        if not task.done():
            task.cancel()
