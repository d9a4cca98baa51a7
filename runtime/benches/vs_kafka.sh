#!/usr/bin/env bash
# sluice against Apache Kafka 4.x itself, side by side on this machine: kafka_bench.sh's
# phases (rdkafka_performance: produce 100 B and 1 KiB records with acks=1 and all, consume,
# fixed-rate latency) run against a sluice broker, then against one Kafka KRaft node started
# from Maven Central's jars, then one table compares them row by row.
#
# A benchmark, not a test: it asserts nothing.
#
#   bash runtime/benches/vs_kafka.sh
#
# Knobs: those of kafka_bench.sh (PARTITIONS, N_SMALL, N_LARGE, LAT_RATE, LAT_COUNT,
# COMPRESSION, PRODUCERS, QUIET_WAIT, KAFKA_HEAP), with smaller defaults here so both runs
# take about 25 minutes: PARTITIONS="1 64", N_SMALL=2000000, N_LARGE=500000, and the
# extra rows: latency (acks=all) at 10, 50 and 90% of sluice's peak 100-byte produce rate at
# each partition count (LAT_FRACTIONS; Kafka gets the same absolute rates), WIDE=1000
# partitions, IDLE=500 idle connections beside the load.
# Each broker's own table and log stay in target/bench/vs-kafka/. Then (DUEL=1, default)
# produce_duel.sh and consume_duel.sh compare the produce and consume rows again with both
# brokers up at once, taking turns: tables of their own, the ones to read on this VM.
#
# JAVA=1 (default) adds the Java client's own kafka-producer-perf-test and
# kafka-consumer-perf-test rows.
#
# Columns: records/s of each (and sluice / Kafka); broker CPU seconds per million records
# (from /proc/PID/stat, so a client-bound run still compares the brokers; Kafka / sluice:
# how many times more CPU Kafka spends); p99 and p99.9 latency (produce() to acknowledgement)
# of the latency rows and of the Java producer's; broker peak RSS.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/target/bench/vs-kafka
mkdir -p "$OUT"
export PARTITIONS=${PARTITIONS:-"1 64"}
export N_SMALL=${N_SMALL:-2000000}
export N_LARGE=${N_LARGE:-500000}
export LAT_FRACTIONS=${LAT_FRACTIONS-"10 50 90"}
export WIDE=${WIDE:-1000}
export IDLE=${IDLE:-500}

# The Kafka jars (about 100 MB from Maven Central the first time).
(cd "$ROOT/tests/kafka" && [ -d target/dependency ] || mvn -q -B package >&2)

for target in sluice kafka; do
    echo "== $target: kafka_bench.sh (log: $OUT/$target.log)" >&2
    peaks=
    [[ $target == kafka ]] && peaks=$OUT/sluice.txt
    LAT_PEAK_FILE=$peaks BUILD=$([[ $target == kafka ]] && echo 0 || echo 1) TARGET=$target \
        bash "$ROOT/runtime/benches/kafka_bench.sh" >"$OUT/$target.txt" 2>"$OUT/$target.log" || {
        tail -n 30 "$OUT/$target.log" >&2
        exit 1
    }
done

echo
grep -m1 'rdkafka_performance (' "$OUT/sluice.txt"
grep -m1 'rdkafka_performance (' "$OUT/kafka.txt" | sed 's/ + rdkafka_performance.*//'
echo "same client, same machine, one after the other; rows from $OUT/{sluice,kafka}.txt"
echo
# Table rows are '|'-separated: scenario, parts, records, records/s, MB/s, p50, p99, p99.9,
# broker, client, other, peak RSS, RSS end, data, cpu s/M.
awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    function ratio(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    FNR == 1 { file++ }
    NF >= 15 && trim($2) ~ /^[0-9]+$/ {
        key = trim($1) "|" trim($2)
        if (file == 1) { order[++n] = key }
        rps[file, key] = trim($4); p99[file, key] = trim($7); p999[file, key] = trim($8)
        rss[file, key] = trim($12); cpu[file, key] = trim($15)
    }
    END {
        fmt = "%-34s %5s | %10s %10s %6s | %7s %7s %6s | %9s %9s | %9s %9s | %8s %8s\n"
        printf fmt, "scenario", "parts", "sluice r/s", "kafka r/s", "ratio", "cpu s/M", "kafka", "x", \
            "p99", "kafka", "p99.9", "kafka", "peak RSS", "kafka"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, kk, "|")
            printf fmt, kk[1], kk[2], rps[1, k], rps[2, k], ratio(rps[1, k], rps[2, k]), \
                cpu[1, k], cpu[2, k], ratio(cpu[2, k], cpu[1, k]), p99[1, k], p99[2, k], \
                p999[1, k], p999[2, k], \
                rss[1, k], rss[2, k]
        }
    }' "$OUT/sluice.txt" "$OUT/kafka.txt"

# The rows above ran 15 minutes apart, and a consume's speed here swings with the machine's
# state, a produce's with its page cache: consume_duel.sh and produce_duel.sh run them again
# with both brokers up, taking turns.
if [[ ${DUEL:-1} == 1 ]]; then
    for duel in produce consume; do
        echo "== ${duel}_duel.sh (log: $OUT/$duel-duel.log)" >&2
        BUILD=0 bash "$ROOT/runtime/benches/${duel}_duel.sh" >"$OUT/$duel-duel.txt" 2>"$OUT/$duel-duel.log" || {
            tail -n 30 "$OUT/$duel-duel.log" >&2
            exit 1
        }
        cat "$OUT/$duel-duel.txt"
    done
fi
