#!/usr/bin/env bash
# The README's first command: set up, build, train the demo GPT on 3-digit addition, then ask it;
# then go from a folder of text files to a trained model in two commands (loom prepare, loom train).
# Arguments are passed to the addition run's `loom train`.
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

# From text files to a model: the licence texts every Debian system ships, one document per
# blank-line-separated paragraph, a 1024-piece tokenizer trained on them, then a small GPT.
echo
echo "$ build/loom prepare --input /usr/share/common-licenses --documents blank-line --vocab-size 1024 --out runs/demo-text/data --force"
build/loom prepare --input /usr/share/common-licenses --documents blank-line --vocab-size 1024 \
  --val-fraction 0.05 --out runs/demo-text/data --force
echo
echo "$ build/loom train configs/text.pbtxt --set data.tokens.source.0.path=runs/demo-text/data ..."
build/loom train configs/text.pbtxt --set data.tokens.source.0.path=runs/demo-text/data \
  --set data.tokens.seq_len=64 --set model.n_layer=2 --set train.steps=150 --set train.eval_every=50 --set train.log_every=50 \
  --set data.tokens.sample_prompt="This License" --set train.out_dir=runs/demo-text
