#!/usr/bin/env bash
# Benchmark of sluice's plugin pipelines against the plain Kafka-client way of doing the same.
#
# This is a benchmark, not a test: it asserts nothing and prints a table of figures at the
# end. Like kafka_bench.sh (whose helpers it shares through lib.sh) it needs no network
# besides crates.io and Debian's archive.
#
#   bash runtime/benches/pipeline_bench.sh
#
# For each partition count, N records of SIZE bytes are written once to an input topic, then:
#   consume      rdkafka_performance -C reads them all (reference: the broker's read speed);
#   client pipe  pipe.c (librdkafka, one application thread) consumes them from the beginning
#                and produces each unchanged (key, value) to another topic with acks=1,
#                linger.ms=5, 1 MB batches, the consumer's pre-fetch tuned like
#                rdkafka_performance's: what a user would write without sluice. records/s
#                from its first record consumed to its last delivery;
#   pipeline     a trivial WASM filter (plugins/testing/poison: one string compare per record,
#                keeps them all) deployed as a pipeline from that input to a third topic; one
#                task per partition. records/s from the first admin-API poll that shows
#                records_in > 0 to the first that shows records_out = N (polled every
#                POLL_MS); "wall" is from dropping the manifest in the plugins directory.
# Both read the same input topic, so they see the same data and the same page cache.
#
# Then the hot-reload pause: rdkafka_performance produces at a fixed rate (-r, linger.ms=5)
# into a pipeline's input; halfway through, the manifest's [config] is rewritten (a hot
# reload). Input and output topics use LogAppendTime, so the gaps between consecutive append
# times (read back with kcat) show any stall: the largest gap within +-RELOAD_WINDOW_MS of
# the rewrite, the largest one elsewhere, and the one across the moment each task switched
# (from the broker's log); and the host's own last_reload_pause_us. A gap in the output but
# not in the input is the pipeline's.
#
# Knobs (environment variables; defaults in brackets):
#   PARTITIONS         partition counts of the throughput phases        ["1 4"]
#   N                  records per throughput phase                     [2000000]
#   SIZE               record value size in bytes                       [100]
#   PLUGIN             plugin crate under plugins/testing to deploy     [poison]
#   PLUGIN_WASM        a ready component to deploy instead (e.g. the C filter)  []
#   POLL_MS            admin API poll interval (1..999)                 [20]
#   RELOAD_RATE        records/s produced during the reload phase       [50000]
#   RELOAD_SECS        seconds of production in the reload phase
#                      (reload after half of them); 0 skips the phase   [10]
#   RELOAD_PARTITIONS  partitions of the reload phase's topics          [1]
#   RELOAD_WINDOW_MS   what counts as "around the reload"               [2000]
#   STALL_SECS         give up on a pipeline making no progress         [60]
#   BUILD              0: use target/release/sluice as is (no cargo build) [1]
#   KEEP               1: keep the data and work directories (logs)     [0]
#   QUIET_WAIT         seconds to wait for other load to end before each
#                      phase                                            [300]
#
# Broker and clients share the machine: the table says how much CPU each used per phase.

# ROW_FMT, the table's own printf format, is passed as a variable on purpose.
# shellcheck disable=SC2059
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

PARTITIONS=${PARTITIONS:-"1 4"}
N=${N:-2000000}
SIZE=${SIZE:-100}
PLUGIN=${PLUGIN:-poison}
PLUGIN_WASM=${PLUGIN_WASM:-}
POLL_MS=${POLL_MS:-20}
RELOAD_RATE=${RELOAD_RATE:-50000}
RELOAD_SECS=${RELOAD_SECS:-10}
RELOAD_PARTITIONS=${RELOAD_PARTITIONS:-1}
RELOAD_WINDOW_MS=${RELOAD_WINDOW_MS:-2000}
STALL_SECS=${STALL_SECS:-60}

# ---------------------------------------------------------------------------------------
# Builds: the baseline client and the plugin
# ---------------------------------------------------------------------------------------

build_pipe() {
    PIPE=$BENCH_DIR/pipe
    local src=$ROOT/runtime/benches/pipe.c
    if [[ -x $PIPE && $PIPE -nt $src && $PIPE -nt $LIBRDKAFKA/src/librdkafka.a ]]; then return; fi
    log "building pipe (runtime/benches/pipe.c) against $LIBRDKAFKA"
    gcc -O2 -Wall -o "$PIPE" "$src" -I "$LIBRDKAFKA/src" "$LIBRDKAFKA/src/librdkafka.a" \
        -lm -ldl -lpthread -lrt
}

build_plugin() {
    WASM=$WORK/plugin.wasm
    if [[ -n $PLUGIN_WASM ]]; then
        cp "$PLUGIN_WASM" "$WASM"
        PLUGIN_NAME=$(basename "$PLUGIN_WASM")
        return
    fi
    PLUGIN_NAME=plugins/testing/$PLUGIN
    log "building the plugin: sluice plugin build $PLUGIN_NAME"
    if ! "$SLUICE" plugin build "$ROOT/$PLUGIN_NAME" --out "$WASM" >"$WORK/plugin-build.log" 2>&1; then
        tail -n 30 "$WORK/plugin-build.log" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------------------------------
# Pipelines and the admin API
# ---------------------------------------------------------------------------------------

# Sleeping and polling without a process per poll: `read -t` on a pipe nobody writes to
# times out after the given time, and the admin API is read through bash's /dev/tcp. At a
# poll every 20 ms, forking sleep and curl would cost a noticeable part of a core.
exec {NAP_FD}<> <(:)
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# GET /v1/pipelines into STATUS.
fetch_status() {
    local fd resp=
    exec {fd}<>"/dev/tcp/${ADMIN%:*}/${ADMIN##*:}"
    printf 'GET /v1/pipelines HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n' >&"$fd"
    IFS= read -r -d '' resp <&"$fd" || true
    exec {fd}>&-
    STATUS=${resp#*$'\r\n\r\n'}
}

# field PIPELINE KEY: sets VALUE to that pipeline's KEY in STATUS (a number, a string without
# its quotes, or null; empty if the pipeline is not listed). The keys the bench reads come
# before the pipeline's list of partitions, so the first match after the name is its own.
field() {
    local rest=${STATUS#*\"name\":\"$1\"}
    VALUE=
    [[ $rest != "$STATUS" ]] || return 0
    if [[ $rest =~ \"$2\":(\"[^\"]*\"|-?[0-9]+|null) ]]; then
        VALUE=${BASH_REMATCH[1]//\"/}
    fi
}
listed() { [[ $STATUS == *\"name\":\"$1\"* ]]; }

# deploy NAME INPUT OUTPUT [more manifest lines]: the component first, then the manifest
# (which is what the host looks for), each renamed into place so the host never reads half.
deploy() {
    local name=$1 in=$2 out=$3 extra=${4:-}
    cp "$WASM" "$PLUGINS/.$name.wasm.tmp"
    mv "$PLUGINS/.$name.wasm.tmp" "$PLUGINS/$name.wasm"
    write_manifest "$name" "$(printf 'inputs = ["%s"]\noutput = "%s"\n%s' "$in" "$out" "$extra")"
}
write_manifest() {
    printf '%s\n' "$2" >"$PLUGINS/.$1.toml.tmp"
    mv "$PLUGINS/.$1.toml.tmp" "$PLUGINS/$1.toml"
}

# Removes a pipeline and waits for the host to stop it, so it does not run during later phases.
undeploy() {
    rm -f "$PLUGINS/$1.toml" "$PLUGINS/$1.wasm"
    local i
    for ((i = 0; i < 500; i++)); do
        fetch_status
        listed "$1" || return 0
        nap 0.02
    done
    echo "WARNING: pipeline $1 still listed 10 s after its manifest was removed" >&2
}

wait_running() {
    local i
    for ((i = 0; i < STALL_SECS * 20; i++)); do
        fetch_status
        field "$1" status
        if [[ $VALUE == running && $STATUS == *'"partitions":[{'* ]]; then
            return 0
        fi
        nap 0.05
    done
    echo "pipeline $1 did not start; status: $STATUS" >&2
    tail -n 20 "$WORK/broker.log" >&2
    exit 1
}

# Warns about anything but a clean run (the filter keeps every record).
check_pipeline() {
    local k
    for k in dead_lettered traps; do
        field "$1" "$k"
        [[ $VALUE == 0 ]] || echo "WARNING: pipeline $1: $k = $VALUE" >&2
    done
    field "$1" last_error
    [[ $VALUE == null ]] || echo "WARNING: pipeline $1: last_error = $VALUE" >&2
}

# ---------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------

ROWS=()
ROW_FMT='%-28s|%5s|%9s|%10s|%7s|%8s|%8s|%7s|%7s|%7s|%9s'
PEAK_MAX_KB=0

# phase_begin: a quiet machine, then the counters. phase_end NAME PARTS RECORDS RPS RATIO
# WALL: CPU over the whole phase (broker; client = this script and every client it ran;
# other = the rest of the machine), in % of one core, and the broker's peak RSS.
phase_begin() {
    log "$1"
    settle
    check_broker
    reset_peak
    PH_T0=$(now_us)
    PH_B0=$(cpu_ticks)
    PH_S0=$(sys_ticks)
    PH_C0=$(self_ticks)
}
phase_end() {
    check_broker
    local t1 b1 s1 c1
    t1=$(now_us)
    b1=$(cpu_ticks)
    s1=$(sys_ticks)
    c1=$(self_ticks)
    local broker client other
    read -r broker client other < <(awk -v b=$((b1 - PH_B0)) -v c=$((c1 - PH_C0)) \
        -v all=$((s1 - PH_S0)) -v hz="$CLK_TCK" -v w=$((t1 - PH_T0)) 'BEGIN {
            w = w / 1e6; b = b / hz; c = c / hz; o = all / hz - b - c; if (o < 0) o = 0
            printf "%d%% %d%% %d%%\n", 100 * b / w, 100 * c / w, 100 * o / w }')
    local peak mbs="-"
    peak=$(vm_kb VmHWM)
    ((peak > PEAK_MAX_KB)) && PEAK_MAX_KB=$peak
    [[ $4 =~ ^[0-9]+$ ]] && mbs=$(awk -v r="$4" -v s="$SIZE" 'BEGIN { printf "%.1f", r * s / 1e6 }')
    ROWS+=("$(printf "$ROW_FMT" "$1" "$2" "$3" "$4" "$mbs" "$5" "$6" "$broker" "$client" "$other" \
        "$((peak / 1024)) MiB")")
}
secs() { awk -v u="$1" 'BEGIN { printf "%.2fs", u / 1e6 }'; }

# rdkafka_performance ARGS...: runs it, output in $WORK/rdk.out; fails the bench if it fails.
rdkperf() {
    if ! "$RDKPERF" -b "$BOOTSTRAP" "$@" >"$WORK/rdk.out" 2>&1; then
        check_broker
        echo "rdkafka_performance $* failed:" >&2
        tail -n 20 "$WORK/rdk.out" >&2
        exit 1
    fi
}

fill() {
    local p=$1 topic=$2 t0
    phase_begin "fill $topic: $N records of ${SIZE} B, acks=1"
    t0=$(now_us)
    rdkperf -P -t "$topic" -s "$SIZE" -a 1 -c "$N" "${PRODUCE_OPTS[@]}"
    local wall=$(($(now_us) - t0)) rps
    # "% N messages produced (B bytes), D delivered (...) in T ms: R msgs/s and M MB/s, ..."
    rps=$(grep -E '^% [0-9]+ messages produced' "$WORK/rdk.out" | tail -n1 | sed -E 's/.*ms: ([0-9]+) msgs\/s.*/\1/')
    phase_end "fill (produce ${SIZE}B acks=1)" "$p" "$N" "$rps" - "$(secs "$wall")"
}

consume() {
    local p=$1 topic=$2 t0 i parts=()
    for ((i = 0; i < p; i++)); do parts+=(-p "$i"); done
    phase_begin "consume $topic with rdkafka_performance -C"
    t0=$(now_us)
    rdkperf -C -t "$topic" "${parts[@]}" -o beginning -c "$N"
    local wall=$(($(now_us) - t0)) rps
    # "% N messages (B bytes) consumed in T ms: R msgs/s (M MB/s)"
    rps=$(consumed_line "$WORK/rdk.out" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    phase_end "consume (rdkafka_perf -C)" "$p" "$N" "$rps" - "$(secs "$wall")"
}

# Sets PIPE_RPS[p].
declare -A PIPE_RPS PIPELINE_RPS
client_pipe() {
    local p=$1 in=$2 out=$3
    create_topic "$out" "$p"
    phase_begin "client pipe $in -> $out (pipe.c, acks=1)"
    if ! "$PIPE" -b "$BOOTSTRAP" -i "$in" -o "$out" -n "$N" >"$WORK/pipe.out" 2>&1; then
        check_broker
        echo "pipe failed:" >&2
        tail -n 20 "$WORK/pipe.out" >&2
        exit 1
    fi
    # "pipe: C consumed, D delivered, F failed; first record after S ms; T ms from the first
    #  record to the last delivery: R records/s; W ms in all"
    local line rps wall
    line=$(grep '^pipe:' "$WORK/pipe.out" | tail -n1)
    rps=$(sed -E 's/.*delivery: ([0-9]+) records\/s.*/\1/' <<<"$line")
    wall=$(sed -E 's/.*; ([0-9]+) ms in all.*/\1/' <<<"$line")
    echo "$line" >&2
    PIPE_RPS[$p]=$rps
    phase_end "client pipe (pipe.c)" "$p" "$N" "$rps" "100%" "$(secs $((wall * 1000)))"
}

pipeline() {
    local p=$1 in=$2 out=$3 name=filter-p$1
    create_topic "$out" "$p"
    phase_begin "pipeline $name: $in -> $out ($PLUGIN_NAME)"
    local t_deploy t_first= t_done= now out0=0 rin rout last_out=-1 last_change
    t_deploy=$(now_us)
    last_change=$t_deploy
    deploy "$name" "$in" "$out"
    local poll
    poll=$(printf '0.%03d' "$POLL_MS")
    while :; do
        fetch_status
        now=$(now_us)
        field "$name" records_in
        rin=${VALUE:-0}
        field "$name" records_out
        rout=${VALUE:-0}
        if [[ -z $t_first ]] && ((rin > 0)); then
            t_first=$now
            out0=$rout
        fi
        ((rout >= N)) && { t_done=$now; break; }
        if ((rout != last_out)); then
            last_out=$rout
            last_change=$now
        elif ((now - last_change > STALL_SECS * 1000000)); then
            echo "WARNING: pipeline $name stalled at records_out=$rout of $N; status: $STATUS" >&2
            break
        fi
        nap "$poll"
    done
    check_pipeline "$name"
    local rps=- ratio=- wall=-
    if [[ -n $t_done && -n $t_first && $t_done -gt $t_first ]]; then
        rps=$(((N - out0) * 1000000 / (t_done - t_first)))
        wall=$(secs $((t_done - t_deploy)))
        ratio=$(awk -v a="$rps" -v b="${PIPE_RPS[$p]:-0}" 'BEGIN { if (b > 0) printf "%d%%", 100 * a / b; else print "-" }')
        PIPELINE_RPS[$p]=$rps
        echo "pipeline $name: first records_in after $(secs $((t_first - t_deploy))), $N out after $wall: $rps records/s" >&2
    fi
    phase_end "pipeline ($PLUGIN)" "$p" "$N" "$rps" "$ratio" "$wall"
    undeploy "$name"
}

# The hot-reload pause. Sets RELOAD_REPORT (lines for the summary).
RELOAD_REPORT=()
reload() {
    local p=$RELOAD_PARTITIONS in=reload-in out=reload-out name=reload
    local total=$((RELOAD_RATE * RELOAD_SECS))
    create_topic "$in" "$p" --config message.timestamp.type=LogAppendTime
    create_topic "$out" "$p" --config message.timestamp.type=LogAppendTime
    deploy "$name" "$in" "$out" $'[config]\nround = 1'
    wait_running "$name"
    phase_begin "hot reload: $total records at $RELOAD_RATE/s into $in, reload after $((RELOAD_SECS / 2)) s"
    local t0 prod
    t0=$(now_us)
    "$RDKPERF" -b "$BOOTSTRAP" -P -t "$in" -s "$SIZE" -a 1 -r "$RELOAD_RATE" -c "$total" \
        -X linger.ms=5 >"$WORK/reload-producer.out" 2>&1 &
    prod=$!
    BG_PIDS+=("$prod")
    nap "$((RELOAD_SECS / 2)).$((RELOAD_SECS % 2 * 5))"
    local t_reload
    t_reload=$(now_us)
    write_manifest "$name" "$(printf 'inputs = ["%s"]\noutput = "%s"\n[config]\nround = 2' "$in" "$out")"
    if ! wait "$prod"; then
        echo "the reload phase's producer failed:" >&2
        tail -n 20 "$WORK/reload-producer.out" >&2
        exit 1
    fi
    BG_PIDS=()
    local t_prod_end rout last_change now
    t_prod_end=$(now_us)
    last_change=$t_prod_end
    while :; do
        fetch_status
        field "$name" records_out
        rout=${VALUE:-0}
        ((rout >= total)) && break
        now=$(now_us)
        if ((now - last_change > STALL_SECS * 1000000)); then
            echo "WARNING: pipeline $name stalled at records_out=$rout of $total" >&2
            break
        fi
        nap 0.05
    done
    check_pipeline "$name"
    local rate reloads pause
    field "$name" reloads
    reloads=$VALUE
    field "$name" last_reload_pause_us
    pause=$VALUE
    rate=$(grep -E '^% [0-9]+ messages produced' "$WORK/reload-producer.out" | tail -n1 | sed -E 's/.*ms: ([0-9]+) msgs\/s.*/\1/')
    phase_end "produce at ${RELOAD_RATE}/s + reload" "$p" "$total" "${rate:--}" - "$(secs $((t_prod_end - t0)))"

    # When the input tasks switched to the new version, from the broker's log ("task switched
    # to the new version", one line per task, UTC timestamps), in ms since the epoch.
    local switches=() line
    while read -r line; do
        switches+=("$(date -d "${line%% *}" +%s%3N)")
    done < <(grep "task switched to the new version.* topic=$in " "$WORK/broker.log" || true)

    # Append times in ms, and the gaps between consecutive ones: the largest within
    # +-RELOAD_WINDOW_MS of the rewrite, the largest elsewhere, and the one across each
    # switch (from the last record appended before it to the first after). The input's are
    # read too: a gap there as well was upstream of the pipeline (the producer, or the
    # machine), not a pause of the pipeline.
    local r_ms=$((t_reload / 1000)) t sw_list
    sw_list=$(IFS=,; echo "${switches[*]}")
    local -A gi ai go ao gs n first last
    for t in "$in" "$out"; do
        kcat -C -b "$BOOTSTRAP" -t "$t" -o beginning -e -q -f '%T\n' >"$WORK/$t.ts" 2>"$WORK/kcat.err" || {
            echo "kcat failed:" >&2
            cat "$WORK/kcat.err" >&2
            exit 1
        }
        read -r "n[$t]" "gi[$t]" "ai[$t]" "go[$t]" "ao[$t]" "first[$t]" "last[$t]" "gs[$t]" < <(
            sort -n "$WORK/$t.ts" | awk -v r="$r_ms" -v w="$RELOAD_WINDOW_MS" -v sw="$sw_list" '
            BEGIN { ns = split(sw, s, ","); gs = -1 }
            NR == 1 { first = $1 }
            NR > 1 {
                g = $1 - prev
                if ($1 >= r - w && prev <= r + w) { if (g >= gi) { gi = g; ai = prev - r } }
                else if (g >= go) { go = g; ao = prev - r }
                for (i = 1; i <= ns; i++) if (prev <= s[i] && s[i] < $1 && g > gs) gs = g
            }
            { prev = $1 }
            END { printf "%d %d %+d %d %+d %+d %+d %s\n", NR, gi, ai, go, ao, first - r, prev - r, gs < 0 ? "-" : gs }')
    done
    local sw_rel="?" x
    if ((${#switches[@]})); then
        sw_rel=
        for x in "${switches[@]}"; do sw_rel+="${sw_rel:+, }$(printf '%+d' $((x - r_ms))) ms"; done
    fi
    RELOAD_REPORT+=(
        "hot reload ($p partition(s), $PLUGIN; producer at ${rate:-?} records/s, ${RELOAD_RATE} asked): [config] rewritten at t=0"
        "  reloads=$reloads; input task(s) switched at t=$sw_rel (broker log); host's last_reload_pause_us = $pause us"
        "  gaps between consecutive append times (LogAppendTime, ms); t = where the gap starts, ms:"
        "$(printf '    %-6s %7s records, t=%s..%s: largest within +-%s ms of t=0: %3s (t=%s); elsewhere: %3s (t=%s); across the switch: %s' \
            input "${n[$in]}" "${first[$in]}" "${last[$in]}" "$RELOAD_WINDOW_MS" "${gi[$in]}" "${ai[$in]}" "${go[$in]}" "${ao[$in]}" "${gs[$in]}")"
        "$(printf '    %-6s %7s records, t=%s..%s: largest within +-%s ms of t=0: %3s (t=%s); elsewhere: %3s (t=%s); across the switch: %s' \
            output "${n[$out]}" "${first[$out]}" "${last[$out]}" "$RELOAD_WINDOW_MS" "${gi[$out]}" "${ai[$out]}" "${go[$out]}" "${ao[$out]}" "${gs[$out]}")"
    )
    undeploy "$name"
}

main() {
    build_rdkafka_performance
    build_pipe
    build_broker
    command -v kcat >/dev/null || { echo "kcat is needed (apt-get install kcat)" >&2; exit 1; }
    make_work_dir
    build_plugin
    start_broker
    log "broker pid $BROKER_PID on $BOOTSTRAP, admin API on $ADMIN, data in $DATA, plugins in $PLUGINS"

    local p
    for p in $PARTITIONS; do
        local in=in-p$p
        create_topic "$in" "$p"
        fill "$p" "$in"
        consume "$p" "$in"
        client_pipe "$p" "$in" "pipe-out-p$p"
        pipeline "$p" "$in" "pipeline-out-p$p"
    done
    ((RELOAD_SECS > 0)) && reload

    echo
    echo "sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), pipeline of $PLUGIN_NAME," \
        "clients built on $(librdkafka_version); $(nproc) cores, Linux $(uname -r)"
    echo "$N records of $SIZE B per partition count, the same input topic for every row of that count."
    echo "records/s: fill and consume = rdkafka_performance's own figure; client pipe = pipe.c, first record"
    echo "consumed to last delivery; pipeline = records_out growth from the first admin poll with records_in > 0"
    echo "to the first with records_out = N (poll every ${POLL_MS} ms). vs pipe = pipeline / client pipe."
    echo "wall = the client's whole run (connect included); for the pipeline, manifest written -> all N out."
    echo "broker/client/other = CPU over the phase in % of one core (client = every client process and this"
    echo "script's admin polling; other = the rest of the machine); peak RSS = broker VmHWM in the phase."
    printf "$ROW_FMT\n" scenario parts records "records/s" "MB/s" "vs pipe" wall broker client other "peak RSS"
    printf '%s\n' "${ROWS[@]}"
    echo "broker peak RSS over all phases: $((PEAK_MAX_KB / 1024)) MiB; data stored at the end: $(data_mb) MB"
    for p in $PARTITIONS; do
        if [[ -n ${PIPELINE_RPS[$p]:-} && -n ${PIPE_RPS[$p]:-} ]]; then
            echo "pipeline / client pipe, $p partition(s): ${PIPELINE_RPS[$p]} / ${PIPE_RPS[$p]} records/s =" \
                "$(awk -v a="${PIPELINE_RPS[$p]}" -v b="${PIPE_RPS[$p]}" 'BEGIN { printf "%.0f%%", 100 * a / b }')"
        fi
    done
    if ((${#RELOAD_REPORT[@]})); then
        echo
        printf '%s\n' "${RELOAD_REPORT[@]}"
    fi
}

main "$@"
