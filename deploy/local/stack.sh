#!/usr/bin/env bash
# `make up` / `make down`: Kafka, PostgreSQL and every service, in the background, under .run/.
#   stack.sh up     start what is not running, wait until every /readyz answers, print addresses
#   stack.sh down   stop everything started here, by pid; leave no process behind
#   stack.sh status
# AIMIS_KAFKA_BOOTSTRAP / AIMIS_DATABASE_URL set in the environment: use those, start none.
# Every AIMIS_* variable in the environment reaches every service.
# Beyond one machine (SPEC 10):
#   AIMIS_KAFKA_BROKERS=3     three KRaft nodes on ports P, P+100, P+200 (P = AIMIS_LOCAL_KAFKA_PORT);
#                             topics get replication 3 and min ISR 2
#   AIMIS_KAFKA_SECURITY=scram SASL/SCRAM-SHA-512, one principal per service plus platform and
#                             analytics, ACLs from contracts/principals.py; .run/kafka/credentials.json
#   AIMIS_REPLICAS=2          two processes of each service; replica r listens on port + 100*(r-1)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="$ROOT/.run"
PY="$ROOT/.venv/bin/python"
LOCAL="$ROOT/deploy/local"
KAFKA_PORT="${AIMIS_LOCAL_KAFKA_PORT:-9092}"
KAFKA_CTRL_PORT="${AIMIS_LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${AIMIS_LOCAL_PG_PORT:-5432}"
BROKERS="${AIMIS_KAFKA_BROKERS:-1}"
REPLICAS="${AIMIS_REPLICAS:-1}"
export AIMIS_KAFKA_SECURITY="${AIMIS_KAFKA_SECURITY:-none}"

services() {
  local d
  for d in "$ROOT"/services/*/; do
    [ -f "$d/__main__.py" ] && basename "$d"
  done
}

port_of() {  # SERVICE [REPLICA]: replica r listens on the service's port + 100*(r-1)
  echo $(( $(base_port "$1") + 100 * (${2:-1} - 1) ))
}

instance() {  # SERVICE REPLICA: its name for pid and log files (the first replica keeps the plain name)
  if [ "${2:-1}" -eq 1 ]; then echo "$1"; else echo "$1-$2"; fi
}

base_port() {
  case "$1" in
    order) echo "${AIMIS_ORDER_PORT:-8001}" ;;
    entitlement) echo "${AIMIS_ENTITLEMENT_PORT:-8002}" ;;
    metering) echo "${AIMIS_METERING_PORT:-8003}" ;;
    expiry) echo "${AIMIS_EXPIRY_PORT:-8004}" ;;
    console) echo "${AIMIS_CONSOLE_PORT:-8000}" ;;
  esac
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_kafka() {  # start the local broker(s) unless running; export AIMIS_KAFKA_BOOTSTRAP (and credentials)
  local mode="brokers=$BROKERS security=$AIMIS_KAFKA_SECURITY" i ports="" ctrls="" boot=""
  mkdir -p "$RUN/kafka"
  if [ -f "$RUN/kafka/mode" ] && [ "$(cat "$RUN/kafka/mode")" != "$mode" ]; then
    echo "kafka: .run/kafka holds a broker started with '$(cat "$RUN/kafka/mode")', not '$mode';" \
         "run 'make clean' to start afresh" >&2
    exit 1
  fi
  for ((i = 0; i < BROKERS; i++)); do
    ports+="${ports:+,}$((KAFKA_PORT + 100 * i))"; ctrls+="${ctrls:+,}$((KAFKA_CTRL_PORT + 100 * i))"
    boot+="${boot:+,}127.0.0.1:$((KAFKA_PORT + 100 * i))"
  done
  if [ "$AIMIS_KAFKA_SECURITY" = "scram" ]; then export AIMIS_KAFKA_CREDENTIALS="$RUN/kafka/credentials.json"; fi
  if [ "$BROKERS" -ge 3 ]; then
    export AIMIS_KAFKA_REPLICATION="${AIMIS_KAFKA_REPLICATION:-3}" AIMIS_KAFKA_MIN_ISR="${AIMIS_KAFKA_MIN_ISR:-2}"
  fi
  if alive "$RUN/kafka/kafka.pid" || alive "$RUN/kafka/node-1/kafka.pid"; then
    echo "kafka: already running"
  elif [ "$BROKERS" -eq 1 ]; then
    echo "kafka: starting on 127.0.0.1:$KAFKA_PORT ($AIMIS_KAFKA_SECURITY)"
    "$LOCAL/kafka.sh" start "$RUN/kafka" "$KAFKA_PORT" "$KAFKA_CTRL_PORT"
  else
    echo "kafka: starting $BROKERS brokers on $boot ($AIMIS_KAFKA_SECURITY)"
    "$LOCAL/kafka.sh" start-cluster "$RUN/kafka" "$ports" "$ctrls"
  fi
  echo "$mode" > "$RUN/kafka/mode"
  export AIMIS_KAFKA_BOOTSTRAP="$boot"
  managed_kafka=1
}

up() {
  mkdir -p "$RUN/logs"
  chmod 755 "$RUN"
  if [ -z "${AIMIS_KAFKA_BOOTSTRAP:-}" ]; then
    start_kafka
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
  if [ "$AIMIS_KAFKA_SECURITY" = "scram" ] && [ -n "${managed_kafka:-}" ]; then
    # With security on, the services create no topics: the operator (here, as admin) does.
    "$PY" "$LOCAL/kafka_provision.py" "$AIMIS_KAFKA_BOOTSTRAP" "$AIMIS_KAFKA_CREDENTIALS" \
      --replication "${AIMIS_KAFKA_REPLICATION:-1}" --min-isr "${AIMIS_KAFKA_MIN_ISR:-1}"
  fi
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
    echo "AIMIS_KAFKA_SECURITY=$AIMIS_KAFKA_SECURITY"
    if [ -n "${AIMIS_KAFKA_CREDENTIALS:-}" ]; then echo "AIMIS_KAFKA_CREDENTIALS=$AIMIS_KAFKA_CREDENTIALS"; fi
    if [ -n "${AIMIS_KAFKA_REPLICATION:-}" ]; then echo "AIMIS_KAFKA_REPLICATION=$AIMIS_KAFKA_REPLICATION"; fi
    if [ -n "${AIMIS_KAFKA_MIN_ISR:-}" ]; then echo "AIMIS_KAFKA_MIN_ISR=$AIMIS_KAFKA_MIN_ISR"; fi
    for s in $(services); do echo "AIMIS_${s^^}_URL=http://127.0.0.1:$(port_of "$s")"; done
  } > "$RUN/env"
  chmod 600 "$RUN/env"

  local s r
  for s in $(services); do
    for r in $(seq 1 "$REPLICAS"); do
      local pidfile="$RUN/$(instance "$s" "$r").pid" log="$RUN/logs/$(instance "$s" "$r").log"
      if alive "$pidfile"; then echo "$(instance "$s" "$r"): already running"; continue; fi
      # Services start in order of their dependencies' readiness by retrying themselves; each gets
      # every AIMIS_* variable of this environment, its replica's port and its Kafka principal.
      env "AIMIS_${s^^}_PORT=$(port_of "$s" "$r")" "AIMIS_KAFKA_USERNAME=${AIMIS_KAFKA_USERNAME:-$s}" \
        setsid "$PY" -m "services.$s" >> "$log" 2>&1 < /dev/null &
      echo $! > "$pidfile"
    done
  done
  for s in $(services); do
    for r in $(seq 1 "$REPLICAS"); do
      local url="http://127.0.0.1:$(port_of "$s" "$r")/readyz" t=0 name
      name=$(instance "$s" "$r")
      until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if ! alive "$RUN/$name.pid"; then echo "$name exited; last log lines:"; tail -20 "$RUN/logs/$name.log"; exit 1; fi
        t=$((t + 1)); [ "$t" -gt 600 ] && { echo "$name not ready after 120 s; see $RUN/logs/$name.log"; exit 1; }
        sleep 0.2
      done
    done
  done
  echo
  echo "AIMIS Billing is up."
  echo "  kafka        $AIMIS_KAFKA_BOOTSTRAP"
  echo "  postgres     $AIMIS_DATABASE_URL"
  for s in $(services); do
    [ "$s" = console ] && continue
    for r in $(seq 1 "$REPLICAS"); do
      printf '  %-14s http://127.0.0.1:%s  (docs: /docs, log: %s)\n' "$(instance "$s" "$r")" "$(port_of "$s" "$r")" \
        ".run/logs/$(instance "$s" "$r").log"
    done
  done
  echo "  console        http://127.0.0.1:$(port_of console)/login  (sign in with a token: .venv/bin/aimis token mint --org ORG)"
  if [ "$AIMIS_KAFKA_SECURITY" = "scram" ]; then echo "  kafka users    ${AIMIS_KAFKA_CREDENTIALS:-}"; fi
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
  local f
  for f in "$RUN"/*.pid; do [ -f "$f" ] && stop_pid "$f" "$(basename "$f" .pid)"; done
  if [ -d "$RUN/kafka" ]; then "$LOCAL/kafka.sh" stop "$RUN/kafka" && echo "kafka: stopped"; fi
  if [ -d "$RUN/pg" ]; then "$LOCAL/postgres.sh" stop "$RUN/pg" && echo "postgres: stopped"; fi
}

status() {
  local s
  local f
  for s in $(services); do alive "$RUN/$s.pid" || echo "$s: stopped"; done
  for f in "$RUN"/*.pid "$RUN"/kafka/kafka.pid "$RUN"/kafka/node-*/kafka.pid; do
    [ -f "$f" ] || continue
    if alive "$f"; then echo "$(basename "$(dirname "$f")")/$(basename "$f" .pid): running (pid $(cat "$f"))"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: stack.sh up|down|status" >&2; exit 2 ;;
esac
