"""ASGI middleware in front of every route: caller authentication from the headers, then the body.

Signatures (when ``hmac_secret`` is set; ``client.signing`` makes them): the caller sends ``X-Faceswap-Timestamp`` (Unix
seconds, an integer), ``X-Faceswap-Content-SHA256`` (hex SHA-256 of the body; may be left out
for an empty body) and ``X-Faceswap-Signature`` = hex HMAC-SHA256 of
``METHOD + "\\n" + PATH[?QUERY] + "\\n" + TIMESTAMP + "\\n" + CONTENT_SHA256`` (as AWS SigV4
signs ``x-amz-content-sha256``). Everything is checked from the headers alone, before a byte
of the body is read: missing (``missing_signature``), malformed or wrong (``bad_signature``),
more than ``signature_max_age_s`` away from now (``stale_signature``) or already seen
(``replayed_signature``) is 401. The body is then hashed while it streams; a body whose hash
is not the signed one is 401 ``content_sha256_mismatch`` and its partial spool is deleted.
Replay memory: each accepted signature is kept until its timestamp is out of the window on
either side of now (``timestamp + max_age``), at most ``max_remembered`` of them (the oldest
are forgotten first, with a warning: signed traffic that fast needs a shorter window).
Without a secret the gateway serves loopback callers only (403 for others). ``/healthz``,
``/readyz`` and ``/metrics`` are open to probes, and the API documentation (``/docs``,
``/redoc``, ``/openapi.json`` and their assets) to anyone.

Size: a declared ``Content-Length`` over the limit is refused with 413 before the body is
read; a chunked body is counted while it streams and refused as soon as it passes the limit.
The body is spooled (memory up to 1 MiB, then a temporary file) and handed to the app in
1 MiB chunks: memory stays bounded for large uploads.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import json
import logging
import re
import tempfile
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client.signing import sign_digest
from gateway.core.errors import error_response

log = logging.getLogger("gateway.guard")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json")
OPEN_PREFIXES = ("/docs-static/",)  # the API documentation's own assets (no data behind them)
SPOOL_BYTES = 1 << 20
TS_HEADER = "x-faceswap-timestamp"
SIG_HEADER = "x-faceswap-signature"
SHA_HEADER = "x-faceswap-content-sha256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _TooLarge(Exception):
    pass


class RequestGuard:
    """Caller check from the headers, then body limit and body hash (see module docstring)."""

    def __init__(self, app: ASGIApp, max_body: int, secret: str | None, max_age_s: int,
                 large_bodies: dict[str, int] | None = None, max_remembered: int = 100_000) -> None:
        self.app, self.max_body, self.secret, self.max_age_s = app, max_body, secret, max_age_s
        self.large_bodies = large_bodies or {}
        self.max_remembered = max_remembered
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # heap of (forget at, signature)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        signed_sha = None
        if scope["path"] not in OPEN_PATHS and not scope["path"].startswith(OPEN_PREFIXES):
            problem, signed_sha = self._check_caller(scope, headers)
            if problem is not None:
                await self._reject(scope, receive, send, *problem)
                return
        limit = self.large_bodies.get(scope["path"], self.max_body)
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, 413, "payload_too_large",
                               f"The request body is {int(declared)} bytes; the limit is {limit} bytes.")
            return
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            try:
                digest = await self._read(receive, limit, spool)
            except _TooLarge:
                await self._reject(scope, receive, send, 413, "payload_too_large",
                                   f"The request body exceeds the limit of {limit} bytes.")
                return
            if signed_sha is not None and not hmac.compare_digest(digest, signed_sha):
                spool.truncate(0)
                await self._reject(scope, receive, send, 401, "content_sha256_mismatch",
                                   f"The body's SHA-256 is not the signed {SHA_HEADER}.")
                return
            spool.seek(0)
            finished = False

            async def replay() -> Message:
                nonlocal finished
                if finished:
                    return await receive()
                chunk = spool.read(SPOOL_BYTES)
                more = len(chunk) == SPOOL_BYTES
                finished = not more
                return {"type": "http.request", "body": chunk, "more_body": more}

            await self.app(scope, replay, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket is checked on its upgrade request, signed as ``GET <path>`` with an empty
        body. A refused caller gets the socket accepted, one ``{"type": "error", "code",
        "message"}`` text message and a close with 4000 + the HTTP status (4401, 4403), so that
        browsers, which cannot read a refused upgrade's status, can say why."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem, _ = self._check_caller({**scope, "method": "GET"}, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, code, message = problem
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"type": "error", "code": code, "message": message})})
        await send({"type": "websocket.close", "code": 4000 + status, "reason": code})

    async def _read(self, receive: Receive, limit: int, spool) -> str:
        """Copy the body into ``spool``; return its hex SHA-256 (raises _TooLarge past ``limit``)."""
        h, total = hashlib.sha256(), 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise _TooLarge
            h.update(chunk)
            spool.write(chunk)
            if not msg.get("more_body", False):
                break
        return h.hexdigest()

    def _check_caller(self, scope: Scope, headers: dict[str, str]
                      ) -> tuple[tuple[int, str, str] | None, str | None]:
        """(problem or None, the signed body SHA-256 to check the body against)."""
        if not self.secret:
            host = (scope.get("client") or ("", 0))[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host in ("localhost", "testclient")
            if not loopback:
                return (403, "forbidden", "This gateway has no signing secret and serves loopback callers only."), None
            return None, None
        ts, sig = headers.get(TS_HEADER), (headers.get(SIG_HEADER) or "").lower()
        sha = (headers.get(SHA_HEADER) or EMPTY_SHA256).lower()
        if not ts or not sig:
            return (401, "missing_signature", f"Sign the request: send {TS_HEADER}, {SHA_HEADER} and {SIG_HEADER} "
                                              "headers."), None
        if not _TIMESTAMP.match(ts):
            return (401, "bad_signature", f"{TS_HEADER} must be whole Unix seconds."), None
        if not _HEX64.match(sha):
            return (401, "bad_signature", f"{SHA_HEADER} must be the body's hex SHA-256."), None
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
        expected = sign_digest(self.secret, scope["method"], path, ts, sha)
        if not hmac.compare_digest(expected, sig):
            return (401, "bad_signature", "The request signature does not match."), None
        now = time.time()
        age = abs(now - int(ts))
        if age > self.max_age_s:
            return (401, "stale_signature", f"The signed timestamp is {age:.0f} s away from now "
                                            f"(limit {self.max_age_s} s)."), None
        self._forget(now)
        if sig in self._seen:
            return (401, "replayed_signature", "This signed request was already received."), None
        self._remember(sig, int(ts) + self.max_age_s)
        return None, sha

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])

    def _remember(self, sig: str, until: float) -> None:
        if len(self._expiry) >= self.max_remembered:
            self._seen.discard(heapq.heappop(self._expiry)[1])
            log.warning("replay memory full (%d signatures): forgetting the oldest early", self.max_remembered)
        self._seen.add(sig)
        heapq.heappush(self._expiry, (until, sig))

    async def _reject(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        await error_response(status, code, message)(scope, receive, send)
