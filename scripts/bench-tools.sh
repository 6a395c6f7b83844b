#!/usr/bin/env bash
# Installs what `just bench` needs and does not share with the tests:
#   - wrk, the load tool, and valgrind, which counts instructions per request
#     (Debian/Ubuntu: apt-get; macOS: brew, wrk only);
#   - wasmtime-cli of the exact wasmtime version Panal links, built from crates.io into
#     .bench/tools (only the `serve` command and what it needs), so `wasmtime serve` and
#     Panal run the same engine.
# Each step is skipped when its tool is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.bench/tools"
# The version is read from the workspace pin, so the two never drift apart.
WASMTIME_VERSION="$(sed -n 's/^wasmtime = { version = "=\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml")"
if [ -z "$WASMTIME_VERSION" ]; then
    echo "bench-tools: cannot read the wasmtime pin from Cargo.toml" >&2
    exit 1
fi

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench-tools: installing wrk"
    if command -v apt-get >/dev/null 2>&1; then
        sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get install -y wrk >/dev/null
    elif command -v brew >/dev/null 2>&1; then
        brew install wrk
    else
        echo "bench-tools: install wrk (https://github.com/wg/wrk) and run again" >&2
        exit 1
    fi
fi
echo "bench-tools: $(wrk --version 2>&1 | head -1)"

if ! command -v callgrind_control >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "bench-tools: installing valgrind"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y valgrind >/dev/null
fi
command -v valgrind >/dev/null 2>&1 && echo "bench-tools: $(valgrind --version)"

have="$("$TOOLS/bin/wasmtime" --version 2>/dev/null || true)"
case "$have" in
    "wasmtime $WASMTIME_VERSION"*) ;;
    *)
        echo "bench-tools: building wasmtime-cli $WASMTIME_VERSION into $TOOLS (a one-time build, minutes)"
        cargo install wasmtime-cli --version "=$WASMTIME_VERSION" --locked --root "$TOOLS" \
            --no-default-features --features run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation
        ;;
esac
echo "bench-tools: $("$TOOLS/bin/wasmtime" --version)"
