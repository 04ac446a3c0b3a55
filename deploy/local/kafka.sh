#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) from Maven Central jars, no Docker.
#   kafka.sh fetch                    resolve the jars into the cache (once)
#   kafka.sh start DIR PORT CTRL_PORT start a broker with its data/logs in DIR, wait until ready
#   kafka.sh stop DIR                 stop the broker started in DIR (by its pid)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KAFKA_VERSION=4.1.1
CACHE="${AIMIS_CACHE:-$HOME/.cache/aimis}/kafka-$KAFKA_VERSION"
LIB="$CACHE/lib"

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

start() {
  local dir="$1" port="$2" ctrl="$3"
  fetch
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
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
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    id=$(java -cp "$LIB/*" kafka.tools.StorageTool random-uuid)
    java -cp "$LIB/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" > "$dir/format.log" 2>&1
  fi
  # setsid: the broker gets its own process group, so stop can end it by id.
  setsid java -Xms256m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$LIB/*" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/kafka.pid"
}

stop() {
  local dir="$1" pid
  [ -f "$dir/kafka.pid" ] || return 0
  pid=$(cat "$dir/kafka.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/kafka.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: kafka.sh fetch | start DIR PORT CTRL_PORT | stop DIR" >&2; exit 2 ;;
esac
