#!/usr/bin/env bash
# The consume rows of vs_kafka.sh, with sluice and Apache Kafka running at once and their
# consumes taking turns: rdkafka_performance reads the same data from each, ROUNDS times,
# alternating which broker goes first, and the median of each is compared.
#
# A benchmark, not a test: it asserts nothing.
#
#   bash runtime/benches/consume_duel.sh
#
# Why: a consume here lasts 1-3 s and is client-bound (the consumer takes more than a core,
# the broker a few percent), and on this VM the same consume swings by 1.7x with the state of
# the machine (page cache, host memory, DAMON reclaim). In vs_kafka.sh sluice's consume
# rows run 15 minutes before Kafka's, so the ratio was partly the machine's: run after run
# it came out 0.60-1.25 for the same data. Taking turns within one window gives both
# brokers the same machine.
#
# Knobs: ROUNDS [5]; SHAPES ["1:100:2000000 64:100:2000000 64:1024:500000
# 1000:100:2000000"], each PARTITIONS:RECORD_BYTES:RECORDS; BUILD [1] (0: use the release
# binary as it is); KAFKA_HEAP [1g]; QUIET_WAIT (see lib.sh).
#
# Columns: median records/s of each broker (and the range over the rounds), sluice / Kafka,
# broker CPU seconds per million records (median), client CPU (user + system seconds per
# run, median).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

ROUNDS=${ROUNDS:-5}
SHAPES=${SHAPES:-"1:100:2000000 64:100:2000000 64:1024:500000 1000:100:2000000"}

build_rdkafka_performance
build_broker
make_work_dir
start_both_brokers

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# one TARGET TOPIC PARTS COUNT: one consume; appends "records/s cpu_s_per_M client_s" to
# $WORK/TARGET.TOPIC.
one() {
    local target=$1 topic=$2 parts=$3 count=$4 pid boot
    if [[ $target == sluice ]]; then pid=$S_PID boot=$S_BOOT; else pid=$K_PID boot=$K_BOOT; fi
    kill -0 "$pid" 2>/dev/null || { echo "the $target broker is gone" >&2; exit 1; }
    local args=() i
    for ((i = 0; i < parts; i++)); do args+=(-p "$i"); done
    settle
    local t0 t1 out=$WORK/out.$target
    t0=$(cpu_ticks "$pid")
    local TIMEFORMAT='%3U %3S'
    { time "$RDKPERF" -b "$boot" -C -t "$topic" "${args[@]}" -o beginning -c "$count" >"$out" 2>&1; } 2>"$out.time"
    t1=$(cpu_ticks "$pid")
    local line rps client
    line=$(consumed_line "$out")
    [[ $(sed -E 's/^% ([0-9]+) messages.*/\1/' <<<"$line") == "$count" ]] ||
        echo "WARNING: $target $topic: $line" >&2
    rps=$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")
    client=$(awk '{ print $1 + $2 }' "$out.time")
    echo "$rps $(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.3f", t / hz / (n / 1e6) }') $client" \
        >>"$WORK/$target.$topic"
    log "$target $topic: $rps records/s, broker $((t1 - t0)) ticks, client ${client} s"
}

ROWS=()
for shape in $SHAPES; do
    IFS=: read -r parts size count <<<"$shape"
    topic="duel-p$parts-s$size"
    for target in sluice kafka; do
        if [[ $target == sluice ]]; then BOOTSTRAP=$S_BOOT; else BOOTSTRAP=$K_BOOT; fi
        TARGET=$target fill_topic "$topic" "$parts" "$size" "$count"
    done
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="sluice kafka"; else order="kafka sluice"; fi
        for target in $order; do one "$target" "$topic" "$parts" "$count"; done
    done
    s_rps=$(cut -d' ' -f1 "$WORK/sluice.$topic" | median)
    k_rps=$(cut -d' ' -f1 "$WORK/kafka.$topic" | median)
    s_range="$(cut -d' ' -f1 "$WORK/sluice.$topic" | sort -n | sed -n '1p;$p' | paste -sd-)"
    k_range="$(cut -d' ' -f1 "$WORK/kafka.$topic" | sort -n | sed -n '1p;$p' | paste -sd-)"
    ROWS+=("$(printf '%-16s %5s | %9s %-19s %9s %-19s %5.2f | %7s %7s | %6s %6s' \
        "consume ${size}B" "$parts" "$s_rps" "($s_range)" "$k_rps" "($k_range)" \
        "$(awk -v a="$s_rps" -v b="$k_rps" 'BEGIN { print a / b }')" \
        "$(cut -d' ' -f2 "$WORK/sluice.$topic" | median)" "$(cut -d' ' -f2 "$WORK/kafka.$topic" | median)" \
        "$(cut -d' ' -f3 "$WORK/sluice.$topic" | median)" "$(cut -d' ' -f3 "$WORK/kafka.$topic" | median)")")
done

echo
echo "consume, sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') and Apache Kafka $(kafka_version) running at once, taking turns"
echo "($ROUNDS rounds each, order alternating; $(librdkafka_version); medians, ranges in brackets)"
printf '%-16s %5s | %9s %-19s %9s %-19s %5s | %7s %7s | %6s %6s\n' scenario parts "sluice r/s" "(range)" \
    "kafka r/s" "(range)" ratio "cpu s/M" kafka "client" kafka
printf '%s\n' "${ROWS[@]}"
