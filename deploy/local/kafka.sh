#!/usr/bin/env bash
# Apache Kafka (KRaft) from Maven Central jars, no Docker: one node, or a cluster of N nodes on
# local ports, optionally with SASL/SCRAM-SHA-512 and ACLs.
#   kafka.sh fetch                              resolve the jars into the cache (once)
#   kafka.sh start DIR PORT CTRL_PORT           one node (broker + controller), data and logs in DIR
#   kafka.sh start-cluster DIR PORTS CTRL_PORTS N nodes (comma-separated port lists), DIR/node-<i>
#   kafka.sh stop DIR                           stop every node started in DIR (by pid)
#   kafka.sh stop-node DIR I | kill-node DIR I  stop (SIGTERM) or kill -9 node I of a cluster
#   kafka.sh start-node DIR I                   start node I again with its saved settings
# Security: with AIMIS_KAFKA_SECURITY=scram, clients authenticate with SCRAM-SHA-512 and an ACL
# authorizer denies what no ACL allows. The principals and their passwords are DIR/credentials.json
# ({principal: password}; written with random passwords when missing; `admin` is the super user).
# The controller listener (broker <-> controller only) authenticates with SASL/PLAIN as `admin`.
# Principals' ACLs are written by deploy/local/kafka_provision.py, not here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KAFKA_VERSION=4.1.1
CACHE="${AIMIS_CACHE:-$HOME/.cache/aimis}/kafka-$KAFKA_VERSION"
LIB="$CACHE/lib"
SECURITY="${AIMIS_KAFKA_SECURITY:-none}"
PRINCIPALS="admin order metering entitlement expiry console platform analytics"

fetch() {
  if [ -f "$CACHE/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is required to fetch the broker jars" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is required" >&2; exit 1; }
  mkdir -p "$LIB"
  echo "kafka: fetching the Kafka $KAFKA_VERSION broker's jars with Maven into $LIB (first run only)"
  # Progress: a line every 25 files Maven downloads (its own plugins included); the full log on failure.
  local rc
  set +e
  mvn -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIB" -Dkafka.version="$KAFKA_VERSION" 2>&1 \
    | tee "$CACHE/mvn.log" \
    | awk '/Downloaded from/ { n++; if (n % 25 == 0) { printf "  kafka: %d files downloaded\n", n; fflush() } }
           END { if (n % 25) printf "  kafka: %d files downloaded\n", n }'
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then tail -40 "$CACHE/mvn.log" >&2; echo "kafka.sh: Maven failed (log: $CACHE/mvn.log)" >&2; exit 1; fi
  echo "kafka: $(ls "$LIB" | wc -l) jars in $LIB ($SECONDS s)"
  touch "$CACHE/.complete"
}

credentials() {  # DIR: write DIR/credentials.json once, with a random password per principal
  local file="$1/credentials.json"
  [ -f "$file" ] && return 0
  python3 - "$file" $PRINCIPALS <<'PY'
import json, os, secrets, sys
path, names = sys.argv[1], sys.argv[2:]
with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
    json.dump({n: secrets.token_urlsafe(24) for n in names}, f, indent=2)
PY
}

password_of() {  # DIR PRINCIPAL
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1/credentials.json" "$2"
}

# write_node DIR NODE_ID PORT CTRL_PORT VOTERS N CREDS_DIR: server.properties and log4j2 for one node
write_node() {
  local dir="$1" id="$2" port="$3" ctrl="$4" voters="$5" n="$6" creds="$7"
  local rf=1 isr=1
  if [ "$n" -ge 3 ]; then rf=3; isr=2; fi
  mkdir -p "$dir/data"
  {
    echo "process.roles=broker,controller"
    echo "node.id=$id"
    echo "controller.quorum.voters=$voters"
    echo "controller.listener.names=CONTROLLER"
    echo "log.dirs=$dir/data"
    echo "num.partitions=6"
    echo "default.replication.factor=$rf"
    echo "min.insync.replicas=$isr"
    echo "offsets.topic.replication.factor=$rf"
    echo "offsets.topic.num.partitions=6"
    echo "transaction.state.log.replication.factor=$rf"
    echo "transaction.state.log.min.isr=$isr"
    echo "share.coordinator.state.topic.replication.factor=$rf"
    echo "share.coordinator.state.topic.min.isr=$isr"
    echo "group.initial.rebalance.delay.ms=0"
    # Two cores shared with PostgreSQL and the services: a thread per core, not 3 network + 8 I/O
    # threads handing each request over (docs/benchmarks.md, ninth pass).
    echo "num.network.threads=1"
    echo "num.io.threads=2"
    echo "unclean.leader.election.enable=false"
    if [ "$SECURITY" = "scram" ]; then
      local admin_pw
      admin_pw=$(password_of "$creds" admin)
      echo "listeners=CLIENT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl"
      echo "advertised.listeners=CLIENT://127.0.0.1:$port"
      echo "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
      echo "inter.broker.listener.name=CLIENT"
      echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
      echo "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
      echo "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512"
      echo "listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin_pw\";"
      echo "sasl.mechanism.controller.protocol=PLAIN"
      echo "listener.name.controller.sasl.enabled.mechanisms=PLAIN"
      echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin_pw\" user_admin=\"$admin_pw\";"
      echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
      echo "super.users=User:admin"
      echo "allow.everyone.if.no.acl.found=false"
      echo "auto.create.topics.enable=false"
    else
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "auto.create.topics.enable=true"
    fi
  } > "$dir/server.properties"
  chmod 600 "$dir/server.properties"
  cat > "$dir/log4j2.properties" <<'L4J'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaServer
logger.kafka.level = INFO
L4J
}

# format_node DIR CLUSTER_ID CREDS_DIR: format the node's storage once (with SCRAM users when secured)
format_node() {
  local dir="$1" cid="$2" creds="$3" args=()
  [ -f "$dir/data/meta.properties" ] && return 0
  if [ "$SECURITY" = "scram" ]; then
    local p
    for p in $PRINCIPALS; do
      args+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(password_of "$creds" "$p")]")
    done
  fi
  java -cp "$LIB/*" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" "${args[@]}" \
    > "$dir/format.log" 2>&1
}

run_node() {  # DIR: start the formatted node in the background, in its own process group
  local dir="$1" heap="${AIMIS_KAFKA_HEAP:-768m}"
  # SerialGC: no concurrent collector threads or G1 write barriers on a small, mostly young heap;
  # C1 only: the broker is up in seconds, and C2's compile threads would compete with the services.
  setsid java -Xms256m "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$LIB/*" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/kafka.pid"
}

cluster_id() {  # DIR: one id for every node of DIR, kept in DIR/cluster.id
  [ -f "$1/cluster.id" ] || java -cp "$LIB/*" kafka.tools.StorageTool random-uuid > "$1/cluster.id"
  cat "$1/cluster.id"
}

start() {
  local dir="$1" port="$2" ctrl="$3"
  fetch
  mkdir -p "$dir"
  [ "$SECURITY" = "scram" ] && credentials "$dir"
  write_node "$dir" 1 "$port" "$ctrl" "1@127.0.0.1:$ctrl" 1 "$dir"
  format_node "$dir" "$(cluster_id "$dir")" "$dir"
  run_node "$dir"
}

start_cluster() {
  local dir="$1" ports ctrls n i voters=""
  IFS=, read -ra ports <<< "$2"
  IFS=, read -ra ctrls <<< "$3"
  n=${#ports[@]}
  [ "$n" -eq "${#ctrls[@]}" ] || { echo "kafka.sh: as many controller ports as ports" >&2; exit 2; }
  fetch
  mkdir -p "$dir"
  [ "$SECURITY" = "scram" ] && credentials "$dir"
  for ((i = 0; i < n; i++)); do voters+="${voters:+,}$((i + 1))@127.0.0.1:${ctrls[$i]}"; done
  local cid
  cid=$(cluster_id "$dir")
  for ((i = 0; i < n; i++)); do
    local node="$dir/node-$((i + 1))"
    write_node "$node" "$((i + 1))" "${ports[$i]}" "${ctrls[$i]}" "$voters" "$n" "$dir"
    format_node "$node" "$cid" "$dir"
    run_node "$node"
  done
}

stop_dir() {  # DIR [SIGNAL]: stop the node whose pid is in DIR/kafka.pid
  local dir="$1" sig="${2:-TERM}" pid
  [ -f "$dir/kafka.pid" ] || return 0
  pid=$(cat "$dir/kafka.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/kafka.pid"
}

stop() {  # DIR: SIGTERM every node of DIR at once, then wait for each (kill -9 after 30 s)
  local dir="$1" node pids=()
  for node in "$dir" "$dir"/node-*; do
    [ -f "$node/kafka.pid" ] || continue
    kill "$(cat "$node/kafka.pid")" 2>/dev/null || true
  done
  for node in "$dir" "$dir"/node-*; do [ -d "$node" ] && stop_dir "$node"; done
  return 0
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  start-cluster) shift; start_cluster "$@" ;;
  stop) shift; stop "$@" ;;
  stop-node) stop_dir "$2/node-$3" ;;
  kill-node) stop_dir "$2/node-$3" KILL ;;
  start-node) fetch; run_node "$2/node-$3" ;;
  credentials) credentials "$2" ;;
  *) echo "usage: kafka.sh fetch | start DIR PORT CTRL_PORT | start-cluster DIR PORTS CTRL_PORTS | stop DIR" \
          "| stop-node|kill-node|start-node DIR I | credentials DIR" >&2; exit 2 ;;
esac
