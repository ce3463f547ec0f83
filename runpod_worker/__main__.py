"""``python -m runpod_worker [runpod SDK flags]``: start the embedded Triton once, then the SDK's
job loop (see the package docstring). Triton is stopped (its process group) when the loop ends:
after the one job of ``--test_input``, or on SIGTERM/SIGINT with ``--rp_serve_api`` or on RunPod.

Environment: ``FACESWAP_RUNPOD_REPOSITORY`` serves a model repository built elsewhere instead of
building the ``cpu`` one at start (as ``launch.container --repository``);
``FACESWAP_CONTAINER_WORK_DIR`` (default /tmp/faceswap) holds the built repository, Triton's
log and pid file; the ``FACESWAP_GATEWAY_*`` settings give the face store, the bucket and the
allowed media URL prefixes; ``FACESWAP_STANDIN_SIZE`` and ``FACESWAP_MODELS_DIR`` as for
``launch.container``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from launch.container import WORK_DIR, build_repository
from launch.server import Ports, TritonServer
from launch.services import free_port

log = logging.getLogger("runpod_worker")


def start_triton(work_dir: Path = WORK_DIR) -> TritonServer:
    """Build the repository (or take ``FACESWAP_RUNPOD_REPOSITORY``) and start tritonserver on free
    loopback ports; returns when it is ready.

    Raises:
        RuntimeError: Triton exited or was not ready in 600 s (its log's tail is in the message).
    """
    prebuilt = os.environ.get("FACESWAP_RUNPOD_REPOSITORY")
    repository = Path(prebuilt) if prebuilt else work_dir / "repository"
    if not prebuilt:
        for line in build_repository(repository):
            log.info("model %s", line)
    base = free_port(also_free=(1, 2))
    ports = Ports(base, base + 1, base + 2)
    server = TritonServer(repository, ports, work_dir, name="triton")
    server.start(timeout=600)
    log.info("tritonserver ready: gRPC %s (log %s)", server.grpc_url, server.log_file)
    return server


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    import runpod

    from runpod_worker.jobs import Jobs

    server = start_triton(Path(os.environ.get("FACESWAP_CONTAINER_WORK_DIR", str(WORK_DIR))))
    # SIGTERM (RunPod scaling a worker down, `docker stop`): leave through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    jobs = Jobs(server.grpc_url)
    try:
        async def handler(job: dict) -> dict:
            def progress(p: dict) -> None:
                runpod.serverless.progress_update(job, p)
            return await jobs.run(job.get("input"), progress)

        runpod.serverless.start({"handler": handler})
    finally:
        jobs.close()
        server.stop()
        log.info("tritonserver stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
