#!/usr/bin/env bash
# Durable mode beside the default, with librdkafka's rdkafka_performance: acks=all produce
# throughput of 100-byte records, then delivery latency (p50/p99/p99.9) at RATE records/s
# (issue 15's target load: half of 1 M/s), for the default broker and for `durability = "fsync"` (every
# acknowledged record fsynced, group-committed per partition). Prints a table; asserts
# nothing (a benchmark, not a test).
#
#   bash runtime/benches/durable_bench.sh
#
# Knobs: PARTITIONS ["1 4"], N [3000000] records per throughput run, RATE [500000],
# LAT_SECONDS [4] per
# latency run (the first half second dropped as warm-up), LINGER [5] ms (librdkafka's
# default) in the latency runs, BUILD [1], KEEP [0]; see kafka_bench.sh for the columns.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/kafka_bench.sh
source "$ROOT/runtime/benches/kafka_bench.sh"

PARTITIONS=${PARTITIONS:-"1 4"}
N=${N:-3000000}
RATE=${RATE:-500000}
LAT_SECONDS=${LAT_SECONDS:-4}
LINGER=${LINGER:-5}

build_rdkafka_performance
build_broker
make_work_dir
DURABLE_CONFIG=$WORK/durable.toml
echo 'durability = "fsync"' >"$DURABLE_CONFIG"

fsyncs() { curl -s "http://$ADMIN/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }

for mode in default fsync; do
    BROKER_CONFIG=
    [[ $mode == fsync ]] && BROKER_CONFIG=$DURABLE_CONFIG
    start_broker
    log "broker ($mode) pid $BROKER_PID on $BOOTSTRAP, data in $DATA"
    for p in $PARTITIONS; do
        create_topic "$mode-p$p" "$p"
        before=$(fsyncs sluice_durable_fsyncs_total)
        run_phase "$mode produce acks=all" "$p" produce "$N" 1 -- \
            -P -t "$mode-p$p" -s 100 -a -1 "${PRODUCE_OPTS[@]}"
        after=$(fsyncs sluice_durable_fsyncs_total)
        ROWS[-1]="${ROWS[-1]}| $((after - before)) fsyncs"
    done
    stop_broker
done

for mode in default fsync; do
    BROKER_CONFIG=
    [[ $mode == fsync ]] && BROKER_CONFIG=$DURABLE_CONFIG
    start_broker
    for p in $PARTITIONS; do
        rate=$RATE
        LAT_WARMUP=$((rate / 2))
        create_topic "$mode-lat-p$p" "$p"
        before=$(fsyncs sluice_durable_fsyncs_total)
        run_phase "$mode latency ${rate}/s" "$p" latency "$((rate * LAT_SECONDS))" 1 -- \
            -P -t "$mode-lat-p$p" -s 100 -r "$rate" -a -1 -l -A "$WORK/latency.txt" \
            -X linger.ms="$LINGER" "${PRODUCE_OPTS[@]:2}"
        after=$(fsyncs sluice_durable_fsyncs_total)
        ROWS[-1]="${ROWS[-1]}| $((after - before)) fsyncs"
    done
    stop_broker
done

echo
echo "sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') + rdkafka_performance" \
    "($(librdkafka_version)) on $(nproc) cores, Linux $(uname -r), data dir on $(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2 }')"
echo "100-byte records, acks=all; fsync = durability = \"fsync\" (every acknowledged record fsynced);"
echo "latency runs at $RATE records/s, linger.ms=$LINGER, first half second dropped;"
echo "columns as in kafka_bench.sh, plus the fsyncs run."
printf "$ROW_FMT\n" scenario parts records "records/s" "MB/s" p50 p99 p99.9 \
    "broker" "client" "other" "peak RSS" "RSS end" data
printf '%s\n' "${ROWS[@]}"
