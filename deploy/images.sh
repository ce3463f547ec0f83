#!/bin/sh
# make images: the gateway/worker image (../Dockerfile) with podman or docker, whichever is present.
# The base: BASE when set; else python:3.11-slim when a registry answers; else a local Debian base
# (localhost/debian-base:bookworm) made here with debootstrap from Debian's own packages (root).
# Not yet: the CPU Triton image (tritonserver from the nvidia-pytriton wheel; issue 22).
set -eu
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "images: neither podman nor docker is installed" >&2; exit 1; }
ENGINE=$(basename "$ENGINE")
TAG=${TAG:-0.1.0}
RELEASE=${DEBIAN_RELEASE:-bookworm}
LOCAL_BASE=localhost/debian-base:$RELEASE

if [ -z "${BASE:-}" ]; then
  if "$ENGINE" image exists python:3.11-slim 2>/dev/null || "$ENGINE" pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    BASE=docker.io/library/python:3.11-slim
  else
    BASE=$LOCAL_BASE
    if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; then
      echo "images: no registry answers; making $BASE with debootstrap"
      command -v debootstrap >/dev/null || { echo "images: apt-get install debootstrap (as root)" >&2; exit 1; }
      ROOTFS=$(mktemp -d /tmp/faceswap-rootfs.XXXXXX)
      trap 'rm -rf "$ROOTFS"' EXIT
      # python3 3.11 (bookworm: 3.11.2), its venv module and the CA bundle; no compiler.
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$RELEASE" "$ROOTFS" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
      chroot "$ROOTFS" apt-get clean
      rm -rf "$ROOTFS"/var/lib/apt/lists/*
      tar -C "$ROOTFS" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    fi
  fi
fi

# pip inside the build trusts the host's CA bundle too (a proxy that re-signs TLS); podman and
# buildah mount it for the build only, docker build has no -v (there, the base's own CAs).
set -- --build-arg "BASE=$BASE" -t "faceswap-gateway:$TAG"
if [ "$ENGINE" = podman ]; then
  set -- "$@" --format docker --network host
  [ -s /etc/ssl/certs/ca-certificates.crt ] && set -- "$@" \
    -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro --build-arg HOST_CA=/host-ca.crt
else
  set -- "$@" --network host
fi
echo "images: faceswap-gateway:$TAG from $BASE ($ENGINE)"
"$ENGINE" build "$@" .
"$ENGINE" images "faceswap-gateway:$TAG"
