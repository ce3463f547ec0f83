"""Typed errors of the client library; only the CLI turns them into exit codes."""


class FaceSwapError(Exception):
    """Base class of every error raised by the client library."""


class ServerUnavailable(FaceSwapError):
    """Triton cannot be reached, is not live/ready, or a model is not ready (retry later)."""


class Overloaded(ServerUnavailable):
    """The server is at capacity (Triton's queue is full: gRPC UNAVAILABLE "Exceeds maximum queue
    size"); nothing was computed. Retry after a short pause, with backoff."""


class ModelFailed(FaceSwapError):
    """A model inside the server failed on a valid request (Triton INTERNAL): the server's fault,
    not the input's. The message names the model."""


class ModelOutputInvalid(ModelFailed):
    """A network inside the server returned NaN or infinite values (message names the model);
    the server refused to return an image made from them."""


class InvalidInput(FaceSwapError):
    """The server rejected the request: corrupt image, unsupported format, bad option (HTTP 400 /
    gRPC INVALID_ARGUMENT). The message is the server's, meant for a person."""


class NoFaceError(InvalidInput):
    """The source image has no face to take the identity from."""


class RequestTimeout(FaceSwapError):
    """The server did not answer within the request's deadline (the client's timeout, which is
    also sent to Triton so that queued work past it is dropped, not computed)."""
