#!/usr/bin/env bash
# Scale of `sluice worker` (issue 13): records/s of a stateless pipeline (plugins/testing/upper:
# uppercases each value) and of a stateful one (plugins/testing/counter: a count per key,
# emits KEY=COUNT) run by 1, 2 and 3 workers, each exactly once (transactions, changelog).
#
# A benchmark, not a test: it asserts nothing and prints a table. Everything shares this
# machine: the broker (a release build of sluice), the workers and the loader, so on 2 cores
# more workers cannot mean more CPU; what the table shows is that the work spreads and what
# the coordination costs. The failover time is printed by tests/kafka/workers.sh.
#
#   bash runtime/benches/workers_bench.sh
#
# For each pipeline and worker count: a fresh 6-partition input topic gets N keyed records
# (1000 keys, 100-byte values, with kcat), then W workers start with the pipeline; records/s
# are from the first committed input offset to all N committed (the pipelines' consumer
# group offsets, which each worker commits once a second after its tasks' transactions: +-1 s
# on the span).
#
# Knobs: N [1000000], WORKERS ["1 2 3"], GROUP_PROTOCOL [auto: KIP-848 on sluice] or classic,
# BUILD=0 (use target/release/sluice as it is), KEEP=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/runtime/benches/lib.sh"
N=${N:-1000000}
WORKERS=${WORKERS:-"1 2 3"}
PARTS=6

command -v kcat >/dev/null || { echo "needs kcat (apt-get install kcat)" >&2; exit 1; }
build_broker
make_work_dir
start_broker
log "broker at $BOOTSTRAP"

for p in upper counter; do
    "$SLUICE" plugin build "$ROOT/plugins/testing/$p" --out "$WORK/$p.wasm" >/dev/null 2>&1
done
python3 - "$N" >"$WORK/records" <<'EOF'
import sys
n = int(sys.argv[1])
pad = "x" * 90
out = sys.stdout
for i in range(n):
    out.write(f"k{i % 1000}:{pad}{i:010d}\n")
EOF

now() { date +%s.%N; }
committed() { # group -> sum of committed input offsets
    "$SLUICE" plugin list --workers "$1" --bootstrap "$BOOTSTRAP" 2>/dev/null |
        awk '$2 ~ /^in-/ && $4 ~ /^[0-9]+$/ { s += $4 } END { print s + 0 }'
}

rows=()
for kind in stateless stateful; do
    plugin=upper
    [[ $kind == stateful ]] && plugin=counter
    for w in $WORKERS; do
        id="$kind-$w"
        create_topic "in-$id" "$PARTS"
        create_topic "out-$id" "$PARTS"
        log "$kind, $w worker(s): loading $N records"
        kcat -P -K: -b "$BOOTSTRAP" -t "in-$id" -X linger.ms=20 -X batch.num.messages=10000 <"$WORK/records"
        pids=()
        for i in $(seq 1 "$w"); do
            d="$WORK/$id-w$i"
            mkdir -p "$d/plugins"
            cp "$WORK/$plugin.wasm" "$d/plugins/"
            printf 'inputs = ["in-%s"]\noutput = "out-%s"\nwasm = "%s.wasm"\n' "$id" "$id" "$plugin" >"$d/plugins/p.toml"
            SLUICE_LOG=warn "$SLUICE" worker --bootstrap "$BOOTSTRAP" --group "g-$id" \
                --group-protocol "${GROUP_PROTOCOL:-auto}" \
                --plugins-dir "$d/plugins" --state-dir "$d/state" >"$d/worker.log" 2>&1 &
            pids+=($!)
            BG_PIDS+=($!)
        done
        t_start=$(now)
        first="" first_n=0 done_at=""
        deadline=$((SECONDS + 600))
        while ((SECONDS < deadline)); do
            c=$(committed "g-$id")
            if [[ -z $first && $c -gt 0 ]]; then first=$(now); first_n=$c; fi
            if ((c >= N)); then done_at=$(now); break; fi
            sleep 0.5
        done
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
        if [[ -z $done_at ]]; then
            rows+=("$kind|$w|timed out|-")
            continue
        fi
        rate=$(python3 -c "print(int(($N - $first_n) / max(0.001, $done_at - $first)))")
        wall=$(python3 -c "print(f'{$done_at - $t_start:.1f}')")
        rows+=("$kind|$w|$rate|$wall")
        log "$kind, $w worker(s): $rate records/s, $wall s from start"
    done
done

echo
echo "sluice workers on a sluice broker, one 2-core machine; $N records of 100 B over $PARTS partitions, exactly once"
printf '%-10s %8s %12s %10s\n' pipeline workers records/s "wall (s)"
for r in "${rows[@]}"; do
    IFS='|' read -r kind w rate wall <<<"$r"
    printf '%-10s %8s %12s %10s\n' "$kind" "$w" "$rate" "$wall"
done
