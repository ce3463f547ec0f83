"""The content gate on the gateway's side (issue 21): its settings, what the pipeline is told,
how a refusal is answered and counted, and its state in /readyz and /metrics.

The detector runs inside the swap ensembles (``content_detector``, ``pipeline.content``); the
gateway owns the policy. On by default; only the server setting ``content_gate`` turns it off
(logged as a warning at start, shown in /readyz and as ``gateway_content_gate`` 0); no request
can. Every call the gateway makes into a swap ensemble carries the policy in its options
(``ContentGate.options``: ``{"content_policy": {...}}`` or ``{"content_policy": "off"}``); the
stage answers with ``{"content_refused": bool, "content_policy": name}`` in its ``result`` JSON
(``pipeline.content.Decision.result_fields``), and ``ContentGate.check`` turns a refusal into
422 ``content_refused`` (a job: its ``error_code``; a live frame: a ``frame_error`` message), naming
the policy and never the classes' scores, and counts it in ``gateway_content_refused_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.core.errors import APIError
from gateway.core.metrics import Metrics
from pipeline.content import ContentPolicy

log = logging.getLogger("gateway.content")
#: The options key the swap ensembles read the policy from (``pipeline.content.policy_from_options``).
OPTIONS_KEY = "content_policy"


class ContentRefused(APIError):
    """422 ``content_refused``: the target shows what the policy refuses; nothing was swapped or kept."""

    def __init__(self, policy: str) -> None:
        super().__init__(422, "content_refused", f"The target was refused by the content policy {policy!r}: "
                         "this service does not swap faces into intimate imagery. Nothing was swapped or kept.")
        self.policy = policy


class ContentGate:
    """The gate's policy from the settings (``content_gate``, ``content_classes``,
    ``content_threshold``), or off.

    Raises:
        ValueError: classes or a threshold the policy refuses (at start, not on a request).
    """

    def __init__(self, settings, metrics: Metrics | None = None) -> None:
        self.policy: ContentPolicy | None = (ContentPolicy.parse(settings.content_classes, settings.content_threshold)
                                             if settings.content_gate else None)
        self.metrics = metrics
        if metrics is not None:
            metrics.content_gate.set(1 if self.enabled else 0)

    @property
    def enabled(self) -> bool:
        return self.policy is not None

    def log_start(self) -> None:
        """One line at start: the policy, or a warning that the gate is off."""
        if self.policy is None:
            log.warning("CONTENT GATE IS OFF (FACESWAP_GATEWAY_CONTENT_GATE=false): targets showing intimate imagery "
                        "are swapped like any other")
        else:
            log.info("content gate on: %s", self.policy.describe())

    def state(self) -> dict:
        """/readyz's ``content_gate``: ``{"enabled", "policy", "classes", "threshold"}`` (None when off)."""
        p = self.policy
        return {"enabled": p is not None, "policy": p.name if p else None, "classes": list(p.refused) if p else None,
                "threshold": p.threshold if p else None}

    def options(self) -> dict:
        """The options entry every swap call carries: ``{"content_policy": {"name", "classes",
        "threshold"}}``, or ``{"content_policy": "off"}``."""
        return {OPTIONS_KEY: self.policy.to_options() if self.policy else "off"}

    def check(self, result: Mapping, route: str) -> None:
        """Raise ``ContentRefused`` (and count it for ``route``) when the stage's ``result`` JSON says
        ``content_refused``; else nothing.

        Args:
            result: the ensemble's ``result`` JSON (parsed).
            route: the route template or kind (``/v1/swap``, ``batch``, ``video``, ``stream``).
        """
        if not result.get("content_refused"):
            return
        policy = str(result.get("content_policy") or (self.policy.name if self.policy else "unknown"))
        self.count(route)
        raise ContentRefused(policy)

    def count(self, route: str) -> None:
        """One refusal more in ``gateway_content_refused_total{route}``."""
        if self.metrics is not None:
            self.metrics.content_refused.labels(route).inc()
