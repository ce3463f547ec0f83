# Redis for docker-compose.yml where Docker Hub's redis:7.4 cannot be pulled (no registry here):
# Debian's own redis-server (bookworm: 7.0) on the local base. `make images` builds it as
# faceswap-redis:0.1.0 only when no registry answers; deploy/compose/cpu.yml names it through
# REDIS_IMAGE. Same contract as the official image: `redis-server ARGS...` as the command, data in
# /data, not root, reachable from the other containers (protected mode off: the compose network is
# the boundary, as with the official image).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data \
    && printf '%s\n' '#!/bin/sh' 'set -e' \
         '[ "${1:-}" = redis-server ] && { shift; set -- redis-server --bind "* -::*" --protected-mode no --dir /data "$@"; }' \
         'exec "$@"' > /usr/local/bin/redis-entry && chmod 755 /usr/local/bin/redis-entry
USER redis
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=20 CMD ["redis-cli", "ping"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/redis-entry"]
CMD ["redis-server"]
