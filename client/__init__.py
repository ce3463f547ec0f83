"""Python client of the face-swap Triton ensembles (sync and asyncio, HTTP and gRPC)."""

from client.core import EmbedResult, Face, FaceQuality, SwapResult
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
from client.library import AsyncFaceSwapClient, FaceSwapClient

__all__ = ["AsyncFaceSwapClient", "EmbedResult", "Face", "FaceQuality", "FaceSwapClient", "FaceSwapError",
           "InvalidInput", "ModelFailed", "ModelOutputInvalid", "NoFaceError", "Overloaded", "RequestTimeout",
           "ServerUnavailable", "SwapResult"]
