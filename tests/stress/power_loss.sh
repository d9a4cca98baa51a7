#!/usr/bin/env bash
# Simulated power cuts with a real kernel and filesystem: the broker's data directory is an
# ext4 filesystem on a loop device; a producer writes with acks=all, logging every record
# the broker acknowledges; at a random moment the broker is frozen (SIGSTOP) and the loop
# device's backing file is copied: that copy is exactly what the disk held, so it is what a
# power cut at that moment would leave (the kernel's periodic writeback and ext4's periodic
# journal commits are turned off for the run, so only what the broker fsynced has reached
# the device). The copy is mounted (ext4 replays its journal), a broker starts on it, and
# every acknowledged record must be there (durable mode); in default mode losing recent
# records is allowed, but what is left must be consistent (dense offsets, acknowledged
# records at their offsets). Needs root (losetup, mount, sysctl). Not part of CI.
#
#   bash tests/stress/power_loss.sh                  # 100 cuts, durable mode
#   MODE=os CUTS=20 bash tests/stress/power_loss.sh  # default mode: loss counted
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CUTS=${CUTS:-100}
MODE=${MODE:-fsync}
RATE=${RATE:-20000}
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
[[ ${BUILD:-1} == 1 ]] && (cd "$ROOT" && cargo build --release --quiet --bin sluice)
WORK=$(mktemp -d -t sluice-power.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT"
LOOP= BROKER= PRODUCER=
saved_wb=$(cat /proc/sys/vm/dirty_writeback_centisecs)
saved_exp=$(cat /proc/sys/vm/dirty_expire_centisecs)
cleanup() {
    [[ -n $PRODUCER ]] && kill -9 "$PRODUCER" 2>/dev/null
    [[ -n $BROKER ]] && kill -CONT "$BROKER" 2>/dev/null && kill -9 "$BROKER" 2>/dev/null
    sleep 0.2
    mountpoint -q "$MNT" && umount -l "$MNT"
    [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null
    echo "$saved_wb" >/proc/sys/vm/dirty_writeback_centisecs
    echo "$saved_exp" >/proc/sys/vm/dirty_expire_centisecs
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$WORK"
    return 0
}
trap cleanup EXIT
# No background writeback: dirty pages reach the device only when someone fsyncs.
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 360000 >/proc/sys/vm/dirty_expire_centisecs

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_broker() { # DATA_DIR -> sets BROKER, PORT
    local data=$1
    for _ in $(seq 1 20); do
        PORT=$((20000 + RANDOM % 40000)) APORT=$((20000 + RANDOM % 40000))
        port_free "$PORT" && port_free "$APORT" || continue
        "$SLUICE" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$APORT" --data-dir "$data" \
            --plugins-dir "$WORK/plugins" --config "$WORK/broker.toml" >"$WORK/broker.log" 2>&1 &
        BROKER=$!
        for _ in $(seq 1 200); do
            grep -q "sluice is serving" "$WORK/broker.log" && return 0
            kill -0 "$BROKER" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$BROKER" 2>/dev/null || true
    done
    echo "broker did not start:" >&2
    cat "$WORK/broker.log" >&2
    exit 1
}
stop_broker() { kill -CONT "$BROKER" 2>/dev/null || true; kill -9 "$BROKER" 2>/dev/null || true; wait "$BROKER" 2>/dev/null || true; BROKER=; }

mkdir -p "$WORK/plugins"
if [[ $MODE == fsync ]]; then echo 'durability = "fsync"' >"$WORK/broker.toml"; else : >"$WORK/broker.toml"; fi
check_args=()
[[ $MODE == fsync ]] || check_args=(--allow-loss)
lost_total=0 acked_total=0
for cut in $(seq 1 "$CUTS"); do
    truncate -s 0 "$WORK/disk.img"
    truncate -s 1G "$WORK/disk.img"
    mkfs.ext4 -q -F "$WORK/disk.img"
    LOOP=$(losetup -f --show "$WORK/disk.img")
    # commit=3600: no periodic journal commit either; fsync still commits.
    mount -o commit=3600 "$LOOP" "$MNT"
    start_broker "$MNT/data"
    : >"$WORK/acked.txt"
    python3 "$ROOT/tests/clients/durability.py" produce --bootstrap "127.0.0.1:$PORT" \
        --topic cut --acked "$WORK/acked.txt" --count 100000000 --rate "$RATE" \
        >"$WORK/producer.log" 2>&1 &
    PRODUCER=$!
    # Cut somewhere between 1 and 5 s into the load.
    sleep "$((1 + RANDOM % 4)).$((RANDOM % 10))"
    kill -STOP "$BROKER"
    cp --sparse=always "$WORK/disk.img" "$WORK/cut.img"
    kill -9 "$PRODUCER" 2>/dev/null || true
    wait "$PRODUCER" 2>/dev/null || true
    PRODUCER=
    stop_broker
    umount -l "$MNT"
    losetup -d "$LOOP"
    # The disk as the power cut left it.
    LOOP=$(losetup -f --show "$WORK/cut.img")
    mount "$LOOP" "$MNT"
    start_broker "$MNT/data"
    acked=$(wc -l <"$WORK/acked.txt")
    if ! out=$(python3 "$ROOT/tests/clients/durability.py" check --bootstrap "127.0.0.1:$PORT" \
        --topic cut --acked "$WORK/acked.txt" --min-acked 1 "${check_args[@]}" 2>&1); then
        echo "cut $cut: FAILED with $acked acknowledged: $out" >&2
        tail -20 "$WORK/broker.log" >&2
        KEEP=1
        exit 1
    fi
    lost=$(sed -nE 's/.*lost ([0-9]+) acknowledged.*/\1/p' <<<"$out")
    lost_total=$((lost_total + ${lost:-0}))
    acked_total=$((acked_total + acked))
    echo "cut $cut: $acked acknowledged; $out"
    stop_broker
    umount -l "$MNT"
    losetup -d "$LOOP"
    LOOP=
    rm -f "$WORK/cut.img"
done
echo
echo "mode $MODE: $CUTS power cuts, $acked_total records acknowledged in all, $lost_total of them lost"
