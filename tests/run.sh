#!/usr/bin/env bash
# Runs every test: unit and property tests, then end-to-end tests that drive the real
# `sluice` binary with real Kafka clients (kcat, confluent-kafka, kafka-python, kafkajs, the
# Java client, Kafka Streams and Kafka's command-line tools, franz-go, Sarama and kafka-go),
# and the web console in a real browser (Chromium driven by Playwright).
# Installs those clients first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
# tests/security.rs makes its certificates with openssl.
command -v openssl >/dev/null || need_apt+=(openssl)
command -v java >/dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need_apt+=(maven)
# The Go clients (tests/clients/go): an older Debian Go fetches the toolchain go.mod names from
# the module proxy by itself; the old Sarama needs cgo.
command -v go >/dev/null || need_apt+=(golang-go)
command -v gcc >/dev/null || need_apt+=(gcc)
# The web console is tested in Debian's Chromium, driven by Playwright (tests/console).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install with: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
# Plugins (Rust and C) are built for wasm32 during the tests.
bash plugins/install-toolchain.sh --c
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
npm ci --prefix tests/clients/node --silent --no-audit --no-fund >/dev/null
npm ci --prefix tests/console --silent --no-audit --no-fund >/dev/null
# The TypeScript plugin's build tools (rolldown, ComponentizeJS); componentize-py, for the
# Python plugins, comes with the pip requirements above.
npm ci --prefix plugins/js/click-validate --silent --no-audit --no-fund >/dev/null
(cd tests/clients/go/modern && go mod download) && (cd tests/clients/go/sarama-old && go mod download)
# The Java client and Kafka Streams scenarios (jars from Maven Central).
mvn -q -B -f tests/clients/java/pom.xml package >/dev/null

cargo test --workspace "$@"
# sluice workers (issue 13) running the click-aggregation example, deployed through the
# deployments topic, through kill -9 of a worker and of a broker: on a sluice broker, then on a
# three-node Apache Kafka 4.x (jars from Maven Central). Prints the verdict and the failover
# time, the log on failure.
# The classic protocol on sluice, KIP-848 (chosen by the workers: the cluster offers it) on Kafka.
for cluster in sluice kafka; do
  log="target/workers-on-$cluster.log"
  protocol=auto
  [ "$cluster" = sluice ] && protocol=classic
  if GROUP_PROTOCOL=$protocol CLUSTER=$cluster DIR="/tmp/sluice-workers-$cluster" bash tests/kafka/workers.sh >"$log" 2>&1; then
    echo "workers on $cluster: $(grep -E '^OK:|^failover:' "$log" | tr '\n' ' ')"
  else
    tail -n 120 "$log"
    echo "workers on $cluster: FAILED (log above)" >&2
    exit 1
  fi
done
# The plugin SDK and the standard plugins' own unit tests, natively.
(cd plugins && cargo test "$@")
