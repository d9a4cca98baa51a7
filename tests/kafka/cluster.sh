#!/usr/bin/env bash
# An Apache Kafka 4.x cluster on loopback, from Maven Central's jars (tests/kafka/pom.xml):
# NODES KRaft nodes, each broker and controller ("combined" mode), replication factor and
# min.insync.replicas as a production cluster of that size would set them. For tests and
# benchmarks that hold sluice against Kafka itself, or run sluice's workers on it.
#
#   bash tests/kafka/cluster.sh start [DIR]     # starts NODES (3) nodes, waits until ready
#   bash tests/kafka/cluster.sh bootstrap [DIR] # prints the bootstrap list
#   bash tests/kafka/cluster.sh kill N [DIR]    # kill -9 of node N
#   bash tests/kafka/cluster.sh restart N [DIR] # starts node N again on its data
#   bash tests/kafka/cluster.sh stop [DIR]      # stops every node and removes DIR
#
# Knobs: NODES [3], BASE_PORT [29090] (node N listens on BASE_PORT+N for clients and
# BASE_PORT+100+N for the controller quorum), HEAP [512m] per node, BROKER_SESSION_MS
# [9000, Kafka's default]: how long the controller waits for a silent broker before it
# fences it and moves its partitions' leadership (a dead node's partitions have no
# leader until then; heartbeats go at a third of it, at most Kafka's default 2 s),
# EXTRA_PROPS: lines added to every node's server.properties.
# JVM settings per node: -Xms/-Xmx HEAP, G1, as Kafka's own kafka-server-start.sh sets them
# (its default heap is 1 GB; three nodes share this 2-core machine with the tests).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODES=${NODES:-3}
BASE_PORT=${BASE_PORT:-29090}
HEAP=${HEAP:-512m}
BROKER_SESSION_MS=${BROKER_SESSION_MS:-9000}
cmd=${1:-start}
case $cmd in
kill | restart) node=${2:?node number}; DIR=${3:-/tmp/sluice-kafka-cluster} ;;
*) DIR=${2:-/tmp/sluice-kafka-cluster} ;;
esac

classpath() {
    if [ ! -d "$HERE/target/dependency" ]; then
        (cd "$HERE" && mvn -q package >&2)
    fi
    echo "$HERE/target/dependency/*"
}

bootstrap() {
    local list=""
    for i in $(seq 1 "$NODES"); do list+="${list:+,}127.0.0.1:$((BASE_PORT + i))"; done
    echo "$list"
}

write_config() {
    local i=$1 voters=""
    for j in $(seq 1 "$NODES"); do voters+="${voters:+,}$j@127.0.0.1:$((BASE_PORT + 100 + j))"; done
    local rf=$NODES isr=$((NODES < 2 ? 1 : 2))
    mkdir -p "$DIR/node$i"
    cat >"$DIR/node$i/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((BASE_PORT + i)),CONTROLLER://127.0.0.1:$((BASE_PORT + 100 + i))
advertised.listeners=PLAINTEXT://127.0.0.1:$((BASE_PORT + i))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/node$i/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=$BROKER_SESSION_MS
broker.heartbeat.interval.ms=$((BROKER_SESSION_MS / 3 < 2000 ? BROKER_SESSION_MS / 3 : 2000))
# KIP-848 groups: a 10 s session (Kafka's default is 45 s), heartbeats every 2 s.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=2000
${EXTRA_PROPS:-}
PROPS
    cat >"$DIR/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=\${sys:kafka.logs.dir}/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
PROPS
}

start_node() {
    local i=$1 cp
    cp=$(classpath)
    # shellcheck disable=SC2086
    nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dkafka.logs.dir="$DIR/node$i" \
        -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
        -cp "$cp" kafka.Kafka "$DIR/node$i/server.properties" \
        >"$DIR/node$i/stdout.log" 2>&1 &
    echo $! >"$DIR/node$i/pid"
}

wait_ready() {
    local deadline=$((SECONDS + 120)) cp
    cp=$(classpath)
    # Ready: every node answers, and the cluster can create a topic replicated to all of them.
    until java -cp "$cp" -Dlog4j2.configurationFile="$DIR/log4j2.properties" -Dkafka.logs.dir="$DIR" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" --create --if-not-exists \
        --topic cluster-ready --partitions 1 --replication-factor "$NODES" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "the Kafka cluster in $DIR did not come up; logs:" >&2
            tail -n 20 "$DIR"/node*/stdout.log "$DIR"/node*/server.log >&2 || true
            exit 1
        fi
        sleep 1
    done
}

case $cmd in
start)
    rm -rf "$DIR"
    mkdir -p "$DIR"
    cp=$(classpath)
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    for i in $(seq 1 "$NODES"); do
        write_config "$i"
        java -cp "$cp" -Dlog4j2.configurationFile="$DIR/log4j2.properties" -Dkafka.logs.dir="$DIR" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/node$i/server.properties" >/dev/null 2>&1
    done
    for i in $(seq 1 "$NODES"); do start_node "$i"; done
    wait_ready
    echo "Kafka cluster of $NODES nodes ready: $(bootstrap)"
    ;;
bootstrap) bootstrap ;;
kill) kill -9 "$(cat "$DIR/node$node/pid")" ;;
restart) start_node "$node" ;;
stop)
    for f in "$DIR"/node*/pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 2
    for f in "$DIR"/node*/pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 start|bootstrap|kill N|restart N|stop [DIR]" >&2
    exit 2
    ;;
esac
