#!/usr/bin/env bash
# `just dev`: serve panal.toml with `panal run --watch` and rebuild the components
# whenever their sources change; watch then redeploys each component whose .wasm the
# build rewrote (only those: an unchanged build leaves the bytes, and the version, as
# they were). A failed build is reported and the running versions keep serving.
#
# Usage: scripts/dev.sh [extra `panal run` args]
# Sources: components/**/{*.rs,*.py,*.js,Cargo.toml} and wit/**, checked once a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./target/release/panal run --watch "$@" &
PANAL=$!
trap 'kill -TERM "$PANAL" 2>/dev/null; wait "$PANAL" 2>/dev/null' EXIT INT TERM

sources() {
    find components wit -path components/target -prune -o -type f \
        \( -name '*.rs' -o -name '*.py' -o -name '*.js' -o -name 'Cargo.toml' -o -name '*.wit' \) \
        -print0 2>/dev/null |
        xargs -0 stat -c '%n %Y %s' 2>/dev/null | sort | md5sum
}

last="$(sources)"
echo "dev: watching components/ and wit/ for changes (Ctrl-C stops)"
while kill -0 "$PANAL" 2>/dev/null; do
    sleep 1
    now="$(sources)"
    [ "$now" = "$last" ] && continue
    last="$now"
    echo "dev: sources changed; rebuilding components"
    if scripts/build-components.sh && scripts/guests.sh; then
        echo "dev: build done; panal redeploys what changed"
    else
        echo "dev: build failed; the running versions keep serving" >&2
    fi
done
