#!/bin/bash
# A small stand-in for the official postgres image's docker-entrypoint.sh, with the same contract:
#   POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (required on first start), POSTGRES_USER (postgres),
#   POSTGRES_DB (= user), POSTGRES_INITDB_ARGS, PGDATA, /docker-entrypoint-initdb.d/*.sh|*.sql,
#   `postgres -c name=value ...` options, the server run as the non-root user postgres, listening on all
#   interfaces with scram-sha-256 (local socket: trust, as in the official image).
set -Eeuo pipefail

file_env() {  # VAR from VAR or VAR_FILE (never both), read while still root: the file may be root's 0600
  local var=$1 file_var="${1}_FILE" default=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (they are exclusive)" >&2
    exit 1
  fi
  local value=$default
  if [ -n "${!var:-}" ]; then value=${!var}; elif [ -n "${!file_var:-}" ]; then value=$(<"${!file_var}"); fi
  export "$var"="$value"
  unset "$file_var"
}

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift  # the remaining arguments are server options

if [ "$(id -u)" = 0 ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: the database is uninitialized and no superuser password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"   # printf is a builtin: the password is in no argv
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the official image
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

  # a temporary server on the socket only, with the same options, for the database and the init scripts
  options=""
  if [ $# -gt 0 ]; then options=$(printf '%q ' "$@"); fi
  pg_ctl -D "$PGDATA" -w -t 60 -s -o "$options -c listen_addresses=''" start
  psql=(psql -X -q -v ON_ERROR_STOP=1 -U "$user" -d postgres)
  if [ "$db" != postgres ]; then
    "${psql[@]}" -v db="$db" <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; . "$f" ;;
      *.sql) echo "running $f"; "${psql[@]}" -d "$db" -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w -s stop
  echo "PostgreSQL init process complete; ready for start up."
fi

unset POSTGRES_PASSWORD
exec postgres "$@"
