#!/usr/bin/env bash
# Installs what building plugins needs, when it is missing:
#   - a Rust standard library for wasm32: rustup's target where rustup can add it, otherwise
#     Debian's rustc-web and rust-web-src (the std is then built from source; see README.md);
#   - with --c, what the C test plugin needs: clang, lld, wasi-libc, the wasm32 compiler runtime;
#   - and what building sluice itself needs besides Rust and a C compiler: pkg-config and
#     OpenSSL's headers (librdkafka, the workers' Kafka client, uses OpenSSL for TLS and SCRAM).
# Debian packages are installed with apt-get (as root, or through sudo).
set -euo pipefail

want_c=0
[ "${1:-}" = "--c" ] && want_c=1

need=()
sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ ! -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ]; then
  if ! { command -v rustup >/dev/null && rustup target add wasm32-unknown-unknown >/dev/null 2>&1; }; then
    for pkg in rustc-web rust-web-src lld; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
  fi
fi
if command -v dpkg >/dev/null; then
  for pkg in pkg-config libssl-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
fi
if [ "$want_c" = 1 ]; then
  for pkg in clang lld wasi-libc libclang-rt-14-dev-wasm32; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
fi
[ ${#need[@]} -eq 0 ] && exit 0

pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then
    sudo="sudo"
  else
    echo "missing: $pkgs(install with: apt-get install $pkgs)" >&2
    exit 1
  fi
fi
echo "installing $pkgs" >&2
# The update matters: rustc-web 1.96 comes from bookworm-security.
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $pkgs >/dev/null
