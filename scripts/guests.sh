#!/usr/bin/env bash
# Builds the components written in other languages into components/target/guests/ with
# the tools their authors use: the shop's shipping service (components/shipping, Python)
# and the sample guests (components/py, components/js).
#   - componentize-py (PyPI), for Python: a WASI 0.2 proxy and a WASI 0.3 service;
#   - componentize-js (npm, @bytecodealliance/componentize-js), for JavaScript: a 0.2
#     proxy (its engine exports wasi:http 0.2.10 exactly, so it gets WIT at that version).
# The tools are installed once into components/target/guests/tools; a guest is rebuilt
# only when its source is newer than its .wasm. The WIT is wasmtime-wasi-http's own (the
# version Panal links), found in cargo's registry (`cargo fetch` puts it there).
#
# Usage: scripts/guests.sh          (`just components` and the tests call it; it prints
#                                    each .wasm it built)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/components/target/guests"
TOOLS="$OUT/tools"
PY_VERSION=0.25.1
JS_VERSION=0.23.0
mkdir -p "$OUT" "$TOOLS"

# wasmtime-wasi-http's sources: `wit/` holds wasi:http 0.2, `src/p3/wit/` 0.3.
WASI_HTTP="$("$ROOT/scripts/crate-dir.sh" wasmtime-wasi-http 2>/dev/null || true)"
if [ ! -d "$WASI_HTTP/wit" ]; then
    echo "guests: cannot find wasmtime-wasi-http's WIT (run cargo fetch)" >&2
    exit 1
fi

# A guest needs building when its .wasm is missing or older than its source.
stale() { [ ! -f "$1" ] || [ "$2" -nt "$1" ]; }

componentize_py() {
    local py="$TOOLS/venv/bin/componentize-py"
    if ! "$py" --version 2>/dev/null | grep -q "$PY_VERSION"; then
        echo "guests: installing componentize-py $PY_VERSION" >&2
        python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
            "componentize-py==$PY_VERSION"
    fi
    "$py" "$@"
}

componentize_js() {
    local cli="$TOOLS/js/node_modules/@bytecodealliance/componentize-js/src/cli.js"
    if ! grep -q "\"version\": \"$JS_VERSION\"" "$(dirname "$cli")/../package.json" 2>/dev/null; then
        echo "guests: installing componentize-js $JS_VERSION" >&2
        mkdir -p "$TOOLS/js"
        (cd "$TOOLS/js" && npm install --silent --no-audit --no-fund \
            "@bytecodealliance/componentize-js@$JS_VERSION" >&2)
    fi
    node "$cli" "$@"
}

# The shipping service: its world (components/shipping/wit/world.wit) beside the WASI 0.2
# WIT of wasmtime-wasi-http and the repository's wit/deps (keyvalue, config, messaging).
src="$ROOT/components/shipping"
out="$OUT/shipping.wasm"
newest="$(ls -t "$src"/*.py "$src/wit/world.wit" "$ROOT"/wit/deps/*/*.wit | head -n 1)"
if stale "$out" "$newest"; then
    wit="$OUT/wit-shipping"
    rm -rf "$wit" && mkdir -p "$wit/deps"
    cp "$src/wit/world.wit" "$wit/"
    cp -r "$WASI_HTTP"/wit/deps/* "$ROOT"/wit/deps/* "$wit/deps/"
    (cd "$src" && componentize_py -q -d "$wit" -w panal:shipping/shipping componentize app -o "$out.tmp" >&2)
    mv "$out.tmp" "$out"
    echo "$out"
fi

# Python, WASI 0.2 proxy and WASI 0.3 service.
for guest in hello:wit:wasi:http/proxy@0.2.12 hello-p3:src/p3/wit:wasi:http/service@0.3.0; do
    name="${guest%%:*}"
    rest="${guest#*:}"
    wit="${rest%%:*}"
    world="${rest#*:}"
    src="$ROOT/components/py/$name/app.py"
    out="$OUT/py-$name.wasm"
    if stale "$out" "$src"; then
        (cd "$(dirname "$src")" &&
            componentize_py -q -d "$WASI_HTTP/$wit" -w "$world" componentize app -o "$out.tmp" >&2)
        mv "$out.tmp" "$out"
        echo "$out"
    fi
done

# JavaScript: wasi:http 0.2 WIT relabelled 0.2.10 (what componentize-js 0.23 exports),
# without what later 0.2 releases added.
src="$ROOT/components/js/hello/app.js"
out="$OUT/js-hello.wasm"
if stale "$out" "$src"; then
    wit="$OUT/wit-0.2.10"
    rm -rf "$wit" && mkdir -p "$wit/deps"
    python3 - "$WASI_HTTP/wit/deps" "$wit" <<'EOF'
import glob, os, re, sys
deps, wit = sys.argv[1], sys.argv[2]
for path in glob.glob(os.path.join(deps, "*.wit")):
    text = open(path).read()
    text = re.sub(r"@0\.2\.\d+", "@0.2.10", text)
    text = re.sub(r"\n\s*@since\(version = 0\.2\.1[1-9]\)\n[^\n]*\n", "\n", text)
    open(os.path.join(wit, "deps", os.path.basename(path)), "w").write(text)
open(os.path.join(wit, "world.wit"), "w").write(
    "package panal:js-guest;\n\nworld hello {\n  include wasi:http/proxy@0.2.10;\n}\n")
EOF
    componentize_js "$src" --wit "$wit" -n hello -o "$out.tmp" >&2
    mv "$out.tmp" "$out"
    echo "$out"
fi
