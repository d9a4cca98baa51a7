#!/usr/bin/env bash
# Benchmark of the sluice broker with librdkafka's own benchmark tool, rdkafka_performance.
#
# This is a benchmark, not a test: it asserts nothing and prints a table of figures at the
# end. It needs no network besides crates.io (for librdkafka's sources, through the
# rdkafka-sys crate) and Debian's archive (for a C toolchain, if missing).
#
#   bash runtime/benches/kafka_bench.sh
#
# Knobs (environment variables; defaults in brackets):
#   PARTITIONS     partition counts to run every scenario with        ["1 4"]
#   N_SMALL        records for the 100-byte scenarios                 [5000000]
#   N_LARGE        records for the 1 KiB scenarios                    [2000000]
#   LAT_RATE       records/s of the latency runs                      [10000]
#   LAT_COUNT      records of each latency run                        [100000]
#   LAT_WARMUP     first latency samples dropped: the client queues
#                  records while it connects (~0.5 s)                 [LAT_RATE, 1 s]
#   COMPRESSION    producer codec: none|snappy|lz4                    [none]
#   PRODUCERS      also run the 100-byte acks=1 produce with this many
#                  producer processes at once (1: skip)               [2]
#   PROFILE        1: `perf record` the broker during the first
#                  100-byte acks=1 produce run, print top symbols     [0]
#   BUILD          0: skip `cargo build --release`; use the binary as is [1]
#   KEEP           1: keep the data and work directories (logs)       [0]
#   QUIET_WAIT     seconds to wait for other load to end before each
#                  phase                                              [300]
#   TARGET         sluice | kafka: Apache Kafka 4.x itself, one KRaft
#                  node from Maven Central's jars (tests/kafka/cluster.sh),
#                  measured by the same phases (vs_kafka.sh runs both) [sluice]
#   KAFKA_HEAP     the Kafka JVM's heap (kafka-server-start.sh's default) [1g]
#   LAT_FRACTIONS  also latency runs (acks=all) at these percentages of the peak
#                  rate, e.g. "10 50 90" (vs_kafka.sh sets it)              [""]
#   LAT_PEAK_FILE  a kafka_bench table whose "produce 100B acks=1" rows give the
#                  peak per partition count (vs_kafka.sh: sluice's, so both
#                  brokers get the same rates)                       [this run's own rows]
#   LAT_SECONDS    length of each of those runs (its topic is deleted after it, so
#                  the gigabytes they write do not crowd the page cache) [2]
#   WIDE           also produce (acks=1, all) and consume 100 B records over this
#                  many partitions, N_SMALL records in all (0: skip)  [0]
#   IDLE           also the 100-byte acks=1 produce and the latency run with this
#                  many idle client connections open (each did ApiVersions; first
#                  partition count only; 0: skip)                     [0]
#   CONSUME_RUNS   each consume phase runs this many times; the row of the median
#                  records/s is kept (one consumer run lasts about a second and
#                  varies by +-30% from run to run on this machine)   [3]
#   JAVA           1: also the Java client's own tools, kafka-producer-perf-test and
#                  kafka-consumer-perf-test (ProducerPerformance, ConsumerPerformance
#                  from tests/kafka's jars), 100 B records, acks=1 and all   [1]
#
# The broker and the client share the machine, so every figure is "broker + client on
# this box". The table says how much CPU each side used in each phase so you can tell
# which one was the bottleneck.

# ROW_FMT, the table's own printf format, is passed as a variable on purpose.
# shellcheck disable=SC2059
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

PARTITIONS=${PARTITIONS:-"1 4"}
N_SMALL=${N_SMALL:-5000000}
N_LARGE=${N_LARGE:-2000000}
LAT_RATE=${LAT_RATE:-10000}
LAT_COUNT=${LAT_COUNT:-100000}
LAT_WARMUP=${LAT_WARMUP:-$LAT_RATE}
COMPRESSION=${COMPRESSION:-none}
PROFILE=${PROFILE:-0}
PRODUCERS=${PRODUCERS:-2}
TARGET=${TARGET:-sluice}
JAVA=${JAVA:-1}
LAT_FRACTIONS=${LAT_FRACTIONS:-}
LAT_PEAK_FILE=${LAT_PEAK_FILE:-}
LAT_SECONDS=${LAT_SECONDS:-2}
WIDE=${WIDE:-0}
IDLE=${IDLE:-0}
CONSUME_RUNS=${CONSUME_RUNS:-3}

# rdkafka_performance, the broker, CPU accounting and settle(): see lib.sh.

# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------

# Producer settings: lib.sh's PRODUCE_OPTS.
[[ $COMPRESSION != none ]] && PRODUCE_OPTS+=(-z "$COMPRESSION")
# Consumer settings: librdkafka's defaults (1 MB per partition per fetch, 50 MB per fetch);
# rdkafka_performance already asks for 1M pre-fetched messages (queued.min.messages).
# Larger fetches (16 MB per partition) were tried: no faster on this machine, and the broker
# then holds whole fetch responses in memory (~200 MB peak with 4 partitions).
CONSUME_OPTS=()

ROWS=()
ROW_FMT='%-24s|%5s|%9s|%10s|%8s|%8s|%8s|%8s|%7s|%7s|%7s|%9s|%8s|%8s|%9s'
PEAK_MAX_KB=0

# run_phase NAME PARTITIONS KIND COUNT CLIENTS -- rdkafka_performance args (without -c)...
# KIND is "produce", "consume" or "latency". Runs CLIENTS copies of the client at once, each
# for COUNT/CLIENTS records, then records a table row.
run_phase() {
    local name=$1 parts=$2 kind=$3 count=$4 clients=$5
    shift 6
    local out
    out="$WORK/$(tr -c 'A-Za-z0-9=.\n-' _ <<<"$name").p$parts"
    log "$name, $parts partition(s): $clients x rdkafka_performance $* -c $((count / clients))"
    settle
    check_broker
    reset_peak
    local t0 t1 s0 s1 i
    t0=$(cpu_ticks)
    s0=$(sys_ticks)
    # bash's `time` reports the CPU of every client, since the group waits for all of them.
    local TIMEFORMAT='%3R %3U %3S'
    {
        time {
            local pids=() rc=0
            for ((i = 0; i < clients; i++)); do
                "$RDKPERF" -b "$BOOTSTRAP" "$@" -c $((count / clients)) >"$out.$i.out" 2>&1 &
                pids+=($!)
            done
            for i in "${pids[@]}"; do wait "$i" || rc=1; done
            ((rc == 0))
        }
    } 2>"$out.time" || {
        check_broker
        echo "rdkafka_performance failed:" >&2
        tail -n 20 "$out".*.out >&2
        exit 1
    }
    check_broker
    t1=$(cpu_ticks)
    s1=$(sys_ticks)
    grep -hE '^% [0-9]+ messages' "$out".*.out | tail -n "$clients" >&2 || true

    local wall usr sys
    read -r wall usr sys < <(tail -n1 "$out.time")
    # Broker CPU seconds per million records: comparable across brokers even when the
    # client, not the broker, sets the pace.
    local cpu_per_m
    cpu_per_m=$(awk -v b=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.2f", b / hz * 1e6 / n }')
    local broker_cpu client_cpu other_cpu
    read -r broker_cpu client_cpu other_cpu < <(awk -v b=$((t1 - t0)) -v all=$((s1 - s0)) \
        -v hz="$CLK_TCK" -v u="$usr" -v s="$sys" -v w="$wall" 'BEGIN {
            b = b / hz; c = u + s; o = all / hz - b - c; if (o < 0) o = 0
            printf "%d%% %d%% %d%%\n", 100 * b / w, 100 * c / w, 100 * o / w }')

    local rps="-" mbs="-" p50="-" p99="-" p999="-" done_cnt failed
    case $kind in
    produce | latency)
        # Last summary line of each client:
        # "% N messages produced (B bytes), D delivered (offset O, F failed) in T ms:
        #  R msgs/s and M MB/s, ..."   (MB = 10^6 bytes of record values)
        # One client: its own R and M. Several (started together): all delivered records
        # over the longest client's T, so the aggregate is never flattered.
        read -r rps mbs done_cnt failed < <(awk '
            /^% [0-9]+ messages produced/ { line[FILENAME] = $0 }
            END {
                for (f in line) {
                    split(line[f], a, " "); n++
                    bytes = substr(a[5], 2) * (a[2] ? a[7] / a[2] : 0)
                    d += a[7]; fail += a[11]; db += bytes
                    t = a[14]; sub(/ms:/, "", t); if (t + 0 > T) T = t + 0
                    r = a[15]; m = a[18]
                }
                if (n != 1) { if (T < 1) T = 1; r = int(d * 1000 / T); m = sprintf("%.2f", db / T / 1000) }
                print r, m, d + 0, fail + 0
            }' "$out".*.out)
        if [[ $done_cnt != $(((count / clients) * clients)) || $failed != 0 ]]; then
            echo "WARNING: $name delivered $done_cnt of $count records ($failed failed)" >&2
        fi
        ;;
    consume)
        # "% N messages (B bytes) consumed in T ms: R msgs/s (M MB/s)"
        local line
        line=$(consumed_line "$out".0.out)
        done_cnt=$(sed -E 's/^% ([0-9]+) messages.*/\1/' <<<"$line")
        rps=$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")
        mbs=$(sed -E 's/.*\(([0-9.]+) MB\/s\).*/\1/' <<<"$line")
        [[ $done_cnt == "$count" ]] || echo "WARNING: $name consumed $done_cnt of $count records" >&2
        ;;
    esac
    if [[ $kind == latency ]]; then
        # -A "$WORK/latency.txt" wrote one delivery latency per line, in microseconds: the
        # time from produce() to the delivery report, i.e. client queueing + request + broker
        # append + response. The first samples also wait for the client's connection and
        # metadata (~0.5 s): dropped as warm-up. Percentiles by nearest rank.
        read -r p50 p99 p999 < <(tail -n +"$((${PHASE_WARMUP:-$LAT_WARMUP} + 1))" "$WORK/latency.txt" | sort -n | awk '
            { v[NR] = $1 }
            function pct(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return sprintf("%.2fms", v[i] / 1000) }
            END { if (NR == 0) print "- - -"; else print pct(0.50), pct(0.99), pct(0.999) }')
    fi

    local peak rss
    peak=$(vm_kb VmHWM)
    rss=$(vm_kb VmRSS)
    ((peak > PEAK_MAX_KB)) && PEAK_MAX_KB=$peak
    ROWS+=("$(printf "$ROW_FMT" "$name" "$parts" "$count" "$rps" "$mbs" "$p50" "$p99" "$p999" \
        "$broker_cpu" "$client_cpu" "$other_cpu" "$((peak / 1024)) MiB" "$((rss / 1024)) MiB" "$(data_mb) MB" "$cpu_per_m")")
}

# keep_median N: of the last N rows, keep only the one with the median records/s (the rest
# of the row, CPU per record included, is from that same run).
keep_median() {
    local n=$1
    ((n > 1)) || return 0
    local last=("${ROWS[@]: -n}") mid
    mid=$(printf '%s\n' "${last[@]}" | awk -F'|' '{ gsub(/ /, "", $4); print $4 + 0, NR }' \
        | sort -n | awk -v m=$(((n + 1) / 2)) 'NR == m { print $2 }')
    ROWS=("${ROWS[@]:0:${#ROWS[@]}-n}" "${last[mid - 1]}")
}

# consume_phase NAME PARTITIONS COUNT -- args...: run_phase CONSUME_RUNS times, keep the median.
consume_phase() {
    local name=$1 parts=$2 count=$3 i
    shift 4
    for ((i = 0; i < CONSUME_RUNS; i++)); do
        run_phase "$name" "$parts" consume "$count" 1 -- "$@"
    done
    keep_median "$CONSUME_RUNS"
}

# run_java NAME PARTITIONS KIND COUNT -- CLASS ARGS...: one of Kafka's Java perf tools, with
# the same broker accounting as run_phase. KIND is produce (ProducerPerformance: records/s
# and its p50/p99/p99.9 send latencies, which under full load are mostly queueing) or consume
# (ConsumerPerformance: records/s of fetching, the group's join left out).
run_java() {
    local name=$1 parts=$2 kind=$3 count=$4
    shift 5
    local out
    out="$WORK/$(tr -c 'A-Za-z0-9=.\n-' _ <<<"$name").p$parts"
    log "$name, $parts partition(s): java $1 (${count} records)"
    settle
    check_broker
    reset_peak
    local t0 t1 s0 s1 start end
    t0=$(cpu_ticks)
    s0=$(sys_ticks)
    start=$(date +%s%N)
    java -Xms512m -Xmx512m -Dlog4j2.level=warn -cp "$ROOT/tests/kafka/target/dependency/*" "$@" >"$out.out" 2>&1 || {
        check_broker
        echo "java $1 failed:" >&2
        tail -n 20 "$out.out" >&2
        exit 1
    }
    end=$(date +%s%N)
    check_broker
    t1=$(cpu_ticks)
    s1=$(sys_ticks)
    local rps="-" mbs="-" p50="-" p99="-" p999="-" line
    case $kind in
    produce)
        # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency,
        #  P ms 50th, P ms 95th, P ms 99th, P ms 99.9th."
        line=$(grep -E 'records sent' "$out.out" | tail -n1)
        read -r rps mbs p50 p99 p999 < <(sed -E 's/.* ([0-9.]+) records\/sec \(([0-9.]+) MB\/sec\).* ([0-9]+) ms 50th.* ([0-9]+) ms 99th, ([0-9]+) ms 99.9th.*/\1 \2 \3ms \4ms \5ms/' <<<"$line")
        rps=${rps%.*}
        ;;
    consume)
        # CSV: start, end, MB, MB/s, records, records/s, rebalance ms, fetch ms, fetch MB/s,
        # fetch records/s.
        line=$(grep -E '^[0-9]{4}-' "$out.out" | tail -n1)
        rps=$(awk -F', *' '{ printf "%d", $10 }' <<<"$line")
        mbs=$(awk -F', *' '{ printf "%.2f", $9 }' <<<"$line")
        ;;
    esac
    local wall cpu_per_m broker_cpu other_cpu peak rss
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    cpu_per_m=$(awk -v b=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$count" 'BEGIN { printf "%.2f", b / hz * 1e6 / n }')
    read -r broker_cpu other_cpu < <(awk -v b=$((t1 - t0)) -v all=$((s1 - s0)) -v hz="$CLK_TCK" -v w="$wall" \
        'BEGIN { printf "%d%% %d%%\n", 100 * b / hz / w, 100 * (all - b) / hz / w }')
    peak=$(vm_kb VmHWM)
    rss=$(vm_kb VmRSS)
    ((peak > PEAK_MAX_KB)) && PEAK_MAX_KB=$peak
    ROWS+=("$(printf "$ROW_FMT" "$name" "$parts" "$count" "$rps" "$mbs" "$p50" "$p99" "$p999" \
        "$broker_cpu" "(java)" "$other_cpu" "$((peak / 1024)) MiB" "$((rss / 1024)) MiB" "$(data_mb) MB" "$cpu_per_m")")
}

# Reference row: how fast this machine writes the same volume as a 1 KiB produce phase into
# the page cache of the data directory's filesystem with plain `dd` (no broker, no network).
# Run last, while the broker's data is still cached, so memory is in the same state as in the
# broker's own phases. (On a VM, memory the guest has not touched recently can cost a host
# fault per page: then any writer, sluice or dd, slows down once the page cache outgrows it.)
run_reference() {
    local mib=$((N_LARGE * 1024 / 1048576)) name="reference: dd write"
    log "$name ${mib} MiB to $DATA"
    settle
    local s0 s1 wall usr sys
    s0=$(sys_ticks)
    local TIMEFORMAT='%3R %3U %3S'
    { time dd if=/dev/zero of="$DATA/dd-reference" bs=1M count="$mib" status=none; } 2>"$WORK/dd.time"
    s1=$(sys_ticks)
    rm -f "$DATA/dd-reference"
    read -r wall usr sys < <(tail -n1 "$WORK/dd.time")
    local mbs cli other
    read -r mbs cli other < <(awk -v b="$mib" -v all=$((s1 - s0)) -v hz="$CLK_TCK" \
        -v u="$usr" -v s="$sys" -v w="$wall" 'BEGIN {
            o = all / hz - u - s; if (o < 0) o = 0
            printf "%.2f %d%% %d%%\n", b * 1048576 / 1e6 / w, 100 * (u + s) / w, 100 * o / w }')
    ROWS+=("$(printf "$ROW_FMT" "$name" - "${mib}MiB" - "$mbs" - - - - "$cli" "$other" - - - -)")
}

# Reference row: the same 100-byte acks=1 produce against librdkafka's own in-process mock
# broker (test.mock.num.brokers=1: in memory, no disk, no sluice). It is the ceiling of a single
# rdkafka_performance producer on this machine: the producer's application thread, which
# allocates, queues and frees every record, runs out of one core before any broker does.
run_client_ceiling() {
    local name="reference: mock broker" out="$WORK/mock"
    log "$name: rdkafka_performance against librdkafka's in-process mock broker"
    settle
    local TIMEFORMAT='%3R %3U %3S' s0 s1
    s0=$(sys_ticks)
    { time "$RDKPERF" -P -t mock -p 0 -X test.mock.num.brokers=1 -s 100 -a 1 -c "$N_SMALL" \
        "${PRODUCE_OPTS[@]}" >"$out.out" 2>&1; } 2>"$out.time" || {
        echo "WARNING: the mock-broker run failed:" >&2
        tail -n 5 "$out.out" >&2
        return 0
    }
    s1=$(sys_ticks)
    local line rps mbs wall usr sys cli other
    line=$(grep -hE '^% [0-9]+ messages produced' "$out.out" | tail -n1)
    rps=$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")
    mbs=$(sed -E 's/.* and ([0-9.]+) MB\/s.*/\1/' <<<"$line")
    read -r wall usr sys < <(tail -n1 "$out.time")
    read -r cli other < <(awk -v all=$((s1 - s0)) -v hz="$CLK_TCK" -v u="$usr" -v s="$sys" -v w="$wall" \
        'BEGIN { o = all / hz - u - s; if (o < 0) o = 0; printf "%d%% %d%%\n", 100 * (u + s) / w, 100 * o / w }')
    ROWS+=("$(printf "$ROW_FMT" "$name" 1 "$N_SMALL" "$rps" "$mbs" - - - - "$cli" "$other" - - - -)")
}

# Profile the broker (not the client) with perf's software clock: this machine may have no
# hardware counters, and cpu-clock works everywhere perf does.
start_profile() {
    [[ $PROFILE == 1 ]] || return 0
    command -v perf >/dev/null || { echo "PROFILE=1 but perf is not installed" >&2; return 0; }
    perf record -q -F 999 -e cpu-clock -g -p "$BROKER_PID" -o "$WORK/perf.data" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    sleep 0.5
}
stop_profile() {
    [[ -n $PERF_PID ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | sed -E 's/( +-)+ *$//' | head -n 15 >"$WORK/perf.top" || true
    PROFILE=finished
}

# peak_rate PARTITIONS: records/s of "produce 100B acks=1" at that partition count, from
# LAT_PEAK_FILE's table or else from this run's rows.
peak_rate() {
    local parts=$1
    {
        if [[ -n $LAT_PEAK_FILE ]]; then cat "$LAT_PEAK_FILE"; else printf '%s\n' "${ROWS[@]}"; fi
    } | awk -F'|' -v p="$parts" '
        function trim(s) { gsub(/^ +| +$/, "", s); return s }
        trim($1) == "produce 100B acks=1" && trim($2) == p { print trim($4); exit }'
}

# latency_phase NAME PARTITIONS RATE ACKS COUNT WARMUP: fixed-rate produce, delivery latency
# of every record. linger.ms=0 so the figure is the round trip to the broker, not time spent
# waiting to fill a batch. -l makes every payload carry its send time (records are then at
# least ~30 bytes; asked for 100). rdkafka_performance's rate limiter busy-polls, so the
# client uses a core here.
latency_phase() {
    local name=$1 parts=$2 rate=$3 acks=$4 count=$5 warmup=$6
    local ack_arg=$acks topic
    topic="p$parts-lat-$rate-acks$acks-$RANDOM"
    [[ $acks == all ]] && ack_arg=-1
    create_topic "$topic" "$parts"
    PHASE_WARMUP=$warmup run_phase "$name" "$parts" latency "$count" 1 -- \
        -P -t "$topic" -s 100 -r "$rate" -a "$ack_arg" -l -A "$WORK/latency.txt" -X linger.ms=0
    delete_topic "$topic"
}

main() {
    build_rdkafka_performance
    build_broker # the CLI makes the topics, whichever the broker
    make_work_dir
    if [[ $TARGET == kafka ]]; then start_kafka; else start_broker; fi
    log "$TARGET broker pid $BROKER_PID on $BOOTSTRAP, data in $DATA"

    local p parts_args
    for p in $PARTITIONS; do
        # The consumer (simple-consumer mode) is told which partitions to read.
        parts_args=()
        for ((i = 0; i < p; i++)); do parts_args+=(-p "$i"); done

        for spec in "100 $N_SMALL" "1024 $N_LARGE"; do
            read -r size n <<<"$spec"
            for acks in 1 all; do
                local ack_arg=$acks topic="p$p-s$size-acks$acks"
                [[ $acks == all ]] && ack_arg=-1
                create_topic "$topic" "$p"
                [[ $size == 100 && $acks == 1 && $PROFILE == 1 ]] && start_profile
                run_phase "produce ${size}B acks=$acks" "$p" produce "$n" 1 -- \
                    -P -t "$topic" -s "$size" -a "$ack_arg" "${PRODUCE_OPTS[@]}"
                stop_profile
            done
            fill_topic "p$p-s$size-even" "$p" "$size" "$n"
            consume_phase "consume ${size}B" "$p" "$n" -- \
                -C -t "p$p-s$size-even" "${parts_args[@]}" -o beginning "${CONSUME_OPTS[@]}"
        done

        # One librdkafka producer tops out on its own per-record cost (see the client column)
        # before the broker does; PRODUCERS>1 producers into one topic show what the whole
        # machine does when the client side can use both cores.
        if ((PRODUCERS > 1)); then
            create_topic "p$p-s100-multi" "$p"
            run_phase "produce 100B acks=1 x$PRODUCERS" "$p" produce "$N_SMALL" "$PRODUCERS" -- \
                -P -t "p$p-s100-multi" -s 100 -a 1 "${PRODUCE_OPTS[@]}"
        fi

        # Kafka's own Java tools, as most Kafka users would measure: the producer with its
        # default batching raised as kafka_bench's librdkafka producer has it.
        if [[ $JAVA == 1 ]]; then
            for acks in 1 all; do
                create_topic "p$p-java-acks$acks" "$p"
                run_java "java produce 100B acks=$acks" "$p" produce "$N_SMALL" -- \
                    org.apache.kafka.tools.ProducerPerformance --topic "p$p-java-acks$acks" \
                    --num-records "$N_SMALL" --record-size 100 --throughput -1 \
                    --producer-props bootstrap.servers="$BOOTSTRAP" acks="$acks" linger.ms=50 \
                    batch.size=1000000 buffer.memory=268435456 compression.type="$COMPRESSION"
            done
            # The same evenly filled topic as librdkafka's 100-byte consume row (fill_topic).
            run_java "java consume 100B" "$p" consume "$N_SMALL" -- \
                org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOTSTRAP" \
                --topic "p$p-s100-even" --messages "$N_SMALL" --timeout 60000 \
                --group "bench-$p-$RANDOM"
        fi

        # Latency at a modest fixed rate, then (LAT_FRACTIONS) at fractions of the peak.
        for acks in 1 all; do
            latency_phase "latency ${LAT_RATE}/s acks=$acks" "$p" "$LAT_RATE" "$acks" "$LAT_COUNT" "$LAT_WARMUP"
        done
        if [[ -n $LAT_FRACTIONS ]]; then
            local peak f rate
            peak=$(peak_rate "$p")
            if [[ -z $peak ]]; then
                echo "WARNING: no produce 100B acks=1 row for $p partition(s): no latency at fractions" >&2
            else
                for f in $LAT_FRACTIONS; do
                    rate=$((peak * f / 100))
                    latency_phase "latency ${f}% $rate/s acks=all" "$p" "$rate" all \
                        "$((rate * LAT_SECONDS))" "$((rate / 2))"
                done
            fi
        fi

        if ((IDLE > 0)) && [[ $p == "${PARTITIONS%% *}" ]]; then
            start_idle "$IDLE"
            create_topic "p$p-s100-idle" "$p"
            run_phase "produce 100B acks=1 +${IDLE} idle" "$p" produce "$N_SMALL" 1 -- \
                -P -t "p$p-s100-idle" -s 100 -a 1 "${PRODUCE_OPTS[@]}"
            latency_phase "latency ${LAT_RATE}/s acks=1 +${IDLE} idle" "$p" "$LAT_RATE" 1 "$LAT_COUNT" "$LAT_WARMUP"
            stop_idle
        fi
    done

    if ((WIDE > 0)); then
        local wide_parts=()
        for ((i = 0; i < WIDE; i++)); do wide_parts+=(-p "$i"); done
        for acks in 1 all; do
            local ack_arg=$acks
            [[ $acks == all ]] && ack_arg=-1
            create_topic "w$WIDE-acks$acks" "$WIDE"
            run_phase "produce 100B acks=$acks" "$WIDE" produce "$N_SMALL" 1 -- \
                -P -t "w$WIDE-acks$acks" -s 100 -a "$ack_arg" "${PRODUCE_OPTS[@]}"
        done
        fill_topic "w$WIDE-even" "$WIDE" 100 "$N_SMALL"
        consume_phase "consume 100B" "$WIDE" "$N_SMALL" -- \
            -C -t "w$WIDE-even" "${wide_parts[@]}" -o beginning "${CONSUME_OPTS[@]}"
    fi

    run_reference
    run_client_ceiling

    echo
    local what="sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    [[ $TARGET == kafka ]] && what="Apache Kafka $(kafka_version) (one KRaft node, heap ${KAFKA_HEAP:-1g})"
    echo "$what + rdkafka_performance" \
        "($(librdkafka_version)) on $(nproc) cores, Linux $(uname -r)"
    echo "records/s and MB/s are rdkafka_performance's (MB = 10^6 bytes of record values, whole run);"
    echo "latency = produce() to delivery report, first ${LAT_WARMUP} samples dropped;"
    echo "broker/client/other = CPU use during the phase in % of one core (200% = both cores; other = the"
    echo "rest of the machine); peak RSS = broker VmHWM during the phase; data = data dir size after it;"
    echo "the dd row is the machine's own page-cache write speed for a 1 KiB phase's volume (client = dd);"
    echo "the mock broker row is one producer against librdkafka's in-memory, in-process mock broker: the"
    echo "client's own ceiling here (client = producer and mock broker together);"
    echo "cpu s/M = broker CPU seconds (user + system, all threads) per million records."
    printf "$ROW_FMT\n" scenario parts records "records/s" "MB/s" p50 p99 p99.9 \
        "broker" "client" "other" "peak RSS" "RSS end" data "cpu s/M"
    printf '%s\n' "${ROWS[@]}"
    echo "broker peak RSS over all phases: $((PEAK_MAX_KB / 1024)) MiB; data stored at the end: $(data_mb) MB"
    if [[ -s ${WORK}/perf.top ]]; then
        echo
        echo "broker profile during 'produce 100B acks=1' (first partition count), top 15 symbols (perf, cpu-clock):"
        cat "$WORK/perf.top"
    fi
}

# Sourced (durable_bench.sh reuses run_phase): define, do not run.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
