"""ASGI middleware in front of every route: body size limit, then caller authentication.

Size: a declared ``Content-Length`` over the limit is refused with 413 before a byte of the
body is read; a chunked body is counted while it streams and refused as soon as it passes
the limit. The body is spooled (memory up to 1 MiB, then a temporary file) while its SHA-256
is computed, then handed to the app in 1 MiB chunks: memory stays bounded for large uploads.

Signatures (when ``hmac_secret`` is set): the caller sends ``X-Faceswap-Timestamp`` (Unix
seconds) and ``X-Faceswap-Signature`` = hex HMAC-SHA256 of
``METHOD + "\\n" + PATH[?QUERY] + "\\n" + TIMESTAMP + "\\n" + hex SHA-256 of the body``.
Missing, wrong, stale (more than ``signature_max_age_s`` away from now) or replayed (the
same signature seen within that window) signatures get 401. Without a secret the gateway
serves loopback callers only (403 for others). ``/healthz``, ``/readyz`` and ``/metrics``
are open to probes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import tempfile
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.errors import error_response

OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
SPOOL_BYTES = 1 << 20
TS_HEADER = "x-faceswap-timestamp"
SIG_HEADER = "x-faceswap-signature"


def sign(secret: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The signature a caller must send (hex HMAC-SHA256; see the module docstring)."""
    return sign_digest(secret, method, path, timestamp, hashlib.sha256(body).hexdigest())


def sign_digest(secret: str, method: str, path: str, timestamp: str, body_sha256: str) -> str:
    msg = f"{method.upper()}\n{path}\n{timestamp}\n{body_sha256}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


class _TooLarge(Exception):
    pass


class RequestGuard:
    """Body limit + HMAC check (see module docstring)."""

    def __init__(self, app: ASGIApp, max_body: int, secret: str | None, max_age_s: int,
                 large_bodies: dict[str, int] | None = None) -> None:
        self.app, self.max_body, self.secret, self.max_age_s = app, max_body, secret, max_age_s
        self.large_bodies = large_bodies or {}
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
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
            path = scope["path"]
            if path not in OPEN_PATHS:
                problem = self._check_caller(scope, headers, digest)
                if problem is not None:
                    status, code, message = problem
                    await self._reject(scope, receive, send, status, code, message)
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

    def _check_caller(self, scope: Scope, headers: dict[str, str], body_sha256: str
                      ) -> tuple[int, str, str] | None:
        if not self.secret:
            host = (scope.get("client") or ("", 0))[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host in ("localhost", "testclient")
            if not loopback:
                return 403, "forbidden", "This gateway has no signing secret and serves loopback callers only."
            return None
        ts, sig = headers.get(TS_HEADER), headers.get(SIG_HEADER)
        if not ts or not sig:
            return 401, "missing_signature", f"Sign the request: send {TS_HEADER} and {SIG_HEADER} headers."
        try:
            age = abs(time.time() - float(ts))
        except ValueError:
            return 401, "bad_signature", f"{TS_HEADER} must be Unix seconds."
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
        expected = sign_digest(self.secret, scope["method"], path, ts, body_sha256)
        if not hmac.compare_digest(expected, sig.lower()):
            return 401, "bad_signature", "The request signature does not match."
        if age > self.max_age_s:
            return 401, "stale_signature", (f"The signed timestamp is {age:.0f} s away from now "
                                            f"(limit {self.max_age_s} s).")
        now = time.time()
        while self._seen and next(iter(self._seen.values())) < now - self.max_age_s:
            self._seen.popitem(last=False)
        if sig.lower() in self._seen:
            return 401, "replayed_signature", "This signed request was already received."
        self._seen[sig.lower()] = now
        return None

    async def _reject(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        await error_response(status, code, message)(scope, receive, send)
