"""Dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from client import AsyncFaceSwapClient
from gateway.core.config import Settings
from gateway.core.metrics import Metrics
from gateway.core.store import FaceStore


def triton(request: Request) -> AsyncFaceSwapClient:
    return request.app.state.triton


def store(request: Request) -> FaceStore:
    return request.app.state.store


def settings(request: Request) -> Settings:
    return request.app.state.settings


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics
