#!/usr/bin/env bash
# Run a command with PostgreSQL and Redis available, as `make test` needs them.
# Uses DATABASE_URL / REDIS_URL when given; else the local servers on their standard ports
# (started if installed but down); else throwaway servers in a temp dir on free ports.
set -euo pipefail

cleanup_cmds=()
cleanup() { for c in "${cleanup_cmds[@]:-}"; do [ -n "$c" ] && eval "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pg_answers() { pg_isready -q -h 127.0.0.1 -p "$1" 2>/dev/null; }
redis_answers() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

if [ -z "${DATABASE_URL:-}" ]; then
  if ! pg_answers 5432 && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 20); do pg_answers 5432 && break; sleep 0.5; done
  fi
  if pg_answers 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/gitopsportal"
  else
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$bindir" ] || { echo "PostgreSQL is not installed: apt-get install postgresql, or set DATABASE_URL" >&2; exit 1; }
    pgdir=$(mktemp -d); port=$(free_port)
    chown -R postgres "$pgdir" 2>/dev/null || true
    runas=""; [ "$(id -u)" = 0 ] && runas="runuser -u postgres --"
    $runas "$bindir/initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
    $runas "$bindir/pg_ctl" -D "$pgdir/data" -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1" -l "$pgdir/log" -w start >/dev/null
    cleanup_cmds+=("$runas $bindir/pg_ctl -D $pgdir/data -m immediate stop; rm -rf $pgdir")
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/gitopsportal"
  fi
fi

if [ -z "${REDIS_URL:-}" ]; then
  if ! redis_answers 6379 && command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
    for _ in $(seq 1 20); do redis_answers 6379 && break; sleep 0.25; done
  fi
  if redis_answers 6379; then
    export REDIS_URL="redis://127.0.0.1:6379/9"
  else
    command -v redis-server >/dev/null || { echo "Redis is not installed: apt-get install redis-server, or set REDIS_URL" >&2; exit 1; }
    port=$(free_port); rdir=$(mktemp -d)
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$rdir" --pidfile "$rdir/pid" >/dev/null
    cleanup_cmds+=("kill \$(cat $rdir/pid); rm -rf $rdir")
    for _ in $(seq 1 20); do redis_answers "$port" && break; sleep 0.25; done
    export REDIS_URL="redis://127.0.0.1:$port/9"
  fi
fi

# The base database exists too, so commands that inspect it (makemigrations --check) stay quiet.
if command -v psql >/dev/null && [[ "$DATABASE_URL" == postgres* ]]; then
  base_db="${DATABASE_URL##*/}"; base_db="${base_db%%\?*}"
  psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname='$base_db'" 2>/dev/null | grep -q 1 \
    || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE \"$base_db\"" >/dev/null 2>&1 || true
fi

"$@"
