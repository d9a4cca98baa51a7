#!/usr/bin/env bash
# Runs every test: unit and property tests, then end-to-end tests that drive the real
# `sluice` binary with real Kafka clients (kcat, confluent-kafka, kafka-python, kafkajs).
# Installs those clients first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
# Plugins are built for wasm32 during the tests. With rustup's wasm32 target installed
# nothing more is needed; otherwise Debian's rustc-web + its std sources build them (see
# plugins/README.md). The C test plugin needs clang, lld and wasi-libc.
if ! rustc --print sysroot 2>/dev/null | xargs -I{} test -d {}/lib/rustlib/wasm32-unknown-unknown; then
  for pkg in rustc-web rust-web-src lld; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
fi
for pkg in clang lld wasi-libc libclang-rt-14-dev-wasm32; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # The update matters: rustc-web 1.96 comes from bookworm-security.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
  else
    echo "missing: ${need_apt[*]} (install with: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
npm ci --prefix tests/clients/node --silent --no-audit --no-fund >/dev/null

cargo test --workspace "$@"
# The plugin SDK and the standard plugins' own unit tests, natively.
(cd plugins && cargo test "$@")
