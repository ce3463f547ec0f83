# The CPU Triton image, built here by `make images` as faceswap-triton-cpu:0.1.0 (deploy/images.sh):
# the real tritonserver 2.51 of the nvidia-pytriton wheel (Python backend only; the networks run
# in Python models on ONNX Runtime or OpenVINO), as `make serve` runs it, and the RunPod
# serverless worker (runpod_worker/, `python -m runpod_worker`), which starts the same Triton
# inside its own container. The GPU image is deploy/triton.Dockerfile (NVIDIA's container).
# Build from the repository root:  docker build -f deploy/triton-cpu.Dockerfile -t faceswap-triton-cpu:0.1.0 .
# BASE and HOST_CA: as in ../Dockerfile. The base's Python must be 3.8 to 3.12 (the wheel has a
# Python-backend stub for each) and its libpython3.X.so.1.0 is needed by the stub: Debian's
# python3 has it in libpython3.X (installed below), python:3.X-slim has it already.
# No weights in the image: the model repository is written at start from what is mounted
# (launch/container.py): real models in FACESWAP_MODELS_DIR, a real detector in
# FACESWAP_SHARED_MODELS, seeded stand-ins for the rest (labelled as such).
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG HOST_CA=
ARG RUNPOD_VERSION=1.12.0
# The content gate's default detector (nudenet 3.4.2's 320n.onnx; its licence is unclear: MIT in
# the metadata, AGPL-3.0 in its LICENSE file, see docs/safety.md): CONTENT_EXTRA= leaves it out,
# and then a detector of the same contract must be mounted (FACESWAP_CONTENT_DETECTOR), or every
# swap is refused (the gate fails closed).
ARG CONTENT_EXTRA=content
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The server's packages (numpy<2: Triton 2.51's Python backend breaks with numpy 2) and the
# runpod SDK's, at requirements.lock's versions; runpod itself without its metadata's pins.
COPY requirements.lock pyproject.toml ./
COPY deploy/images/deps.py deploy/images/strip.sh /tmp/
RUN if [ -n "$HOST_CA" ]; then export PIP_CERT="$HOST_CA"; fi \
    && python /tmp/deps.py server serverless $CONTENT_EXTRA > /tmp/deps.txt && python /tmp/deps.py --constraints > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/deps.txt \
    && pip install --no-deps "runpod==$RUNPOD_VERSION"

COPY client/ client/
COPY gateway/ gateway/
COPY launch/ launch/
COPY media/ media/
COPY model_repository/ model_repository/
COPY pipeline/ pipeline/
COPY provenance/ provenance/
COPY repository/ repository/
COPY runpod_worker/ runpod_worker/
RUN if [ -n "$HOST_CA" ]; then export PIP_CERT="$HOST_CA"; fi \
    && pip install --no-deps -e . \
    && rm -rf /app/build \
    && python -m compileall -q client gateway launch media model_repository pipeline provenance repository runpod_worker \
    && sh /tmp/strip.sh /opt/venv

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# libpython for the Python-backend stub, from Debian's own packages where the base lacks it.
RUN python3 -c "import ctypes, sys; ctypes.CDLL('libpython%d.%d.so.1.0' % sys.version_info[:2])" 2>/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           "libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" >/dev/null \
         && apt-get clean && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin triton \
    && install -d -o 1000 -g 1000 /var/lib/faceswap/models /engine_cache

USER 1000:1000
# FACESWAP_MODELS_DIR: real models (models.json's file names) are mounted here; missing ones are
# generated as stand-ins here (a volume keeps them across restarts). FACESWAP_CACHE_DIR: the
# precision self-check's decisions and int8 files. HOME: caches of libraries go to /tmp.
ENV HOME=/tmp \
    FACESWAP_MODELS_DIR=/var/lib/faceswap/models \
    FACESWAP_SHARED_MODELS=/shared/models \
    FACESWAP_CACHE_DIR=/engine_cache \
    FACESWAP_STANDIN_SIZE=tiny
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=3)"]
# tritonserver (exec'd by the entry point) stops on SIGTERM: it refuses new requests and waits up
# to --exit-timeout-secs (10) for those in flight.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "launch.container"]
