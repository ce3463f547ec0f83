"""``python -m gateway``: run the gateway under uvicorn with the settings from the environment."""

from __future__ import annotations

import logging

import uvicorn

from gateway.core.config import get_settings
from gateway.main import create_app, is_loopback


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = get_settings()
    if s.hmac_secret is None and not is_loopback(s.host):
        logging.getLogger("gateway").error("refusing to listen on %s without FACESWAP_GATEWAY_HMAC_SECRET: "
                                           "set a secret or listen on 127.0.0.1", s.host)
        return 2
    # no permessage-deflate: stream frames are JPEG/WebP already, and deflating them cost a
    # quarter of the gateway's event loop per live frame (measured with py-spy at 360p)
    uvicorn.run(create_app(s), host=s.host, port=s.port, log_level="info", access_log=False,
                ws_per_message_deflate=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
