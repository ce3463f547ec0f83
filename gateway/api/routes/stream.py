"""GET /v1/stream: live face swap over a WebSocket (protocol in gateway.core.stream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import JSONResponse

from gateway.core import stream as protocol
from gateway.core.errors import errors
from gateway.services import stream as service

router = APIRouter(tags=["stream"])


@router.get("/v1/stream", summary="Live face swap (WebSocket)", status_code=426,
            description=protocol.__doc__.split("\n\n", 1)[1].replace("``", "`").replace(":class:", "")
            .replace(":data:", "") + "\n\nFirst message (`StreamConfig`): "
            + "; ".join(f"`{k}` (default {f.default!r}){': ' + f.description if f.description else ''}"
                        for k, f in protocol.StreamConfig.model_fields.items()) + ".\n\nClose codes: "
            + ", ".join(f"{v} {k}" for k, v in sorted(protocol.CLOSE_CODES.items(), key=lambda kv: kv[1])) + ".",
            responses={101: {"description": "Switching Protocols: the WebSocket (a GET with the upgrade headers)"},
                       426: {**errors("upgrade_required")[426], "headers": {
                           "Upgrade": {"description": "websocket", "schema": {"type": "string"}}}}})
async def stream_info(nonce: Annotated[str | None, Query(description="Any value, ignored: it makes each signed "
                                                                     "upgrade request unique (two streams opened "
                                                                     "in the same second are not replays)")] = None,
                      ) -> JSONResponse:
    """A plain HTTP GET is answered 426 with how to open the stream."""
    return JSONResponse({"code": "upgrade_required", "message": "GET /v1/stream is a WebSocket: open it with a "
                         "WebSocket client (ws:// or wss://); the protocol is in the API documentation."},
                        status_code=426, headers={"Upgrade": "websocket"})


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Live face swap: see the module gateway.core.stream for the protocol. Signed like every
    call when a secret is set (the signature is on the upgrade request: ``GET /v1/stream``)."""
    app = ws.app
    settings, metrics, admission = app.state.settings, app.state.metrics, app.state.admission
    await ws.accept()
    if app.state.streams >= settings.max_streams:
        metrics.rejected.labels("streams").inc()
        await service.fail(ws, "overloaded",
                           f"The service runs {settings.max_streams} streams, its limit; retry later.")
        return
    app.state.streams += 1
    metrics.streams.set(app.state.streams)
    try:
        await service.serve(ws, settings, metrics, admission)
    finally:
        app.state.streams -= 1
        metrics.streams.set(app.state.streams)
