"""The media URL allow-list: where a job may GET its input from and PUT its result to.

URLs are compared as URLs, never as strings (issue 18: ``/media/../secret`` and
``http://allowed@other:9001/`` passed a string prefix). Both the operator's prefixes and each
caller's URL are parsed and normalised the same way (RFC 3986 section 6: lower-case scheme and
host, default port made explicit, dot segments removed), then compared component by component:
scheme, host and port equal, and the URL's path under the prefix's path (whole segments:
``/media`` admits ``/media/x``, not ``/media-old/x``). The URL that is then fetched is the
normalised one, so what was checked is what is used.

Refused outright (a caller's URL: 422 ``media_url_invalid``; a prefix: a settings error at start):
schemes other than http/https, userinfo (``user@``), backslashes, control characters and spaces,
percent-encoded dots, slashes and backslashes in the path (``%2e``, ``%2f``, ``%5c``: servers
decode them differently), hosts that are not a DNS name or a canonical IP literal (integer and
octal IPv4 forms such as ``2130706433`` or ``0177.1``), malformed ports, and fragments. A prefix
must name a path: ``https://media.example.com/`` allows the whole origin (written out on
purpose); ``https://media.example.com`` alone is refused, as a string prefix without a path also
matched ``https://media.example.com.evil.net``.

Names are not resolved: ``localhost`` and ``127.0.0.1`` are different hosts to this check, so an
allow-list naming one admits no other spelling of it. Redirects are never followed by the fetch
(:func:`gateway.storage.media.fetch_url`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_BAD_ESCAPES = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


class URLRefused(ValueError):
    """A URL that cannot be compared safely; ``str()`` says why, without echoing query strings."""


@dataclass(frozen=True)
class MediaURL:
    """A parsed, normalised http(s) URL.

    Attributes:
        scheme: ``http`` or ``https``.
        host: lower-case DNS name without a trailing dot, or a canonical IP literal (IPv6 without
            brackets).
        port: explicit or the scheme's default (80, 443).
        path: absolute path with dot segments removed (``/`` at least); percent-escapes kept.
        query: the query string as given (presigned signatures live there), or ``""``.
    """

    scheme: str
    host: str
    port: int
    path: str
    query: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"
        return urlunsplit((self.scheme, netloc, self.path, self.query, ""))

    def under(self, prefix: MediaURL) -> bool:
        """True when this URL is on the prefix's origin and its path lies under the prefix's path
        (whole segments)."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
        return self.path == prefix.path or self.path.startswith(base)


def _host(raw: str | None) -> str:
    if not raw:
        raise URLRefused("it has no host")
    try:
        ip = ipaddress.ip_address(raw.split("%", 1)[0] if ":" in raw else raw)
    except ValueError:
        ip = None
    if ip is not None:
        if "%" in raw:
            raise URLRefused("IPv6 zone ids are not allowed")
        return ip.compressed
    host = raw.lower().rstrip(".")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise URLRefused("its host is not a DNS name or an IP address")
    if all(re.fullmatch(r"0x[0-9a-f]*|[0-9]+", label) for label in labels):
        # 2130706433, 0x7f.1, 0177.0.0.1, 127.1: IPv4 forms that resolvers accept and humans misread
        raise URLRefused("its host is a non-standard IPv4 form; write the address as a.b.c.d")
    return host


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path."""
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    trailing = path.endswith(("/.", "/..")) and (not out or out[-1] != "")
    return "/" + "/".join(out) + ("/" if trailing else "")


def parse(url: str, *, what: str = "the URL") -> MediaURL:
    """Parse and normalise an http(s) URL.

    Raises:
        URLRefused: the URL is malformed or uses a form refused here (see the module's text).
    """
    if not isinstance(url, str) or not url:
        raise URLRefused(f"{what} is empty")
    if len(url) > 8192:
        raise URLRefused(f"{what} is longer than 8192 characters")
    if _BAD_CHARS.search(url):
        raise URLRefused(f"{what} contains a backslash, a space or a control character")
    if not url.isascii():
        raise URLRefused(f"{what} contains non-ASCII characters (percent-encode them; IDN hosts as punycode)")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise URLRefused(f"{what} has a malformed host or port") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise URLRefused(f"{what} must be http or https")
    if "@" in parts.netloc:
        raise URLRefused(f"{what} must not carry a user name or password (user@host)")
    if parts.fragment or url.endswith("#"):
        raise URLRefused(f"{what} must not have a fragment (#...)")
    try:
        host = _host(parts.hostname)
    except URLRefused as exc:
        raise URLRefused(f"{what}: {exc}") from None
    if port == 0:
        raise URLRefused(f"{what} has a malformed host or port")
    if _BAD_ESCAPES.search(parts.path):
        raise URLRefused(f"{what} has a percent-encoded dot, slash or NUL in its path")
    if _ESCAPE.search(parts.path) or _ESCAPE.search(parts.query):
        raise URLRefused(f"{what} has a malformed percent-escape")
    path = _remove_dot_segments(parts.path or "/") if parts.path else ""
    return MediaURL(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], path, parts.query)


class MediaURLPolicy:
    """The operator's allow-list (setting ``media_url_prefixes``), parsed once at start.

    Args:
        prefixes: comma-separated URLs, each with a path (``/`` for a whole origin).

    Raises:
        ValueError: a prefix is malformed, has a query or lacks a path (the message names it).
    """

    def __init__(self, prefixes: str | list[str]) -> None:
        items = prefixes.split(",") if isinstance(prefixes, str) else prefixes
        self.prefixes: list[MediaURL] = []
        for raw in (p.strip() for p in items):
            if not raw:
                continue
            try:
                p = parse(raw, what=f"media URL prefix {raw!r}")
            except URLRefused as exc:
                raise ValueError(str(exc)) from None
            if not p.path:
                raise ValueError(f"media URL prefix {raw!r} has no path: write {raw}/ to allow the whole origin, "
                                 f"or name the folder (e.g. {raw}/media/)")
            if p.query:
                raise ValueError(f"media URL prefix {raw!r} must not have a query string")
            self.prefixes.append(p)

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def check(self, url: str, field: str) -> str:
        """The normalised URL to fetch, if ``url`` lies under one of the prefixes.

        Raises:
            URLRefused: malformed or refused form (422 ``media_url_invalid``).
            PermissionError: well-formed but not under any prefix (422 ``media_url_not_allowed``).
        """
        u = parse(url, what=field)
        if not u.path:
            u = MediaURL(u.scheme, u.host, u.port, "/", u.query)
        if not any(u.under(p) for p in self.prefixes):
            raise PermissionError(field)
        return str(u)
