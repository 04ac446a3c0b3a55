#!/usr/bin/env bash
# A throwaway PostgreSQL cluster from the machine's binaries (Debian's postgresql package).
#   postgres.sh start DIR PORT   initdb (as the postgres user when run as root), start, create db "aimis"
#   postgres.sh stop DIR
set -euo pipefail

find_bin() {
  local b
  for b in "$(command -v pg_ctl 2>/dev/null || true)" /usr/lib/postgresql/*/bin/pg_ctl; do
    if [ -n "$b" ] && [ -x "$b" ]; then dirname "$(readlink -f "$b")"; return 0; fi
  done
  echo "postgres.sh: no PostgreSQL server binaries (install Debian's 'postgresql' package)" >&2
  exit 1
}

as_owner() {
  # From /: the postgres user may not be allowed into the caller's directory.
  if [ "$(id -u)" = "0" ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

start() {
  local dir="$1" port="$2" bin
  bin=$(find_bin)
  mkdir -p "$dir"
  if [ "$(id -u)" = "0" ]; then
    if [ ! -L "$dir" ] && ! runuser -u postgres -- test -x "$dir"; then
      # The postgres user cannot reach $dir (a checkout under /root, mode 700): the cluster lives in a
      # folder of /var/tmp, and $dir links to it.
      local alt
      alt="/var/tmp/aimis-pg-$(readlink -f "$dir" | cksum | cut -d' ' -f1)"
      mkdir -p "$alt"; rmdir "$dir" 2>/dev/null || true; ln -sfn "$alt" "$dir"
      echo "postgres: $dir is out of the postgres user's reach; the cluster is in $alt"
    fi
    dir=$(readlink -f "$dir")
    chown postgres:postgres "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    echo "postgres: creating a database cluster in $dir/data (initdb, first start only)"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 > "$dir/initdb.log" 2>&1 \
      || { tail -20 "$dir/initdb.log" >&2; echo "postgres.sh: initdb failed (log: $dir/initdb.log)" >&2; exit 1; }
  fi
  # Checkpoints by time, 15 minutes apart, not every ~1 GB of WAL: at 5,000 usage events/s the
  # services write ~13 MB of WAL a second, and the default (max_wal_size 1GB) started a checkpoint
  # every ~40 s, each followed by full-page images of every page touched again (docs/decisions.md,
  # "Checkpoints by time"). The autovacuum launcher looks every 5 s, not every minute, so the
  # outbox and inbox are vacuumed while their young pages are still in shared buffers
  # (shared/sql/008_log_tables_vacuumed_young.sql; docs/decisions.md, "Log tables vacuumed young").
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=15min -c autovacuum_naptime=5s" start > /dev/null
  as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='aimis'" | grep -q 1 \
    || { echo "postgres: creating the database aimis"
         as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE aimis"; }
}

stop() {
  local dir bin
  dir=$(readlink -f "$1" || echo "$1")
  [ -f "$dir/data/postmaster.pid" ] || return 0
  bin=$(find_bin)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop > /dev/null || true
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: postgres.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
