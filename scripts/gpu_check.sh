#!/usr/bin/env bash
# Everything that needs a GPU, in one run on a GPU machine (docs/gpu.md): the CUDA build, the GPU
# tests, data parallelism on the GPU, a one-GPU `loom train` (through the CUDA plugin), the plugin
# loaded by GPU runs only, and the benchmarks whose tables go into docs/benchmarks.md. Exits
# non-zero at the first failure. Output also lands in $1 (default gpu_check.log).
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

echo "== GPU tests: kernels against their CPU twins, every backend op against CpuBackend fp32, the trainer against the fp32 CPU trainer"
build/loom_tests --gtest_filter='*Cuda*:*BackendOps*:GptTrainer*:CachingAllocator*:LaunchEnv*' | tee /tmp/loom_gpu_tests.log
# Every GPU test must have run, not skipped itself.
if grep -q '\[  SKIPPED \]' /tmp/loom_gpu_tests.log; then
  echo "gpu_check: a GPU test skipped itself on a GPU machine"; exit 1
fi

echo "== NCCL (a world of one) and data-parallel GPU training (NCCL, and MPI staged through the host)"
mpirun --oversubscribe -np 1 build/loom_mpi_tests --gtest_filter='Nccl*:GptTrainerDataParallel*'
mpirun --oversubscribe -np 2 build/loom_mpi_tests --gtest_filter='GptTrainerDataParallelTest.ReplicasOverMpiStaged*'

echo "== loom train: the addition demo (head size 32) on the GPU, then on the CPU for comparison"
build/loom train --set train.steps=300 --set train.log_every=100 --set train.device=DEVICE_CUDA \
  --set train.out_dir=/tmp/loom_gpu_check/gpu
build/loom train --set train.steps=300 --set train.log_every=100 --set train.device=DEVICE_CPU \
  --set train.out_dir=/tmp/loom_gpu_check/cpu

echo "== the CUDA plugin: a GPU run loads it, a CPU run no CUDA library, a missing one is one sentence"
bash tests/launch/cuda_plugin_test.sh build/loom ON /tmp/loom_gpu_check/cuda_plugin

echo "== kernels against the device's ceilings (GPT-2 124M shapes)"
build/bench/bench_cuda_kernels

echo "== training: Loom vs PyTorch (GPT-2 124M and 1.5B, seq 1024)"
bench/gpu_train_bench.py --cases 124m:16,1.5b:8
