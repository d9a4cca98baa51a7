#!/usr/bin/env bash
# TLS beside plaintext: the same broker with a PLAINTEXT and an SSL listener (a certificate
# made here with openssl), kcat (librdkafka, Debian's, built with OpenSSL) producing N records
# of SIZE bytes from a file and reading them all back, once per listener. Prints MB/s for each
# and the SSL/plaintext ratio (issue 14's target: >= 70% at 1 KiB). Client and broker share
# the machine's cores, and both pay for TLS, so the ratio is a floor for the broker alone.
# Asserts nothing (a benchmark, not a test).
#
#   bash runtime/benches/tls_bench.sh
#
# Knobs: N [1000000], SIZE [1024], RUNS [2] (rounds, plaintext and TLS in turn; the best of), BUILD [1], KEEP [0], PIN [0]: 1
# pins the broker to CPU 0 and the client to CPU 1 (taskset), so each has a core of its own
# and the client's encryption no longer takes the broker's CPU. CLIENT [kcat]: franz runs
# runtime/benches/franz instead (franz-go, Go's crypto/tls; needs Go and the module proxy the
# first time), whose TLS costs the client far less than librdkafka's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

N=${N:-1000000}
SIZE=${SIZE:-1024}
RUNS=${RUNS:-2}
CLIENT_KIND=${CLIENT:-kcat}
case $CLIENT_KIND in
kcat) command -v kcat >/dev/null || { echo "kcat is needed (apt-get install kcat)" >&2; exit 1; } ;;
franz)
    command -v go >/dev/null || { echo "CLIENT=franz needs Go" >&2; exit 1; }
    FRANZ=$ROOT/target/bench/franz-bench
    (cd "$ROOT/runtime/benches/franz" && go build -o "$FRANZ" .)
    ;;
*) echo "CLIENT is kcat or franz" >&2; exit 1 ;;
esac
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }

build_broker
make_work_dir
C=$WORK/certs
make_certs "$C"
ssl_listener "$C"
start_broker
log "broker pid $BROKER_PID: PLAINTEXT $BOOTSTRAP, SSL 127.0.0.1:$SSL_PORT"
CLIENT=()
if [[ ${PIN:-0} == 1 ]]; then
    command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
    taskset -a -p -c 0 "$BROKER_PID" >/dev/null
    CLIENT=(taskset -c 1)
    log "broker pinned to CPU 0, $CLIENT_KIND to CPU 1"
fi

# kcat's input: N records of SIZE bytes (a line each, counting the newline).
INPUT=$WORK/records
[[ $CLIENT_KIND == kcat ]] && awk -v n="$N" -v s="$SIZE" 'BEGIN {
    line = sprintf("%*s", s - 1, ""); gsub(/ /, "x", line)
    for (i = 0; i < n; i++) print line
}' >"$INPUT"
MB=$(awk -v n="$N" -v s="$SIZE" 'BEGIN { printf "%.1f", n * s / 1e6 }')

now() { date +%s.%N; }
rate() { awk -v mb="$MB" -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", mb / (b - a) }'; }

HZ=$(getconf CLK_TCK)
# Broker CPU seconds per GB moved between two cpu_ticks readings.
cpu_per_gb() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v mb="$MB" 'BEGIN { printf "%.2f", (b - a) / hz / (mb / 1000) }'; }

# franz-go's run: it times itself from its first record to its last (so without Go's start-up).
franz() { # $1 produce|consume, $2 bootstrap, $3 topic, rest: franz settings
    local mode=$1 boot=$2 topic=$3
    shift 3
    "${CLIENT[@]}" "$FRANZ" -mode "$mode" -bootstrap "$boot" -topic "$topic" -n "$N" -size "$SIZE" "$@"
}

# One round on one listener: produce N records to a fresh topic, read them back, delete it
# (so the gigabytes written do not crowd the page cache and make later rounds pay for
# writeback). Prints "produce_MBps consume_MBps".
round() { # $1 name, $2 round, $3 bootstrap, rest: client settings (kcat's, or franz-go's)
    local name=$1 r=$2 boot=$3 t0 t1 t2 p c got k0 k1 k2 secs
    shift 3
    local topic="tls-bench-$name-$r"
    create_topic "$topic" 1
    if [[ $CLIENT_KIND == franz ]]; then
        k0=$(cpu_ticks)
        secs=$(franz produce "$boot" "$topic" "$@")
        k1=$(cpu_ticks)
        p=$(rate 0 "$secs")
        secs=$(franz consume "$boot" "$topic" "$@")
        k2=$(cpu_ticks)
        c=$(rate 0 "$secs")
    else
        k0=$(cpu_ticks)
        t0=$(now)
        "${CLIENT[@]}" kcat -P -b "$boot" "$@" -t "$topic" -X linger.ms=5 -X batch.size=1000000 -l "$INPUT"
        t1=$(now)
        k1=$(cpu_ticks)
        got=$("${CLIENT[@]}" kcat -C -b "$boot" "$@" -t "$topic" -o beginning -e -q -X fetch.max.bytes=52428800 | wc -l)
        t2=$(now)
        k2=$(cpu_ticks)
        [[ $got == "$N" ]] || { echo "$name: read $got of $N" >&2; exit 1; }
        p=$(rate "$t0" "$t1"); c=$(rate "$t1" "$t2")
    fi
    delete_topic "$topic"
    log "$name round $r: produce $p MB/s (broker $(cpu_per_gb "$k0" "$k1") CPU s/GB), consume $c MB/s (broker $(cpu_per_gb "$k1" "$k2") CPU s/GB)"
    echo "$p $c"
}

if [[ $CLIENT_KIND == franz ]]; then
    SSL_ARGS=(-ca "$C/ca.pem")
else
    SSL_ARGS=(-X security.protocol=SSL -X "ssl.ca.location=$C/ca.pem")
fi
# Plaintext and TLS take turns, so both see the machine in the same state; the best round
# of each is kept.
PP=0 PC=0 SP=0 SC=0
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a) ? b : a }'; }
for r in $(seq 1 "$RUNS"); do
    read -r p c < <(round plaintext "$r" "$BOOTSTRAP")
    PP=$(best "$PP" "$p"); PC=$(best "$PC" "$c")
    read -r p c < <(round ssl "$r" "127.0.0.1:$SSL_PORT" "${SSL_ARGS[@]}")
    SP=$(best "$SP" "$p"); SC=$(best "$SC" "$c")
done
printf '\n%-10s %14s %14s   (%s records of %s B, %s, best of %s)\n' "" "produce MB/s" "consume MB/s" "$N" "$SIZE" "$CLIENT_KIND" "$RUNS"
printf '%-10s %14s %14s\n' plaintext "$PP" "$PC" ssl "$SP" "$SC"
printf '%-10s %13s%% %13s%%\n' "ssl/plain" "$(awk -v a="$SP" -v b="$PP" 'BEGIN { printf "%.0f", 100 * a / b }')" \
    "$(awk -v a="$SC" -v b="$PC" 'BEGIN { printf "%.0f", 100 * a / b }')"
