"""Error mapping: a model's own failure is the server's fault (502 model_failed), never a 422."""

from __future__ import annotations

import sys
import types
import zipfile

import pytest
from tritonclient.utils import InferenceServerException

from client import InvalidInput, ModelFailed, Overloaded, RequestTimeout
from client.core import map_error
from repository.layout import ROOT


class _FakeError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message, code=1):
        self.msg, self.c = message, code

    def message(self):
        return self.msg

    def code(self):
        return self.c


@pytest.fixture
def glue(monkeypatch):
    """model_repository.glue with a stand-in for the Python backend's triton_python_backend_utils
    (which exists only inside Triton's stub process)."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TritonError = _FakeError
    fake.InferenceResponse = lambda output_tensors=None, error=None: types.SimpleNamespace(
        outputs=output_tensors, error=error)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.delitem(sys.modules, "model_repository.glue", raising=False)
    import model_repository.glue as g

    return g


def test_stage_errors_are_classified(glue):
    def fail(exc):
        def handler(_):
            raise exc
        return glue.respond([object()], handler)[0].error

    assert fail(ValueError("bad option")).c == _FakeError.INVALID_ARG
    internal = fail(glue.StageError("face_swapper: stub crashed", _FakeError.INTERNAL))
    assert internal.c == _FakeError.INTERNAL and internal.msg.startswith("model_failed: ")
    assert fail(KeyError("x")).c == _FakeError.INTERNAL
    assert fail(glue.StageError("face_swapper: Exceeds maximum queue size", _FakeError.UNAVAILABLE)).c == \
        _FakeError.UNAVAILABLE
    ok = glue.respond([object()], lambda _: ["tensor"])[0]
    assert ok.outputs == ["tensor"] and ok.error is None


def test_bls_memory_is_device_or_host_and_says_where_outputs_are_asked_for(glue, monkeypatch):
    """FACESWAP_BLS_MEMORY: the torch profile's fallback where CUDA IPC between stubs fails."""
    import torch

    monkeypatch.delenv(glue.BLS_MEMORY_ENV, raising=False)
    assert glue.bls_memory() == "device"
    monkeypatch.setenv(glue.BLS_MEMORY_ENV, " Host ")
    assert glue.bls_memory() == "host"
    monkeypatch.setenv(glue.BLS_MEMORY_ENV, "gpu")
    with pytest.raises(ValueError, match="FACESWAP_BLS_MEMORY='gpu': expected device or host"):
        glue.bls_memory()
    cuda1, cpu = torch.device("cuda:1"), torch.device("cpu")
    assert glue.bls_placement("device", cuda1) == ("gpu", 1)
    assert glue.bls_placement("device", torch.device("cuda")) == ("gpu", 0)
    assert glue.bls_placement("host", cuda1) == ("cpu", 0)
    assert glue.bls_placement("device", cpu) == glue.bls_placement("host", cpu) == ("cpu", 0)


def test_client_maps_triton_statuses():
    def exc(status, msg):
        return map_error(InferenceServerException(msg, status=status))

    assert isinstance(exc("StatusCode.INTERNAL", "in ensemble 'face_swap', model_failed: KeyError"), ModelFailed)
    assert isinstance(exc("StatusCode.UNAVAILABLE", "Exceeds maximum queue size"), Overloaded)
    assert isinstance(exc("StatusCode.UNAVAILABLE", "Request timeout expired"), RequestTimeout)
    assert isinstance(exc("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"), RequestTimeout)
    assert isinstance(exc("StatusCode.INVALID_ARGUMENT", "corrupt image"), InvalidInput)


def test_gateway_maps_model_failure_to_502_and_overload_to_503():
    from gateway.core.config import Settings
    from gateway.core.errors import from_triton

    s = Settings()
    err = from_triton(ModelFailed("face_paster: model_failed: boom"), s)
    assert (err.status, err.code) == (502, "model_failed") and "boom" not in err.message
    err = from_triton(Overloaded("full"), s)
    assert (err.status, err.code, err.headers["Retry-After"]) == (503, "overloaded", str(s.overload_retry_after_s))
    assert from_triton(RequestTimeout("late"), s).code == "deadline_exceeded"


def test_replay_memory_lasts_as_long_as_a_signature_is_valid(monkeypatch, tmp_path):
    """A future-dated signature stays remembered until it is stale (not 'max_age after arrival')."""
    from fastapi.testclient import TestClient

    import gateway.core.guard as guard
    from client.signing import signed_headers
    from gateway.core.config import Settings
    from gateway.main import create_app

    now = [1_800_000_000.0]
    monkeypatch.setattr(guard.time, "time", lambda: now[0])
    app = create_app(Settings(hmac_secret="s3cret", store_path=tmp_path / "f.sqlite3", jobs_dir=tmp_path / "jobs",
                              triton_url="127.0.0.1:1", signature_max_age_s=300))
    path = "/v1/faces/" + "0" * 32
    headers = signed_headers("s3cret", "GET", path, timestamp=int(now[0]) + 250)
    with TestClient(app) as c:
        assert c.get(path, headers=headers).status_code == 404  # accepted: no such face
        now[0] += 310  # the old memory forgot it here; the signature is still valid for 240 s
        r = c.get(path, headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, "replayed_signature")
        now[0] += 250  # now past its validity: stale, never accepted again
        assert c.get(path, headers=headers).json()["code"] == "stale_signature"


def test_replay_memory_is_bounded():
    import gateway.core.guard as guard

    g = guard.RequestGuard(lambda *a: None, 1000, "k", 300, max_remembered=3)
    for i in range(5):
        g._remember(f"sig{i}", 1e12 + i)
    assert len(g._seen) == len(g._expiry) == 3 and "sig4" in g._seen and "sig0" not in g._seen


def _codes_in_source() -> dict[str, set[str]]:
    """Every error code the gateway, its jobs and streams can answer with, found in the source:
    arguments of the error types and functions, ``code=`` / ``error_code=`` literals, the code
    tables of the HTTP handler and the signature guard, ``job_<status>`` answers."""
    import re

    pat = re.compile(r'(?:APIError|JobFailed|MediaError|StreamError|error_response|LimitError|_reject|_deny)'
                     r'\(\s*(?:[\w.]+,\s*)?(?:\d+,\s*)?f?"([a-z][a-z0-9_]+)"'
                     r'|\b(?:error_)?code"?\s*[=:]\s*"([a-z][a-z0-9_]+)"|codes\s*=\s*\{([^}]*)\}'
                     r'|\(\s*\d{3},\s*"([a-z][a-z0-9_]+)"')
    found: dict[str, set[str]] = {}
    root = ROOT
    for p in [*root.glob("gateway/**/*.py"), *root.glob("client/*.py")]:
        text = p.read_text()
        for m in pat.finditer(text):
            codes = re.findall(r'"([a-z][a-z_]+)"', m.group(3)) if m.group(3) else [m.group(1) or m.group(2)
                                                                                   or m.group(4)]
            for c in codes:
                found.setdefault(c, set()).add(p.name)
        if re.search(r'f"job_\{job\.status\}"', text):
            found.setdefault("job_failed", set()).add(p.name)
            found.setdefault("job_cancelled", set()).add(p.name)
    return found


def test_every_error_code_is_documented_and_the_docs_table_is_generated():
    from gateway.core.codes import ERROR_CODES, markdown
    from gateway.jobs.execute import failure_code

    found = _codes_in_source()
    client_only = {"closed"}  # client.live's own StreamClosed code, never sent by the server
    missing = sorted(set(found) - set(ERROR_CODES) - client_only)
    assert not missing, {c: found[c] for c in missing}
    for c in ("missing_signature", "storage_unavailable", "internal_error", "http_error", "media_url_invalid"):
        assert c in found or c in ERROR_CODES, c
    # a job never ends with a null code
    assert failure_code(RuntimeError("boom")) == "internal_error"
    assert failure_code(zipfile.BadZipFile("x")) == "corrupt_archive"
    doc = (ROOT / "docs" / "gateway.md").read_text()
    block = doc.split("<!-- error-codes:start -->", 1)[1].split("<!-- error-codes:end -->", 1)[0].strip()
    assert block == markdown(), "docs/gateway.md's table of error codes is stale: paste `python -m gateway.core.codes`"


def test_frames_on_the_device_without_pytorch_say_what_to_install(glue, monkeypatch, models, tmp_path):
    """A gpu-trt repository built with --pixels device, served by a Triton image without PyTorch:
    face_swap refuses to load with the remedy, not a bare ImportError."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from repository.generate import build

    build(tmp_path / "repo", "gpu-trt", models, "device")
    cfg = text_format.Parse((tmp_path / "repo" / "face_swap" / "config.pbtxt").read_text(), mc.ModelConfig())
    glue.pb_utils.Logger = types.SimpleNamespace(log_info=print, log_warn=print)
    monkeypatch.delitem(sys.modules, "model_repository.frame_swapper", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    from model_repository.frame_swapper import FrameSwapper

    args = {"model_name": "face_swap", "model_config": json_format.MessageToJson(cfg, preserving_proto_field_name=True)}
    with pytest.raises(RuntimeError, match="face_swap: pixels=device keeps frames on the GPU with PyTorch, which "
                                           "this server's Python lacks: pip install torch torchvision"):
        FrameSwapper().initialize(args)
