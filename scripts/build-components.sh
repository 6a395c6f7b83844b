#!/usr/bin/env bash
# Builds every crate of the components/ cargo workspace for wasm32-wasip2 in release mode.
# Output: components/target/wasm32-wasip2/release/<name>.wasm (or under $CARGO_TARGET_DIR).
#
# Usage: scripts/build-components.sh [extra cargo args, e.g. -p hello]
#
# It picks the toolchain route by itself and prints which one it took:
#   1. "route: rustup target"  when `rustup target list --installed` has wasm32-wasip2,
#      or `rustup target add wasm32-wasip2` succeeds within 90 s:
#      plain `cargo build --release --target wasm32-wasip2`.
#   2. "route: debian rustc-web + build-std"  otherwise: Debian's rustc-web/cargo-web (with
#      the std source, rust-web-src) and wasi-libc (installed with apt-get when
#      /usr/lib/rustlib/src/rust is missing) build std for the target (-Zbuild-std) and
#      link with wasm-component-ld from rustup's stable sysroot.
#
# Environment:
#   PANAL_WASM_ROUTE=rustup|debian  force a route (default: auto). "debian" skips the
#                                   rustup checks, e.g. to test the fallback route.
#   CARGO_TARGET_DIR                honoured as usual by cargo.
#
# The host's own build never depends on this script.
set -euo pipefail

TARGET=wasm32-wasip2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPONENTS="$ROOT/components"
ROUTE="${PANAL_WASM_ROUTE:-auto}"
# cargo runs from components/: keep a relative CARGO_TARGET_DIR relative to the caller.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ "${CARGO_TARGET_DIR#/}" = "$CARGO_TARGET_DIR" ]; then
    export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
fi

have_rustup_target() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
}

build_rustup() {
    echo "route: rustup target"
    cd "$COMPONENTS"
    cargo build --release --target "$TARGET" "$@"
}

build_debian() {
    echo "route: debian rustc-web + build-std"
    if [ ! -d /usr/lib/rustlib/src/rust ] || [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ] ||
        [ ! -d /usr/lib/wasm32-wasi ]; then
        echo "installing Debian's rustc-web cargo-web rust-web-src wasi-libc" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            rustc-web cargo-web rust-web-src wasi-libc
    fi
    # wasm-component-ld and gcc-ld/wasm-ld come from rustup's stable toolchain.
    local sysroot bin
    sysroot="$(rustc +stable --print sysroot 2>/dev/null || rustc --print sysroot)"
    bin="$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin"
    if [ ! -x "$bin/wasm-component-ld" ]; then
        echo "error: $bin/wasm-component-ld not found (needs rustup's stable toolchain)" >&2
        exit 1
    fi
    cd "$COMPONENTS"
    PATH="$bin/gcc-ld:$PATH" \
        RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-C linker=$bin/wasm-component-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
        /usr/bin/cargo build --release -Zbuild-std=std,panic_abort --target "$TARGET" "$@"
}

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

case "$ROUTE" in
rustup)
    build_rustup "$@"
    ;;
debian)
    build_debian "$@"
    ;;
auto)
    if have_rustup_target; then
        build_rustup "$@"
    elif command -v rustup >/dev/null 2>&1 && timeout 90 rustup target add "$TARGET" &&
        have_rustup_target; then
        build_rustup "$@"
    else
        echo "rustup target $TARGET unavailable; falling back to Debian's toolchain" >&2
        build_debian "$@"
    fi
    ;;
*)
    echo "error: PANAL_WASM_ROUTE must be auto, rustup or debian (got '$ROUTE')" >&2
    exit 2
    ;;
esac
