#!/usr/bin/env bash
# Installs everything Loom needs to build, test and benchmark: Debian packages, plus five Python
# packages that Debian does not have (pinned, from PyPI with pip, for tests only): safetensors,
# for the tests that check exported files with Hugging Face's own reader, tensorboard, for the
# test that reads Loom's event files back with TensorBoard's own reader, tokenizers, Hugging
# Face's tokenizer library, which the tokenizer.json tests and benchmark hold Loom's ids against,
# sentencepiece, the Python library transformers' LlamaTokenizer runs (a newer release than
# Debian's libsentencepiece that Loom links, so the reference is not Loom's own library), and
# transformers, whose own GPT-2, Llama and Qwen2 models the Hugging Face directory and Llama
# reference tests compare with.
# Idempotent: when everything is already installed it changes nothing and touches no network.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenblas-openmp-dev     # sgemm for the CPU kernels (OpenMP build: one thread pool)
  openmpi-bin libopenmpi-dev # multi-process runs
  libprotobuf-dev protobuf-compiler  # configs and checkpoint manifests
  libsentencepiece-dev sentencepiece # tokenizer
  libicu-dev                 # Unicode letter/number/space classes of GPT-2's pre-tokenizer
  libxxhash-dev              # checksums in model files and checkpoints
  zlib1g-dev libzstd-dev zstd  # gzip'd and zstd'd inputs of `loom prepare` (zstd: for the tests)
  libgtest-dev               # the test suite
  gnuplot-nox                # `loom plot` draws a run's metrics with it
  clang libclang-rt-14-dev   # the checkpoint-reader fuzz target (libFuzzer, ASan, UBSan)
  python3 python3-torch python3-numpy  # the PyTorch reference tests and benchmark peer
  python3-regex              # \p{L} in the Python reference of GPT-2's tokenizer (tests)
  python3-jinja2             # renders chat templates, the reference of data/chat_template.h (tests)
  python3-pip                # installs safetensors and tensorboard below
  python3-venv               # bench/setup_peers.sh: the current PyTorch peer's venv (benchmarks only)
  python3-protobuf python3-absl python3-grpcio python3-markdown  # tensorboard's dependencies
  python3-werkzeug python3-packaging python3-pil python3-setuptools  # from Debian: pip adds only
                             # tensorboard itself and tensorboard-data-server
  slurmctld slurmd slurm-client munge  # the Slurm test: a one-node cluster on 127.0.0.1 (its
                             # plugins, PMIx's among them, come with slurm-wlm-basic-plugins)
  libpmix-dev                # Slurm's PMIx plugin loads the unversioned libpmix.so from it
)
safetensors_version=0.8.0
# The newest tensorboard that runs on Debian 12's python3-protobuf (3.21); 2.21 needs protobuf 6.
tensorboard_version=2.20.0
# A prebuilt wheel (abi3, manylinux) for Debian 12's Python 3.11; the newest that transformers 4.46
# (<0.21) accepts.
tokenizers_version=0.20.3
sentencepiece_version=0.2.1
# Runs on Debian 12's python3-torch (1.13) and accepts tokenizers < 0.21, the series the tokenizer
# tests pin. (4.47 to 4.49 run on torch 1.13 too but need tokenizers >= 0.21; 4.50 imports
# torch.distributed.tensor, which only torch >= 2.5 has.) Its dependencies come from PyPI too,
# except numpy, which Debian's already satisfies (pip keeps it: a numpy 2 would break python3-torch).
# Installed after tokenizers, so that pip finds the pinned one.
transformers_version=4.46.3

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

# A PyPI package at its pinned version for /usr/bin/python3 (the interpreter with python3-torch),
# unless that version is there already:
#   safetensors   the tests' and benchmarks' safetensors files
#   tensorboard   reads back Loom's event files (its dependencies from Debian above)
#   tokenizers    the reference of Loom's tokenizer.json reader (pip adds huggingface_hub)
#   sentencepiece the reference of Loom's SentencePiece tokenizer
#   transformers  builds models from a config, with random weights (nothing is downloaded from
#                 the hub); after tokenizers, so that pip finds the pinned one
install_pinned() {
  local name=$1 version=$2
  if /usr/bin/python3 -c "import $name, sys; sys.exit($name.__version__ != '$version')" 2>/dev/null; then
    return 0
  fi
  echo "setup: installing $name==$version for /usr/bin/python3 (PyPI)"
  $sudo /usr/bin/python3 -m pip install -q --break-system-packages "$name==$version"
}

install_python_packages() {
  install_pinned safetensors "$safetensors_version"
  install_pinned tensorboard "$tensorboard_version"
  install_pinned tokenizers "$tokenizers_version"
  install_pinned sentencepiece "$sentencepiece_version"
  install_pinned transformers "$transformers_version"
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  install_python_packages
  exit 0
fi

if [ -n "$sudo" ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
install_python_packages
echo "setup: done"
