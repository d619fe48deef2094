#!/usr/bin/env bash
# The README's first command: set up, build, train the demo GPT on 3-digit addition, then ask it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "building (the first time takes a few minutes)..."
mkdir -p build
if ! scripts/build.sh > build/build.log 2>&1; then
  tail -n 40 build/build.log
  echo "demo: the build failed; the full log is build/build.log" >&2
  exit 1
fi
build/loom train "$@"
echo
echo "$ build/loom generate --prompt \"123+456=\""
build/loom generate --prompt "123+456="
echo "$ build/loom generate --prompt \"999+999=\""
build/loom generate --prompt "999+999="
