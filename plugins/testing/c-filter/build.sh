#!/bin/sh
# Builds the C test plugin into a component: ./build.sh [OUT] (default c-filter.wasm here).
#
# Needs clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (Debian bookworm package names),
# and the sluice binary ($SLUICE, default `sluice` on PATH) for the componentize step.
# wasi-libc supplies malloc and string functions only: the module imports nothing from WASI,
# which the broker does not provide (`sluice plugin componentize` refuses a module that does).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/c-filter.wasm}
core=$(mktemp --suffix=.wasm)
trap 'rm -f "$core"' EXIT
clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wl,--strip-debug \
    -I"$here/gen" "$here/filter.c" "$here/gen/processor.c" "$here/gen/processor_component_type.o" \
    -o "$core"
"${SLUICE:-sluice}" plugin componentize "$core" --out "$out"
