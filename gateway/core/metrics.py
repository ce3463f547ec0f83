"""Prometheus metrics of the gateway (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """One registry per app, so that tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gateway_request_seconds", "Request latency in seconds by route", ["route"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)
        self.faces_swapped = Counter("gateway_faces_swapped_total", "Faces swapped", registry=self.registry)
        self.triton_errors = Counter("gateway_triton_errors_total", "Failed Triton calls by error code", ["code"],
                                     registry=self.registry)
