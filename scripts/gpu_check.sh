#!/usr/bin/env bash
# Everything that needs a GPU, in one run on a GPU machine (docs/gpu.md): the CUDA build, the GPU
# tests, the model on the GPU in every layout (tp = 2, pp = 2, tp2 x pp2, interleaved, dp: ranks
# sharing the GPU over the staged path; a world of one over NCCL), a one-GPU `loom train` (through
# the CUDA plugin), the plugin loaded by GPU runs only, and the benchmarks whose tables go into
# docs/benchmarks.md. Exits non-zero at the first failure. Output also lands in $1 (default
# gpu_check.log).
set -euo pipefail
cd "$(dirname "$0")/.."
log=${1:-gpu_check.log}
exec > >(tee "$log") 2>&1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc

echo "== build (CUDA)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON >/dev/null
cmake --build build -j"$(nproc)" --target loom loom_tests loom_mpi_tests bench_gpu_train bench_cuda_kernels

# Every GPU test must have run, not skipped itself.
no_skips() {
  if grep -q 'SKIPPED \]' "$1"; then
    echo "gpu_check: a GPU test skipped itself on a GPU machine ($1)"; exit 1
  fi
}

echo "== GPU tests: kernels against their CPU twins, every backend op against CpuBackend fp32"
build/loom_tests --gtest_filter='*Cuda*:*BackendOps*:CachingAllocator*:LaunchEnv*' | tee /tmp/loom_gpu_tests.log
no_skips /tmp/loom_gpu_tests.log

echo "== NCCL in stream order with its watchdog (a world of one)"
mpirun --oversubscribe -np 1 build/loom_mpi_tests --gtest_filter='Nccl*' | tee /tmp/loom_nccl.log

echo "== the model on the GPU in every layout, against one GPU rank and the CPU (1, 2 and 4 ranks on GPU 0)"
for np in 1 2 4; do
  mpirun --oversubscribe -np $np build/loom_mpi_tests --gtest_filter='DeviceRun*' | tee /tmp/loom_device_run_$np.log
  no_skips /tmp/loom_device_run_$np.log
done

echo "== loom train: the addition demo (head size 32) on the GPU, then on the CPU for comparison"
build/loom train --set train.steps=300 --set train.log_every=100 --set train.device=DEVICE_CUDA \
  --set train.out_dir=/tmp/loom_gpu_check/gpu
build/loom train --set train.steps=300 --set train.log_every=100 --set train.device=DEVICE_CPU \
  --set train.out_dir=/tmp/loom_gpu_check/cpu

echo "== loom train on one GPU shared by two processes: tp = 2 (sequence parallel), then pp = 2"
for layout in "parallel.tp=2 --set parallel.sequence_parallel=true" "parallel.pp=2"; do
  # shellcheck disable=SC2086
  mpirun --oversubscribe -np 2 build/loom train --fresh --set $layout --set train.steps=60 \
    --set optimizer.warmup_steps=5 --set train.log_every=20 --set train.device=DEVICE_CUDA \
    --set train.out_dir=/tmp/loom_gpu_check/shared
done

echo "== the CUDA plugin: a GPU run loads it, a CPU run no CUDA library, a missing one is one sentence"
bash tests/launch/cuda_plugin_test.sh build/loom ON /tmp/loom_gpu_check/cuda_plugin

echo "== kernels against the device's ceilings (GPT-2 124M shapes)"
build/bench/bench_cuda_kernels

echo "== training: Loom vs PyTorch (GPT-2 124M and 1.5B; Llama: SmolLM-135M's and Llama 3 1B's shapes; seq 1024)"
bench/gpu_train_bench.py --cases 124m:16,1.5b:8,smollm-135m:16,llama3-1b:8
