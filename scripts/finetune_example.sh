#!/usr/bin/env bash
# The fine-tuning example of docs/finetuning.md, end to end, with nothing downloaded:
#
#   1. data      a small Llama in Hugging Face's layout (random weights) with a tokenizer that has
#                ChatML's template, plain text about sums, chat-formatted questions and answers,
#                held-out evaluation files (scripts/finetune_example_data.py)
#   2. import    loom ckpt import: the Hugging Face directory -> a Loom checkpoint
#   3. pretrain  loom prepare the text; loom train --init-from the imported model
#   4. before    loom eval: held-out questions (exact match) and multiple choice
#   5. finetune  loom prepare --format chat; loom train --init-from the pretrained model (loss on
#                the answers only, examples packed with document masking)
#   6. after     loom eval again, then a chat through loom generate --chat
#
#   scripts/finetune_example.sh [OUT [--set FIELD=VALUE ...]]
#
# OUT defaults to runs/finetune-example; the --set options go to both `loom train` runs (the test
# shortens them); LOOM and PYTHON name the binaries. Everything is written under OUT, which must
# not exist yet (nothing earlier is overwritten).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
loom=$(realpath "${LOOM:-$root/build/loom}")
python=${PYTHON:-python3}
out=${1:-runs/finetune-example}
shift $(( $# > 0 ? 1 : 0 ))
train_sets=("$@")
[ -x "$loom" ] || { echo "finetune_example.sh: $loom is not an executable; build Loom first (scripts/build.sh)" >&2; exit 2; }
[ ! -e "$out" ] || { echo "finetune_example.sh: $out exists; give another directory or remove it" >&2; exit 2; }
mkdir -p "$out"
cd "$out"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "data" "$python" "$root/scripts/finetune_example_data.py" data
step "import" "$loom" ckpt import data/hf-base base
step "pretrain: data" "$loom" prepare --input data/corpus.jsonl --tokenizer base --val-fraction 0.02 --out pretrain-data
step "pretrain" "$loom" train "$root/configs/finetune-example-pretrain.pbtxt" --init-from base "${train_sets[@]}"
step "before" "$loom" eval pretrained --exact-match data/qa.jsonl --multiple-choice data/choice.jsonl --json before.json
step "finetune: data" "$loom" prepare --input data/chat.jsonl --format chat --tokenizer base --val-fraction 0.05 \
  --out sft-data
step "finetune" "$loom" train "$root/configs/finetune-example-sft.pbtxt" --init-from pretrained "${train_sets[@]}"
step "after" "$loom" eval tuned --exact-match data/qa.jsonl --multiple-choice data/choice.jsonl --json after.json
step "chat" "$loom" generate --model tuned --chat --prompt "What is 17 plus 25?"
