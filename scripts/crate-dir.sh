#!/usr/bin/env bash
# Prints the source folder of crate NAME as cargo resolved it for the workspace in DIR
# (default: the repository root): where a build script finds the WIT a crate ships.
# cargo fetches the crate first when it has to.
#
# Usage: scripts/crate-dir.sh NAME [DIR]
set -euo pipefail
name="$1"
dir="${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
(cd "$dir" && cargo metadata --format-version 1) |
    python3 -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]))
        break' "$name"
