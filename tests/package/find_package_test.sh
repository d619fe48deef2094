#!/usr/bin/env bash
# Packaging, end to end: `cmake --install` of this build into a fresh prefix; the files a user needs
# under it, and no path of the source or build tree in the installed CMake package; the installed
# `loom --version`; then a project outside Loom (tests/package/consumer) configured with
# find_package(Loom) and CMAKE_PREFIX_PATH=<prefix>, built, run, and its output checked.
# Usage: find_package_test.sh CMAKE BUILD_DIR SOURCE_DIR WORK_DIR CXX_COMPILER GENERATOR
set -euo pipefail
cmake=$1 build=$2 source=$3 work=$4 cxx=$5 generator=$6
fail() { echo "find_package_test: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"
build=$(cd "$build" && pwd) source=$(cd "$source" && pwd) work=$(cd "$work" && pwd)
prefix=$work/prefix
"$cmake" --install "$build" --prefix "$prefix" > "$work/install.log" || fail "cmake --install failed: $work/install.log"

config=$(find "$prefix" -path '*/cmake/Loom/LoomConfig.cmake')
[ -n "$config" ] || fail "no lib/cmake/Loom/LoomConfig.cmake under $prefix"
package=$(dirname "$config")
libdir=${package%/cmake/Loom}
for f in "$prefix/bin/loom" "$libdir/libloom_proto.a" \
         "$libdir"/libloom_{base,kernels,parallel,core,data,checkpoints,launch}.a \
         "$package/LoomConfigVersion.cmake" "$package/LoomTargets.cmake" "$package/LoomDependencies.cmake" \
         "$prefix/include/loom/core/tensor.h" "$prefix/include/loom/core/base/check.h" \
         "$prefix/include/loom/kernels/cpu/matmul.h" "$prefix/include/loom/parallel/communicator.h" \
         "$prefix/include/loom/data/tokenizer.h" "$prefix/include/loom/checkpoints/checkpoint.h" \
         "$prefix/include/loom/launch/commands.h" "$prefix/include/loom/core/config.pb.h" \
         "$prefix/include/loom/checkpoints/checkpoint.pb.h"; do
  [ -e "$f" ] || fail "cmake --install did not install ${f#"$prefix"/}"
done
# A package that names the build or source tree breaks when either moves or is deleted.
if grep -l -F -e "$build" -e "$source" "$package"/*.cmake; then
  fail "the installed CMake package names the build or source tree (files above)"
fi

expected_version=$("$build/loom" --version)
installed_version=$("$prefix/bin/loom" --version) || fail "the installed loom --version failed"
[ "$installed_version" = "$expected_version" ] ||
  fail "the installed loom --version says '$installed_version', the build's '$expected_version'"

consumer=$work/consumer
"$cmake" -S "$source/tests/package/consumer" -B "$consumer" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" > "$work/consumer-configure.log" 2>&1 ||
  { cat "$work/consumer-configure.log"; fail "configuring a project with find_package(Loom) failed"; }
"$cmake" --build "$consumer" > "$work/consumer-build.log" 2>&1 ||
  { cat "$work/consumer-build.log"; fail "building a project against the installed Loom failed"; }
out=$(OMP_NUM_THREADS=1 "$consumer/loom_consumer") || fail "the consumer failed: $out"
echo "$out"
expect() { grep -q -x -F -e "$1" <<< "$out" || fail "expected the line '$1'"; }
expect "config: n_layer=3 n_embd=64"
expect "matmul: 6 6 6 6"
expect "version: ${expected_version%%$'\n'*}"
grep -q "^user error: <consumer>:1:.*n_layers" <<< "$out" || fail "expected a user error naming <consumer>:1: and n_layers"
if grep -q -x "set(Loom_CUDA ON)" "$config"; then
  [ -e "$libdir/libloom_cuda.so" ] || fail "cmake --install did not install ${libdir#"$prefix"/}/libloom_cuda.so"
  grep -q "^cuda: linked 1; cudaErrorInvalidValue: .*; CUBLAS_STATUS_NOT_INITIALIZED" <<< "$out" ||
    fail "expected the CUDA parts linked, with the CUDA runtime's and cuBLAS's error texts"
else
  expect "cuda: not built"
fi
echo "find_package_test: ok"
