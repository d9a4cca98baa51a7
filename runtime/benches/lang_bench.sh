#!/usr/bin/env bash
# The same trivial filter (one compare per record, keeps everything) written in Rust
# (plugins/testing/poison), Python (plugins/testing/py-keep) and JavaScript
# (plugins/testing/js-keep), measured side by side. A benchmark: it asserts nothing and
# prints a table.
#
#   bash runtime/benches/lang_bench.sh
#
# Per language:
#   build       `sluice plugin build` wall time, and the component's size;
#   cold start  from dropping the manifest into the plugins directory to the pipeline
#               running, with nothing cached (wasmtime compiles the component);
#   warm start  the same after a broker restart (the compiled code comes from the cache);
#   per task    the broker's RSS growth divided by its tasks: TASKS input partitions plus
#               the retry topic's, each an instance of the component;
#   records/s   N records of SIZE bytes, already in a 1-partition topic, through the
#               pipeline: from its first record in to its last record out (admin API polls).
#
# Needs componentize-py (pip) and the JavaScript tools in plugins/js/click-validate
# (npm ci --prefix plugins/js/click-validate).
#
# Knobs: N [1000000], SIZE [100], TASKS [8], BUILD [1] (0: target/release/sluice as is),
# KEEP [0].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

N=${N:-1000000}
SIZE=${SIZE:-100}
TASKS=${TASKS:-8}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
SLUICE=$ROOT/target/release/sluice
# ComponentizeJS and rolldown, for the JavaScript plugin (its own directory has none).
export PATH="$ROOT/plugins/js/click-validate/node_modules/.bin:$PATH"

ensure_toolchain
[[ $BUILD == 1 ]] && build_broker
build_rdkafka_performance
make_work_dir

now_ms() { date +%s%3N; }

# pipeline_field NAME FIELD: a number from the admin API's status of pipeline NAME.
pipeline_field() {
    curl -s "http://$ADMIN/v1/pipelines" | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p["name"] == sys.argv[1]:
        v = p.get(sys.argv[2])
        print(v if v is not None else "")
' "$1" "$2"
}

wait_running() {
    local name=$1 deadline=$(( $(date +%s) + 600 ))
    until [[ $(pipeline_field "$name" status) == running ]]; do
        (( $(date +%s) < deadline )) || { echo "$name never ran" >&2; tail -n 20 "$WORK/broker.log" >&2; exit 1; }
        sleep 0.05
    done
}

rss_kb() { vm_kb VmRSS; }

deploy() { # deploy PIPELINE COMPONENT INPUT OUTPUT
    cp "$WORK/$2.wasm" "$PLUGINS/.$1.wasm.tmp" && mv "$PLUGINS/.$1.wasm.tmp" "$PLUGINS/$1.wasm"
    printf 'inputs = ["%s"]\noutput = "%s"\nwasm = "%s.wasm"\n[limits]\nmemory_mb = 128\ncpu_ms_per_call = 2000\n' \
        "$3" "$4" "$1" >"$PLUGINS/.$1.toml.tmp"
    mv "$PLUGINS/.$1.toml.tmp" "$PLUGINS/$1.toml"
}

ROWS=()
for lang in rust python js; do
    case $lang in
    rust) src=$ROOT/plugins/testing/poison ;;
    python) src=$ROOT/plugins/testing/py-keep ;;
    js) src=$ROOT/plugins/testing/js-keep ;;
    esac
    name=keep-$lang
    log "$lang: building $src"
    t0=$(now_ms)
    "$SLUICE" plugin build "$src" --out "$WORK/$name.wasm" >"$WORK/build-$lang.log" 2>&1 ||
        { cat "$WORK/build-$lang.log" >&2; exit 1; }
    build_s=$(awk -v ms=$(( $(now_ms) - t0 )) 'BEGIN { printf "%.1f", ms / 1000 }')
    size_mb=$(awk -v b="$(stat -c %s "$WORK/$name.wasm")" 'BEGIN { printf "%.1f", b / 1048576 }')

    start_broker
    create_topic "wide-$lang" "$TASKS"
    create_topic "in-$lang" 1
    log "$lang: writing $N records of $SIZE bytes"
    "$RDKPERF" -P -t "in-$lang" -b "$BOOTSTRAP" -s "$SIZE" -c "$N" -X linger.ms=5 -X batch.size=1000000 -a 1 >"$WORK/produce-$lang.log" 2>&1
    sleep 1
    rss0=$(rss_kb)
    t0=$(now_ms)
    deploy "w-$name" "$name" "wide-$lang" "wide-out-$lang"
    wait_running "w-$name"
    cold_ms=$(( $(now_ms) - t0 ))
    sleep 2
    per_task_mb=$(awk -v a="$rss0" -v b="$(rss_kb)" -v n=$((TASKS + 1)) 'BEGIN { printf "%.1f", (b - a) / n / 1024 }')

    log "$lang: $N records through the pipeline"
    deploy "$name" "$name" "in-$lang" "out-$lang"
    first=
    deadline=$(( $(date +%s) + 900 ))
    while :; do
        in=$(pipeline_field "$name" records_in)
        out=$(pipeline_field "$name" records_out)
        [[ -z $first && ${in:-0} -gt 0 ]] && first=$(now_ms)
        [[ ${out:-0} -ge $N ]] && break
        (( $(date +%s) < deadline )) || { echo "$lang: only ${out:-0} of $N out" >&2; exit 1; }
        sleep 0.02
    done
    last=$(now_ms)
    rate=$(awk -v n="$N" -v ms=$((last - first)) 'BEGIN { printf "%.0f", n / (ms / 1000) }')

    # Warm start: the same broker again, its compiled-code cache kept.
    kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
    rm -f "$PLUGINS"/*
    "$SLUICE" serve --listen "$BOOTSTRAP" --data-dir "$DATA" --admin "$ADMIN" --plugins-dir "$PLUGINS" >>"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    until grep -q "sluice is serving" "$WORK/broker.log" 2>/dev/null && curl -sf "http://$ADMIN/v1/pipelines" >/dev/null; do sleep 0.05; done
    t0=$(now_ms)
    deploy "w-$name" "$name" "wide-$lang" "wide-out-$lang"
    wait_running "w-$name"
    warm_ms=$(( $(now_ms) - t0 ))
    ROWS+=("$(printf '%-8s %9s %9s %11s %11s %10s %12s' "$lang" "$build_s" "$size_mb" \
        "$(awk -v m="$cold_ms" 'BEGIN { printf "%.2f", m / 1000 }')" \
        "$(awk -v m="$warm_ms" 'BEGIN { printf "%.2f", m / 1000 }')" "$per_task_mb" "$rate")")
    stop_broker
done

printf '\n%-8s %9s %9s %11s %11s %10s %12s\n' lang "build s" "size MB" "cold st. s" "warm st. s" "MB/task" "records/s"
printf '%s\n' "${ROWS[@]}"
printf '\n(N=%s records of %s bytes, %s tasks for the start and memory figures; %s)\n' "$N" "$SIZE" "$((TASKS + 1))" "$(nproc) cores"
