"""``make bench-gateway``: the gateway's added latency against calling Triton directly.

Starts Triton (tiny stand-ins by default) and the gateway on loopback, registers the source
face once, then alternates, ``--runs`` times each, a direct gRPC ``face_swap`` call (client
library, the same latent) and ``POST /v1/swap`` with ``source_face_id`` on the same image.
Reports medians, the ratio gateway/direct and the added milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from client import FaceSwapClient
from launch.server import embedded, start_gateway, stop_gateway
from repository.layout import default_images
from repository.resolve import resolve


def main() -> int:
    ap = argparse.ArgumentParser(description="Gateway added latency vs direct Triton (median of repeated runs).")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--standin-size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--target", default=None, help="image to swap (default: the group photo)")
    ap.add_argument("--port", type=int, default=18300)
    args = ap.parse_args()
    source, target = default_images()
    target = args.target or target
    image = open(target, "rb").read()
    gw_port = args.port + 10
    with embedded("bench_gateway", resolve(args.standin_size), args.port) as server:
        start_gateway(gw_port, server.grpc_url)
        try:
            with FaceSwapClient(server.grpc_url, "grpc") as c, httpx.Client(
                    base_url=f"http://127.0.0.1:{gw_port}", timeout=300) as h:
                reg = h.post("/v1/faces", files={"image": ("s", open(source, "rb").read())}).json()["faces"][0]
                latent = c.embed(source).largest().latent
                direct, gateway = [], []
                for i in range(args.runs + 2):
                    t = time.perf_counter()
                    c.swap(image, latent, output_format="jpeg")
                    d = time.perf_counter() - t
                    t = time.perf_counter()
                    r = h.post("/v1/swap", files={"target": ("t", image)},
                               data={"source_face_id": reg["id"], "output_format": "jpeg"})
                    g = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    if i >= 2:  # warm-up
                        direct.append(d)
                        gateway.append(g)
        finally:
            stop_gateway(gw_port)
    md, mg = statistics.median(direct), statistics.median(gateway)
    print(f"target {target} ({len(image)} bytes), {args.runs} runs each, {args.standin_size} stand-ins")
    print(f"direct Triton gRPC (client library): median {1000 * md:7.1f} ms")
    print(f"gateway POST /v1/swap (multipart):   median {1000 * mg:7.1f} ms")
    print(f"ratio gateway/direct {mg / md:.3f}  (added {1000 * (mg - md):.1f} ms per request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
