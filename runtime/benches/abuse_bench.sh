#!/usr/bin/env bash
# Abuse beside honest work (issue 14): one broker, an honest producer and consumer
# (librdkafka's rdkafka_performance, 100-byte records, acks=1) measured alone and then while
# each kind of abuse runs (benches/abuse.rs): 10,000 connections, malformed, oversized and
# unauthenticated frames with 16 stalled 90 MiB requests, 32 fetches asking 2 GiB each, gzip
# bombs of 250 MiB into a compacted topic, producer-id churn, group churn. For each: the
# honest clients' records/s, the broker's peak RSS (VmHWM) and what the broker did to the
# abuse. Asserts nothing (a benchmark, not a test); the broker must survive every phase.
#
#   bash runtime/benches/abuse_bench.sh
#
# Knobs: SECS [20] per abuse phase, VN [2000000] honest records per run, PHASES [all],
# BUILD [1], KEEP [0], QUIET_WAIT [300].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

SECS=${SECS:-20}
VN=${VN:-2000000}
PHASES=${PHASES:-"conns-one-ip conns frames fetch zipbomb pids groups"}

build_broker
build_rdkafka_performance
log "building the attacker (cargo build --release --bench abuse)"
ABUSE=$(cd "$ROOT" && cargo build --release --bench abuse --message-format=json 2>/dev/null |
    awk -F'"executable":"' '/"executable":"/ { split($2, a, "\""); print a[1] }' | tail -n1)
[[ -x $ABUSE ]] || { echo "could not build benches/abuse.rs" >&2; exit 1; }

# 10,000 connections on each side of loopback.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 12000)) || echo "WARNING: ulimit -n is $(ulimit -n): the 10,000-connection phase will fail early" >&2

make_work_dir
SASL_PORT=$(pick_port)
[[ -n $SASL_PORT ]] || { echo "no free port for the second listener" >&2; exit 1; }
BROKER_CONFIG=$WORK/sluice.toml
# Room for the attacker's 10,000 and the honest clients beside them (the default is 10,000).
cat >"$BROKER_CONFIG" <<CONF
max_connections = 12000

[[listeners]]
name = "SASL"
address = "127.0.0.1:$SASL_PORT"
security = "SASL_PLAINTEXT"
CONF
start_broker
log "broker pid $BROKER_PID: PLAINTEXT $BOOTSTRAP, SASL_PLAINTEXT 127.0.0.1:$SASL_PORT"

create_topic victim 1
create_topic big 1
create_topic bombs 1 --config cleanup.policy=compact
create_topic churn 1
log "filling 'big' with 300 MB to fetch"
"$RDKPERF" -b "$BOOTSTRAP" -P -t big -p 0 -s 10000 -a 1 -c 30000 >/dev/null 2>&1

# One honest run: produce VN records to a new topic $1, then read them back. Prints
# "produce/s consume/s".
honest() {
    local topic=victim-$1 p c
    create_topic "$topic" 1
    p=$("$RDKPERF" -b "$BOOTSTRAP" -P -t "$topic" -p 0 -s 100 -a 1 -c "$VN" 2>&1 |
        grep -E '^% [0-9]+ messages produced' | tail -n1 | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    c=$("$RDKPERF" -b "$BOOTSTRAP" -C -t "$topic" -p 0 -o beginning -c "$VN" 2>&1 |
        grep -E '^% [0-9]+ messages \(' | tail -n1 | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    echo "${p:-0} ${c:-0}"
}

rss_mb() { awk -v k="$(vm_kb "$1")" 'BEGIN { printf "%.0f", k / 1024 }'; }
SUMMARY=$WORK/summary
printf '%-14s %12s %12s %10s %10s   %s\n' phase "produce/s" "consume/s" "peak MB" "after MB" "what the broker did" >"$SUMMARY"

settle
reset_peak
read -r BP BC < <(honest alone)
printf '%-14s %12s %12s %10s %10s   %s\n' alone "$BP" "$BC" "$(rss_mb VmHWM)" "$(rss_mb VmRSS)" "-" >>"$SUMMARY"
log "alone: produce $BP/s, consume $BC/s"

for phase in $PHASES; do
    settle
    check_broker
    reset_peak
    case $phase in
    conns-one-ip) args=(conns "$BOOTSTRAP" "$SECS" 10000 1) ;;
    conns) args=(conns "$BOOTSTRAP" "$SECS" 10000 5) ;;
    frames) args=(frames "$BOOTSTRAP" "$SECS" "127.0.0.1:$SASL_PORT") ;;
    fetch) args=(fetch "$BOOTSTRAP" "$SECS" big) ;;
    zipbomb) args=(zipbomb "$BOOTSTRAP" "$SECS" bombs) ;;
    pids) args=(pids "$BOOTSTRAP" "$SECS" churn) ;;
    groups) args=(groups "$BOOTSTRAP" "$SECS" churn) ;;
    *) echo "unknown phase $phase" >&2; exit 1 ;;
    esac
    log "$phase: abuse ${args[*]}"
    "$ABUSE" "${args[@]}" >"$WORK/$phase.out" 2>&1 &
    APID=$!
    BG_PIDS+=("$APID")
    # Let the abuse build up (connections opened, requests in flight) before measuring.
    sleep $((SECS / 4))
    read -r P C < <(honest "$phase")
    wait "$APID" || true
    check_broker
    did=$(tail -n1 "$WORK/$phase.out")
    printf '%-14s %12s %12s %10s %10s   %s\n' "$phase" "$P" "$C" "$(rss_mb VmHWM)" "$(rss_mb VmRSS)" "$did" >>"$SUMMARY"
    log "$phase: produce $P/s, consume $C/s; $did"
done

check_broker
log "broker counters"
curl -s "http://$ADMIN/metrics" 2>/dev/null | grep -E '^sluice_(connections_refused|fetch_capped|fetch_shrunk|memory_waits|groups_refused|producer_ids_forgotten|protocol_errors|authentication_failures)' >&2 || true
printf '\n(%s honest records of 100 B each way per run; %s s of abuse per phase; peak = VmHWM during the phase)\n' "$VN" "$SECS"
cat "$SUMMARY"
