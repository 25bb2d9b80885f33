#!/usr/bin/env bash
# Makes the local base image for the Dockerfile where no container registry is reachable:
# a Debian bookworm root file system (debootstrap) with Python 3.11 in a virtual environment at
# /opt/venv (first on PATH, so the Dockerfile's `python` and `pip` are that environment's) and this
# machine's CA bundle, imported with `docker import`.
#
#   docker/base-image.sh [IMAGE]          # default nnstudy-base:bookworm; does nothing if it exists
#   docker build --network host --build-arg BASE_IMAGE=nnstudy-base:bookworm -t nnstudy:cpu .
#
# Idempotent: an existing image is kept (remove it to remake it); two calls at once make it once.
# Needs root, docker and debootstrap (installed with apt-get when missing). Settings:
#   NNSTUDY_DEBIAN_MIRROR   default http://deb.debian.org/debian
#   NNSTUDY_CA_BUNDLE       default /etc/ssl/certs/ca-certificates.crt (copied into the image)
set -euo pipefail

image=${1:-nnstudy-base:bookworm}
mirror=${NNSTUDY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${NNSTUDY_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

exec 9>"/tmp/nnstudy-base-image.lock"
flock 9
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image: exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

start=$(date +%s)
rootfs=$(mktemp -d /tmp/nnstudy-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# minbase: essential packages and apt only, plus Python (ca-certificates comes with it: the machine's
# bundle copied below replaces Debian's, so that a proxy's CA this machine trusts is trusted too).
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
  > /tmp/nnstudy-debootstrap.log 2>&1 || { tail -20 /tmp/nnstudy-debootstrap.log; exit 1; }
# pyproject.toml: requires-python >= 3.11 (bookworm has 3.11, for which TensorFlow has wheels)
chroot "$rootfs" python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'
# Debian's python refuses `pip install` outside a virtual environment (PEP 668): one for the image.
chroot "$rootfs" python3 -m venv /opt/venv
install -D -m 644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/root/.cache

tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python"]' \
  --message "debootstrap bookworm minbase + python3 venv + CA bundle" \
  - "$image" >/dev/null
echo "base image $image: made in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
