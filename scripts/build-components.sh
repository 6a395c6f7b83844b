#!/usr/bin/env bash
# Builds every crate of the components/ cargo workspace for wasm32-wasip2 in release mode.
# Output: components/target/wasm32-wasip2/release/<name>.wasm (or under $CARGO_TARGET_DIR),
# and a deliberately broken order service under target/broken/ (see below).
#
# Usage: scripts/build-components.sh [extra cargo args, e.g. -p hello]
#
# The target comes with the pinned toolchain (rust-toolchain.toml lists wasm32-wasip2,
# and rustup installs it with the toolchain; scripts/setup.sh makes sure of both).
# CARGO_TARGET_DIR is honoured as usual by cargo. The host's own build never depends on
# this script.
set -euo pipefail

TARGET=wasm32-wasip2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPONENTS="$ROOT/components"
# cargo runs from components/: keep a relative CARGO_TARGET_DIR relative to the caller.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ "${CARGO_TARGET_DIR#/}" = "$CARGO_TARGET_DIR" ]; then
    export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
fi

# The sample middleware (components/audit) binds wasi:http/middleware against the WASI
# 0.3 WIT the `wasip3` crate ships (so its bindings share that crate's types): copy it
# from the crate's source, which cargo fetches, next to the middleware's world.
wasip3_wit() {
    local dir
    dir="$("$ROOT/scripts/crate-dir.sh" wasip3 "$COMPONENTS")"
    if [ ! -d "$dir/wit/deps" ]; then
        echo "error: cannot find the wasip3 crate's WIT (cargo metadata in components/)" >&2
        exit 1
    fi
    mkdir -p "$COMPONENTS/audit/wit/deps"
    cp "$dir/wit/deps/"*.wit "$COMPONENTS/audit/wit/deps/"
}
wasip3_wit

cd "$COMPONENTS"
cargo build --release --target "$TARGET" "$@"
# The order service with its Idempotency-Key ignored, which the chaos checker must catch
# (tests/tests/chaos.rs): under target/broken/, apart from every build that is deployed.
if [ "$#" -eq 0 ]; then
    cargo build --release --target "$TARGET" -p order --features broken-idempotency \
        --target-dir "${CARGO_TARGET_DIR:-$COMPONENTS/target}/broken"
fi
