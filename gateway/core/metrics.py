"""Prometheus metrics of the gateway (served at /metrics) and the middleware that counts every answer."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """One registry per app, so that tests can build several apps in one process.

    Triton's own queue time per model is on Triton's metrics port
    (``nv_inference_queue_duration_us``, with ``nv_inference_request_failure``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests_total", "HTTP answers by route, method and status (every answer, "
                                "the signature and size guard's and the admission control's included)",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gateway_request_seconds", "Request latency in seconds by route", ["route"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)
        self.faces_swapped = Counter("gateway_faces_swapped_total", "Faces swapped", registry=self.registry)
        self.triton_errors = Counter("gateway_triton_errors_total", "Failed Triton calls by error code (the "
                                     "backend's failures: unavailable, overloaded, timeouts, model failures)",
                                     ["code"], registry=self.registry)
        self.in_flight = Gauge("gateway_in_flight_requests", "Compute requests admitted and not yet answered",
                               registry=self.registry)
        self.waiting = Gauge("gateway_waiting_requests", "Compute requests waiting in line for a slot",
                             registry=self.registry)
        self.pixels_in_flight = Gauge("gateway_in_flight_pixels", "Image pixels of the requests in work",
                                      registry=self.registry)
        self.rejected = Counter("gateway_rejected_total", "Requests refused with 503 overloaded by the admission "
                                "control, by what was full (requests, pixels)", ["reason"], registry=self.registry)
        self.cancelled = Counter("gateway_cancelled_total", "Triton calls cancelled because the caller hung up",
                                 registry=self.registry)
        self.streams = Gauge("gateway_streams", "Live streams (/v1/stream) open", registry=self.registry)
        self.stream_frames = Counter("gateway_stream_frames_total", "Live stream frames by outcome (swapped; "
                                     "dropped: replaced by a newer frame or no slot free; failed)", ["outcome"],
                                     registry=self.registry)
        self.stream_latency = Histogram("gateway_stream_frame_seconds", "Live stream frame latency, from its "
                                        "arrival to its answer", buckets=(0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5),
                                        registry=self.registry)
        self.network_precision = Gauge("gateway_network_precision", "1 for the precision each network serves in "
                                       "on each Triton (read from Triton's metrics: the networks' load-time parity "
                                       "self-check), refreshed when scraped", ["triton", "model", "precision",
                                                                              "engine", "chosen_by"],
                                       registry=self.registry)
        self.precision_probe = Gauge("gateway_precision_probe", "The load-time parity probe's figures per network "
                                     "and precision on each Triton (ms per probe call, speedup over f32, psnr_db / "
                                     "cosine / box_px against f32, passed 1/0), refreshed when scraped",
                                     ["triton", "model", "precision", "figure"], registry=self.registry)
        self.content_gate = Gauge("gateway_content_gate", "1 when the content gate refuses intimate imagery, 0 when "
                                  "the server setting content_gate turned it off", registry=self.registry)
        self.content_refused = Counter("gateway_content_refused_total", "Targets refused by the content gate (422 "
                                       "content_refused), by route (/v1/swap, batch, video, stream)", ["route"],
                                       registry=self.registry)
        self.jobs = Gauge("gateway_jobs", "Video and batch jobs by status (queued: waiting for a worker; running), "
                          "read when scraped", ["status"], registry=self.registry)


def set_precision(m: Metrics, report: dict[str, dict]) -> None:
    """Replace ``gateway_network_precision`` and ``gateway_precision_probe`` with what
    ``gateway.core.precision`` read."""
    m.network_precision.clear()
    m.precision_probe.clear()
    for i, nets in enumerate(report.values()):  # triton-<i> as in /readyz: no address (or credentials) in labels
        for model, net in nets.items():
            if isinstance(net, dict) and "precision" in net:
                m.network_precision.labels(f"triton-{i}", model, net["precision"], net.get("engine", ""),
                                           net.get("chosen_by", "")).set(1)
                for prec, figures in net.get("probe", {}).items():
                    for figure, value in figures.items():
                        m.precision_probe.labels(f"triton-{i}", model, prec, figure).set(value)


class ObserveMiddleware:
    """ASGI, outermost: counts every answer by route template (``unmatched`` for unknown paths)
    and status, and its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: Callable[[], list[str]]) -> None:
        self.app, self.metrics, self._paths = app, metrics, paths
        self._patterns: list[tuple[re.Pattern, str]] | None = None

    def _route(self, scope: Scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route:
            return route
        # answered before routing (guard, admission): the template of the path it was for
        if self._patterns is None:
            self._patterns = [(compile_path(p)[0], p) for p in self._paths() if p]
        return next((p for rx, p in self._patterns if rx.match(scope["path"])), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t, status = time.perf_counter(), [500]

        async def send_status(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = self._route(scope)
            self.metrics.requests.labels(name, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t)

