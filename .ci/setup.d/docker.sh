#!/usr/bin/env bash
# CI hook (.ci/run runs it before `make test`): a real Docker Engine and the locally built test images.
# Idempotent: installs only what is missing, starts dockerd only when nothing answers, builds only missing tags.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

answers() { timeout 5 docker version >/dev/null 2>&1; }

if ! answers; then
  log=/var/log/dockerd.log
  setsid -f dockerd >"$log" 2>&1 </dev/null
  for _ in $(seq 120); do
    answers && break
    sleep 0.5
  done
  if ! answers; then
    echo "error: dockerd did not answer within 60 s (log: $log):" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
fi

bash tests/docker/build_images.sh
