# The gateway (`python -m gateway`, the default) and the job worker (`faceswap-worker`) in one
# image. Build: docker build -t faceswap-gateway:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned environment first: its layer stays cached while the code changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml ./
COPY client/ client/
COPY gateway/ gateway/
COPY media/ media/
COPY pipeline/ pipeline/
COPY provenance/ provenance/
# Editable, so the settings' defaults that are relative to the project (gateway/core/config.py
# ROOT) stay under /app; the console scripts (faceswap, faceswap-worker) land in /usr/local/bin.
RUN pip install --no-deps -e . \
    && python -m compileall -q client gateway media pipeline provenance \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin faceswap \
    && install -d -o 10001 -g 10001 /data

USER 10001:10001
# /data: the face store and job files (a volume in docker-compose.yml, an emptyDir in Kubernetes).
# HOME: libraries that keep a cache there get /tmp (writable; an emptyDir in Kubernetes).
ENV HOME=/tmp \
    FACESWAP_GATEWAY_HOST=0.0.0.0 \
    FACESWAP_GATEWAY_PORT=8080 \
    FACESWAP_GATEWAY_STORE_PATH=/data/faces.sqlite3 \
    FACESWAP_GATEWAY_JOBS_DIR=/data/jobs
EXPOSE 8080
CMD ["python", "-m", "gateway"]
