#!/usr/bin/env bash
# Makes the Python environment of the benchmark's current peer: a venv with a pinned PyTorch 2.x
# (and numpy) from PyPI, for bench/train_bench.py --python VENV/bin/python.
#
# Usage: bench/setup_peers.sh [VENV]   (default: build/peers-venv)
#
# Only the benchmark uses it: the tests and scripts/setup.sh keep Debian's python3-torch 1.13. The
# wheel is PyTorch's own build, the one its users run: MKL linked in for sgemm, oneDNN, its own
# libgomp, AVX-512 kernels where the CPU has them, inductor for torch.compile (which compiles C++
# with the system's g++). On Linux x86_64 PyPI has only the CUDA build of torch, so pip also
# brings the NVIDIA runtime wheels (about 5 GB on disk, unused on a CPU); where the PyTorch
# project's CPU-only index is reachable, TORCH_INDEX_URL=<that index> makes pip take the CPU wheel
# from it (not tried: the index was unreachable when this was written). Idempotent: when the venv
# already holds the pinned versions it changes nothing and touches no network.
set -euo pipefail

torch_version=2.15.0
numpy_version=2.4.6  # the newest numpy for Debian 12's Python 3.11

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/build/peers-venv}"
python="$venv/bin/python"

if [ -x "$python" ] && "$python" - "$torch_version" "$numpy_version" <<'EOF' 2>/dev/null
import sys
import numpy, torch
sys.exit(torch.__version__.split("+")[0] != sys.argv[1] or numpy.__version__ != sys.argv[2])
EOF
then
  echo "setup_peers: $venv has torch $torch_version and numpy $numpy_version"
  exit 0
fi

command -v /usr/bin/python3 >/dev/null || { echo "setup_peers: needs /usr/bin/python3 (python3-venv)" >&2; exit 1; }
if [ ! -x "$python" ]; then
  echo "setup_peers: creating the venv $venv"
  /usr/bin/python3 -m venv "$venv"
fi
index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  index=(--extra-index-url "$TORCH_INDEX_URL")
fi
echo "setup_peers: installing torch==$torch_version numpy==$numpy_version into $venv"
"$python" -m pip install -q "${index[@]}" "torch==$torch_version" "numpy==$numpy_version"
"$python" -c "import torch; print('setup_peers: torch', torch.__version__, 'ready, CPU capability', torch.backends.cpu.get_cpu_capability())"
