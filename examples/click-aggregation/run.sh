#!/usr/bin/env bash
# The click-aggregation example, end to end, against a running sluice broker:
#
#   build the two plugins -> create the topics -> deploy the three pipelines -> produce
#   clicks (a short unsalted run for comparison, then the real one) -> compare the final
#   counts with the ground truth, exactly -> plot the hot ad's load per partition.
#
# Needs python3 with confluent-kafka (pip install confluent-kafka) and a broker started with
# a plugins directory and an admin API, e.g.
#   sluice serve --data-dir /tmp/sluice --plugins-dir /tmp/sluice-plugins --admin 127.0.0.1:9644
#
# Environment (defaults in brackets):
#   SLUICE_BOOTSTRAP    the broker's Kafka address [127.0.0.1:9092]
#   SLUICE_ADMIN        its admin API [127.0.0.1:9644]
#   SLUICE_PLUGINS_DIR  its plugins directory [./plugins]
#   SLUICE              the sluice binary [sluice on PATH, else the newer of the repo's target/release and target/debug]
#   CLICKS              clicks to produce [200000]
#   RATE                clicks per second of event time (also the most produced per second) [20000]
#   ADS, HOT_SHARE, SALTS, INVALID   [100, 0.3, 6, 40]
#   COMPARE_CLICKS      clicks of the unsalted comparison run, 0 to skip [20000]
#   OUT                 where the ground truth, the load figures and the plot go [./out here]
# Exits non-zero if any final count differs from the ground truth.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BOOTSTRAP="${SLUICE_BOOTSTRAP:-127.0.0.1:9092}"
ADMIN="${SLUICE_ADMIN:-127.0.0.1:9644}"
PLUGINS_DIR="${SLUICE_PLUGINS_DIR:-./plugins}"
CLICKS="${CLICKS:-200000}"
RATE="${RATE:-20000}"
ADS="${ADS:-100}"
HOT_SHARE="${HOT_SHARE:-0.3}"
SALTS="${SALTS:-6}"
INVALID="${INVALID:-40}"
COMPARE_CLICKS="${COMPARE_CLICKS:-20000}"
OUT="${OUT:-$HERE/out}"
PARTITIONS=6 # of clicks and clicks-valid

say() { printf '\n== %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

if [ -n "${SLUICE:-}" ]; then
  :
elif command -v sluice >/dev/null; then
  SLUICE=sluice
elif [ -x "$REPO/target/release/sluice" ] || [ -x "$REPO/target/debug/sluice" ]; then
  # The newer build of the two.
  SLUICE="$REPO/target/release/sluice"
  [ "$REPO/target/debug/sluice" -nt "$SLUICE" ] && SLUICE="$REPO/target/debug/sluice"
else
  die "no sluice binary: build it (cargo build --release) or set SLUICE"
fi
python3 -c 'import confluent_kafka' 2>/dev/null ||
  die "python3 with confluent-kafka is needed: pip install confluent-kafka"
mkdir -p "$PLUGINS_DIR" "$OUT"
PLUGINS_DIR="$(cd "$PLUGINS_DIR" && pwd)"
[ "$PLUGINS_DIR" != "$REPO/plugins" ] ||
  die "$PLUGINS_DIR holds the plugins' sources: start the broker in another directory (or give it --plugins-dir) and set SLUICE_PLUGINS_DIR"
OUT="$(cd "$OUT" && pwd)"

# Everything a plugin's component is built from.
newer_sources() { # component crate
  find "$REPO/plugins/$2" "$REPO/plugins/sdk" "$REPO/wit" "$REPO/plugins/Cargo.lock" \
    \( -name target -prune \) -o -type f ! -name '*.wasm' -newer "$1" -print -quit
}

say "building the plugins into $PLUGINS_DIR"
for crate in dead-letter-router salted-aggregate; do
  wasm="$PLUGINS_DIR/$crate.wasm"
  if [ -f "$wasm" ] && [ -z "$(newer_sources "$wasm" "$crate")" ]; then
    echo "$crate.wasm is up to date"
    continue
  fi
  # Built beside, then renamed: a running pipeline never reads half a component.
  "$SLUICE" plugin build "$REPO/plugins/$crate" --out "$PLUGINS_DIR/.$crate.wasm.tmp"
  mv "$PLUGINS_DIR/.$crate.wasm.tmp" "$wasm"
done

say "creating the topics"
create_topic() { # name partitions [KEY=VALUE config...]
  local err name=$1 parts=$2 configs=()
  shift 2
  for c in "$@"; do configs+=(--config "$c"); done
  set -- "$name" "$parts"
  if err=$("$SLUICE" topic create "$1" --partitions "$2" "${configs[@]}" --bootstrap "$BOOTSTRAP" 2>&1); then
    echo "$err"
    return
  fi
  local have
  have=$("$SLUICE" topic describe "$1" --bootstrap "$BOOTSTRAP" 2>/dev/null | awk '$1 == "PARTITIONS" {print $2}')
  [ -n "$have" ] || die "cannot create topic $1: $err"
  [ "$have" = "$2" ] ||
    die "topic $1 exists with $have partitions, not $2: delete it (sluice topic delete $1) or use a fresh broker"
  echo "topic $1 exists with $2 partitions"
}
# The clicks carry their event time as their timestamp, and a replay (OFFSET_MS, SPEED) may
# run ahead of the wall clock: more than the hour Kafka 4 (and sluice) accept by default.
ahead=message.timestamp.after.max.ms=9223372036854775807
create_topic clicks "$PARTITIONS" "$ahead" # raw clicks, keyed adN#salt
create_topic clicks-valid "$PARTITIONS"    # stage 1's output, keyed alike
create_topic clicks-partials 1             # stage 2's partials, in order
create_topic ad-counts 1                   # stage 3's final counts, keyed by ad
create_topic clicks-invalid 1              # stage 1's dead letters
create_topic clicks-late 1                 # late clicks (stage 1), bad keys (stage 2)
create_topic ad-counts-late 1              # stage 3's dead letters
create_topic clicks-unsalted "$PARTITIONS" "$ahead" # the comparison run: read by no pipeline

say "deploying the pipelines"
for m in click-validate click-partials click-merge; do
  tmp="$PLUGINS_DIR/.$m.toml.tmp"
  if [ "$m" = click-validate ] && [ -n "${STAGE1_PARTITIONING:-}" ]; then
    # e.g. "key": stage 1 re-partitions by murmur2, so every partition of clicks-valid
    # interleaves the output of all six stage-1 tasks.
    sed "/^wasm = /a partitioning = \"$STAGE1_PARTITIONING\"" "$HERE/pipeline/$m.toml" >"$tmp"
  else
    cp "$HERE/pipeline/$m.toml" "$tmp"
  fi
  if cmp -s "$tmp" "$PLUGINS_DIR/$m.toml"; then
    rm -f "$tmp"
    echo "$m.toml is deployed"
  else
    mv "$tmp" "$PLUGINS_DIR/$m.toml"
    echo "$m.toml -> $PLUGINS_DIR"
  fi
done

# Until the admin API (GET /v1/pipelines) says they run, with a task per partition.
wait_running() {
  python3 - "$ADMIN" "$@" <<'EOF'
import json, sys, time, urllib.request
admin, names = sys.argv[1], sys.argv[2:]
deadline = time.time() + 120
while True:
    try:
        with urllib.request.urlopen(f"http://{admin}/v1/pipelines", timeout=5) as r:
            ps = {p["name"]: p for p in json.load(r)}
    except OSError:
        ps = {}
    bad = [n for n in names if ps.get(n, {}).get("status") != "running" or not ps[n]["partitions"]]
    if not bad:
        break
    if time.time() > deadline:
        sys.exit("pipelines not running: " + "; ".join(
            f"{n}: {ps[n]['status']} {ps[n].get('last_error') or ''}" if n in ps else f"{n}: not found"
            for n in bad))
    time.sleep(0.2)
print("running: " + ", ".join(f"{n} ({ps[n]['version']})" for n in names))
EOF
}
wait_running click-validate click-partials click-merge

rm -f "$OUT/load-unsalted.json" "$OUT/load-salted.json" "$OUT/truth.json" "$OUT/check.json"
if [ "$COMPARE_CLICKS" -gt 0 ]; then
  say "for comparison: $COMPARE_CLICKS clicks without salting (to clicks-unsalted, read by no pipeline)"
  python3 "$HERE/generate.py" --bootstrap "$BOOTSTRAP" --topic clicks-unsalted \
    --clicks "$COMPARE_CLICKS" --ads "$ADS" --hot-share "$HOT_SHARE" --no-salt --rate 1000000 \
    --stats "$OUT/load-unsalted.json"
fi

say "producing $CLICKS clicks to clicks, $SALTS salts per ad, checking the results as they come"
# The checker follows ad-counts from now on (to time each window), and compares once the
# generator has written the ground truth.
python3 "$HERE/check.py" --bootstrap "$BOOTSTRAP" --truth "$OUT/truth.json" \
  --report "$OUT/check.json" &
checker=$!
gen_extra=()
[ -z "${PARTITIONER:-}" ] || gen_extra+=(--partitioner "$PARTITIONER")
[ -z "${SPEED:-}" ] || gen_extra+=(--speed "$SPEED")
[ -z "${OFFSET_MS:-}" ] || gen_extra+=(--offset-ms "$OFFSET_MS")
[ -z "${LATE:-}" ] || gen_extra+=(--late "$LATE")
if ! python3 "$HERE/generate.py" --bootstrap "$BOOTSTRAP" --clicks "$CLICKS" --ads "$ADS" \
  --hot-share "$HOT_SHARE" --salts "$SALTS" --rate "$RATE" --invalid "$INVALID" "${gen_extra[@]}" \
  --truth "$OUT/truth.json" --stats "$OUT/load-salted.json"; then
  kill "$checker" 2>/dev/null || true
  die "the generator failed"
fi
rc=0
wait "$checker" || rc=$?

say "the hot ad's load per partition"
if [ -f "$OUT/load-unsalted.json" ]; then
  python3 "$HERE/plot.py" "$OUT/load-unsalted.json" "$OUT/load-salted.json" --out "$OUT/salting.svg"
else
  python3 "$HERE/plot.py" "$OUT/load-salted.json" --out "$OUT/salting.svg"
fi

say "the pipelines"
"$SLUICE" plugin list --admin "$ADMIN" || echo "(sluice plugin list failed)"

if [ "$rc" = 0 ]; then
  say "OK: the final counts in ad-counts equal the ground truth; the plot is $OUT/salting.svg"
else
  say "FAILED: the final counts differ from the ground truth (see above)"
fi
exit "$rc"
