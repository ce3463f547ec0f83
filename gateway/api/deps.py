"""What the routes depend on: the app's parts as ``Annotated`` aliases (``SettingsDep``,
``TritonDep``...), read from ``app.state`` where the lifespan put them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from client import AsyncFaceSwapClient
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.content import ContentGate
from gateway.core.marking import Marker
from gateway.core.metrics import Metrics
from gateway.core.urls import MediaURLPolicy
from gateway.jobs.backend import JobBackend
from gateway.storage.faces import FaceStore, ResultLog


def state(name: str) -> Callable[[Request], Any]:
    """A dependency returning ``request.app.state.<name>`` (set by ``gateway.main`` at start)."""
    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = name
    return get


SettingsDep = Annotated[Settings, Depends(state("settings"))]
TritonDep = Annotated[AsyncFaceSwapClient, Depends(state("triton"))]
StoreDep = Annotated[FaceStore, Depends(state("store"))]
MetricsDep = Annotated[Metrics, Depends(state("metrics"))]
AdmissionDep = Annotated[Admission, Depends(state("admission"))]
JobsDep = Annotated[JobBackend, Depends(state("jobs"))]
MarkerDep = Annotated[Marker, Depends(state("marker"))]
GateDep = Annotated[ContentGate, Depends(state("content_gate"))]
ResultsDep = Annotated[ResultLog, Depends(state("results"))]
MediaURLsDep = Annotated[MediaURLPolicy, Depends(state("media_urls"))]
