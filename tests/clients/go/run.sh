#!/usr/bin/env bash
# Go Kafka client scenarios against a running broker (sluice, or any Apache Kafka 3.9+ cluster):
#
#   bash tests/clients/go/run.sh BOOTSTRAP        e.g. 127.0.0.1:9092 (or --bootstrap BOOTSTRAP)
#
# modern/     franz-go v1.22.3 (kgo + kadm v1.20.0), IBM Sarama v1.61.1 (config.Version 3.6.0,
#             2.1.0 and 0.11.0), segmentio/kafka-go v0.4.51
# sarama-old/ Shopify Sarama v1.22.1 (Debian's golang-github-shopify-sarama-dev), its own module:
#             the default config.Version (0.8.2: Produce v0, Fetch v0, ListOffsets v0,
#             OffsetCommit v1, OffsetFetch v1), then 0.10.2 and 2.0.0 with the ConsumerGroup API
#
# Needs Go 1.26+ (or GOTOOLCHAIN=auto) and the Go module proxy (or a warm module cache); the old
# Sarama needs cgo (a C compiler) for its zstd dependency. Topic and group names are unique per
# run, so the broker can be reused. Every client run prints "OK <client> <scenario>" or
# "FAIL <client> <scenario>: <error>"; exits non-zero if any scenario failed.
set -uo pipefail

[ "${1:-}" = "--bootstrap" ] && shift
if [ $# -ne 1 ]; then
  echo "usage: bash $0 BOOTSTRAP (host:port of a running broker)" >&2
  exit 2
fi
bootstrap=$1
here=$(cd "$(dirname "$0")" && pwd)
bin=$(mktemp -d "${TMPDIR:-/tmp}/sluice-go-clients.XXXXXX")
trap 'rm -rf "$bin"' EXIT

for mod in modern sarama-old; do
  (cd "$here/$mod" && go mod download) || { echo "go mod download failed in $mod" >&2; exit 1; }
  # -mod=readonly: build from go.mod/go.sum as committed (a stale go.sum fails here); never vendor/.
  (cd "$here/$mod" && go build -mod=readonly -o "$bin/$mod" .) || { echo "go build failed in $mod" >&2; exit 1; }
done

failed=()
run() { # label, command...
  local label=$1
  shift
  echo "== $label"
  if ! "$@"; then
    failed+=("$label")
  fi
}
run "franz-go" "$bin/modern" franz "$bootstrap"
for v in 3.6.0 2.1.0 0.11.0.0; do
  run "sarama $v" "$bin/modern" sarama "$bootstrap" "$v"
done
run "kafka-go" "$bin/modern" kafkago "$bootstrap"
run "sarama 1.22.1" "$bin/sarama-old" "$bootstrap"

if [ ${#failed[@]} -gt 0 ]; then
  echo "Go clients: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "Go clients: all scenarios passed"
