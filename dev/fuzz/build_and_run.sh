#!/usr/bin/env bash
# Builds a fuzz target with clang (dev/fuzz/CMakeLists.txt) and runs it for a bounded time on its
# seed corpus. Exits non-zero if the build fails or the fuzzer finds a crash, a sanitizer report,
# a leak or a non-UserError exception; the input that did it is left in BUILD/artifacts/ (rerun it
# with: BUILD/<target> BUILD/artifacts/<file>).
#
#   dev/fuzz/build_and_run.sh [--target NAME] [--build DIR] [--seeds-bin PATH] [--time SECONDS]
#                             [--seed N] [--fresh] [-- more libFuzzer flags]
#   --target     checkpoint_reader (default): the checkpoint reader, seeded from real checkpoints;
#                config: configs and size validation, seeded from configs/*.pbtxt and
#                dev/fuzz/config_seeds/, with the dictionary dev/fuzz/config.dict
#   --build      where to build and keep the corpora (default: build/fuzz); both targets share it
#   --seeds-bin  checkpoint_reader only: the seed writer (build/dev/fuzz/checkpoint_fuzz_seeds of
#                the main build); when given, the seed corpus is written afresh with it
#   --time       seconds of fuzzing (default 30)
#   --seed       libFuzzer's random seed (default 1), for a repeatable run
#   --fresh      forget the inputs earlier runs added to the working corpus
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build/fuzz"
target=checkpoint_reader
seeds_bin=""
seconds=30
seed=1
fresh=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --seeds-bin) seeds_bin="$2"; shift 2 ;;
    --time) seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build_and_run.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done

cxx="$(command -v clang++-14 || command -v clang++ || true)"
if [ -z "$cxx" ]; then
  echo "build_and_run.sh: clang++ not found: run scripts/setup.sh (clang, libclang-rt-14-dev)" >&2
  exit 1
fi
case "$target" in
  checkpoint_reader|config) ;;
  *) echo "build_and_run.sh: unknown target $target (checkpoint_reader or config)" >&2; exit 2 ;;
esac
cmake -S "$root/dev/fuzz" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE= >/dev/null
cmake --build "$build" -j2 --target "${target}_fuzz"

# Fuzzer flags for a repeatable, bounded run; new inputs go to the first corpus directory, the
# seeds stay as written. The slowest inputs (a config_fuzz model's forward and backward) take
# about a second on an idle core; -timeout is a hang detector with room for a shared, busy
# machine (a CI run once starved such an input past 10 s).
flags=(-max_total_time="$seconds" -seed="$seed" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1
       -artifact_prefix="$build/artifacts/")
if [ "$target" = checkpoint_reader ]; then
  corpus="$build/corpus"
  seeds="$build/seeds"
  if [ -n "$seeds_bin" ]; then
    rm -rf "$seeds"
    "$seeds_bin" "$seeds"
  fi
  if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
    echo "build_and_run.sh: no seed corpus in $seeds: pass --seeds-bin (built by the main build)" >&2
    exit 1
  fi
  seed_dirs=("$seeds")
else
  corpus="$build/config_corpus"
  seed_dirs=("$root/configs" "$root/dev/fuzz/config_seeds")
  flags+=(-dict="$root/dev/fuzz/config.dict")
fi
[ "$fresh" -eq 1 ] && rm -rf "$corpus"
mkdir -p "$corpus" "$build/artifacts"

"$build/${target}_fuzz" "${flags[@]}" "${extra[@]}" "$corpus" "${seed_dirs[@]}"
