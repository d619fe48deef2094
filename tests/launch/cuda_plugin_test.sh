#!/usr/bin/env bash
# The CUDA plugin (launch/cuda_plugin.h) from outside, on a machine with or without a GPU:
#   - `loom` of a CUDA build names no CUDA library it needs (readelf -d: no NEEDED cudart, cuBLAS,
#     cuBLASLt, NCCL);
#   - a CPU training run loads none of them, at start or later (the dynamic loader's own account,
#     LD_DEBUG=files, of every library it maps); a DEVICE_CUDA run, which loads the plugin whether
#     or not there is a GPU, shows that account naming them, so the check cannot pass vacuously,
#     and that the plugin's symbols all resolve against the executable;
#   - a copy of `loom` without its plugin still trains on the CPU and says so in --version, and a
#     GPU run of it fails with one sentence naming the files looked for and what dlopen said; so
#     does one with a file that is no shared library, or a library that is not the plugin.
# Skipped (77) in a build without CUDA.
# usage: cuda_plugin_test.sh LOOM LOOM_CUDA(ON|OFF) WORK_DIR
set -euo pipefail
loom=$1 cuda=$2 work=$3
case "$cuda" in ON | on | TRUE | 1) ;; *) echo "SKIP: a build without CUDA has no plugin"; exit 77 ;; esac
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
toolkit='lib(cudart|cublas|cublasLt|nccl)\.so'
short=(--fresh --set train.steps=2 --set optimizer.warmup_steps=1 --set train.eval_every=0 --set train.samples=0
       --set train.threads=1)

# What `loom` needs, as its dynamic section says.
needed=$(readelf -d "$loom" | grep NEEDED) || fail "readelf -d $loom lists no NEEDED library"
if grep -E "$toolkit" <<< "$needed"; then fail "loom needs the CUDA libraries above"; fi
grep -q "libc.so" <<< "$needed" || fail "readelf -d printed no libc: $needed"

# A CPU run: every library mapped, over the whole run (the loader writes its account to
# <file>.<pid>).
LD_DEBUG=files LD_DEBUG_OUTPUT="$work/cpu.loader" "$loom" train "${short[@]}" --set train.device=DEVICE_CPU \
  --set train.out_dir="$work/cpu" > "$work/cpu.log" 2>&1 || { cat "$work/cpu.log"; fail "the CPU run failed"; }
grep -q "step     2/2" "$work/cpu.log" || { cat "$work/cpu.log"; fail "the CPU run did not train 2 steps"; }
cat "$work"/cpu.loader.* > "$work/cpu.loaded"
grep -q "file=[^ ]*libc\.so" "$work/cpu.loaded" || fail "LD_DEBUG=files gave no account of the libraries loaded"
if grep -E "file=[^ ]*($toolkit|libloom_cuda\.so)" "$work/cpu.loaded"; then
  fail "the CPU run loaded the CUDA libraries above"
fi

# A DEVICE_CUDA run loads the plugin and, with it, the CUDA libraries (then, without a GPU, stops).
LD_DEBUG=files LD_DEBUG_OUTPUT="$work/gpu.loader" "$loom" train "${short[@]}" --set train.device=DEVICE_CUDA \
  --set train.precision=PRECISION_BF16 --set train.out_dir="$work/gpu" > "$work/gpu.log" 2>&1 || true
cat "$work"/gpu.loader.* > "$work/gpu.loaded"
if grep -q "CUDA plugin" "$work/gpu.log"; then cat "$work/gpu.log"; fail "the plugin did not load"; fi
grep -q "file=[^ ]*libloom_cuda\.so" "$work/gpu.loaded" || { cat "$work/gpu.log"; fail "DEVICE_CUDA did not load libloom_cuda.so"; }
grep -q "file=[^ ]*libcudart\.so" "$work/gpu.loaded" || fail "the plugin was loaded without the CUDA runtime"

# `loom` alone, as if installed without its plugin.
mkdir -p "$work/bare/bin"
cp "$loom" "$work/bare/bin/loom"
bare=$work/bare/bin/loom
"$bare" --version | grep -q "CUDA: built in, but its plugin is missing (neither $work/bare/bin/libloom_cuda.so" ||
  fail "loom --version without its plugin: $("$bare" --version)"
"$bare" train "${short[@]}" --set train.device=DEVICE_CPU --set train.out_dir="$work/bare_cpu" > "$work/bare_cpu.log" 2>&1 ||
  { cat "$work/bare_cpu.log"; fail "a CPU run needed the plugin"; }
# A GPU run of it: exit 2 and the sentence.
gpu_error() {
  local code=0
  "$bare" train "${short[@]}" --set train.device=DEVICE_CUDA --set train.precision=PRECISION_BF16 \
    --set train.out_dir="$work/bare_gpu" > "$work/bare_gpu.log" 2>&1 || code=$?
  [ "$code" -eq 2 ] || { cat "$work/bare_gpu.log"; fail "a GPU run without a working plugin exited $code, not 2"; }
  [ "$(wc -l < "$work/bare_gpu.log")" -eq 1 ] || { cat "$work/bare_gpu.log"; fail "more than one line"; }
  grep -q -F "loom train: error: a GPU run needs the CUDA plugin of this loom, but $1" "$work/bare_gpu.log" ||
    { cat "$work/bare_gpu.log"; fail "expected: ...but $1"; }
}
gpu_error "neither $work/bare/bin/libloom_cuda.so nor $work/bare/lib/libloom_cuda.so exists (dlopen: $work/bare/bin/libloom_cuda.so: cannot open shared object file"
echo "not a shared library" > "$work/bare/bin/libloom_cuda.so"
gpu_error "dlopen cannot load $work/bare/bin/libloom_cuda.so: $work/bare/bin/libloom_cuda.so:"
other=$(ldd "$loom" | awk '$1 ~ /^libz\.so/ { print $3 }')
[ -n "$other" ] || fail "ldd found no libz to stand in for a plugin"
rm "$work/bare/bin/libloom_cuda.so"
mkdir -p "$work/bare/lib"
cp "$other" "$work/bare/lib/libloom_cuda.so"
gpu_error "$work/bare/lib/libloom_cuda.so is not one (dlsym:"
echo "PASS: no CUDA library needed by loom or loaded by a CPU run; the plugin loads for DEVICE_CUDA; a missing or broken one is one sentence"
