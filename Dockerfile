# The gateway (`python -m gateway`, the default) and the job worker (`faceswap-worker`) in one
# image, `make images` builds it as faceswap-gateway:0.1.0 (deploy/images.sh).
# Build: docker build -t faceswap-gateway:0.1.0 .   (podman: add --format docker for the HEALTHCHECK)
# BASE: any Debian-like image with python3 (3.11, with venv) and useradd; where no registry can be
# reached, a local one made with debootstrap (see the README). Pin it by digest in production.
# DEPS: "runtime" installs only what the gateway and the workers import (pyproject.toml's
# dependencies, at requirements.lock's versions); "lock" installs all of requirements.lock (test
# and docs tools included; needs Python 3.11.5 or later). HOST_CA: a CA bundle for pip inside the
# build, where a proxy re-signs TLS (podman build -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro
# --build-arg HOST_CA=/host-ca.crt); it is not kept in the image.
# Two stages: pip and the build's leftovers stay in the first; the image holds the virtual
# environment (no pip, no test tools: deploy/images/strip.sh), the code, and no compiler.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG DEPS=runtime
ARG HOST_CA=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# A virtual environment, so the base's own Python packages (Debian's) stay out of the way.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The pinned environment first: its layer stays cached while the code changes.
COPY requirements.lock pyproject.toml ./
COPY deploy/images/deps.py deploy/images/strip.sh /tmp/
RUN if [ -n "$HOST_CA" ]; then export PIP_CERT="$HOST_CA"; fi \
    && if [ "$DEPS" = lock ]; then pip install -r requirements.lock; \
       else python /tmp/deps.py > /tmp/deps.txt && python /tmp/deps.py --constraints > /tmp/constraints.txt \
            && pip install -c /tmp/constraints.txt -r /tmp/deps.txt; fi

COPY client/ client/
COPY gateway/ gateway/
COPY media/ media/
COPY pipeline/ pipeline/
COPY provenance/ provenance/
# Editable, so the settings' defaults that are relative to the project (gateway/core/config.py
# ROOT) stay under /app; the console scripts (faceswap, faceswap-worker) land in /opt/venv/bin.
RUN if [ -n "$HOST_CA" ]; then export PIP_CERT="$HOST_CA"; fi \
    && pip install --no-deps -e . \
    && rm -rf /app/*.egg-info/SOURCES.txt /app/build \
    && python -m compileall -q client gateway media pipeline provenance \
    && sh /tmp/strip.sh /opt/venv

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin faceswap \
    && install -d -o 10001 -g 10001 /data

USER 10001:10001
# /data: the face store and job files (a volume in docker-compose.yml, an emptyDir in Kubernetes).
# HOME: libraries that keep a cache there get /tmp (writable; an emptyDir in Kubernetes).
ENV HOME=/tmp \
    FACESWAP_GATEWAY_HOST=0.0.0.0 \
    FACESWAP_GATEWAY_PORT=8080 \
    FACESWAP_GATEWAY_STORE_PATH=/data/faces.sqlite3 \
    FACESWAP_GATEWAY_JOBS_DIR=/data/jobs \
    FACESWAP_GATEWAY_C2PA_DEV_DIR=/data/c2pa
EXPOSE 8080
# The gateway's liveness (the worker, same image, has no port: docker-compose.yml turns this off
# for it). Podman keeps HEALTHCHECK only in docker-format images (podman build --format docker).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FACESWAP_GATEWAY_PORT', '8080'), timeout=3)"]
# uvicorn and the worker stop cleanly on SIGTERM (requests and jobs in flight are handed back).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway"]
