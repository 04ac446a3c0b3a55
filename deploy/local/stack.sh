#!/usr/bin/env bash
# `make up` / `make down`: Kafka, PostgreSQL and every service, in the background, under .run/.
#   stack.sh up     start what is not running, wait until every /readyz answers, print addresses
#   stack.sh down   stop everything started here, by pid; leave no process behind
#   stack.sh status
# AIMIS_KAFKA_BOOTSTRAP / AIMIS_DATABASE_URL set in the environment: use those, start none.
# Every AIMIS_* variable in the environment reaches every service.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="$ROOT/.run"
PY="$ROOT/.venv/bin/python"
LOCAL="$ROOT/deploy/local"
KAFKA_PORT="${AIMIS_LOCAL_KAFKA_PORT:-9092}"
KAFKA_CTRL_PORT="${AIMIS_LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${AIMIS_LOCAL_PG_PORT:-5432}"

services() {
  local d
  for d in "$ROOT"/services/*/; do
    [ -f "$d/__main__.py" ] && basename "$d"
  done
}

port_of() {
  case "$1" in
    order) echo "${AIMIS_ORDER_PORT:-8001}" ;;
    entitlement) echo "${AIMIS_ENTITLEMENT_PORT:-8002}" ;;
    metering) echo "${AIMIS_METERING_PORT:-8003}" ;;
    expiry) echo "${AIMIS_EXPIRY_PORT:-8004}" ;;
  esac
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  mkdir -p "$RUN/logs"
  chmod 755 "$RUN"
  if [ -z "${AIMIS_KAFKA_BOOTSTRAP:-}" ]; then
    mkdir -p "$RUN/kafka"
    if alive "$RUN/kafka/kafka.pid"; then
      echo "kafka: already running"
    else
      echo "kafka: starting on 127.0.0.1:$KAFKA_PORT"
      "$LOCAL/kafka.sh" start "$RUN/kafka" "$KAFKA_PORT" "$KAFKA_CTRL_PORT"
    fi
    export AIMIS_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
  fi
  if [ -z "${AIMIS_DATABASE_URL:-}" ]; then
    if [ -f "$RUN/pg/data/postmaster.pid" ] && kill -0 "$(head -1 "$RUN/pg/data/postmaster.pid")" 2>/dev/null; then
      echo "postgres: already running"
    else
      echo "postgres: starting on 127.0.0.1:$PG_PORT"
      "$LOCAL/postgres.sh" start "$RUN/pg" "$PG_PORT"
    fi
    export AIMIS_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/aimis"
  fi
  "$PY" "$LOCAL/wait_kafka.py" "$AIMIS_KAFKA_BOOTSTRAP" 90
  # A development stack (SPEC 7.4): a random auth secret unless one is set, kept across `make up`s.
  export AIMIS_ENV="${AIMIS_ENV:-development}"
  if [ -z "${AIMIS_AUTH_SECRET:-}" ]; then
    AIMIS_AUTH_SECRET="$(sed -n 's/^AIMIS_AUTH_SECRET=//p' "$RUN/env" 2>/dev/null || true)"
    [ -n "$AIMIS_AUTH_SECRET" ] || AIMIS_AUTH_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
    export AIMIS_AUTH_SECRET
  fi
  # Remember the addresses and the secret for `make demo` and the CLI.
  {
    echo "AIMIS_KAFKA_BOOTSTRAP=$AIMIS_KAFKA_BOOTSTRAP"
    echo "AIMIS_DATABASE_URL=$AIMIS_DATABASE_URL"
    echo "AIMIS_ENV=$AIMIS_ENV"
    echo "AIMIS_AUTH_SECRET=$AIMIS_AUTH_SECRET"
    for s in $(services); do echo "AIMIS_${s^^}_URL=http://127.0.0.1:$(port_of "$s")"; done
  } > "$RUN/env"
  chmod 600 "$RUN/env"

  local s
  for s in $(services); do
    if alive "$RUN/$s.pid"; then echo "$s: already running"; continue; fi
    # Services start in order of their dependencies' readiness by retrying themselves;
    # each gets every AIMIS_* variable of this environment.
    setsid "$PY" -m "services.$s" >> "$RUN/logs/$s.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$s.pid"
  done
  for s in $(services); do
    local url="http://127.0.0.1:$(port_of "$s")/readyz" t=0
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
      if ! alive "$RUN/$s.pid"; then echo "$s exited; last log lines:"; tail -20 "$RUN/logs/$s.log"; exit 1; fi
      t=$((t + 1)); [ "$t" -gt 600 ] && { echo "$s not ready after 120 s; see $RUN/logs/$s.log"; exit 1; }
      sleep 0.2
    done
  done
  echo
  echo "AIMIS Billing is up."
  echo "  kafka        $AIMIS_KAFKA_BOOTSTRAP"
  echo "  postgres     $AIMIS_DATABASE_URL"
  for s in $(services); do printf '  %-12s http://127.0.0.1:%s  (docs: /docs, log: %s)\n' "$s" "$(port_of "$s")" ".run/logs/$s.log"; done
  echo "  admin token  $("$PY" -c 'from shared.auth import mint; from shared.config import Settings; print(mint(Settings().auth_secret, "admin"))')"
  echo "Stop everything with: make down"
}

stop_pid() {
  local pidfile="$1" name="$2" pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  echo "$name: stopped"
}

down() {
  local s
  for s in $(services); do stop_pid "$RUN/$s.pid" "$s"; done
  if [ -d "$RUN/kafka" ]; then "$LOCAL/kafka.sh" stop "$RUN/kafka" && echo "kafka: stopped"; fi
  if [ -d "$RUN/pg" ]; then "$LOCAL/postgres.sh" stop "$RUN/pg" && echo "postgres: stopped"; fi
}

status() {
  local s
  for s in $(services); do
    if alive "$RUN/$s.pid"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
  done
  if alive "$RUN/kafka/kafka.pid"; then echo "kafka: running (pid $(cat "$RUN/kafka/kafka.pid"))"; else echo "kafka: stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: stack.sh up|down|status" >&2; exit 2 ;;
esac
