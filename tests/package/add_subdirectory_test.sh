#!/usr/bin/env bash
# Loom as a subproject: configures tests/package/parent, which add_subdirectory()s this source tree
# and checks in CMake that Loom defines its libraries and `loom` there but no tests, benchmarks or
# fuzz seeds, and that its outputs land in its own binary directory; then builds and runs the
# parent's program, which includes Loom's headers and its protobuf code generated in the parent's
# build tree. Building all of Loom a second time takes minutes on two cores, so by default only
# loom_proto is compiled; --full also builds `loom` (every layer's library) and runs it. Without
# CUDA either way: what is checked here is the paths, not the kernels.
# Usage: add_subdirectory_test.sh CMAKE SOURCE_DIR WORK_DIR CXX_COMPILER GENERATOR [--full]
set -euo pipefail
cmake=$1 source=$2 work=$3 cxx=$4 generator=$5 full=${6:-}
fail() { echo "add_subdirectory_test: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"
source=$(cd "$source" && pwd) work=$(cd "$work" && pwd)  # the parent's add_subdirectory needs absolute paths
build=$work/build
"$cmake" -S "$source/tests/package/parent" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" -DLOOM_SOURCE_DIR="$source" -DLOOM_CUDA=OFF > "$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "configuring a project that adds Loom with add_subdirectory failed"; }
"$cmake" --build "$build" --target loom_parent > "$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "building the parent's program failed"; }
out=$("$build/loom_parent") || fail "the parent's program failed: $out"
echo "$out"
[ "$out" = "parent: n_layer=5 n_head=4 bf16=2 bytes" ] || fail "unexpected output from the parent's program"

if [ "$full" = "--full" ]; then
  "$cmake" --build "$build" --target loom -j"$(nproc)" > "$work/build-loom.log" 2>&1 ||
    { tail -n 40 "$work/build-loom.log"; fail "building loom as a subproject failed"; }
  "$build/loom/loom" --version || fail "loom built as a subproject does not run"
fi
echo "add_subdirectory_test: ok"
