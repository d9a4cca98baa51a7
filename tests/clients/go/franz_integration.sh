#!/usr/bin/env bash
# franz-go's own integration tests (github.com/twmb/franz-go, package pkg/kgo) against a
# sluice broker this script starts (and stops) itself:
#
#   bash tests/clients/go/franz_integration.sh [TEST_REGEX]     default TEST_REGEX: .
#
# franz-go's pkg/kgo tests that talk to a broker read (pkg/kgo/helpers_test.go, v1.22.3):
#   KGO_SEEDS         bootstrap servers (default 127.0.0.1:9092)
#   KGO_TEST_RF       replication factor of the topics the tests create (default 3: use 1)
#   KGO_TEST_RECORDS  records per ETL test (default 500000; 50000 here, the machine has 2 cores)
#   KGO_TEST_UNSAFE   if set, TestTxnEtl also uses EndAndBeginTransaction(EndBeginTxnUnsafe)
#   KGO_LOG_LEVEL     debug | none (default info) for the clients' loggers
#   KGO_TEST_SCRAM / KGO_TEST_SCRAM_SEEDS / KGO_TEST_OAUTH_SEEDS / KGO_TEST_TLS: unset here
#     (they need a second, SASL listener), so TestSCRAMAuth* and TestOAuthAuth skip.
#   KGO_TEST_STABLE_FETCH is set by franz-go's CI but read by no test in v1.22.3.
# pkg/kadm (v1.20.0) has only unit tests (no broker), so it is not run here.
#
# Environment (all optional):
#   FRANZ_VERSION  franz-go module version (default v1.22.3, as tests/clients/go/modern/go.mod)
#   SLUICE_BIN     broker binary to copy (default: target/debug/sluice of this repo; never built here)
#   WORK           scratch dir (default /tmp/franz): source copy, broker copy, data, logs
#   LISTEN, ADMIN  broker addresses (default 127.0.0.1:29192, 127.0.0.1:29644)
#   SLUICE_LOG     broker log filter (the broker reads SLUICE_LOG, not RUST_LOG; default info)
#   SKIP           tests to skip (go test -skip regex), e.g. what is out of scope
#   KGO_TEST_RECORDS, KGO_TEST_UNSAFE, KGO_LOG_LEVEL as above.
#
# Needs Go 1.26+ and the Go module proxy. Writes $WORK/test.log (go test -v output, with the
# repeated "testConsumer sendErr" lines a failing ETL test prints in a tight loop collapsed:
# without that, one failing TestTxnEtl writes gigabytes) and $WORK/broker.log. Exits with
# go test's status.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
run_regex=${1:-.}
version=${FRANZ_VERSION:-v1.22.3}
work=${WORK:-/tmp/franz}
listen=${LISTEN:-127.0.0.1:29192}
admin=${ADMIN:-127.0.0.1:29644}
sluice_bin=${SLUICE_BIN:-$repo/target/debug/sluice}

mkdir -p "$work"
[ -x "$sluice_bin" ] || { echo "no broker binary at $sluice_bin (set SLUICE_BIN)" >&2; exit 2; }

# franz-go's source, test files included, from the module cache; copied so it is writable.
dir=$(cd "$work" && go mod download -json "github.com/twmb/franz-go@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "go mod download github.com/twmb/franz-go@$version failed" >&2; exit 1; }
rm -rf "$work/src"
cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
(cd "$work/src" && go test -c -o "$work/kgo.test" ./pkg/kgo) || { echo "cannot build franz-go's tests" >&2; exit 1; }

# A copy of the broker (the repo's binary may be rebuilt meanwhile) on a fresh data dir.
cp "$sluice_bin" "$work/sluice"
rm -rf "$work/data" "$work/plugins"
mkdir -p "$work/data" "$work/plugins"
SLUICE_LOG=${SLUICE_LOG:-info} "$work/sluice" serve --listen "$listen" --admin "$admin" \
  --data-dir "$work/data" --plugins-dir "$work/plugins" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null' EXIT
host=${listen%:*}
port=${listen##*:}
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  kill -0 "$broker" 2>/dev/null || { echo "broker exited; see $work/broker.log" >&2; exit 1; }
  sleep 0.2
done

export KGO_SEEDS=$listen KGO_TEST_RF=1 KGO_TEST_RECORDS=${KGO_TEST_RECORDS:-50000}
[ -n "${KGO_LOG_LEVEL:-}" ] && export KGO_LOG_LEVEL
[ -n "${KGO_TEST_UNSAFE+x}" ] && export KGO_TEST_UNSAFE
unset KGO_TEST_SCRAM KGO_TEST_SCRAM_SEEDS KGO_TEST_OAUTH_SEEDS KGO_TEST_TLS KGO_TEST_CHAOS

# go test -v's output, from the package directory (the tests read testdata relative to it).
(cd "$work/src/pkg/kgo" &&
  "$work/kgo.test" -test.run "$run_regex" -test.skip "${SKIP:-^$}" -test.v -test.count=1 -test.timeout 20m 2>&1) |
  awk '/testConsumer sendErr/ { key = $0; sub(/group=[0-9a-f]+/, "", key); if (seen[key]++ == 0) print; next } { print }
       END { for (k in seen) if (seen[k] > 1) printf "(collapsed %d repeats of:%s)\n", seen[k] - 1, k }' \
    >"$work/test.log"
status=${PIPESTATUS[0]}

echo "franz-go $version pkg/kgo against sluice at $listen (test log: $work/test.log, broker log: $work/broker.log)"
grep -E '^\s*--- (FAIL|SKIP)' "$work/test.log"
echo "top-level: $(grep -cE '^--- PASS' "$work/test.log") passed, $(grep -cE '^--- FAIL' "$work/test.log") failed, $(grep -cE '^--- SKIP' "$work/test.log") skipped"
exit "$status"
