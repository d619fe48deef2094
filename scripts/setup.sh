#!/usr/bin/env bash
# Installs everything Loom needs to build, test and benchmark, from Debian packages only.
# Idempotent: when every package is already installed it changes nothing and touches no network.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenblas-openmp-dev     # sgemm for the CPU kernels (OpenMP build: one thread pool)
  openmpi-bin libopenmpi-dev # multi-process runs
  libprotobuf-dev protobuf-compiler  # configs and checkpoint manifests
  libsentencepiece-dev sentencepiece # tokenizer
  libicu-dev                 # Unicode letter/number/space classes of GPT-2's pre-tokenizer
  libxxhash-dev              # checksums in model files and checkpoints
  libgtest-dev               # the test suite
  clang libclang-rt-14-dev   # the checkpoint-reader fuzz target (libFuzzer, ASan, UBSan)
  python3 python3-torch python3-numpy  # the PyTorch reference tests and benchmark peer
  python3-regex              # \p{L} in the Python reference of GPT-2's tokenizer (tests)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
echo "setup: done"
