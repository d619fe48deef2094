#!/usr/bin/env bash
# The README's first command: set up, build, train the demo GPT on 3-digit addition, then ask it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "building (first time: a few minutes)..."
scripts/build.sh
build/loom train "$@"
echo
echo "$ build/loom generate --prompt \"123+456=\""
build/loom generate --prompt "123+456="
echo "$ build/loom generate --prompt \"999+999=\""
build/loom generate --prompt "999+999="
