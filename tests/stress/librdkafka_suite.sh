#!/usr/bin/env bash
# Runs tests from librdkafka's own regression suite against a sluice broker and prints one
# line per test (PASSED / FAILED / SKIPPED) and a summary. Nightly-sized, not part of CI.
#
#   bash tests/stress/librdkafka_suite.sh             # the default selection below
#   TESTS_LIST="0103 0129" bash tests/stress/librdkafka_suite.sh
#
# librdkafka's sources (tests included) come from the rdkafka-sys crate on crates.io, pinned
# by runtime/benches/rdkafka/Cargo.lock, so this needs no network beyond crates.io and apt.
# Built once under target/librdkafka-suite. Knobs: TESTS_LIST, TEST_KAFKA_VERSION [4.0.0]
# (what the suite assumes the broker supports), BUILD [1] (0: use target/release/sluice),
# KEEP [0] (1: keep the broker's data and log), BROKER_EXTRA (config lines for the broker).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"

# Transactions (0129, 0098), compaction (0077), and the everyday producer/consumer tests
# around them. Not here: 0103 (creates topics with replication factor 3: a 3-broker
# cluster), and the *_mock tests (librdkafka's mock cluster, no broker involved; 0146 is one).
TESTS_LIST=${TESTS_LIST:-"0001 0002 0003 0004 0005 0007 0008 0011 0012 0013 0014 0015 0017 0019 0020 0021 0022 0026 0028 0029 0030 0031 0033 0034 0036 0038 0039 0040 0041 0042 0044 0045 0046 0047 0048 0049 0050 0051 0052 0053 0054 0055 0056 0057 0058 0059 0060 0061 0062 0063 0064 0065 0066 0067 0068 0069 0070 0071 0072 0073 0074 0075 0076 0077 0078 0079 0080 0081 0082 0083 0084 0085 0086 0088 0089 0090 0091 0092 0093 0094 0095 0097 0098 0099 0100 0101 0102 0104 0106 0107 0109 0110 0111 0112 0113 0114 0115 0116 0117 0118 0119 0120 0121 0122 0123 0124 0125 0126 0127 0128 0129 0130 0131 0132 0133 0134 0135 0136 0137 0138 0139 0140 0142 0143 0144 0145 0147 0148 0149 0150 0151 0152 0153"}
TEST_KAFKA_VERSION=${TEST_KAFKA_VERSION:-4.0.0}
SUITE=$ROOT/target/librdkafka-suite

build_suite() {
    cargo fetch --quiet --manifest-path "$SRC_CRATE/Cargo.toml"
    local ver cands src
    ver=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
        "$SRC_CRATE/Cargo.lock")
    cands=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka)
    src=${cands[0]}
    [[ -d $src/tests ]] || { echo "librdkafka's tests not found in $src" >&2; exit 1; }
    if [[ -x $SUITE/tests/test-runner && "$(cat "$SUITE/.version" 2>/dev/null)" == "$ver" ]]; then
        return
    fi
    ensure_toolchain
    log "building librdkafka $ver and its test suite (a few minutes)"
    rm -rf "$SUITE"
    mkdir -p "$(dirname "$SUITE")"
    cp -r "$src" "$SUITE"
    (
        cd "$SUITE"
        ./configure --no-download --disable-ssl --disable-gssapi --disable-curl \
            --disable-zlib --disable-zstd --disable-lz4-ext --disable-syslog >"$SUITE/build.log" 2>&1
        make -j"$(nproc)" libs >>"$SUITE/build.log" 2>&1
        make -C tests -j"$(nproc)" build >>"$SUITE/build.log" 2>&1 ||
            { tail -30 "$SUITE/build.log" >&2; exit 1; }
    )
    echo "$ver" >"$SUITE/.version"
}

build_suite
build_broker
make_work_dir
# The suite's clusters create topics with 4 partitions by default (num.partitions=4): its
# tests produce to partitions 0-3 of auto-created topics.
BROKER_CONFIG=$WORK/sluice.toml
echo "default_partitions = 4" >"$BROKER_CONFIG"
# 0077 (compaction) makes its topic with segment.bytes=10000 and segment.ms=10000, as Kafka 3
# allowed; sluice's floors are Kafka 4's (1 MiB) and a minute by default.
printf 'segment_bytes_min = 1024\nsegment_ms_min = 1000\n' >>"$BROKER_CONFIG"
# BROKER_EXTRA: more config lines, e.g. ACLs on for 0109, 0115 and 0119 (which grant and deny
# topics with kafka-acls.sh, a shim over `sluice acl`; without ACLs on they fail):
#   BROKER_EXTRA='authorizer = "acl"
#   allow_everyone_if_no_acl_found = true' TESTS_LIST="0109 0115 0119" \
#   bash tests/stress/librdkafka_suite.sh
# or for 0081 (the Admin API test; it creates ACLs, so it needs an authorizer, as with Kafka;
# it also runs dozens of consumers within one 180 s limit, which the 3 s first-rebalance
# delay nearly uses up on this machine, so it gets none; the rest of the suite keeps Kafka's
# 3 s: 0113's l_unsubscribe counts on both its consumers joining within it):
#   BROKER_EXTRA='authorizer = "acl"
#   super_users = ["User:ANONYMOUS"]
#   group_initial_rebalance_delay_ms = 0' TESTS_LIST=0081 bash tests/stress/librdkafka_suite.sh
[[ -n ${BROKER_EXTRA:-} ]] && printf '%s\n' "$BROKER_EXTRA" >>"$BROKER_CONFIG"
start_broker
cat >"$SUITE/tests/test.conf" <<CONF
bootstrap.servers=$BOOTSTRAP
CONF
# Tests that create topics or ACLs with Kafka's tools (0077's compaction configs, 0109's deny
# ACL) get shims that call `sluice topic` and `sluice acl`.
mkdir -p "$WORK/kafka/bin"
cp "$ROOT/tests/stress/kafka-topics-shim.sh" "$WORK/kafka/bin/kafka-topics.sh"
cp "$ROOT/tests/stress/kafka-acls-shim.sh" "$WORK/kafka/bin/kafka-acls.sh"
export KAFKA_PATH=$WORK/kafka BROKERS=$BOOTSTRAP SLUICE

passed=() failed=() skipped=()
for t in $TESTS_LIST; do
    check_broker
    out=$WORK/test-$t.log
    # 0113 (cooperative rebalancing, some forty sub-tests) runs over ten minutes here.
    set +e
    (cd "$SUITE/tests" && LD_LIBRARY_PATH=../src:../src-cpp TESTS=$t \
        TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION timeout 1200 \
        ./test-runner -p1 >"$out" 2>&1)
    rc=$?
    set -e
    if grep -q "SKIPPED" "$out" && ! grep -q "PASSED" "$out"; then
        skipped+=("$t"); echo "SKIPPED $t"
    elif ((rc == 0)); then
        passed+=("$t"); echo "PASSED  $t"
    else
        failed+=("$t"); echo "FAILED  $t (exit $rc): $(grep -m1 -E 'FAIL|Assert|assert' "$out" | cut -c1-160)"
    fi
done
echo
echo "librdkafka suite against sluice: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
echo "failed: ${failed[*]:-none}"
echo "logs: $WORK (kept with KEEP=1)"
