#!/usr/bin/env bash
# Builds, with no container registry, the images that docker/compose.local.yml and tests/test_docker.py
# use: the local base image (docker/base-image.sh), nnstudy's image FROM it, and PostgreSQL from Debian's
# package (docker/postgres.Dockerfile). Builds use the host's network (pip and apt reach their registries).
#
#   docker/build-images.sh                 # nnstudy:local and nnstudy-postgres:local
#
# A second call waits for a running one (flock), then finds every layer in docker's cache: seconds.
# Settings: NNSTUDY_BASE_IMAGE (nnstudy-base:bookworm), NNSTUDY_IMAGE (nnstudy:local),
# NNSTUDY_PG_IMAGE (nnstudy-postgres:local).
set -euo pipefail
cd "$(dirname "$0")/.."

base=${NNSTUDY_BASE_IMAGE:-nnstudy-base:bookworm}
image=${NNSTUDY_IMAGE:-nnstudy:local}
pg_image=${NNSTUDY_PG_IMAGE:-nnstudy-postgres:local}

exec 8>/tmp/nnstudy-docker-build.lock
flock 8

docker/base-image.sh "$base"
previous=$(docker image inspect -f '{{.Id}}' "$image" "$pg_image" 2>/dev/null || true)
# DEVICE given as docker/compose.local.yml gives it, so that a compose build finds these layers cached
start=$(date +%s)
docker build --network host --build-arg BASE_IMAGE="$base" --build-arg DEVICE=cpu -t "$image" .
built=$(date +%s)
docker build --network host --build-arg BASE_IMAGE="$base" -t "$pg_image" -f docker/postgres.Dockerfile docker
done=$(date +%s)
# the images these tags named before, now untagged (their layers stay while a newer image shares them)
current=$(docker image inspect -f '{{.Id}}' "$image" "$pg_image")
for id in $previous; do
  case "$current" in *"$id"*) ;; *) docker image rm "$id" >/dev/null 2>&1 || true ;; esac
done

size() { echo "$(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )) MB"; }
echo "image $image: built in $(( built - start ))s, $(size "$image")"
echo "image $pg_image: built in $(( done - built ))s, $(size "$pg_image")"
