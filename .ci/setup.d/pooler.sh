#!/usr/bin/env bash
# Test set-up hook, run by .ci/setup.sh (make test-setup, which make test runs first; CI's .ci/run):
# what the pooler and ENABLE_CLOUD tests need.
# PgBouncer (Debian's, linked against the system's OpenSSL), openssl (the installation's CA and the poolers'
# certificates), iproute2 (network namespaces for the remote-client tests). Idempotent: installs only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's own instance (port 6432, as postgres) is not used: the installer runs one pooler per server.
if [ -d /run/systemd/system ]; then systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true; fi
