#!/usr/bin/env bash
# How often an idle broker's wasm epoch thread wakes: one filter pipeline over an idle
# one-partition topic, the thread's voluntary context switches over 10 s.
#
#   bash runtime/benches/idle_wakeups.sh [target/release/sluice]
set -u
BIN=${1:-target/release/sluice}
D=$(mktemp -d); mkdir -p "$D/plugins"
"$BIN" plugin build "$(dirname "$0")/../../plugins/filter" --out "$D/filter.wasm" >/dev/null 2>&1
"$BIN" serve --listen 127.0.0.1:19092 --admin 127.0.0.1:19644 --data-dir "$D/data" \
  --plugins-dir "$D/plugins" --deployments-group "" >"$D/log" 2>&1 &
pid=$!
sleep 2
"$BIN" topic create idle --partitions 1 --bootstrap 127.0.0.1:19092 >/dev/null
cp "$D/filter.wasm" "$D/plugins/f.wasm"
printf 'inputs = ["idle"]\noutput = "idle-out"\nwasm = "f.wasm"\n' >"$D/plugins/f.toml"
sleep 15
tid=
for t in /proc/$pid/task/*; do [ "$(cat "$t/comm")" = wasm-epoch ] && tid=$t; done
[ -n "$tid" ] || { echo "no wasm-epoch thread (did the pipeline start? see $D/log)"; kill $pid; exit 1; }
a=$(awk '/^voluntary/{print $2}' "$tid/status"); sleep 10; b=$(awk '/^voluntary/{print $2}' "$tid/status")
echo "epoch thread wake-ups per second, idle: $(( (b - a) / 10 ))"
kill $pid; wait $pid 2>/dev/null; rm -rf "$D"
