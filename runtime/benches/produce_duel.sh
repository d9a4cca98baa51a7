#!/usr/bin/env bash
# The produce rows of vs_kafka.sh, with sluice and Apache Kafka running at once and their
# produces taking turns, each into a topic of its own made for it and deleted after it:
# rdkafka_performance produces the same records to each, ROUNDS times, alternating which
# broker goes first, and the median of each is compared.
#
# A benchmark, not a test: it asserts nothing.
#
#   bash runtime/benches/produce_duel.sh
#
# Why: in vs_kafka.sh the two brokers' runs are 15 minutes apart, and a produce's cost here
# depends on the machine's page cache more than on the broker: past about 2.5 GB written in
# a run, the guest's fresh page-cache pages each cost the host a fault on first touch (it
# takes back the memory the guest frees), and a 1 KiB produce costs either broker about
# 3 CPU seconds per million records instead of 0.4. Which rows that hits shifts from run to
# run. Taking turns, with every produce into fresh files and the previous produce's files
# deleted (by either broker at once, waited for), gives both brokers the same machine.
# Without that wait, the run after sluice's deletion got the pages it freed and ran up to
# 3.5 times faster than the run after Kafka's (which deletes a minute later), whichever
# broker it was.
#
# Knobs: ROUNDS [4: each broker first in half of them]; SHAPES ["1:100:2000000:1
# 1:100:2000000:1:500 64:100:2000000:1 64:100:2000000:all 64:1024:500000:1
# 64:1024:500000:all 1:1024:500000:all 1:100:2750000:all:0:275000"], each
# PARTITIONS:RECORD_BYTES:RECORDS:ACKS[:IDLE[:RATE]], IDLE connections held open beside the
# produce (lib.sh's start_idle); with a RATE, a fixed-rate latency row as vs_kafka.sh's
# (records/s, linger.ms=0, every delivery's latency; the first RATE/2 dropped as warm-up;
# the default one is vs_kafka.sh's slowest, 10% of sluice's peak on one partition);
# BUILD [1] (0: use the release binary as it is); KAFKA_HEAP [1g]; QUIET_WAIT (see lib.sh).
#
# Columns: median records/s of each broker (and the range over the rounds), sluice / Kafka,
# broker CPU seconds per million records (median) and Kafka / sluice, client CPU (user +
# system seconds per run, median), and for the fixed-rate rows the p99.9 delivery latency
# (median over the rounds).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

ROUNDS=${ROUNDS:-4}
SHAPES=${SHAPES:-"1:100:2000000:1 1:100:2000000:1:500 64:100:2000000:1 64:100:2000000:all 64:1024:500000:1 64:1024:500000:all 1:1024:500000:all 1:100:2750000:all:0:275000"}

build_rdkafka_performance
build_broker
make_work_dir
# Kafka deletes a deleted topic's files a minute later (log.segment.delete.delay.ms),
# sluice at once: the pages they free would go to whichever produce ran then.
export EXTRA_PROPS=log.segment.delete.delay.ms=0
start_both_brokers
unset EXTRA_PROPS

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# one TARGET ROW TOPIC PARTS SIZE COUNT ACKS IDLE RATE: one produce into a new topic,
# deleted after, beside IDLE idle connections, at RATE records/s (0: as fast as it goes);
# appends "records/s cpu_s_per_M client_s p99.9_ms" to $WORK/TARGET.ROW.
one() {
    local target=$1 row=$2 topic=$3 parts=$4 size=$5 count=$6 acks=$7 idle=$8 rate=$9 pid
    if [[ $target == sluice ]]; then
        pid=$S_PID BOOTSTRAP=$S_BOOT BROKER_PID=$S_PID
    else
        pid=$K_PID BOOTSTRAP=$K_BOOT BROKER_PID=$K_PID
    fi
    kill -0 "$pid" 2>/dev/null || { echo "the $target broker is gone" >&2; exit 1; }
    TARGET=$target create_topic "$topic" "$parts"
    ((idle > 0)) && start_idle "$idle"
    settle
    local t0 t1 out=$WORK/out.$target ack_arg=$acks
    [[ $acks == all ]] && ack_arg=-1
    local opts=("${PRODUCE_OPTS[@]}")
    # As vs_kafka.sh's latency rows: no lingering, every delivery's latency in microseconds.
    ((rate > 0)) && opts=(-r "$rate" -l -A "$out.lat" -X linger.ms=0)
    rm -f "$out.lat"
    t0=$(cpu_ticks "$pid")
    local TIMEFORMAT='%3U %3S'
    { time "$RDKPERF" -b "$BOOTSTRAP" -P -t "$topic" -s "$size" -a "$ack_arg" -c "$count" \
        "${opts[@]}" >"$out" 2>&1; } 2>"$out.time" || {
        echo "$target $topic: rdkafka_performance failed:" >&2
        tail -n 20 "$out" >&2
        exit 1
    }
    t1=$(cpu_ticks "$pid")
    stop_idle
    # "% N messages produced (B bytes), D delivered (offset O, F failed) in T ms: R msgs/s ..."
    local line rps delivered client
    line=$(grep -E '^% [0-9]+ messages produced' "$out" | tail -n1)
    read -r delivered rps < <(awk '{ print $7, $15 }' <<<"$line")
    [[ $delivered == "$count" ]] || echo "WARNING: $target $topic: $line" >&2
    client=$(awk '{ print $1 + $2 }' "$out.time")
    local p999=-
    if ((rate > 0)); then
        # Nearest rank, after the warm-up (the client's connection and metadata).
        p999=$(tail -n +"$((rate / 2 + 1))" "$out.lat" | sort -n | awk '
            { v[NR] = $1 }
            END { if (NR == 0) { print "-"; exit } i = int(0.999 * NR); if (i < 0.999 * NR) i++; printf "%.2f", v[i] / 1000 }')
    fi
    echo "$rps $(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.3f", t / hz / (n / 1e6) }') $client $p999" \
        >>"$WORK/$target.$row"
    log "$target $topic: $rps records/s, broker $((t1 - t0)) ticks, client ${client} s"
    delete_topic "$topic"
    # Every produce starts with the previous one's files deleted.
    local dir=$S_DATA i
    [[ $target == kafka ]] && dir=$K_DATA
    for ((i = 0; i < 300; i++)); do
        [[ -z $(find "$dir" -name "$topic*" -print -quit) ]] && break
        sleep 0.1
    done
    [[ -z $(find "$dir" -name "$topic*" -print -quit) ]] || echo "WARNING: $target kept $topic's files" >&2
    # cleanup() stops BROKER_PID, Kafka's (sluice's is in BG_PIDS).
    BROKER_PID=$K_PID
}

ROWS=()
for shape in $SHAPES; do
    IFS=: read -r parts size count acks idle rate <<<"$shape"
    idle=${idle:-0} rate=${rate:-0}
    row="p$parts-s$size-acks$acks-idle$idle-rate$rate"
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="sluice kafka"; else order="kafka sluice"; fi
        for target in $order; do one "$target" "$row" "duel-$row-r$r" "$parts" "$size" "$count" "$acks" "$idle" "$rate"; done
    done
    s_rps=$(cut -d' ' -f1 "$WORK/sluice.$row" | median)
    k_rps=$(cut -d' ' -f1 "$WORK/kafka.$row" | median)
    s_range="$(cut -d' ' -f1 "$WORK/sluice.$row" | sort -n | sed -n '1p;$p' | paste -sd-)"
    k_range="$(cut -d' ' -f1 "$WORK/kafka.$row" | sort -n | sed -n '1p;$p' | paste -sd-)"
    s_cpu=$(cut -d' ' -f2 "$WORK/sluice.$row" | median)
    k_cpu=$(cut -d' ' -f2 "$WORK/kafka.$row" | median)
    name="produce ${size}B acks=$acks"
    ((rate > 0)) && name="latency $rate/s ${size}B acks=$acks"
    ((idle > 0)) && name+=" +$idle idle"
    ROWS+=("$(printf '%-30s %5s | %9s %-19s %9s %-19s %5.2f | %7s %7s %6s | %6s %6s | %8s %8s' \
        "$name" "$parts" "$s_rps" "($s_range)" "$k_rps" "($k_range)" \
        "$(awk -v a="$s_rps" -v b="$k_rps" 'BEGIN { print a / b }')" \
        "$s_cpu" "$k_cpu" "$(awk -v a="$k_cpu" -v b="$s_cpu" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
        "$(cut -d' ' -f3 "$WORK/sluice.$row" | median)" "$(cut -d' ' -f3 "$WORK/kafka.$row" | median)" \
        "$(cut -d' ' -f4 "$WORK/sluice.$row" | median)" "$(cut -d' ' -f4 "$WORK/kafka.$row" | median)")")
done

echo
echo "produce, sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') and Apache Kafka $(kafka_version) running at once, taking turns"
echo "($ROUNDS rounds each, order alternating, a fresh topic each; $(librdkafka_version); medians, ranges in brackets)"
printf '%-30s %5s | %9s %-19s %9s %-19s %5s | %7s %7s %6s | %6s %6s | %8s %8s\n' scenario parts "sluice r/s" "(range)" \
    "kafka r/s" "(range)" ratio "cpu s/M" kafka x "client" kafka "p99.9 ms" kafka
printf '%s\n' "${ROWS[@]}"
