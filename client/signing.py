"""Request signing for the gateway (its ``gateway.core.guard`` checks what these make).

A signed call sends ``X-Faceswap-Timestamp`` (Unix seconds, an integer),
``X-Faceswap-Content-SHA256`` (hex SHA-256 of the body) and ``X-Faceswap-Signature`` = hex
HMAC-SHA256 of ``METHOD + "\\n" + PATH[?QUERY] + "\\n" + TIMESTAMP + "\\n" + CONTENT_SHA256``
with the shared secret. A WebSocket is signed as ``GET <path>`` with an empty body.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The signature a caller must send (hex HMAC-SHA256; see the module docstring)."""
    return sign_digest(secret, method, path, timestamp, hashlib.sha256(body).hexdigest())


def sign_digest(secret: str, method: str, path: str, timestamp: str, body_sha256: str) -> str:
    """The signature of a body known by its hex SHA-256 (a streamed body is hashed as it passes)."""
    msg = f"{method.upper()}\n{path}\n{timestamp}\n{body_sha256}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def signed_headers(secret: str, method: str, path: str, body: bytes = b"", timestamp: int | None = None
                   ) -> dict[str, str]:
    """The three headers of a signed call (``path`` with its ``?query`` if any)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hashlib.sha256(body).hexdigest()
    return {"X-Faceswap-Timestamp": ts, "X-Faceswap-Content-SHA256": digest,
            "X-Faceswap-Signature": sign_digest(secret, method, path, ts, digest)}
