#!/usr/bin/env bash
# Test set-up hook, run by .ci/setup.sh (make test-setup, which make test runs first; CI's .ci/run):
# a real Docker Engine and the locally built test images.
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

# A pid file left by a daemon that is gone (a machine image taken while dockerd ran, a killed
# daemon) makes a new dockerd refuse to start; drop it only when no live dockerd owns it.
stale_pid_file() {
  local file=$1 name=$2 pid
  [[ -f $file ]] || return 1
  pid=$(cat "$file" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [[ $(ps -p "$pid" -o comm= 2>/dev/null) != "$name" ]]
}

if ! answers; then
  log=/var/log/dockerd.log
  if stale_pid_file /var/run/docker.pid dockerd; then
    echo "removing stale /var/run/docker.pid (no dockerd runs under its pid)"
    rm -f /var/run/docker.pid
  fi
  if stale_pid_file /var/run/docker/containerd/containerd.pid containerd; then
    rm -f /var/run/docker/containerd/containerd.pid
  fi
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
