"""``make perf``: Triton's own ``perf_analyzer`` against the ``face_swap`` ensemble.

``perf_analyzer`` ships in the ``tritonclient==2.41.0`` wheel (newer wheels dropped it); it is
installed into its own virtual environment ``.venv-perf`` so that two tritonclient versions
never meet in one environment. It needs ``libb64.so.0d`` (Debian ``libb64-0d``) and
``libcudart.so.12`` (``nvidia-cuda-runtime-cu12`` from PyPI) even on a CPU-only machine.
This tool writes the input data (a real group photo, a real source latent from
``face_embed``, default options) and runs perf_analyzer with the arguments given after ``--``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from client import FaceSwapClient
from client.core import options_json
from repository.layout import default_images

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-perf"


def ensure_perf_analyzer() -> Path:
    """Install tritonclient 2.41.0 + the CUDA runtime library into .venv-perf if needed."""
    binary = VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "tritonclient==2.41.0",
                        "nvidia-cuda-runtime-cu12==12.9.79"], check=True)
    return binary


def input_data(url: str, path: Path) -> Path:
    """perf_analyzer --input-data JSON for face_swap: image bytes, one source latent, options."""
    source, target = default_images()
    with FaceSwapClient(url, "grpc") as c:
        latent = c.embed(source).largest().latent
    img = target.read_bytes()
    data = {"data": [{
        "image": {"b64": base64.b64encode(img).decode(), "shape": [len(img)]},
        "source_latents": {"content": [float(v) for v in latent], "shape": [1, 512]},
        "reference_embeddings": {"content": [], "shape": [0, 512]},
        "options": {"content": [options_json(output_format="jpeg").decode()], "shape": [1]},
    }]}
    path.write_text(json.dumps(data))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description="Run perf_analyzer against face_swap (extra args after --).")
    ap.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC host:port (make serve)")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="perf_analyzer arguments, after --")
    args = ap.parse_args()
    binary = ensure_perf_analyzer()
    data = input_data(args.url, ROOT / ".run" / "perf_input.json")
    cudart = next((VENV / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    extra = [a for a in args.extra if a != "--"] or ["--concurrency-range", "1:4", "--measurement-interval", "8000"]
    cmd = [str(binary), "-m", "face_swap", "-u", args.url, "-i", "grpc", "--input-data", str(data), *extra]
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
