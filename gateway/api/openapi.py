"""The OpenAPI document, made exact: what FastAPI generates from the routes, then what it cannot
say by itself. Clients generate code from ``/openapi.json``, so this document is the contract;
``tests/server/test_openapi_contract.py`` fuzzes a real gateway against it (Schemathesis) and
``tests/unit/test_api_contract.py`` checks the Python client and the Worker against it.

What this module adds or corrects:

- every error answer's body is ``ErrorBody``, its ``code`` an ``enum`` of the codes that route
  can answer with that status (``gateway.core.codes``): the route's own (``errors(...)`` in its
  declaration) and those every route shares (signatures, body size, validation, the last-resort
  500), never FastAPI's ``HTTPValidationError``, which this gateway does not send;
- multipart forms: a file field cannot be empty (``minLength: 1``, else 400 ``empty_file``) and
  no field is ``null`` (a form has no null: leave the field out); unknown fields are ignored;
- ``X-Request-Timeout`` on the routes that run the pipeline;
- links from ``POST /v1/faces`` to the face it registered and from ``POST /v1/jobs`` to the job;
- the live stream's first message (``StreamConfig``) as a schema, named by ``x-first-message``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gateway.core.codes import ERROR_CODES, http_status
from gateway.core.guard import OPEN_PATHS
from gateway.core.stream import StreamConfig

ERROR_BODY = "#/components/schemas/ErrorBody"
#: Codes of the request guard (gateway.core.guard): every route but the open ones, when a secret is set.
SIGNATURE_CODES = ("missing_signature", "bad_signature", "stale_signature", "replayed_signature",
                   "content_sha256_mismatch", "forbidden")
#: Routes whose work has a deadline (``X-Request-Timeout``): they call Triton.
DEADLINE_ROUTES = {("post", "/v1/faces"), ("post", "/v1/swap"), ("post", "/v1/jobs")}
POLICY = """

**The contract.** This document is exact: every route, field, status and error code the gateway
answers is here, and CI fuzzes a running gateway against it. Every error body is
`{"code", "message"}` (`ErrorBody`); the codes each status can carry are listed per route.
Multipart forms: a file field cannot be empty (400 `empty_file`), a field is never `null`
(leave it out for its default; an empty text field is the same as leaving it out), and
**unknown form fields and query parameters are ignored**.
Every 405 carries `Allow`. With a signing secret, every route but `/healthz`, `/readyz` and
`/metrics` needs the three `X-Faceswap-*` headers (401 otherwise)."""


def _links() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(method, path, status) of a creating route -> its OpenAPI links."""
    def link(op: tuple[str, str], param: str, pointer: str, text: str) -> dict[str, Any]:
        return {"x-operation": op, "parameters": {param: f"$response.body#{pointer}"}, "description": text}

    face = "/v1/faces/{face_id}"
    job = "/v1/jobs/{job_id}"
    return {
        ("post", "/v1/faces", "200"): {
            "GetFace": link(("get", face), "face_id", "/faces/0/id", "Read the first face registered"),
            "DeleteFace": link(("delete", face), "face_id", "/faces/0/id", "Forget the first face registered"),
        },
        ("post", "/v1/jobs", "202"): {
            "GetJob": link(("get", job), "job_id", "/id", "The job's status and progress"),
            "GetJobResult": link(("get", job + "/result"), "job_id", "/id", "The job's result once done"),
            "DeleteJob": link(("delete", job), "job_id", "/id", "Cancel the job, or delete it once finished"),
        },
    }


def _error_response(codes: list[str]) -> dict[str, Any]:
    description = "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in codes)
    schema = {"allOf": [{"$ref": ERROR_BODY}], "properties": {"code": {"enum": codes}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _shared_codes(method: str, path: str, op: dict[str, Any]) -> list[str]:
    """The codes an operation can answer whatever it does (the guard, validation, the last resort)."""
    codes = [] if path in OPEN_PATHS else list(SIGNATURE_CODES)
    codes += ["payload_too_large", "invalid_request", "internal_error"]  # 422: X-Request-Timeout on any route
    if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
        codes.append("invalid_form")
    if any(p["in"] == "path" for p in op.get("parameters", [])):
        codes.append("not_found")  # an id with a "/" in it names no route
    return codes


def _no_null(schema: dict[str, Any]) -> None:
    """A form field or a parameter has no null: ``anyOf [X, null]`` becomes X."""
    alts = schema.get("anyOf")
    if alts and any(a.get("type") == "null" for a in alts):
        rest = [a for a in alts if a.get("type") != "null"]
        del schema["anyOf"]
        schema.update(rest[0] if len(rest) == 1 else {"anyOf": rest})


#: What a value must be, as opposed to what documents it (title, description, default, examples).
CONSTRAINTS = ("type", "enum", "const", "anyOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
               "minLength", "maxLength", "pattern", "format", "contentMediaType", "contentSchema", "items", "minItems")


def _form(schema: dict[str, Any]) -> None:
    """A multipart body: no nulls, no empty files; an empty text field is a field left out, so
    an optional one also takes ``""``."""
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        _no_null(prop)
        is_file = "application/octet-stream" in (prop.get("contentMediaType"), prop.get("items", {}).get(
            "contentMediaType"))
        if name not in required and not is_file and not (prop.get("type") == "string" and "enum" not in prop):
            core = {k: prop.pop(k) for k in CONSTRAINTS if k in prop}
            prop["anyOf"] = [core, {"const": ""}]
        files = [prop] + ([prop["items"]] if prop.get("type") == "array" and "items" in prop else [])
        for f in files:
            if f.get("contentMediaType") == "application/octet-stream":  # a file
                f["minLength"] = 1  # 400 empty_file
        if prop.get("type") == "array":
            prop["minItems"] = 1


def _errors(spec: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> None:
    responses = op["responses"]
    own: dict[str, list[str]] = {}
    for status, resp in list(responses.items()):
        if "x-codes" in resp:
            own[status] = resp.pop("x-codes")
        elif status == "422" and "HTTPValidationError" in str(resp):
            del responses[status]  # FastAPI's own; validation errors are ErrorBody invalid_request
    for code in _shared_codes(method, path, op):
        own.setdefault(str(http_status(code)), []).append(code)
    for status, codes in own.items():
        headers = responses.get(status, {}).get("headers", {})
        if status == "503":
            headers["Retry-After"] = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        responses[status] = {**_error_response(list(dict.fromkeys(codes))), **({"headers": headers} if headers else {})}
    op["responses"] = dict(sorted(responses.items()))


def exact(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (FastAPI's document) made exact, in place (see the module docstring)."""
    spec["info"]["description"] += POLICY
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    ids = {(m, p): op["operationId"] for p, ops in spec["paths"].items() for m, op in ops.items()}
    links = _links()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                _no_null(param["schema"])
            body = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if body:
                op["requestBody"]["required"] = True  # every form needs a field (a file, a medium)
                rules = dict(body["schema"])
                ref = rules.pop("$ref").rsplit("/", 1)[1]
                body["schema"] = {"$ref": f"#/components/schemas/{ref}"}
                schemas[ref].update(rules)  # the form's rules across fields (gateway.api.forms.body_rules)
                _form(schemas[ref])
            if (method, path) in DEADLINE_ROUTES:
                op.setdefault("parameters", []).append({
                    "name": "X-Request-Timeout", "in": "header", "required": False,
                    "description": "Seconds this request may take (its deadline, from when its body has arrived), "
                                   "up to MAX_REQUEST_TIMEOUT_S; default REQUEST_TIMEOUT_S. Past it: 504 "
                                   "deadline_exceeded.",
                    "schema": {"type": "number", "exclusiveMinimum": 0}})
            _errors(spec, method, path, op)
            for status, resp in op["responses"].items():
                for name, lk in links.get((method, path, status), {}).items():
                    resp.setdefault("links", {})[name] = {"operationId": ids[lk["x-operation"]],
                                                          "parameters": lk["parameters"],
                                                          "description": lk["description"]}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    # the live stream's first message (the protocol is in the operation's description)
    schemas["StreamConfig"] = StreamConfig.model_json_schema()
    spec["paths"]["/v1/stream"]["get"]["x-first-message"] = {"$ref": "#/components/schemas/StreamConfig"}
    return spec


def install(app: FastAPI) -> None:
    """``app.openapi()`` (and so ``/openapi.json``) returns the exact document, built once."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    built: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not built:
            built.append(exact(generate()))
        return built[0]

    app.openapi = openapi  # type: ignore[method-assign]
