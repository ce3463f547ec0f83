"""The content gate's gateway side without a server: settings, what the stages are told, how a
refusal is answered and counted (the stage's wiring is tested end to end with the flag-all
stand-in where the ensembles run it)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from gateway.core.codes import http_status
from gateway.core.config import Settings
from gateway.core.content import ContentGate, ContentRefused
from gateway.core.metrics import Metrics
from pipeline.content import DEFAULT_REFUSED, DEFAULT_THRESHOLD, ContentPolicy, policy_from_options


def test_on_by_default_with_the_documented_policy():
    m = Metrics()
    gate = ContentGate(Settings(), m)
    assert gate.enabled and gate.state() == {"enabled": True, "policy": "intimate-imagery",
                                             "classes": list(DEFAULT_REFUSED), "threshold": DEFAULT_THRESHOLD}
    assert b"\ngateway_content_gate 1.0\n" in generate_latest(m.registry)
    # what the stage reads back is the same policy
    assert policy_from_options(gate.options()) == ContentPolicy()


def test_a_refusal_is_422_content_refused_naming_the_policy_and_counted_by_route():
    m = Metrics()
    gate = ContentGate(Settings(content_classes="ANUS_EXPOSED", content_threshold=0.8), m)
    gate.check({"faces_found": 1, "content_refused": False, "content_policy": "intimate-imagery"}, "/v1/swap")
    with pytest.raises(ContentRefused) as info:
        gate.check({"content_refused": True, "content_policy": "intimate-imagery"}, "/v1/swap")
    err = info.value
    assert (err.status, err.code) == (422, "content_refused") and http_status("content_refused") == 422
    assert "intimate-imagery" in err.message and "score" not in err.message.lower()
    with pytest.raises(ContentRefused):
        gate.check({"content_refused": True}, "video")
    text = generate_latest(m.registry).decode()
    assert 'gateway_content_refused_total{route="/v1/swap"} 1.0' in text
    assert 'gateway_content_refused_total{route="video"} 1.0' in text


def test_off_only_by_the_setting_and_the_stage_is_told_so():
    m = Metrics()
    gate = ContentGate(Settings(content_gate=False), m)
    assert not gate.enabled and gate.options() == {"content_policy": "off"}
    assert policy_from_options(gate.options()) is None
    assert policy_from_options({}) == ContentPolicy()  # a call that says nothing gets the gate
    assert b"\ngateway_content_gate 0.0\n" in generate_latest(m.registry)


def test_bad_gate_settings_stop_the_start():
    with pytest.raises(ValidationError, match="NOT_A_CLASS"):
        Settings(content_classes="ANUS_EXPOSED,NOT_A_CLASS")
    for bad in (0, 1.01):
        with pytest.raises(ValidationError):
            Settings(content_threshold=bad)
    with pytest.raises(ValueError, match="content_policy"):
        policy_from_options({"content_policy": "on"})
