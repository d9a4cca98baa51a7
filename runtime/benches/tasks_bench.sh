#!/usr/bin/env bash
# Benchmark of how the plugin runtime scales with the number of pipeline tasks.
#
# This is a benchmark, not a test: it asserts nothing and prints a table of figures at the
# end. It shares kafka_bench.sh's and pipeline_bench.sh's helpers (lib.sh).
#
#   bash runtime/benches/tasks_bench.sh
#   BUILD=0 SLUICE_BIN=/tmp/tasks/sluice PARTITIONS="100 1000 3000 10000" bash runtime/benches/tasks_bench.sh
#
# A task is one input partition of one pipeline (plus one per partition of the pipeline's
# retry topic, which only exists once a record was retried: none here). Each task is a
# wasmtime instance of its own, stepped by the broker's pool of task threads (plugin/host.rs
# spawn_missing, plugin/pool.rs, plugin/task.rs).
# Each scenario gets a fresh broker, so its memory starts from the same point:
#
#   A  one pipeline of a trivial filter (plugins/testing/poison: keeps every record) over a
#      topic of P partitions, for each P in PARTITIONS, into a topic of P partitions;
#   B  PIPELINES pipelines, each over its own topic of PIPELINE_PARTITIONS partitions;
#   C  for each PIPESxPARTS in SHARED: PIPES pipelines over one topic of PARTS partitions,
#      each into its own topic of SHARED_OUT_PARTITIONS partitions (10x1000: 10,000 tasks).
#
# For each: the broker's threads, RSS and address space after the topics exist (before any
# pipeline), then all manifests are dropped into the plugins directory at once and the admin
# API (GET /v1/pipelines) is polled until every task runs. A task counts as running once it
# is listed in its pipeline's "partitions": a task adds itself there at the first turn of its
# loop, after its instance was made and its plugin's init ran. Then, with no record flowing,
# IDLE_SECS of the broker's CPU time and of context switches summed over all its threads
# (each is a wakeup: an idle task should have none). Then N records of SIZE bytes are produced
# (rdkafka_performance, acks=1, no key, random partition per record: spread over every
# partition) and the admin API is polled until the pipelines' records_out add up to N.
#
# Columns:
#   tasks       tasks running / tasks wanted (input partitions); a task that never shows up
#               within START_SECS leaves the first figure short (see the broker log lines
#               printed after the table)
#   start       manifest(s) written -> every task listed as running
#   thr         broker threads (/proc/PID/status Threads) with every task running
#   RSS base    broker VmRSS with the topics created, before any pipeline
#   RSS run     VmRSS with every task running, after the idle period
#   /task       (RSS run - RSS base) / tasks
#   VSZ         VmSize with every task running (wasmtime reserves address space per memory)
#   maps        mappings in /proc/PID/maps (vm.max_map_count caps them)
#   idle CPU    broker CPU over IDLE_SECS with nothing flowing, in % of one core
#   wake/s      context switches per second over all broker threads in that time
#   data        size of the data directory after the idle period, and after the load. A
#               task announces its watermark to every partition of its output topic when it
#               starts and whenever it turns idle or busy (plugin/task.rs announce), but only
#               if some pipeline reads that topic: none here, so this is the records alone
#   records/s   N / (first record produced -> records_out = N), polled every POLL_MS
#   prod/s      rdkafka_performance's own rate (the producer alone)
#   load CPU    broker CPU from the first record produced to the last out, % of one core
#   peak RSS    VmHWM from the manifests written to the end of the load
#   load        the machine's 1-minute load average when the row's measure began (other
#               processes on the machine show there)
# Before the table, the broker's memory by kind of mapping (from /proc/PID/smaps, every task
# running, idle): thread stacks, wasm linear memories, the malloc heap and arenas, the rest.
#
# Knobs (environment variables; defaults in brackets):
#   PARTITIONS            partition counts of scenario A ("" skips it)   ["100 1000 3000"]
#   PIPELINES             pipelines of scenario B (0 skips it)            [100]
#   PIPELINE_PARTITIONS   partitions of each of scenario B's topics       [10]
#   N                     records produced per scenario (0: no load)      [1000000]
#   SIZE                  record value size in bytes                      [100]
#   IDLE_SETTLE           seconds between "all running" and the idle measure [5]
#   IDLE_SECS             length of the idle measure                      [20]
#   POLL_MS               admin API poll interval while waiting (1..999)  [250]
#   START_SECS            give up waiting for the tasks to start          [600]
#   START_STALL           give up when no more task started for this long [60]
#   STALL_SECS            give up on a pipeline making no progress        [120]
#   SHARED                scenarios C, "PIPESxPARTS": PIPES pipelines all over one topic of
#                         PARTS partitions (PIPES x PARTS tasks without PIPES x PARTS
#                         partitions: the broker keeps ~3 files open per partition, and
#                         10,000 partitions need more than a 20,000 fd limit); N / PIPES
#                         records produced, N out in all ("" skips them)    ["10x1000"]
#   SHARED_OUT_PARTITIONS partitions of each of C's output topics          [10]
#   PRODUCERS             concurrent producers in scenario B (one per topic at a time) [4]
#   TICK_MS               the manifests' tick_ms (0: never ticked; an idle task then has
#                         nothing to do)                                  [the default, 1000]
#   PLUGIN                plugin crate under plugins/testing to deploy     [poison]
#   PLUGIN_WASM           a ready component to deploy instead              []
#   SLUICE_BIN            the broker binary (e.g. a copy, so a concurrent
#                         rebuild of target/release cannot change it mid-run) [target/release/sluice]
#   BUILD                 0: use the binary as is (no cargo build)         [1]
#   KEEP                  1: keep the data and work directories (logs)     [0]
#   QUIET_WAIT            seconds to wait for other load to end before a
#                         scenario                                         [300]
#
# Scenarios stop early, and the report says so, if the broker dies (its log's last lines and
# dmesg's OOM lines are printed) or its tasks do not all start.

# ROW_FMT, the table's own printf format, is passed as a variable on purpose.
# shellcheck disable=SC2059
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"
SLUICE=${SLUICE_BIN:-$SLUICE}

PARTITIONS=${PARTITIONS-"100 1000 3000"}
PIPELINES=${PIPELINES:-100}
PIPELINE_PARTITIONS=${PIPELINE_PARTITIONS:-10}
N=${N:-1000000}
SIZE=${SIZE:-100}
IDLE_SETTLE=${IDLE_SETTLE:-5}
IDLE_SECS=${IDLE_SECS:-20}
POLL_MS=${POLL_MS:-250}
START_SECS=${START_SECS:-600}
STALL_SECS=${STALL_SECS:-120}
START_STALL=${START_STALL:-60}
PRODUCERS=${PRODUCERS:-4}
SHARED=${SHARED-"10x1000"}
SHARED_OUT_PARTITIONS=${SHARED_OUT_PARTITIONS:-10}
PLUGIN=${PLUGIN:-poison}
PLUGIN_WASM=${PLUGIN_WASM:-}

# lib.sh's producer settings, except that every record goes to a random partition
# (librdkafka's sticky partitioner would otherwise fill one partition per linger interval,
# and 1M records would reach only a few hundred partitions).
PRODUCE_OPTS+=(-X sticky.partitioning.linger.ms=0)

exec {NAP_FD}<> <(:)
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
POLL=$(printf '0.%03d' "$POLL_MS")
loadavg() { cut -d' ' -f1 /proc/loadavg; }
# MB in the data directory (files that come and go while du runs are not an error).
data_size() { du -sm "$DATA" 2>/dev/null | cut -f1 || true; }
secs() { awk -v u="$1" 'BEGIN { printf "%.1fs", u / 1e6 }'; }

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
# The broker, seen from outside
# ---------------------------------------------------------------------------------------

alive() { [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; }
mib() { echo $((${1:-0} / 1024)); }
threads() { vm_kb Threads; }
maps() { wc -l <"/proc/$BROKER_PID/maps"; }
# Context switches (voluntary and not) of every thread of the broker, by kind of thread:
# "KIND SWITCHES THREADS" lines, KIND being "task" for a pipeline task (named
# PIPELINE:TOPIC-PARTITION) and the thread's name otherwise.
ctx_by_kind() {
    find "/proc/$BROKER_PID/task" -mindepth 2 -maxdepth 2 -name status -print0 2>/dev/null |
        xargs -0 awk '
            /^Name:/ { k = ($2 ~ /:/) ? "task" : $2; if (!(FILENAME in seen)) { seen[FILENAME]; t[k]++ } }
            /ctxt_switches/ { s[k] += $2 }
            END { for (k in s) printf "%s %d %d\n", k, s[k], t[k] }' 2>/dev/null || true
}

# The admin API's pipelines into $WORK/status.json; 1 if the broker does not answer.
fetch_status() {
    curl -sf --max-time 30 -o "$WORK/status.json" "http://$ADMIN/v1/pipelines"
}
# "RUNNING LISTED RECORDS_OUT": tasks listed as running (partitions of pipelines whose status
# is "running"), pipelines listed, their records_out added up.
status_counts() {
    jq -r '[ ([.[] | select(.status == "running") | .partitions | length] | add // 0),
             length, ([.[].records_out] | add // 0) ] | @tsv' "$WORK/status.json"
}

# Memory by kind of mapping, from smaps: "KIND<TAB>RSS KB<TAB>MAPPINGS". Thread stacks: the
# read-write mappings of about 2 MiB (Rust's default thread stack size) right above a
# PROT_NONE guard page. Wasm linear memories: a memory image (memfd), or a read-write mapping
# next to a PROT_NONE reservation of at least 1 GiB (wasmtime reserves 4 GiB of address space
# per memory on 64-bit hosts). malloc: [heap], and glibc's arenas of other threads (64 MiB of
# address space each, read-write part and PROT_NONE rest).
memory_breakdown() {
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / {
            n++; perm[n] = $2; path[n] = ""
            for (i = 6; i <= NF; i++) path[n] = path[n] (i > 6 ? " " : "") $i
            next
        }
        /^Size:/ { size[n] = $2 }
        /^Rss:/ { rss[n] = $2 }
        END {
            for (i = 1; i <= n; i++) {
                none = perm[i] ~ /^---/
                big_none_next = (i < n && perm[i + 1] ~ /^---/ && size[i + 1] >= 1048576)
                big_none_prev = (i > 1 && perm[i - 1] ~ /^---/ && size[i - 1] >= 1048576)
                k = "other (anonymous)"
                if (path[i] ~ /memfd:|wasm/) k = "wasm memories"
                else if (path[i] == "[heap]") k = "malloc"
                else if (path[i] == "[stack]") k = "main thread stack"
                else if (path[i] ~ /^\//) k = "files (binary, libraries)"
                else if (path[i] ~ /^\[/) k = "other (" path[i] ")"
                else if (none) k = "reserved, not accessible"
                else if (size[i] >= 2040 && size[i] <= 2052 && i > 1 && perm[i - 1] ~ /^---/) k = "thread stacks"
                else if (big_none_next || big_none_prev) k = "wasm memories"
                else if (i < n && perm[i + 1] ~ /^---/ && size[i] + size[i + 1] == 65536) k = "malloc"
                else if (size[i] == 65536) k = "malloc"
                r[k] += rss[i]; c[k]++
            }
            for (k in r) printf "%s\t%d\t%d\n", k, r[k], c[k]
        }
    ' "/proc/$BROKER_PID/smaps"
}

# Why the broker is gone (or what went wrong in it): its log's last lines, the kernel's OOM
# lines, and its exit status.
post_mortem() {
    local what=$1
    {
        echo "--- $what: last broker log lines"
        grep -E "ERROR|WARN|panick|memory|thread|Resource|Too many" "$WORK/broker.log" | tail -n 8 || true
        tail -n 3 "$WORK/broker.log"
        if ! alive && [[ -n $BROKER_PID ]]; then
            local rc=0
            wait "$BROKER_PID" 2>/dev/null || rc=$?
            echo "--- broker exited with status $rc$( ((rc > 128)) && echo " (signal $((rc - 128)))")"
            BROKER_PID=
        fi
        dmesg 2>/dev/null | grep -iE "out of memory|oom-kill|killed process" | tail -n 3 || true
    } | tee -a "$WORK/postmortem" >&2
    NOTES+=("$what: $(grep -E "ERROR|panick" "$WORK/broker.log" | tail -n 1 | cut -c1-200)")
}

# ---------------------------------------------------------------------------------------
# A scenario
# ---------------------------------------------------------------------------------------

ROWS=()
NOTES=()
WAKES=()
BREAKDOWNS=()
ROW_FMT='%-22s|%11s|%8s|%6s|%9s|%8s|%8s|%8s|%6s|%9s|%7s|%8s|%10s|%9s|%9s|%9s|%8s|%5s'

# deploy NAME INPUT OUTPUT: the component, then the manifest, each renamed into place.
deploy() {
    cp "$WASM" "$PLUGINS/.$1.wasm.tmp"
    mv "$PLUGINS/.$1.wasm.tmp" "$PLUGINS/$1.wasm"
    printf 'inputs = ["%s"]\noutput = "%s"\n%s' "$2" "$3" "${TICK_MS:+tick_ms = $TICK_MS
}" >"$PLUGINS/.$1.toml.tmp"
    mv "$PLUGINS/.$1.toml.tmp" "$PLUGINS/$1.toml"
}

# Produces $1 records into topic $2 with rdkafka_performance; prints its own rate.
produce() {
    local n=$1 topic=$2 out
    out=$WORK/prod-$topic.out
    if ! "$RDKPERF" -b "$BOOTSTRAP" -P -t "$topic" -s "$SIZE" -a 1 -c "$n" "${PRODUCE_OPTS[@]}" >"$out" 2>&1; then
        echo "rdkafka_performance into $topic failed:" >&2
        tail -n 5 "$out" >&2
        return 1
    fi
}

# scenario LABEL PIPELINES PARTITIONS_EACH: a fresh broker, the topics, the pipelines, idle,
# load; one row of the table.
# With SHARED=1, every pipeline reads the same topic (in0), and their outputs have OUT_PARTS
# partitions (default: as many as the input).
scenario() {
    local label=$1 npipes=$2 parts=$3 shared=${4:-0} out_parts=${5:-$3}
    local want=$((npipes * parts)) i
    local names=() ins=()
    for ((i = 0; i < npipes; i++)); do
        names+=("f$i")
        if ((shared)); then ins+=(in0); else ins+=("in$i"); fi
    done
    log "$label: $npipes pipeline(s) x $parts partitions = $want tasks"
    settle
    start_broker
    log "broker pid $BROKER_PID on $BOOTSTRAP, admin API on $ADMIN"
    local la_start
    la_start=$(loadavg)
    for ((i = 0; i < npipes; i++)); do
        if ! { { ((shared && i > 0)) || create_topic "in$i" "$parts"; } && create_topic "out$i" "$out_parts"; } 2>"$WORK/create.err"; then
            cat "$WORK/create.err" >&2
            NOTES+=("$label: topic creation failed: $(tail -n 1 "$WORK/create.err")")
            ROWS+=("$(printf "$ROW_FMT" "$label" "0/$want" "no topic" - - - - - - - - - - - - - - "$la_start")")
            stop_broker
            rm -rf "$DATA" "$PLUGINS"
            return 0
        fi
    done
    check_broker
    local rss_base thr_base vsz_base maps_base
    rss_base=$(vm_kb VmRSS)
    thr_base=$(threads)
    vsz_base=$(vm_kb VmSize)
    maps_base=$(maps)
    log "topics created: threads $thr_base, RSS $(mib "$rss_base") MiB, VSZ $(mib "$vsz_base") MiB, maps $maps_base"

    # Every manifest at once, then wait for every task.
    reset_peak
    local t0 t_up= now running=0 listed=0 rout=0 last_running=-1 last_change thr_max=0 thr
    t0=$(now_us)
    last_change=$t0
    for ((i = 0; i < npipes; i++)); do deploy "${names[i]}" "${ins[i]}" "out$i"; done
    while alive; do
        if fetch_status; then
            read -r running listed rout < <(status_counts)
        fi
        now=$(now_us)
        thr=$(threads 2>/dev/null || echo 0)
        ((thr > thr_max)) && thr_max=$thr
        if ((running >= want)); then
            t_up=$now
            break
        fi
        if ((running != last_running)); then
            ((running / 500 != last_running / 500)) && echo "  $running of $want tasks running after $(secs $((now - t0)))" >&2
            last_running=$running
            last_change=$now
        elif ((now - t0 > START_SECS * 1000000 || now - last_change > START_STALL * 1000000)); then
            echo "WARNING: $running of $want tasks running after $(secs $((now - t0))) (none more for $(secs $((now - last_change)))); giving up" >&2
            break
        fi
        nap "$POLL"
    done
    if ! alive; then
        post_mortem "$label: the broker died while the tasks started ($running of $want running)"
        ROWS+=("$(printf "$ROW_FMT" "$label" "$running/$want" "died" - - - - - - - - - - - - - - "$la_start")")
        return 0
    fi
    local start="-"
    [[ -n $t_up ]] && start=$(secs $((t_up - t0)))
    [[ -n $t_up ]] || post_mortem "$label: not every task started"
    log "$running of $want tasks running after $start; threads $(threads), RSS $(mib "$(vm_kb VmRSS)") MiB"

    # Idle: nothing flows.
    nap "$IDLE_SETTLE"
    local la_idle c0 c1 x0 x1 ti0 ti1 idle_cpu wake
    la_idle=$(loadavg)
    ctx_by_kind >"$WORK/ctx0"
    c0=$(cpu_ticks)
    ti0=$(now_us)
    nap "$IDLE_SECS"
    if ! alive; then
        post_mortem "$label: the broker died while idle"
        ROWS+=("$(printf "$ROW_FMT" "$label" "$running/$want" "$start" died - - - - - - - - - - - - - "$la_start")")
        return 0
    fi
    c1=$(cpu_ticks)
    ti1=$(now_us)
    ctx_by_kind >"$WORK/ctx1"
    x0=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/ctx0")
    x1=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/ctx1")
    # Idle wakeups by kind of thread, for the report.
    WAKES+=("$label, idle wakeups/s by thread: $(awk -v w=$((ti1 - ti0)) '
        NR == FNR { a[$1] = $2; next }
        { d = ($2 - a[$1]) / (w / 1e6); if (d >= 1) printf "%s%s (%d thr) %.0f", sep, $1, $3, d; sep = ", " }
        ' "$WORK/ctx0" "$WORK/ctx1")")
    read -r idle_cpu wake < <(awk -v c=$((c1 - c0)) -v x=$((x1 - x0)) -v hz="$CLK_TCK" -v w=$((ti1 - ti0)) \
        'BEGIN { w /= 1e6; printf "%.1f%% %d\n", 100 * c / hz / w, x / w }')
    local rss_run thr_run vsz_run maps_run per_task=- data_idle
    data_idle=$(data_size)
    rss_run=$(vm_kb VmRSS)
    thr_run=$(threads)
    vsz_run=$(vm_kb VmSize)
    maps_run=$(maps)
    ((running > 0)) && per_task="$(((rss_run - rss_base) / running)) KiB"
    log "idle ${IDLE_SECS}s: broker CPU $idle_cpu of a core, $wake wakeups/s; RSS $(mib "$rss_run") MiB, VSZ $(mib "$vsz_run") MiB, maps $maps_run"
    local line k v c bd="$label, $running tasks, idle (RSS MiB by kind, mappings):"
    while IFS=$'\t' read -r k v c; do
        bd+=$'\n'"$(printf '    %-26s %7d MiB  %6d mappings  %6.1f KiB/task' "$k" "$((v / 1024))" "$c" \
            "$(awk -v v="$v" -v n="$running" 'BEGIN { print (n > 0 ? v / n : 0) }')")"
    done < <(memory_breakdown | sort -t$'\t' -k2,2nr)
    BREAKDOWNS+=("$bd")

    # Load: N records spread over every input partition.
    local rps=- prod_rps=- load_cpu=- la_load
    la_load=$(loadavg)
    if ((N > 0)) && ((running > 0)); then
        local per=$((N / npipes)) pids=() lt0 lt1= lc0 lc1 last_out=-1
        # Shared: N / npipes records into the one input, each read by every pipeline.
        lt0=$(now_us)
        lc0=$(cpu_ticks)
        if ((npipes == 1 || shared)); then
            produce "$per" in0 &
            pids+=($!)
        else
            # One producer per topic, PRODUCERS of them at a time.
            printf '%s\n' "${ins[@]}" | xargs -P "$PRODUCERS" -I{} \
                "$RDKPERF" -b "$BOOTSTRAP" -P -t {} -s "$SIZE" -a 1 -c "$per" "${PRODUCE_OPTS[@]}" \
                >"$WORK/prod-all.out" 2>&1 &
            pids+=($!)
        fi
        BG_PIDS+=("${pids[@]}")
        last_change=$lt0
        local total=$((per * npipes)) t_prod=
        while alive; do
            if fetch_status; then
                read -r running listed rout < <(status_counts)
            fi
            now=$(now_us)
            thr=$(threads 2>/dev/null || echo 0)
            ((thr > thr_max)) && thr_max=$thr
            if [[ -z $t_prod ]] && ! kill -0 "${pids[0]}" 2>/dev/null; then t_prod=$now; fi
            if ((rout >= total)); then
                lt1=$now
                break
            fi
            if ((rout != last_out)); then
                last_out=$rout
                last_change=$now
            elif ((now - last_change > STALL_SECS * 1000000)); then
                echo "WARNING: records_out stalled at $rout of $total" >&2
                break
            fi
            nap "$POLL"
        done
        wait "${pids[@]}" 2>/dev/null || true
        BG_PIDS=()
        if ! alive; then
            post_mortem "$label: the broker died under load ($rout of $total out)"
        else
            lc1=$(cpu_ticks)
            if [[ -n $lt1 ]]; then
                rps=$((total * 1000000 / (lt1 - lt0)))
                load_cpu=$(awk -v c=$((lc1 - lc0)) -v hz="$CLK_TCK" -v w=$((lt1 - lt0)) \
                    'BEGIN { printf "%d%%", 100 * c / hz / (w / 1e6) }')
            fi
            # "% N messages produced (B bytes), D delivered (...) in T ms: R msgs/s ..."
            if ((npipes == 1 || shared)); then
                prod_rps=$(grep -hE '^% [0-9]+ messages produced' "$WORK/prod-in0.out" | tail -n1 |
                    sed -E 's/.*ms: ([0-9]+) msgs\/s.*/\1/')
            elif [[ -n $t_prod ]]; then
                prod_rps="$((total * 1000000 / (t_prod - lt0)))*"
            fi
            log "load: $rout of $total out after $(secs $(((${lt1:-$now}) - lt0))): $rps records/s (producer $prod_rps), broker CPU $load_cpu"
        fi
    fi
    local peak=0 data_load=-
    if alive; then peak=$(vm_kb VmHWM); data_load="$(data_size) MB"; fi
    ROWS+=("$(printf "$ROW_FMT" "$label" "$running/$want" "$start" "$thr_run" \
        "$(mib "$rss_base") MiB" "$(mib "$rss_run") MiB" "$per_task" "$((vsz_run / 1048576)) GiB" \
        "$maps_run" "$idle_cpu" "$wake" "$data_idle MB" "$rps" "${prod_rps:--}" "$load_cpu" "$(mib "$peak") MiB" "$data_load" \
        "$la_start/$la_idle/$la_load")")
    # As it comes, too: a later scenario may not finish.
    printf '%s\n%s\n%s\n' "${ROWS[-1]}" "${WAKES[-1]}" "${BREAKDOWNS[-1]}" >&2
    stop_broker
    # The data and plugins directories of this scenario are not needed any more.
    rm -rf "$DATA" "$PLUGINS"
}

main() {
    build_rdkafka_performance
    build_broker
    make_work_dir
    build_plugin
    local p
    for p in $PARTITIONS; do
        scenario "A: 1 pipeline x $p" 1 "$p"
    done
    if ((PIPELINES > 0)); then
        scenario "B: $PIPELINES pipelines x $PIPELINE_PARTITIONS" "$PIPELINES" "$PIPELINE_PARTITIONS"
    fi
    local s
    for s in $SHARED; do
        scenario "C: ${s%x*} pipes x 1 topic of ${s#*x}" "${s%x*}" "${s#*x}" 1 "$SHARED_OUT_PARTITIONS"
    done

    echo
    echo "sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" \
        "(binary $SLUICE, sha256 $(sha256sum "$SLUICE" | cut -c1-12)), pipeline of $PLUGIN_NAME;" \
        "$(nproc) cores, $(($(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1048576)) GiB, Linux $(uname -r)"
    echo "limits: vm.max_map_count $(cat /proc/sys/vm/max_map_count), kernel.pid_max $(cat /proc/sys/kernel/pid_max)," \
        "threads-max $(cat /proc/sys/kernel/threads-max), ulimit -u $(ulimit -u), ulimit -n $(ulimit -n)"
    echo
    local b
    for b in "${BREAKDOWNS[@]}"; do echo "$b"; done
    echo
    printf '%s\n' "${WAKES[@]}"
    echo
    echo "idle = ${IDLE_SECS} s with nothing flowing, ${IDLE_SETTLE} s after every task runs; load = $N records of" \
        "$SIZE B at random partitions, produced -> all out (admin API polled every ${POLL_MS} ms);"
    echo "prod/s with * = all producers' records / time until the last ended ($PRODUCERS at a time)."
    printf "$ROW_FMT\n" scenario tasks start thr "RSS base" "RSS run" /task VSZ maps "idle CPU" wake/s \
        "data" "records/s" prod/s "load CPU" "peak RSS" "data" "load (start/idle/load)"
    printf '%s\n' "${ROWS[@]}"
    if ((${#NOTES[@]})); then
        echo
        printf '%s\n' "${NOTES[@]}"
    fi
}

main "$@"
