#!/usr/bin/env bash
# Starts dockerd in the background (log: /var/log/nnstudy-dockerd.log) unless a docker daemon already
# answers, and waits until it does. Needs root and Debian's docker.io package (apt-get install docker.io).
# Exit 0: a daemon answers; 1: none could be started (the reason on stderr).
set -uo pipefail

docker_cli=$(command -v docker || true)
if [ -z "$docker_cli" ]; then
  echo "dockerd.sh: no docker command (apt-get install docker.io)" >&2
  exit 1
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
dockerd_bin=$(command -v dockerd || true)
if [ -z "$dockerd_bin" ]; then
  echo "dockerd.sh: no dockerd (apt-get install docker.io)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "dockerd.sh: dockerd needs root" >&2
  exit 1
fi
log=/var/log/nnstudy-dockerd.log
setsid "$dockerd_bin" >>"$log" 2>&1 < /dev/null &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  if ! kill -0 $! 2>/dev/null; then
    break
  fi
  sleep 1
done
echo "dockerd.sh: dockerd did not start; the end of $log:" >&2
tail -15 "$log" >&2
exit 1
