"""The CPU Triton image's entry point (``deploy/triton-cpu.Dockerfile``): write the ``cpu`` model
repository at start, then become ``tritonserver`` (exec, so SIGTERM reaches Triton itself).

No weights are baked into the image. At start the repository is built from what is mounted:
real models in ``FACESWAP_MODELS_DIR`` (the manifest's file names, ``repository/models.json``),
a real SCRFD detector in ``FACESWAP_SHARED_MODELS`` (``det_2.5g.onnx`` or ``det_500m.onnx``), and
seeded stand-ins (``FACESWAP_STANDIN_SIZE``, tiny or full, generated into ``FACESWAP_MODELS_DIR``)
for the rest, each labelled as such in the log. ``--repository DIR`` serves a repository built
elsewhere instead (the Kubernetes ``cpu`` overlay mounts one at ``/models``).

Endpoints bind 0.0.0.0 inside the container (HTTP 8000, gRPC 8001, metrics 8002); publishing
them beyond the host is the compose file's or the cluster's choice (``docker-compose.yml``
publishes on 127.0.0.1 only).

    python -m launch.container [--repository DIR] [--standin-size tiny|full] [--dry-run]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from launch.server import Ports, TritonServer

log = logging.getLogger("launch.container")

#: Where the repository and the Python backend copy are written at start (writable, not a volume).
WORK_DIR = Path(os.environ.get("FACESWAP_CONTAINER_WORK_DIR", "/tmp/faceswap"))


def build_repository(out: Path, standin_size: str | None = None) -> list[str]:
    """Write the ``cpu`` repository for the models found (see the module docstring) into ``out``.

    Returns:
        one line per network (``ResolvedModel.describe``: real or STAND-IN, and the file).

    Raises:
        ValueError: a bad setting (``FACESWAP_PRECISION``, ``FACESWAP_ENGINE``).
        OSError: ``FACESWAP_MODELS_DIR`` is not writable and a stand-in had to be generated.
    """
    from repository.generate import build
    from repository.resolve import resolve

    models = resolve(standin_size)
    build(out, "cpu", models)
    return [m.describe() for m in models.values()]


def triton_argv(repository: Path, work_dir: Path = WORK_DIR, ports: Ports = Ports()) -> tuple[list[str], dict]:
    """The ``tritonserver`` command line and environment of :class:`launch.server.TritonServer`,
    bound to 0.0.0.0 (the container's network namespace is the boundary)."""
    server = TritonServer(repository, ports, work_dir, name="triton", address="0.0.0.0")
    return server.command(), server.env()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repository", type=Path, default=None,
                    help="serve this prebuilt repository instead of building one at start")
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=None,
                    help="size of the stand-ins generated for missing models (default FACESWAP_STANDIN_SIZE, tiny)")
    ap.add_argument("--dry-run", action="store_true", help="build the repository, print the command, do not exec")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    repository = args.repository
    if repository is None:
        repository = WORK_DIR / "repository"
        try:
            for line in build_repository(repository, args.standin_size):
                log.info("model %s", line)
        except (ValueError, OSError) as exc:
            log.error("cannot build the model repository: %s", exc)
            return 2
    elif not (repository / "face_swap" / "config.pbtxt").is_file():
        log.error("%s holds no model repository (no face_swap/config.pbtxt)", repository)
        return 2
    cmd, env = triton_argv(repository)
    log.info("exec %s", " ".join(cmd))
    sys.stdout.flush()
    if args.dry_run:
        return 0
    os.execve(cmd[0], cmd, env)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
