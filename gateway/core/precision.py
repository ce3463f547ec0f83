"""Which precision each network serves in, read from Triton's metrics (for /readyz and /metrics).

Each CPU-profile network picks its precision when it loads (``pipeline.precision``: a parity
self-check against fp32) and exports it on Triton's Prometheus endpoint as
``faceswap_network_precision{model,precision,engine,chosen_by} 1`` with the probe's figures
(``faceswap_precision_probe{model,precision,engine,figure}``). Triton 2.51's Python backend
cannot attach parameters to responses, so the gateway reads that endpoint: ``triton_metrics_url``
(comma-separated), else ``http://<host>:<gRPC port + 1>/metrics`` for each ``host:port`` of
``triton_url`` (Triton's default ports are gRPC 8001 and metrics 8002; ``make serve`` and the
tests keep that layout). GPU-profile networks (ONNX Runtime / TensorRT backends) export none:
their precision is the one their config names.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

CACHE_S = 30.0


def metrics_urls(triton_url: str, triton_metrics_url: str = "") -> list[str]:
    """Metrics URLs to read: the explicit list, else one per ``host:port`` of ``triton_url``
    (port + 1); none for a ``dns:///`` or other resolver target."""
    if triton_metrics_url.strip():
        return [u.strip() for u in triton_metrics_url.split(",") if u.strip()]
    urls = []
    for target in (t.strip() for t in triton_url.split(",")):
        host, sep, port = target.rpartition(":")
        if not sep or "/" in target or not port.isdigit():
            continue
        urls.append(f"http://{host}:{int(port) + 1}/metrics")
    return urls


def parse(text: str) -> dict[str, dict]:
    """{model: {"precision", "engine", "chosen_by", "probe_seconds", "probe": {precision: {figure:
    value}}}} from a Triton metrics page (empty when no network exports its precision)."""
    nets: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            model = s.labels.get("model")
            if not model:
                continue
            if s.name == "faceswap_network_precision" and s.value == 1:
                nets.setdefault(model, {}).update({k: s.labels.get(k, "") for k in ("precision", "engine",
                                                                                     "chosen_by")})
            elif s.name == "faceswap_precision_probe":
                key = f"{s.labels.get('precision')} ({s.labels.get('engine')})"
                probe = nets.setdefault(model, {}).setdefault("probe", {})
                probe.setdefault(key, {})[s.labels.get("figure", "?")] = round(s.value, 6)
            elif s.name == "faceswap_precision_probe_seconds":
                nets.setdefault(model, {})["probe_seconds"] = round(s.value, 2)
    return {m: v for m, v in nets.items() if "precision" in v}


class PrecisionReport:
    """Reads (and caches for CACHE_S seconds) what each Triton reports; never raises."""

    def __init__(self, triton_url: str, triton_metrics_url: str = "", timeout_s: float = 2.0) -> None:
        self.urls = metrics_urls(triton_url, triton_metrics_url)
        self.timeout_s = timeout_s
        self._cache: tuple[float, dict] | None = None

    async def read(self) -> dict[str, dict]:
        """{metrics URL: parse() of it, or {"error": why}} in the order of ``urls``; {} when no
        URL is known."""
        if self._cache and time.monotonic() - self._cache[0] < CACHE_S:
            return self._cache[1]
        out: dict[str, dict] = {}
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            async def one(url: str) -> None:
                try:
                    r = await client.get(url)
                    r.raise_for_status()
                    out[url] = parse(r.text)
                except (httpx.HTTPError, ValueError) as exc:
                    out[url] = {"error": f"metrics unreadable: {type(exc).__name__}"}

            await asyncio.gather(*(one(u) for u in self.urls))
        out = {u: out[u] for u in self.urls}
        if all("error" not in v for v in out.values()):
            self._cache = (time.monotonic(), out)
        return out


def public(report: dict[str, dict], figures: bool) -> dict[str, dict]:
    """The report for /readyz: keyed ``triton-<i>`` (the order of the metrics URLs; a public
    health body names no address), the probe's figures only when ``figures``."""
    out = {}
    for i, nets in enumerate(report.values()):
        if "error" in nets:
            out[f"triton-{i}"] = nets
        else:
            out[f"triton-{i}"] = {m: {k: v for k, v in net.items() if figures or k != "probe"}
                                  for m, net in nets.items()}
    return out
