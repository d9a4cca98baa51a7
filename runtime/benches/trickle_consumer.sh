#!/usr/bin/env bash
# What a consumer long-polling many quiet partitions costs the broker: the Java console
# consumer (kafka-clients, fetch sessions, KIP-227) subscribed to a topic of PARTITIONS
# partitions while rdkafka_performance trickles RATE records/s of 100 B into it for SECS
# seconds, against sluice and Apache Kafka running at once, taking turns ROUNDS times.
# Prints the broker CPU each spent over the trickle and the records the consumer printed.
#
# A benchmark, not a test: it asserts nothing.
#
#   bash runtime/benches/trickle_consumer.sh
#
# Knobs: PARTITIONS [1000], RATE [2000], SECS [20], ROUNDS [2], BUILD [1] (0: use the
# release binary as it is), KAFKA_HEAP [1g].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

PARTITIONS=${PARTITIONS:-1000}
RATE=${RATE:-2000}
SECS=${SECS:-20}
ROUNDS=${ROUNDS:-2}

build_rdkafka_performance
build_broker
make_work_dir
start_both_brokers
JARS="$ROOT/tests/kafka/target/dependency/*"
for boot in "$S_BOOT" "$K_BOOT"; do
    "$SLUICE" topic create trickle --partitions "$PARTITIONS" --bootstrap "$boot" >/dev/null
done
# Kafka makes 1,000 partitions' logs in the background: let that pass before measuring.
sleep 10

ROWS=()
one() { # TARGET ROUND
    local target=$1 round=$2 pid boot
    if [[ $target == sluice ]]; then pid=$S_PID boot=$S_BOOT; else pid=$K_PID boot=$K_BOOT; fi
    kill -0 "$pid" 2>/dev/null || { echo "the $target broker is gone" >&2; exit 1; }
    local out=$WORK/console.$target.$round
    java -Xms256m -Xmx256m -Dlog4j2.level=warn -cp "$JARS" \
        org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$boot" \
        --topic trickle --group "trickle-$round" >"$out" 2>"$out.err" &
    local cpid=$!
    BG_PIDS+=("$cpid")
    # Joined and long-polling every partition before the trickle starts.
    sleep 10
    local t0 t1
    t0=$(cpu_ticks "$pid")
    "$RDKPERF" -P -t trickle -s 100 -r "$RATE" -c $((RATE * SECS)) -b "$boot" -X linger.ms=5 \
        -q >"$WORK/producer.$target.$round" 2>&1
    sleep 1
    t1=$(cpu_ticks "$pid")
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
    local got
    got=$(wc -l <"$out")
    ROWS+=("$(printf '%-7s %5s | %12s | %9s of %s' "$target" "$round" \
        "$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')" "$got" \
        $((RATE * SECS)))")
}

for r in $(seq 1 "$ROUNDS"); do
    # Which broker goes first alternates.
    if ((r % 2)); then one sluice "$r"; one kafka "$r"; else one kafka "$r"; one sluice "$r"; fi
done

printf '\nJava console consumer on %s partitions, %s records/s of 100 B for %s s (+1 s)\n' \
    "$PARTITIONS" "$RATE" "$SECS"
printf 'sluice %s and Apache Kafka %s running at once\n' "$(git -C "$ROOT" rev-parse --short HEAD)" \
    "$(kafka_version)"
printf '%-7s %5s | %12s | %s\n' broker round "broker CPU s" "records consumed"
printf '%s\n' "${ROWS[@]}"
