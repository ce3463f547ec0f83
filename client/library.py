"""Sync and asyncio clients of the face-swap ensembles, over HTTP or gRPC (KServe v2)."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import random
import socket
from typing import Any

import numpy as np

from client.core import (
    EMBED_MODEL,
    EMBED_OUTPUTS,
    SWAP_KPS_MODEL,
    SWAP_KPS_OUTPUTS,
    SWAP_MODEL,
    SWAP_OUTPUTS,
    EmbedResult,
    Face,
    ImageLike,
    SwapResult,
    build_inputs,
    embed_arrays,
    map_error,
    options_json,
    parse_embed,
    parse_swap,
    parse_swap_kps,
    swap_arrays,
    swap_kps_arrays,
)
from client.errors import InvalidInput, ModelFailed, NoFaceError, Overloaded, RequestTimeout

#: The models a ready deployment serves (the entry points and the networks they call).
REQUIRED_MODELS = ("face_embed", "face_swap", "face_swap_kps", "face_detector", "face_recognizer", "face_swapper",
                   "content_detector")  # every model a repository serves (face_swap calls the gate)
PROTOCOLS = ("http", "grpc")


def _module(protocol: str, aio: bool) -> Any:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return importlib.import_module(f"tritonclient.{protocol}{'.aio' if aio else ''}")


def default_url(protocol: str) -> str:
    return "127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000"


#: gRPC service config of every channel: calls spread round-robin over the servers a target
#: names (a dead one is skipped once its connection fails), and a call refused as UNAVAILABLE
#: (its server died or went away before answering) is tried once more, on another server.
#: Every Triton call of this client is idempotent (inference has no side effects), so the retry
#: is safe. See gRPC's "Load Balancing" and "Retry design" (gRFC A6) documents.
GRPC_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "inference.GRPCInferenceService"}],
        "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.05s", "maxBackoff": "0.2s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}
#: Bytes of one call gRPC keeps to be able to retry it (its default, 256 KiB, is smaller than
#: most images: a larger call could not be retried).
GRPC_RETRY_BUFFER = 64 << 20


def grpc_target(url: str) -> str:
    """The gRPC channel target for one or several Triton gRPC endpoints.

    ``url`` is ``host:port``, a comma-separated list of them (``10.0.0.5:8001,10.0.0.6:8001``)
    or any gRPC target with a scheme (``dns:///triton-headless:8001``, where DNS answers with
    every server's address). A list becomes one ``ipv4:``/``ipv6:`` target (host names are
    resolved once, here), balanced round-robin by :data:`GRPC_SERVICE_CONFIG`.

    Raises:
        ValueError: an entry is not ``host:port`` or its host name does not resolve.
    """
    if ":///" in url or url.startswith(("ipv4:", "ipv6:", "unix:")) or "," not in url:
        return url
    addrs, family = [], None
    for entry in (e.strip() for e in url.split(",") if e.strip()):
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"Triton endpoint {entry!r} is not host:port")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)[0][4][0])
            except OSError as exc:
                raise ValueError(f"Triton endpoint {entry!r}: cannot resolve {host!r} ({exc})") from exc
        family = family or f"ipv{ip.version}"
        if f"ipv{ip.version}" != family:
            raise ValueError(f"Triton endpoints mix IPv4 and IPv6 addresses: {url!r}")
        addrs.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    return f"{family}:{','.join(addrs)}"


def grpc_channel_args() -> list[tuple[str, object]]:
    """tritonclient's own channel defaults plus round-robin balancing and one retry on
    UNAVAILABLE (:data:`GRPC_SERVICE_CONFIG`)."""
    from tritonclient.grpc import KeepAliveOptions
    from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

    ka = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", ka.keepalive_time_ms), ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
            ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(GRPC_SERVICE_CONFIG)),
            ("grpc.per_rpc_retry_buffer_size", GRPC_RETRY_BUFFER), ("grpc.retry_buffer_size", 4 * GRPC_RETRY_BUFFER),
            # a restarted server is found again within a second or two, not after minutes of backoff
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)]


def _swap_request(target: ImageLike, source_latent: np.ndarray, reference_embedding: np.ndarray | None,
                  opts: dict, source_embedding: np.ndarray | None = None) -> dict[str, np.ndarray]:
    if opts.get("selection") in ("similar", "pairs") and reference_embedding is None:
        raise InvalidInput(f"selection {opts['selection']!r} needs reference_embedding")
    return swap_arrays(target, source_latent, reference_embedding, options_json(**opts), source_embedding)


def _deadline_kwargs(protocol: str, seconds: float) -> dict:
    """The request's deadline, sent twice: as Triton's request ``timeout`` (microseconds; a queue
    policy with REJECT drops the request, uncomputed, once it has waited that long) and, over
    gRPC, as the call's deadline (when it passes, the call is cancelled and Triton stops the
    ensemble before its next step).

    Raises:
        RequestTimeout: no time is left.
    """
    if seconds <= 0:
        raise RequestTimeout("the request's deadline passed before it could be sent")
    kwargs = {"timeout": max(int(seconds * 1e6), 1)}
    if protocol == "grpc":
        kwargs["client_timeout"] = seconds
    return kwargs


def _overload_pause(err: Exception, attempt: int, waited: float, budget: float) -> float | None:
    """Seconds to sleep before retrying a call refused by a full Triton, or None to give up."""
    if not isinstance(err, Overloaded) or waited >= budget:
        return None
    return min(0.05 * 2 ** attempt, 1.0) * random.uniform(0.5, 1.0)


def _source_face(res: EmbedResult, source_face: str | int) -> Face:
    if not res.faces:
        raise NoFaceError("no face found in the source image")
    if source_face == "largest":
        return res.largest()
    idx = int(source_face)
    if not 0 <= idx < len(res.faces):
        raise InvalidInput(f"source face {idx} is out of range: the source has {len(res.faces)} face(s)")
    return res.faces[idx]


class FaceSwapClient:
    """Blocking client.

    Args:
        url: "host:port" of Triton (HTTP 8000 / gRPC 8001 by default). Over gRPC also a
            comma-separated list of servers, or a target such as ``dns:///triton:8001``: calls
            are spread round-robin and one refused as UNAVAILABLE is retried once on another
            server (see :func:`grpc_target`).
        protocol: "http" or "grpc".
        timeout: seconds to wait for one inference (HTTP network timeout / gRPC deadline).

    Every method raises the typed errors of :mod:`client.errors`.
    """

    def __init__(self, url: str | None = None, protocol: str = "http", timeout: float = 120.0) -> None:
        self.protocol = protocol
        self._mod = _module(protocol, aio=False)
        self.url = url or default_url(protocol)
        self.timeout = timeout
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(self.url, connection_timeout=timeout,
                                                           network_timeout=timeout)
        else:
            self._client = self._mod.InferenceServerClient(grpc_target(self.url), channel_args=grpc_channel_args())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "FaceSwapClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: tuple[str, ...],
               timeout: float | None = None) -> dict[str, np.ndarray]:
        kwargs = _deadline_kwargs(self.protocol, self.timeout if timeout is None else timeout)
        try:
            res = self._client.infer(model, build_inputs(self._mod, arrays),
                                     outputs=[self._mod.InferRequestedOutput(o) for o in outputs], **kwargs)
        except Exception as exc:  # tritonclient raises several transport types; map them all
            raise map_error(exc, self.url) from exc
        return {o: res.as_numpy(o) for o in outputs}

    def health(self) -> dict:
        """{"live": bool, "ready": bool, "models": {name: ready}} (never raises for a down server)."""
        try:
            live = self._client.is_server_live()
            ready = self._client.is_server_ready()
            models = {m: bool(self._client.is_model_ready(m)) for m in REQUIRED_MODELS}
        except Exception as exc:
            return {"live": False, "ready": False, "models": {}, "error": str(map_error(exc, self.url))}
        return {"live": bool(live), "ready": bool(ready) and all(models.values()), "models": models}

    def embed(self, image: ImageLike, *, embeddings: bool = True, timeout: float | None = None) -> EmbedResult:
        """Faces, normed embeddings and swap latents of an image (bytes or path).
        ``embeddings`` False: the faces' boxes, scores and key points only (no ArcFace call;
        ``Face.embedding`` None), e.g. for tracking. ``timeout``: seconds for this call
        (default: the client's)."""
        return parse_embed(self._infer(EMBED_MODEL, embed_arrays(image, embeddings), EMBED_OUTPUTS, timeout))

    def swap(self, target: ImageLike, source_latent: np.ndarray, *, reference_embedding: np.ndarray | None = None,
             source_embedding: np.ndarray | None = None, timeout: float | None = None, **opts: Any) -> SwapResult:
        """Swap faces of ``target`` with the identity ``source_latent`` (float32 [512]).

        ``source_embedding`` (float32 [512], or [K, 512] with K source latents for "pairs"):
        the source's normed ArcFace embedding (``Face.embedding``), for the identity-transfer
        figure of ``SwapResult.face_quality``; without it that figure is None.

        Options (see pipeline.selection.SwapOptions): selection ("all", "largest", "index",
        "similar", "pairs"), face_index, max_faces, output_format ("auto", "jpeg", "png", "webp"),
        quality, det_thresh, threshold (float, -1..1, default 0.3: the cosine a face needs to
        ``reference_embedding`` for "similar"/"pairs"; below it for every face, nothing is
        swapped and ``SwapResult.no_match`` is True), pixel_boost (128, 256, 384, 512: the face
        swapped at that size as (pixel_boost / 128)^2 sub-crops). ``timeout``: seconds for this
        call (default: the client's).
        """
        return parse_swap(self._infer(SWAP_MODEL, _swap_request(target, source_latent, reference_embedding, opts,
                                                                source_embedding), SWAP_OUTPUTS, timeout))

    def swap_at(self, target: ImageLike, source_latent: np.ndarray, kps: np.ndarray, *,
                source_embedding: np.ndarray | None = None, timeout: float | None = None, **opts: Any) -> SwapResult:
        """Swap the faces whose 5 key points (float32 [M, 5, 2], pixels) the caller gives, skipping
        detection (``face_swap_kps``; video uses it with key points smoothed across frames).
        ``source_embedding``: as in :meth:`swap`."""
        return parse_swap_kps(self._infer(SWAP_KPS_MODEL, swap_kps_arrays(target, source_latent, kps,
                                                                           options_json(**opts), source_embedding),
                                          SWAP_KPS_OUTPUTS, timeout), kps)

    def swap_images(self, source: ImageLike, target: ImageLike, source_face: str | int = "largest",
                    **opts: Any) -> SwapResult:
        """Embed the source face (the largest, or the given index), then swap it into the target
        (its latent and, for the quality figures, its embedding).

        Raises:
            NoFaceError: the source image has no face.
        """
        timeout = opts.pop("timeout", None)
        face = _source_face(self.embed(source, timeout=timeout), source_face)
        return self.swap(target, face.latent, source_embedding=face.embedding, timeout=timeout, **opts)

    def statistics(self) -> dict[str, dict]:
        """Triton's per-model inference statistics ({model name: stats dict})."""
        try:
            stats = (self._client.get_inference_statistics(as_json=True) if self.protocol == "grpc"
                     else self._client.get_inference_statistics())
        except Exception as exc:
            raise map_error(exc, self.url) from exc
        return {s["name"]: s for s in stats.get("model_stats", [])}


class AsyncFaceSwapClient:
    """asyncio client with the same methods as :class:`FaceSwapClient` (awaitable).

    Args:
        overload_wait: seconds a call may spend waiting (with jittered backoff, 50 ms to 1 s)
            on a Triton whose queue is full before Overloaded is raised; 0 (the default) raises
            at once. Batch work (video and batch jobs) waits; interactive callers should not.
    """

    def __init__(self, url: str | None = None, protocol: str = "http", timeout: float = 120.0,
                 overload_wait: float = 0.0) -> None:
        self.overload_wait = overload_wait
        self.protocol = protocol
        self._mod = _module(protocol, aio=True)
        self.url = url or default_url(protocol)
        self.timeout = timeout
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(self.url, conn_timeout=timeout)
        else:
            self._client = self._mod.InferenceServerClient(grpc_target(self.url), channel_args=grpc_channel_args())

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncFaceSwapClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: tuple[str, ...],
                     timeout: float | None = None) -> dict[str, np.ndarray]:
        waited, attempt = 0.0, 0
        while True:
            kwargs = _deadline_kwargs(self.protocol, self.timeout if timeout is None else timeout)
            try:
                res = await self._client.infer(model, build_inputs(self._mod, arrays),
                                               outputs=[self._mod.InferRequestedOutput(o) for o in outputs], **kwargs)
            except Exception as exc:
                err = map_error(exc, self.url)
                pause = _overload_pause(err, attempt, waited, self.overload_wait)
                if pause is None:
                    raise err from exc
                await asyncio.sleep(pause)
                waited, attempt = waited + pause, attempt + 1
                continue
            return {o: res.as_numpy(o) for o in outputs}

    async def health(self) -> dict:
        try:
            live = await self._client.is_server_live()
            ready = await self._client.is_server_ready()
            models = {m: bool(await self._client.is_model_ready(m)) for m in REQUIRED_MODELS}
        except Exception as exc:
            return {"live": False, "ready": False, "models": {}, "error": str(map_error(exc, self.url))}
        return {"live": bool(live), "ready": bool(ready) and all(models.values()), "models": models}

    async def model_config(self, model: str) -> dict:
        """A model's config as Triton serves it (JSON dict, protobuf field names in camelCase over
        gRPC, snake_case over HTTP)."""
        try:
            cfg = await self._client.get_model_config(model, **({"as_json": True} if self.protocol == "grpc" else {}))
        except Exception as exc:
            raise map_error(exc, self.url) from exc
        return cfg.get("config", cfg)

    async def model_parameters(self, model: str) -> dict[str, str]:
        """The ``parameters`` of a model's config.pbtxt as {key: string_value}."""
        cfg = await self.model_config(model)
        return {k: v.get("string_value", v.get("stringValue", "")) for k, v in cfg.get("parameters", {}).items()}

    async def instance_count(self, model: str) -> int:
        """How many instances of ``model`` Triton runs (the sum of its instance groups)."""
        cfg = await self.model_config(model)
        groups = cfg.get("instance_group") or cfg.get("instanceGroup") or []
        return sum(int(g.get("count", 1)) for g in groups)

    async def probe_networks(self, models: tuple[str, ...] = ("face_recognizer", "face_swapper")) -> None:
        """Run each network once on zeros of its declared shape (batch 1); raises on failure
        (ModelFailed when an output is not finite)."""
        for model in models:
            try:
                meta = await self._client.get_model_metadata(model, **({"as_json": True} if self.protocol == "grpc"
                                                                       else {}))
            except Exception as exc:
                raise map_error(exc, self.url) from exc
            arrays = {}
            for inp in meta["inputs"]:
                shape = [1 if int(d) < 0 else int(d) for d in inp["shape"]]
                arrays[inp["name"]] = np.zeros(shape, np.float32)
            out = await self._infer(model, arrays, tuple(o["name"] for o in meta["outputs"]))
            bad = [name for name, arr in out.items() if arr is None or not np.isfinite(arr).all()]
            if bad:
                raise ModelFailed(f"{model} returned non-finite values in {bad} for a zero input")

    async def embed(self, image: ImageLike, *, embeddings: bool = True, timeout: float | None = None) -> EmbedResult:
        return parse_embed(await self._infer(EMBED_MODEL, embed_arrays(image, embeddings), EMBED_OUTPUTS, timeout))

    async def swap(self, target: ImageLike, source_latent: np.ndarray, *,
                   reference_embedding: np.ndarray | None = None, source_embedding: np.ndarray | None = None,
                   timeout: float | None = None, **opts: Any) -> SwapResult:
        return parse_swap(await self._infer(SWAP_MODEL, _swap_request(target, source_latent, reference_embedding,
                                                                      opts, source_embedding), SWAP_OUTPUTS, timeout))

    async def swap_at(self, target: ImageLike, source_latent: np.ndarray, kps: np.ndarray, *,
                      source_embedding: np.ndarray | None = None, timeout: float | None = None,
                      **opts: Any) -> SwapResult:
        return parse_swap_kps(await self._infer(SWAP_KPS_MODEL, swap_kps_arrays(target, source_latent, kps,
                                                                                 options_json(**opts),
                                                                                 source_embedding),
                                                SWAP_KPS_OUTPUTS, timeout), kps)

    async def swap_images(self, source: ImageLike, target: ImageLike, source_face: str | int = "largest",
                          **opts: Any) -> SwapResult:
        timeout = opts.pop("timeout", None)
        face = _source_face(await self.embed(source, timeout=timeout), source_face)
        return await self.swap(target, face.latent, source_embedding=face.embedding, timeout=timeout, **opts)
