#!/usr/bin/env bash
# What the test suite needs on this machine, installed once: `make test` runs it first (make test-setup), and so
# does .ci/run on a clean CI machine. Idempotent and quick once done (it only checks): PostgreSQL 15 (the
# "existing server without pgvector" tests), its client, make, then the hooks in .ci/setup.d/ (a Docker engine
# and the test images; PgBouncer, openssl, iproute2).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
  echo "error: the tests need root (they install packages and run servers under users of their own): run make test as root." >&2
  exit 1
fi

packages=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || packages+=(postgresql-15)   # "existing server without pgvector"
command -v psql >/dev/null || packages+=(postgresql-client-15)
command -v make >/dev/null || packages+=(make)
command -v logrotate >/dev/null || packages+=(logrotate)   # the log rotation test runs it
if ((${#packages[@]})); then
  echo "installing ${packages[*]} (apt)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

for hook in .ci/setup.d/*.sh; do   # engine-specific set-up (e.g. a Docker engine and its test images)
  [ -e "$hook" ] && bash "$hook"
done
