#!/usr/bin/env bash
# The layering, enforced by the build (docs/architecture.md): builds probe targets, each one
# source compiled as part of one layer that includes one header, and checks the outcome.
#   refused:  the header is in a layer above (or beside) the probe's; the build must fail, and
#             fail because the header is not found, not for another reason
#   allowed:  the header is one the layer may include; the build must succeed (so that a refusal
#             above means the include, not a broken probe)
# refused mode also checks that no source of a layer climbs out of its folder with "../" or names
# an absolute path in an include: such an include is found next to the including file, where the
# layer's include root does not apply.
# Usage: include_probe_test.sh CMAKE BUILD_DIR SOURCE_DIR refused|allowed TARGET:HEADER...
set -euo pipefail
cmake=$1 build=$2 source=$3 mode=$4
shift 4
fail() { echo "include_probe_test: $*" >&2; exit 1; }

if [ "$mode" = refused ]; then
  escapes=$(cd "$source" && grep -rnE '^\s*#\s*include\s*["<](\.\./|/)' core kernels parallel data checkpoints launch || true)
  [ -z "$escapes" ] || fail "includes that bypass the layers' include roots (use the form \"core/gpt.h\"):
$escapes"
fi

for probe in "$@"; do
  target=${probe%%:*} header=${probe#*:}
  layer=${target#layering_probe_} layer=${layer%_*}
  if out=$("$cmake" --build "$build" --target "$target" 2>&1); then
    [ "$mode" = allowed ] || fail "$layer/ includes $header and compiles: the layering is not enforced"
    echo "allowed: $layer/ includes $header"
  else
    if [ "$mode" = allowed ]; then
      echo "$out" | tail -n 30 >&2
      fail "$layer/ may include $header but the probe does not compile (output above)"
    fi
    grep -q -F -e "$header: No such file or directory" -e "'$header' file not found" <<< "$out" || {
      echo "$out" | tail -n 30 >&2
      fail "$layer/ includes $header: the build failed, but not because the header is out of sight"
    }
    echo "refused: $layer/ includes $header"
  fi
done
echo "include_probe_test: $mode: ok"
