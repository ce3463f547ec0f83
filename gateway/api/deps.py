"""What the routes depend on: the app's parts as ``Annotated`` aliases (``SettingsDep``,
``TritonDep``...), read from ``app.state`` where the lifespan put them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from client import AsyncFaceSwapClient
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.marking import Marker
from gateway.core.metrics import Metrics
from gateway.core.urls import MediaURLPolicy
from gateway.jobs.backend import JobBackend
from gateway.storage.faces import FaceStore, ResultLog


def settings(request: Request) -> Settings:
    return request.app.state.settings


def triton(request: Request) -> AsyncFaceSwapClient:
    return request.app.state.triton


def store(request: Request) -> FaceStore:
    return request.app.state.store


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def admission(request: Request) -> Admission:
    return request.app.state.admission


def jobs(request: Request) -> JobBackend:
    return request.app.state.jobs


def marker(request: Request) -> Marker:
    return request.app.state.marker


def results(request: Request) -> ResultLog:
    return request.app.state.results


def media_urls(request: Request) -> MediaURLPolicy:
    return request.app.state.media_urls


SettingsDep = Annotated[Settings, Depends(settings)]
TritonDep = Annotated[AsyncFaceSwapClient, Depends(triton)]
StoreDep = Annotated[FaceStore, Depends(store)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
AdmissionDep = Annotated[Admission, Depends(admission)]
JobsDep = Annotated[JobBackend, Depends(jobs)]
MarkerDep = Annotated[Marker, Depends(marker)]
ResultsDep = Annotated[ResultLog, Depends(results)]
MediaURLsDep = Annotated[MediaURLPolicy, Depends(media_urls)]
