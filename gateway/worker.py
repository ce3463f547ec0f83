"""``faceswap-worker`` (or ``python -m gateway.worker``): a job worker process for the scale-out
setup. It takes video and batch jobs from the Redis queue (``FACESWAP_GATEWAY_REDIS_URL``),
runs them against Triton (``FACESWAP_GATEWAY_TRITON_URL``, one or several servers) and keeps
their media in the S3 bucket (``FACESWAP_GATEWAY_S3_*``) or the shared ``jobs_dir``. It reads
the same ``FACESWAP_GATEWAY_*`` settings as the gateway. Run as many as the work needs, on any
machine that reaches Redis, S3 and Triton; SIGTERM hands its running jobs back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from gateway.backends import job_limits
from gateway.core.config import get_settings
from gateway.storage.media import make_media


def _redis_reachable(url: str, wait_s: float) -> bool:
    """True once Redis at ``url`` answers PING, trying every second for ``wait_s`` seconds."""
    import redis

    end = time.monotonic() + wait_s
    while True:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as r:
                return bool(r.ping())
        except redis.RedisError:
            if time.monotonic() >= end:
                return False
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="faceswap-worker", description=__doc__.split("\n\n")[0].replace("``", "`"))
    ap.add_argument("--concurrency", type=int, default=s.worker_concurrency,
                    help="jobs this process runs at once (default: FACESWAP_GATEWAY_WORKER_CONCURRENCY, %(default)s)")
    ap.add_argument("--redis-wait", type=float, default=30.0,
                    help="seconds to wait for Redis at start (it may start after the worker), default %(default)s")
    ap.add_argument("--metrics-port", type=int, default=0,
                    help="serve Prometheus metrics (jobs by outcome, running, run time) on this port; 0: off")
    ap.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics port (default %(default)s)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gateway.worker")
    if not s.redis_url:
        log.error("FACESWAP_GATEWAY_REDIS_URL is not set: a job worker takes its jobs from Redis (on one machine "
                  "the gateway runs jobs itself and needs no worker)")
        return 2
    from gateway.jobs.queue import JobWorker, make_queue

    if not _redis_reachable(s.redis_url, args.redis_wait):
        log.error("cannot reach Redis at %s (waited %g s): start it, or fix FACESWAP_GATEWAY_REDIS_URL", s.redis_url,
                  args.redis_wait)
        return 1
    try:
        media = make_media(s)
    except Exception as exc:  # boto3/botocore raise many types; say which store failed
        log.error("cannot use the media store %s: %s", s.s3_endpoint_url or s.jobs_dir, exc)
        return 1
    worker = JobWorker(make_queue(s.redis_url), media, s.triton_url, job_limits(s), args.concurrency,
                       s.job_heartbeat_s, s.job_ttl_s, settings=s)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, args.metrics_host, registry=worker.metrics.registry)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    asyncio.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
