#!/bin/sh
# SeaweedFS for docker-compose.yml's `s3` service: one `weed server` (master, volume, filer and
# the S3 API on 8333) that accepts only the key pair from the environment, with the bucket
# created before the healthcheck (test -f $READY) passes. Extra arguments go to `weed server`.
set -eu
: "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}" "${S3_BUCKET:?}"
WEED=${WEED:-/usr/bin/weed}
DATA=${SEAWEEDFS_DIR:-/data}
READY=${SEAWEEDFS_READY:-/tmp/s3-ready}
CONF=${SEAWEEDFS_S3_CONFIG:-/tmp/s3.json}

mkdir -p "$DATA"
rm -f "$READY"
umask 077
cat > "$CONF" <<JSON
{"identities": [{"name": "faceswap",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY_ID", "secretKey": "$S3_SECRET_ACCESS_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON

"$WEED" server -dir="$DATA" -volume.max=0 -master.volumeSizeLimitMB=1024 \
    -s3 -s3.port="${S3_PORT:-8333}" -s3.config="$CONF" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM INT

# The filer takes a few seconds; `weed shell` finds master and filer on their default ports.
shell() { echo "$1" | "$WEED" shell ${SHELL_ARGS:-} 2>&1; }
i=0
until shell "s3.bucket.list" | grep -qw "$S3_BUCKET"; do
    kill -0 "$pid" 2>/dev/null || { echo "seaweedfs: weed server exited" >&2; exit 1; }
    [ "$i" -lt 120 ] || { echo "seaweedfs: bucket $S3_BUCKET not created in 120 s" >&2; exit 1; }
    shell "s3.bucket.create -name $S3_BUCKET" >/dev/null || true
    i=$((i + 1))
    sleep 1
done
echo "seaweedfs: S3 on :${S3_PORT:-8333}, bucket $S3_BUCKET" >&2
touch "$READY"
wait "$pid"
