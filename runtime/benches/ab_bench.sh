#!/usr/bin/env bash
# Two broker builds side by side: each round starts build A, then build B, each fresh (a new
# data directory, a PLAINTEXT and an SSL listener), and franz-go produces N records of SIZE
# bytes to a fresh one-partition topic and reads them back, on each listener MODES names.
# Prints throughput and the broker's CPU seconds per GB for every run, so a change's effect
# shows against the same machine state (this VM's page cache makes single runs swing by a
# third; alternating builds keeps both in the same weather). Asserts nothing.
#
#   A=/path/to/old/sluice B=target/release/sluice bash runtime/benches/ab_bench.sh
#
# Knobs: A, B (the two binaries; B defaults to target/release/sluice), ROUNDS [3],
# MODES ["plain ssl"], N [1000000], SIZE [1024]. Needs Go (franz-go, as tls_bench.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

A=${A:?A=path of the first sluice binary}
B=${B:-$ROOT/target/release/sluice}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-"plain ssl"}
N=${N:-1000000}
SIZE=${SIZE:-1024}
for bin in "$A" "$B"; do [[ -x $bin ]] || { echo "$bin is not an executable" >&2; exit 1; }; done
command -v go >/dev/null || { echo "needs Go (franz-go)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 1; }
FRANZ=$ROOT/target/bench/franz-bench
(cd "$ROOT/runtime/benches/franz" && go build -o "$FRANZ" .)

make_work_dir
C=$WORK/certs
make_certs "$C"
HZ=$(getconf CLK_TCK)
GB=$(awk -v n="$N" -v s="$SIZE" 'BEGIN { print n * s / 1e9 }')
per_gb() { awk -v t="$1" -v hz="$HZ" -v gb="$GB" 'BEGIN { printf "%.2f", t / hz / gb }'; }
mbps() { awk -v s="$1" -v gb="$GB" 'BEGIN { printf "%.0f", gb * 1000 / s }'; }

for r in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        SLUICE=${!side}
        ssl_listener "$C"
        start_broker
        for mode in $MODES; do
            boot=$BOOTSTRAP ca=()
            [[ $mode == ssl ]] && boot=127.0.0.1:$SSL_PORT ca=(-ca "$C/ca.pem")
            topic=ab-$mode-$r
            create_topic "$topic" 1
            k0=$(cpu_ticks)
            p=$("$FRANZ" -mode produce -bootstrap "$boot" -topic "$topic" -n "$N" -size "$SIZE" "${ca[@]}")
            k1=$(cpu_ticks)
            c=$("$FRANZ" -mode consume -bootstrap "$boot" -topic "$topic" -n "$N" -size "$SIZE" "${ca[@]}")
            k2=$(cpu_ticks)
            check_broker
            printf 'round %s %s %-5s produce %5s MB/s, broker %s CPU s/GB; consume %5s MB/s, broker %s CPU s/GB\n' \
                "$r" "$side" "$mode" "$(mbps "$p")" "$(per_gb $((k1 - k0)))" "$(mbps "$c")" "$(per_gb $((k2 - k1)))"
            delete_topic "$topic"
        done
        stop_broker
        rm -rf "$DATA"
    done
done
