"""The gateway's clients agree with its OpenAPI document: every route, parameter and field that
the Worker and the Python client use exists in ``/openapi.json`` with the same type.

The Worker's calls are the table its code builds them from (``worker/src/api.json``); the
Python client (``client.live``, through the ``faceswap live`` command) is watched on the wire
by a WebSocket listener in this process. The document is built in-process from the app.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from gateway.core.config import Settings
from gateway.main import create_app
from repository.layout import ROOT

WORKER_API = json.loads((ROOT / "worker" / "src" / "api.json").read_text())
FIXTURES = ROOT / "tests" / "fixtures" / "formats"
PY_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    return create_app(Settings(store_path=tmp / "faces.sqlite3", jobs_dir=tmp / "jobs",
                               triton_url="127.0.0.1:1")).openapi()


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def types(spec: dict, schema: dict) -> set[str]:
    """The types a schema admits ("binary" for a file), through anyOf / oneOf / allOf."""
    schema = resolve(spec, schema)
    found = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for alt in schema.get(key, []):
            found |= types(spec, alt)
    if schema.get("contentMediaType") == "application/octet-stream":
        found.add("binary")
    elif "type" in schema:
        found |= {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
    if "integer" in found:
        found.add("number")
    return found


def operation(spec: dict, method: str, path: str) -> dict:
    op = spec["paths"].get(path, {}).get(method.lower())
    assert op is not None, f"{method} {path} is not in /openapi.json"
    return op


@pytest.mark.parametrize("call", sorted(WORKER_API))
def test_every_gateway_call_of_the_worker_is_in_the_document(spec, call):
    c = WORKER_API[call]
    op = operation(spec, c["method"], c["path"])
    where = f"worker/src/api.json {call} ({c['method']} {c['path']})"
    if "form" in c:
        body = resolve(spec, op["requestBody"]["content"]["multipart/form-data"]["schema"])
        for name, kind in c["form"].items():
            assert name in body["properties"], f"{where}: the form has no field {name}"
            assert kind in types(spec, body["properties"][name]), f"{where}: {name} is not {kind}"
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
    for name, kind in c.get("query", {}).items():
        assert name in params, f"{where}: no query parameter {name}"
        assert kind in types(spec, params[name]["schema"]), f"{where}: {name} is not {kind}"
    if "reads" in c:
        ok = next(r for s, r in op["responses"].items() if s.startswith("2") and "content" in r)
        answer = resolve(spec, ok["content"]["application/json"]["schema"])
        for name, kind in c["reads"].items():
            assert name in answer["properties"], f"{where}: the answer has no field {name}"
            assert kind in types(spec, answer["properties"][name]), f"{where}: {name} is not {kind}"


def test_the_worker_calls_the_gateway_only_through_its_table():
    """No path of the gateway is spelled in the Worker's code outside src/api.json."""
    literal = re.compile(r"""["'`]/v1/""")
    for ts in sorted((ROOT / "worker" / "src").glob("*.ts")):
        for n, line in enumerate(ts.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            assert not (literal.search(code) and not code.lstrip().startswith("*")), \
                f"{ts.name}:{n} spells a gateway path; use apiPath() and src/api.json: {line.strip()}"


def test_the_python_live_client_sends_what_the_document_declares(spec):
    """``faceswap live`` against a listener that records the upgrade request and the first
    message, then refuses the stream: the path, its query and the first message's fields."""
    from websockets.asyncio.server import serve

    from client.cli import app

    seen: dict = {}

    async def handler(ws):
        seen["path"] = ws.request.path
        seen["first"] = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "error", "code": "bad_request", "message": "recorded"}))
        await ws.close(4400)

    async def run():
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            return await asyncio.to_thread(CliRunner().invoke, app, [
                "live", "--source", str(FIXTURES / "image.jpg"), "--input", str(FIXTURES / "video.mp4"),
                "--gateway", f"ws://127.0.0.1:{port}", "--selection", "all", "--max-fps", "12",
                "--no-smoothing", "--detect-every", "2"])

    result = asyncio.run(run())
    assert "first" in seen, result.output
    url = urlsplit(seen["path"])
    op = operation(spec, "GET", url.path)
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
    for name in parse_qs(url.query):
        assert name in params and "string" in types(spec, params[name]["schema"]), name
    config = resolve(spec, op["x-first-message"])
    assert set(seen["first"]) >= {"source", "selection", "max_fps", "smoothing", "detect_every"}
    for name, value in seen["first"].items():
        assert name in config["properties"], f"client.live sends {name}, which StreamConfig does not declare"
        assert PY_TYPES[type(value)] in types(spec, config["properties"][name]), (name, value)
