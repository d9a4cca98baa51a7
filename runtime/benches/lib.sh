# Shared by the benchmarks in this directory (kafka_bench.sh, pipeline_bench.sh); sourced,
# not run. Builds librdkafka's rdkafka_performance, starts and watches the broker, accounts
# CPU and memory, and keeps the machine quiet between phases.
#
# Expects ROOT (the repository) to be set. Knobs read here: KEEP, QUIET_WAIT, BUILD.
# shellcheck shell=bash

BENCH_DIR=$ROOT/target/bench
SRC_CRATE=$ROOT/runtime/benches/rdkafka
SLUICE=$ROOT/target/release/sluice
KEEP=${KEEP:-0}
QUIET_WAIT=${QUIET_WAIT:-300}

log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# rdkafka_performance, built from the librdkafka sources shipped in the rdkafka-sys crate
# ---------------------------------------------------------------------------------------

# librdkafka's configure/make need a C and C++ compiler (`make libs` also builds the C++
# wrapper), make, pkg-config, and python3 (lds-gen.py writes the shared library's linker
# script). Everything else (SSL, SASL, curl, zlib, zstd) is switched off below, and
# LZ4/snappy are librdkafka's built-in copies, so no -dev package is needed.
ensure_toolchain() {
    local missing=()
    for tool in gcc g++ make pkg-config python3; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        log "installing build tools (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config python3 >/dev/null
    fi
}

# rdkafka_performance's producer settings for every benchmark: big batches and a deep local
# queue, so the client always has a full batch ready and throughput is limited by the broker
# (or the CPU), not by the producer's defaults (queue.buffering.max.messages is 100000 by
# default). batch.size stays at 1 MB because the broker, like Kafka, refuses batches over
# max.message.bytes (1048588).
PRODUCE_OPTS=(
    -X linger.ms=50
    -X batch.size=1000000
    -X batch.num.messages=1000000
    -X queue.buffering.max.messages=4000000
    -X queue.buffering.max.kbytes=4194304
)

# Sets RDKPERF (the tool) and LIBRDKAFKA (the built source tree: src/librdkafka.a, src/rdkafka.h).
build_rdkafka_performance() {
    # `cargo fetch` on the helper crate puts rdkafka-sys (and with it librdkafka's C
    # sources) in cargo's registry; the version comes from that crate's Cargo.lock, so the
    # benchmark always uses the same librdkafka.
    cargo fetch --quiet --manifest-path "$SRC_CRATE/Cargo.toml"
    local ver src cands
    ver=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
        "$SRC_CRATE/Cargo.lock")
    [[ -n $ver ]] || { echo "rdkafka-sys not found in $SRC_CRATE/Cargo.lock" >&2; exit 1; }
    cands=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka)
    src=${cands[0]}
    [[ -d $src ]] || { echo "librdkafka sources of rdkafka-sys $ver not found" >&2; exit 1; }

    LIBRDKAFKA=$BENCH_DIR/librdkafka
    RDKPERF=$LIBRDKAFKA/examples/rdkafka_performance
    # Built once; rebuilt only when the pinned rdkafka-sys version changes.
    if [[ -x $RDKPERF && "$(cat "$LIBRDKAFKA/.sluice-bench-version" 2>/dev/null)" == "$ver" ]]; then
        return
    fi
    ensure_toolchain
    log "building rdkafka_performance from rdkafka-sys $ver ($src)"
    rm -rf "$LIBRDKAFKA"
    mkdir -p "$BENCH_DIR"
    cp -r "$src" "$LIBRDKAFKA"
    (
        cd "$LIBRDKAFKA"
        # --no-download: mklove would otherwise fetch missing helper modules from GitHub.
        # Features the benchmark does not use are off to keep dependencies to a toolchain.
        # (The log lives outside the source tree: mklove loads any ./configure.* file as a
        # module, so a "configure.log" there breaks configure.)
        local buildlog=$BENCH_DIR/librdkafka-build.log
        if ! { ./configure --no-download --disable-ssl --disable-gssapi --disable-curl \
            --disable-zlib --disable-zstd --disable-lz4-ext --disable-syslog &&
            make -j"$(nproc)" libs &&
            make -C examples rdkafka_performance; } >"$buildlog" 2>&1; then
            tail -30 "$buildlog" >&2
            exit 1
        fi
    )
    echo "$ver" >"$LIBRDKAFKA/.sluice-bench-version"
}

librdkafka_version() {
    local ver
    ver=$(cat "$BENCH_DIR/librdkafka/.sluice-bench-version")
    echo "librdkafka ${ver#*+}, from rdkafka-sys ${ver%%+*}"
}

# BUILD=0 uses target/release/sluice as it is (e.g. to measure a fixed binary while the
# sources change).
build_broker() {
    if [[ ${BUILD:-1} == 0 ]]; then
        [[ -x $SLUICE ]] || { echo "BUILD=0 but $SLUICE does not exist" >&2; exit 1; }
        return
    fi
    log "building the broker (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin sluice)
}

# ---------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------

BROKER_PID=
TMP_DIRS=()
# Background processes of the benchmark itself (stopped on exit by pid).
BG_PIDS=()
PERF_PID=
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    local p
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        # Kafka's JVM is not this shell's child (cluster.sh started it): wait for it to end
        # before its data directory goes.
        for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.2; done
    fi
    if ((${#TMP_DIRS[@]})); then
        if [[ $KEEP == 1 ]]; then echo "kept: ${TMP_DIRS[*]}" >&2; else rm -rf "${TMP_DIRS[@]}" || true; fi
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets WORK: a scratch directory for logs and client output.
make_work_dir() {
    WORK=$(mktemp -d -t sluice-bench-work.XXXXXX)
    TMP_DIRS+=("$WORK")
}

# make_certs DIR: a CA (ca.pem) and a broker certificate for 127.0.0.1 signed by it
# (broker.pem, broker.key), for an SSL listener.
make_certs() {
    mkdir -p "$1"
    (
        cd "$1"
        printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem -subj /CN=bench-ca
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=127.0.0.1
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out broker.pem -extfile san.ext
    ) >/dev/null 2>&1
}

# ssl_listener DIR: a broker config (BROKER_CONFIG, for start_broker) with an SSL listener
# on a free port (SSL_PORT) serving the certificate make_certs left in DIR.
ssl_listener() {
    SSL_PORT=$(pick_port)
    [[ -n $SSL_PORT ]] || { echo "no free port for the SSL listener" >&2; exit 1; }
    BROKER_CONFIG=$WORK/sluice.toml
    cat >"$BROKER_CONFIG" <<CONF
[[listeners]]
name = "SSL"
address = "127.0.0.1:$SSL_PORT"
security = "SSL"
cert = "$1/broker.pem"
key = "$1/broker.key"
CONF
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Prints a port nobody listens on now (empty after 20 tries), for an extra listener.
pick_port() {
    local p
    for _ in $(seq 1 20); do
        p=$((20000 + RANDOM % 40000))
        port_free "$p" && { echo "$p"; return; }
    done
    return 0 # nothing printed: the caller says so (set -e must not end it silently)
}

# Starts the broker on free ports with a fresh data directory and an (empty) plugins
# directory, and the config file BROKER_CONFIG if set. Sets BROKER_PID, BOOTSTRAP, ADMIN
# (host:port of the admin API), DATA, PLUGINS.
start_broker() {
    DATA=$(mktemp -d -t sluice-bench-data.XXXXXX)
    PLUGINS=$(mktemp -d -t sluice-bench-plugins.XXXXXX)
    TMP_DIRS+=("$DATA" "$PLUGINS")
    # Ports nobody listens on. Another broker may already run on this machine (tests,
    # another engineer), so never assume a fixed port (not even the admin API's default):
    # probe, then make sure the broker we started is the one serving (a lost race shows as
    # "Address already in use").
    local port aport
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        aport=$((20000 + RANDOM % 40000))
        ((port != aport)) && port_free "$port" && port_free "$aport" || continue
        "$SLUICE" serve --listen "127.0.0.1:$port" --data-dir "$DATA" \
            --admin "127.0.0.1:$aport" --plugins-dir "$PLUGINS" \
            ${BROKER_CONFIG:+--config "$BROKER_CONFIG"} >"$WORK/broker.log" 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 1 100); do
            if grep -q "sluice is serving" "$WORK/broker.log"; then
                BOOTSTRAP=127.0.0.1:$port
                ADMIN=127.0.0.1:$aport
                return
            fi
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    done
    echo "could not start the broker; last log:" >&2
    cat "$WORK/broker.log" >&2
    exit 1
}

# Apache Kafka 4.x in sluice's place: one KRaft node (broker and controller in one JVM),
# from Maven Central's jars through tests/kafka/cluster.sh, so the same phases measure both.
# Its JVM is set as Kafka's own kafka-server-start.sh sets it: KAFKA_HEAP (1 GB) heap, G1,
# 20 ms pause target. Its config is Kafka's defaults (no fsync per write, like sluice's),
# replication factor 1.
start_kafka() {
    DATA=$(mktemp -d -t sluice-bench-kafka.XXXXXX)
    TMP_DIRS+=("$DATA")
    local base
    for _ in $(seq 1 20); do
        base=$(pick_port)
        [[ -n $base ]] && port_free $((base + 1)) && port_free $((base + 101)) && break
    done
    if ! NODES=1 BASE_PORT=$base HEAP=${KAFKA_HEAP:-1g} \
        bash "$ROOT/tests/kafka/cluster.sh" start "$DATA/kafka" >"$WORK/broker.log" 2>&1; then
        echo "could not start Kafka:" >&2
        cat "$WORK/broker.log" >&2
        exit 1
    fi
    BROKER_PID=$(cat "$DATA/kafka/node1/pid")
    BOOTSTRAP=127.0.0.1:$((base + 1))
}

# sluice and Apache Kafka up at once (for benchmarks whose runs take turns): sets S_PID,
# S_BOOT and S_DATA, K_PID, K_BOOT and K_DATA (Kafka's log directory).
start_both_brokers() {
    start_broker
    S_PID=$BROKER_PID S_BOOT=$BOOTSTRAP S_DATA=$DATA
    # cleanup() stops BROKER_PID (Kafka's, next) and every BG_PIDS.
    BG_PIDS+=("$S_PID")
    start_kafka
    K_PID=$BROKER_PID K_BOOT=$BOOTSTRAP K_DATA=$DATA/kafka
    log "sluice pid $S_PID on $S_BOOT, Kafka pid $K_PID on $K_BOOT"
}

kafka_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/tests/kafka/pom.xml"
}

# Stops the broker started last (its data directory goes at exit).
stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}

# The broker must still be the one we started (a crash, or someone's `pkill sluice`, would
# otherwise show up as odd figures or a failing /proc read).
check_broker() {
    kill -0 "$BROKER_PID" 2>/dev/null && return 0
    echo "the broker (pid $BROKER_PID) is gone; its log ends with:" >&2
    tail -n 20 "$WORK/broker.log" >&2
    BROKER_PID=
    exit 1
}

# create_topic NAME PARTITIONS [sluice topic create options...]
create_topic() {
    local name=$1 parts=$2
    shift 2
    "$SLUICE" topic create "$name" --partitions "$parts" --bootstrap "$BOOTSTRAP" "$@" >/dev/null
    # Kafka answers CreateTopics before every broker's metadata has the new partitions' leaders;
    # a producer that starts at once can fail on an unknown partition.
    [[ ${TARGET:-sluice} == kafka ]] && sleep 2
    return 0
}

# fill_topic TOPIC PARTITIONS SIZE COUNT: an untimed produce of COUNT records for the consume
# rows to read, the same data whichever the broker. The produce rows' topics are not: their
# shape depends on how fast the broker took them.
# - librdkafka's sticky partitioner moves to another partition every
#   sticky.partitioning.linger.ms (2 x linger.ms): 500 k records of 1 KiB over 64 partitions
#   ended in 2 partitions on sluice, in 4 plus a batch in each other on Kafka, and a consumer
#   fetching 1 MB per partition got 2 MB per fetch from one and more from the other.
# - A batch closes when linger.ms passes, so a broker that acknowledges sooner gets more,
#   smaller batches: 2 M records of 100 B over 1,000 partitions made 2,850 batches on
#   sluice and 1,266 on Kafka, and the consumer pays per batch.
# Here every record goes to a random partition (sticky linger 0) and batches close only when
# full (linger 5 s): the same batches on every broker, e.g. exactly one per partition for the
# 1,000-partition row.
fill_topic() {
    local topic=$1 parts=$2 size=$3 count=$4
    create_topic "$topic" "$parts"
    log "fill $topic: $count x ${size} B over $parts partition(s)"
    local z=()
    [[ ${COMPRESSION:-none} != none ]] && z=(-z "$COMPRESSION")
    "$RDKPERF" -b "$BOOTSTRAP" -P -t "$topic" -s "$size" -a 1 -c "$count" "${z[@]}" \
        -X sticky.partitioning.linger.ms=0 -X linger.ms=5000 -X batch.size=1000000 \
        -X batch.num.messages=1000000 -X queue.buffering.max.messages=4000000 \
        -X queue.buffering.max.kbytes=4194304 >"$WORK/fill-$topic.out" 2>&1 || {
        echo "fill of $topic failed:" >&2
        tail -n 20 "$WORK/fill-$topic.out" >&2
        exit 1
    }
}

delete_topic() {
    "$SLUICE" topic delete "$1" --bootstrap "$BOOTSTRAP" >/dev/null
}

# Idle connections: each sends ApiVersions v0 once and then only stays open, as the pooled
# connections of a fleet of mostly quiet clients do.
IDLE_PID=
# start_idle N: N of them to $BOOTSTRAP, held until stop_idle.
start_idle() {
    log "opening $1 idle connections"
    python3 - "$BOOTSTRAP" "$1" <<'PY' &
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
socks = []
for i in range(int(sys.argv[2])):
    s = socket.create_connection((host, int(port)))
    client = b"idle"
    body = struct.pack(">hhih", 18, 0, i, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    s.recv(size, socket.MSG_WAITALL)
    socks.append(s)
print("idle connections open:", len(socks), file=sys.stderr, flush=True)
time.sleep(1e6)
PY
    IDLE_PID=$!
    BG_PIDS+=("$IDLE_PID")
    sleep 3
    kill -0 "$IDLE_PID" || { echo "the idle connections failed" >&2; exit 1; }
}
stop_idle() {
    [[ -n $IDLE_PID ]] || return 0
    kill "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=
}

# ---------------------------------------------------------------------------------------
# CPU, memory, a quiet machine
# ---------------------------------------------------------------------------------------

# Broker memory and CPU, from /proc.
vm_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$BROKER_PID/status"; }
# Writing 5 to clear_refs resets the peak RSS (VmHWM), so each phase gets its own peak.
reset_peak() { echo 5 >"/proc/$BROKER_PID/clear_refs" 2>/dev/null || true; }
# CPU ticks (user + system, every thread) of process $1, the broker by default.
cpu_ticks() { sed 's/^.*) //' "/proc/${1:-$BROKER_PID}/stat" | awk '{ print $12 + $13 }'; }
# The last "% N messages (B bytes) consumed in T ms: R msgs/s (M MB/s)" line of an
# rdkafka_performance consumer's output FILE.
consumed_line() { grep -hE '^% [0-9]+ messages \([0-9]+ bytes\) consumed' "$1" | tail -n1; }
# CPU of this script and of every child it has waited for (utime + stime + cutime +
# cstime): the clients, when they were started by the script and have ended.
self_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }
# Busy ticks of the whole machine (user+nice+system+irq+softirq+steal): whatever is not the
# broker or the client is other load (e.g. a compiler), which would skew the figures.
sys_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
data_mb() { du -sm "$DATA" | cut -f1; }

# Start every phase from the same state: the previous phase's dirty pages written back (so
# it does not pay for its predecessor's writeback) and the machine otherwise idle. On a shared
# machine a compiler or a test run would take a core from the broker or the client; wait for
# up to QUIET_WAIT seconds for that to end, then go on anyway (the "other" column shows it).
settle() {
    sync
    local waited=0 a b
    while :; do
        a=$(sys_ticks)
        sleep 1
        b=$(sys_ticks)
        # Below 20% of one core busy over that second (the idle broker included): quiet.
        (((b - a) * 100 < 20 * CLK_TCK)) && return 0
        if ((waited == 0)); then
            echo "machine busy ($(((b - a) * 100 / CLK_TCK))% of a core); waiting up to ${QUIET_WAIT}s" >&2
        fi
        waited=$((waited + 1))
        ((waited < QUIET_WAIT)) || { echo "WARNING: still busy; measuring anyway" >&2; return 0; }
    done
}
