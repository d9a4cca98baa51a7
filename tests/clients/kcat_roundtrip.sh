#!/usr/bin/env bash
# kcat (librdkafka 2.0.2, older than the other clients): metadata with -L, keyed lines produced
# with each codec into an auto-created topic, then the whole topic read back as JSON (-C -J)
# and compared line by line. librdkafka's "msg" debug output names the codec of every Produce
# batch, which proves the batches really were compressed rather than silently sent plain.
set -euo pipefail

name=kcat_roundtrip.sh
fail() { echo "FAIL $name: $*" >&2; exit 1; }

bootstrap=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) bootstrap=${2:-}; shift 2 ;;
    *) echo "usage: $name --bootstrap HOST:PORT" >&2; exit 2 ;;
  esac
done
[ -n "$bootstrap" ] || { echo "usage: $name --bootstrap HOST:PORT" >&2; exit 2; }
command -v kcat >/dev/null || fail "kcat is not installed (apt-get install kcat)"
command -v python3 >/dev/null || fail "python3 is not installed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
topic="kcat-$$-$(date +%s)"
codecs="snappy lz4 gzip zstd"
lines_per_codec=300

start_ms=$(($(date +%s%N) / 1000000))
: >"$work/expected"
codec_problems=()
for codec in $codecs; do
  {
    for n in $(seq 1 $lines_per_codec); do
      # Repetitive values so that compression wins and librdkafka keeps the codec.
      printf 'key-%s-%d:%s\n' "$codec" "$n" "$(printf "codec=$codec line=$n %.0s" 1 2 3 4 5)"
    done
    printf 'colon-%s:value:with:colons\n' "$codec"
    printf 'utf8-%s:ünïcödé ✓ %s\n' "$codec" "$codec"
  } >"$work/in-$codec"
  cat "$work/in-$codec" >>"$work/expected"

  headers=()
  [ "$codec" = gzip ] && headers=(-H dup=one -H dup=two -H other=3)
  if ! kcat -b "$bootstrap" -t "$topic" -P -K: -z "$codec" "${headers[@]}" \
      -X acks=all -X enable.idempotence=false -X linger.ms=50 -d msg,feature \
      <"$work/in-$codec" 2>"$work/log-$codec"; then
    tail -n 20 "$work/log-$codec" >&2
    fail "kcat -P -z $codec exited non-zero"
  fi
  if grep -E 'Delivery failed|% ERROR' "$work/log-$codec" >&2; then
    fail "kcat -P -z $codec reported delivery errors (above)"
  fi
  # Records per codec as librdkafka reports its Produce batches. A batch the codec would make
  # bigger legitimately goes out uncompressed, so the codec is required for 90% of the records.
  read -r total with_codec < <(grep -o 'Produce MessageSet with [0-9]* message(s) .*)$' "$work/log-$codec" |
    awk -v c="$codec" '{ n = $4; t += n; if ($0 ~ ", " c "\\)$") w += n } END { print t + 0, w + 0 }')
  [ "$total" -gt 0 ] || fail "no Produce batch in kcat's debug output for $codec"
  # Noted rather than fatal here, so that the remaining codecs and the read-back still run.
  if [ $((with_codec * 10)) -lt $((total * 9)) ]; then
    grep -h -i -E "feature $codec\b" "$work/log-$codec" | sort -u >&2 || true  # librdkafka's reason
    codec_problems+=("only $with_codec of $total records produced with -z $codec went out $codec")
  fi
done
end_ms=$(($(date +%s%N) / 1000000))

kcat -b "$bootstrap" -L -J -t "$topic" >"$work/metadata.json" 2>"$work/metadata.err" ||
  fail "kcat -L failed: $(cat "$work/metadata.err")"
timeout 60 kcat -b "$bootstrap" -C -t "$topic" -o beginning -e -J -q >"$work/consumed.jsonl" \
  2>"$work/consume.err" || fail "kcat -C failed: $(tail -n 5 "$work/consume.err")"

python3 - "$bootstrap" "$topic" "$work" "$start_ms" "$end_ms" <<'EOF'
import json, sys

bootstrap, topic, work, start_ms, end_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def fail(msg):
    print(f"FAIL kcat_roundtrip.sh: {msg}", file=sys.stderr)
    sys.exit(1)

md = json.load(open(f"{work}/metadata.json"))
brokers = md.get("brokers", [])
if [b["name"] for b in brokers] != [bootstrap]:
    fail(f"kcat -L brokers: expected one broker advertised as {bootstrap}, got {brokers}")
broker_id = brokers[0]["id"]
topics = [t for t in md.get("topics", []) if t["topic"] == topic]
if len(topics) != 1 or "error" in topics[0]:
    fail(f"kcat -L: topic {topic} missing or in error: {md.get('topics')}")
parts = topics[0]["partitions"]
if [(p["partition"], p["leader"]) for p in parts] != [(0, broker_id)]:
    fail(f"auto-created topic should have 1 partition led by broker {broker_id}: {parts}")

expected = []
with open(f"{work}/expected", encoding="utf-8") as f:
    for line in f:
        key, value = line.rstrip("\n").split(":", 1)
        headers = ["dup", "one", "dup", "two", "other", "3"] if key.startswith(("key-gzip", "colon-gzip", "utf8-gzip")) else None
        expected.append((key, value, headers))

got = [json.loads(l) for l in open(f"{work}/consumed.jsonl", encoding="utf-8") if l.strip()]
if len(got) != len(expected):
    fail(f"consumed {len(got)} records, produced {len(expected)}")
for offset, (msg, (key, value, headers)) in enumerate(zip(got, expected)):
    where = f"{topic}[0]@{offset}"
    if (msg["partition"], msg["offset"]) != (0, offset):
        fail(f"{where}: record came back as partition {msg['partition']} offset {msg['offset']}")
    if (msg["key"], msg["payload"]) != (key, value):
        fail(f"{where}: expected {key!r}:{value!r}, got {msg['key']!r}:{msg['payload']!r}")
    if msg.get("headers") != headers:
        fail(f"{where}: expected headers {headers}, got {msg.get('headers')}")
    if msg["tstype"] != "create" or not start_ms - 1000 <= msg["ts"] <= end_ms + 1000:
        fail(f"{where}: timestamp {msg['tstype']} {msg['ts']} outside the produce window [{start_ms}, {end_ms}]")
print(f"{len(got)} records (snappy, lz4, gzip, zstd) read back exactly; metadata checked")
EOF
[ ${#codec_problems[@]} -eq 0 ] || fail "$(IFS=';'; echo "${codec_problems[*]}")"
echo "OK $name: metadata, keys, headers and values of every codec checked"
