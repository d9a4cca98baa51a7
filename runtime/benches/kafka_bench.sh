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
#   KEEP           1: keep the data and work directories (logs)       [0]
#   QUIET_WAIT     seconds to wait for other load to end before each
#                  phase                                              [300]
#
# The broker and the client share the machine, so every figure is "broker + client on
# this box". The table says how much CPU each side used in each phase so you can tell
# which one was the bottleneck.

# ROW_FMT, the table's own printf format, is passed as a variable on purpose.
# shellcheck disable=SC2059
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$ROOT/target/bench
SRC_CRATE=$ROOT/runtime/benches/rdkafka

PARTITIONS=${PARTITIONS:-"1 4"}
N_SMALL=${N_SMALL:-5000000}
N_LARGE=${N_LARGE:-2000000}
LAT_RATE=${LAT_RATE:-10000}
LAT_COUNT=${LAT_COUNT:-100000}
LAT_WARMUP=${LAT_WARMUP:-$LAT_RATE}
COMPRESSION=${COMPRESSION:-none}
PROFILE=${PROFILE:-0}
PRODUCERS=${PRODUCERS:-2}
KEEP=${KEEP:-0}

log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# 1. rdkafka_performance, built from the librdkafka sources shipped in the rdkafka-sys crate
# ---------------------------------------------------------------------------------------

# librdkafka's configure/make need a C and C++ compiler (`make libs` also builds the C++
# wrapper), make, pkg-config, and python3 (lds-gen.py writes the shared library's linker
# script). Everything else (SSL, SASL, curl, zlib, zstd) is switched off below, and
# LZ4/snappy are librdkafka's built-in copies, so no -dev package is needed.
ensure_toolchain() {
    local missing=()
    for tool in gcc g++ make pkg-config python3; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        log "installing build tools (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config python3 >/dev/null
    fi
}

build_rdkafka_performance() {
    # `cargo fetch` on the helper crate puts rdkafka-sys (and with it librdkafka's C
    # sources) in cargo's registry; the version comes from that crate's Cargo.lock, so the
    # benchmark always uses the same librdkafka.
    cargo fetch --quiet --manifest-path "$SRC_CRATE/Cargo.toml"
    local ver src cands
    ver=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
        "$SRC_CRATE/Cargo.lock")
    [[ -n $ver ]] || { echo "rdkafka-sys not found in $SRC_CRATE/Cargo.lock" >&2; exit 1; }
    cands=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka)
    src=${cands[0]}
    [[ -d $src ]] || { echo "librdkafka sources of rdkafka-sys $ver not found" >&2; exit 1; }

    RDKPERF=$BENCH_DIR/librdkafka/examples/rdkafka_performance
    # Built once; rebuilt only when the pinned rdkafka-sys version changes.
    if [[ -x $RDKPERF && "$(cat "$BENCH_DIR/librdkafka/.sluice-bench-version" 2>/dev/null)" == "$ver" ]]; then
        return
    fi
    ensure_toolchain
    log "building rdkafka_performance from rdkafka-sys $ver ($src)"
    rm -rf "$BENCH_DIR/librdkafka"
    mkdir -p "$BENCH_DIR"
    cp -r "$src" "$BENCH_DIR/librdkafka"
    (
        cd "$BENCH_DIR/librdkafka"
        # --no-download: mklove would otherwise fetch missing helper modules from GitHub.
        # Features the benchmark does not use are off to keep dependencies to a toolchain.
        # (The log lives outside the source tree: mklove loads any ./configure.* file as a
        # module, so a "configure.log" there breaks configure.)
        local buildlog=$BENCH_DIR/librdkafka-build.log
        if ! { ./configure --no-download --disable-ssl --disable-gssapi --disable-curl \
            --disable-zlib --disable-zstd --disable-lz4-ext --disable-syslog &&
            make -j"$(nproc)" libs &&
            make -C examples rdkafka_performance; } >"$buildlog" 2>&1; then
            tail -30 "$buildlog" >&2
            exit 1
        fi
    )
    echo "$ver" >"$BENCH_DIR/librdkafka/.sluice-bench-version"
}

# ---------------------------------------------------------------------------------------
# 2. The broker
# ---------------------------------------------------------------------------------------

BROKER_PID=
TMP_DIRS=()
PERF_PID=
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if ((${#TMP_DIRS[@]})); then
        if [[ $KEEP == 1 ]]; then echo "kept: ${TMP_DIRS[*]}" >&2; else rm -rf "${TMP_DIRS[@]}"; fi
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_broker() {
    DATA=$(mktemp -d -t sluice-bench-data.XXXXXX)
    TMP_DIRS+=("$DATA")
    # A port nobody listens on. Another broker may already run on this machine (tests,
    # another engineer), so never assume a fixed port: probe, then make sure the broker we
    # started is the one serving (a lost race shows as "Address already in use").
    for _ in $(seq 1 20); do
        PORT=$((20000 + RANDOM % 40000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then continue; fi
        "$ROOT/target/release/sluice" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
            >"$WORK/broker.log" 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 1 100); do
            grep -q "sluice is serving" "$WORK/broker.log" && { BOOTSTRAP=127.0.0.1:$PORT; return; }
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    done
    echo "could not start the broker; last log:" >&2
    cat "$WORK/broker.log" >&2
    exit 1
}

# The broker must still be the one we started (a crash, or someone's `pkill sluice`, would
# otherwise show up as odd figures or a failing /proc read).
check_broker() {
    kill -0 "$BROKER_PID" 2>/dev/null && return 0
    echo "the broker (pid $BROKER_PID) is gone; its log ends with:" >&2
    tail -n 20 "$WORK/broker.log" >&2
    BROKER_PID=
    exit 1
}

# Broker memory and CPU, from /proc.
vm_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$BROKER_PID/status"; }
# Writing 5 to clear_refs resets the peak RSS (VmHWM), so each phase gets its own peak.
reset_peak() { echo 5 >"/proc/$BROKER_PID/clear_refs" 2>/dev/null || true; }
cpu_ticks() { sed 's/^.*) //' "/proc/$BROKER_PID/stat" | awk '{ print $12 + $13 }'; }
# Busy ticks of the whole machine (user+nice+system+irq+softirq+steal): whatever is not the
# broker or the client is other load (e.g. a compiler), which would skew the figures.
sys_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
data_mb() { du -sm "$DATA" | cut -f1; }

# Start every phase from the same state: the previous phase's dirty pages written back (so
# it does not pay for its predecessor's writeback) and the machine otherwise idle. On a shared
# machine a compiler or a test run would take a core from the broker or the client; wait for
# up to QUIET_WAIT seconds for that to end, then go on anyway (the "other" column shows it).
QUIET_WAIT=${QUIET_WAIT:-300}
settle() {
    sync
    local waited=0 a b
    while :; do
        a=$(sys_ticks)
        sleep 1
        b=$(sys_ticks)
        # Below 20% of one core busy over that second (the idle broker included): quiet.
        (((b - a) * 100 < 20 * CLK_TCK)) && return 0
        if ((waited == 0)); then
            echo "machine busy ($(((b - a) * 100 / CLK_TCK))% of a core); waiting up to ${QUIET_WAIT}s" >&2
        fi
        waited=$((waited + 1))
        ((waited < QUIET_WAIT)) || { echo "WARNING: still busy; measuring anyway" >&2; return 0; }
    done
}

# ---------------------------------------------------------------------------------------
# 3. Scenarios
# ---------------------------------------------------------------------------------------

# Producer settings: big batches and a deep local queue, so the client always has a full
# batch ready and throughput is limited by the broker (or the CPU), not by the producer's
# defaults (queue.buffering.max.messages is 100000 by default). batch.size stays at 1 MB
# because the broker, like Kafka, refuses batches over max.message.bytes (1048588).
PRODUCE_OPTS=(
    -X linger.ms=50
    -X batch.size=1000000
    -X batch.num.messages=1000000
    -X queue.buffering.max.messages=4000000
    -X queue.buffering.max.kbytes=4194304
)
[[ $COMPRESSION != none ]] && PRODUCE_OPTS+=(-z "$COMPRESSION")
# Consumer settings: librdkafka's defaults (1 MB per partition per fetch, 50 MB per fetch);
# rdkafka_performance already asks for 1M pre-fetched messages (queued.min.messages).
# Larger fetches (16 MB per partition) were tried: no faster on this machine, and the broker
# then holds whole fetch responses in memory (~200 MB peak with 4 partitions).
CONSUME_OPTS=()

ROWS=()
ROW_FMT='%-24s|%5s|%9s|%10s|%8s|%8s|%8s|%8s|%7s|%7s|%7s|%9s|%8s|%8s'
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
        line=$(grep -hE '^% [0-9]+ messages \([0-9]+ bytes\) consumed' "$out".0.out | tail -n1)
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
        read -r p50 p99 p999 < <(tail -n +"$((LAT_WARMUP + 1))" "$WORK/latency.txt" | sort -n | awk '
            { v[NR] = $1 }
            function pct(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return sprintf("%.2fms", v[i] / 1000) }
            END { if (NR == 0) print "- - -"; else print pct(0.50), pct(0.99), pct(0.999) }')
    fi

    local peak rss
    peak=$(vm_kb VmHWM)
    rss=$(vm_kb VmRSS)
    ((peak > PEAK_MAX_KB)) && PEAK_MAX_KB=$peak
    ROWS+=("$(printf "$ROW_FMT" "$name" "$parts" "$count" "$rps" "$mbs" "$p50" "$p99" "$p999" \
        "$broker_cpu" "$client_cpu" "$other_cpu" "$((peak / 1024)) MiB" "$((rss / 1024)) MiB" "$(data_mb) MB")")
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
    ROWS+=("$(printf "$ROW_FMT" "$name" - "${mib}MiB" - "$mbs" - - - - "$cli" "$other" - - -)")
}

create_topic() {
    "$ROOT/target/release/sluice" topic create "$1" --partitions "$2" --bootstrap "$BOOTSTRAP" >/dev/null
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

main() {
    build_rdkafka_performance
    log "building the broker (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin sluice)

    WORK=$(mktemp -d -t sluice-bench-work.XXXXXX)
    TMP_DIRS+=("$WORK")
    start_broker
    log "broker pid $BROKER_PID on $BOOTSTRAP, data in $DATA"

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
            run_phase "consume ${size}B" "$p" consume "$n" 1 -- \
                -C -t "p$p-s$size-acks1" "${parts_args[@]}" -o beginning "${CONSUME_OPTS[@]}"
        done

        # One librdkafka producer tops out on its own per-record cost (see the client column)
        # before the broker does; PRODUCERS>1 producers into one topic show what the whole
        # machine does when the client side can use both cores.
        if ((PRODUCERS > 1)); then
            create_topic "p$p-s100-multi" "$p"
            run_phase "produce 100B acks=1 x$PRODUCERS" "$p" produce "$N_SMALL" "$PRODUCERS" -- \
                -P -t "p$p-s100-multi" -s 100 -a 1 "${PRODUCE_OPTS[@]}"
        fi

        # Latency at a modest fixed rate. linger.ms=0 so the figure is the round trip to the
        # broker, not time spent waiting to fill a batch. -l makes every payload carry its
        # send time (records are then at least ~30 bytes; asked for 100). Note that
        # rdkafka_performance's rate limiter busy-polls, so the client uses a core here.
        for acks in 1 all; do
            local ack_arg=$acks topic="p$p-lat-acks$acks"
            [[ $acks == all ]] && ack_arg=-1
            create_topic "$topic" "$p"
            run_phase "latency ${LAT_RATE}/s acks=$acks" "$p" latency "$LAT_COUNT" 1 -- \
                -P -t "$topic" -s 100 -r "$LAT_RATE" -a "$ack_arg" \
                -l -A "$WORK/latency.txt" -X linger.ms=0
        done
    done

    run_reference

    echo
    local ver
    ver=$(cat "$BENCH_DIR/librdkafka/.sluice-bench-version")
    echo "sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') + rdkafka_performance" \
        "(librdkafka ${ver#*+}, from rdkafka-sys ${ver%%+*}) on $(nproc) cores, Linux $(uname -r)"
    echo "records/s and MB/s are rdkafka_performance's (MB = 10^6 bytes of record values, whole run);"
    echo "latency = produce() to delivery report, first ${LAT_WARMUP} samples dropped;"
    echo "broker/client/other = CPU use during the phase in % of one core (200% = both cores; other = the"
    echo "rest of the machine); peak RSS = broker VmHWM during the phase; data = data dir size after it;"
    echo "the dd row is the machine's own page-cache write speed for a 1 KiB phase's volume (client = dd)."
    printf "$ROW_FMT\n" scenario parts records "records/s" "MB/s" p50 p99 p99.9 \
        "broker" "client" "other" "peak RSS" "RSS end" data
    printf '%s\n' "${ROWS[@]}"
    echo "broker peak RSS over all phases: $((PEAK_MAX_KB / 1024)) MiB; data stored at the end: $(data_mb) MB"
    if [[ -s ${WORK}/perf.top ]]; then
        echo
        echo "broker profile during 'produce 100B acks=1' (first partition count), top 15 symbols (perf, cpu-clock):"
        cat "$WORK/perf.top"
    fi
}

main "$@"
