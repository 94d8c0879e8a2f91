#!/usr/bin/env bash
# Issue 8 item 7: the build. protoc-c's two outputs are one grouped target
# (it runs once, also under -j), plain `make` builds the programs and no test
# binary, and a second `make` has nothing to do.
. "$(dirname "$0")/lib.sh"
ops_init build
src=${VERITY_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fresh=$OPS_TMP/build

plan=$(make --no-print-directory -C "$src" -n -j2 BUILD="$fresh" 2>&1)
check "protoc-c runs once under make -j2 ($(grep -c protoc-c <<<"$plan"))" \
    test "$(grep -c 'protoc-c ' <<<"$plan")" -eq 1
check "plain make builds no test binary" eval '! grep -q "$fresh/tests/" <<<"$plan"'
check "plain make builds verityd and verity" \
    eval 'grep -q -- "-o $fresh/bin/verityd " <<<"$plan" && grep -q -- "-o $fresh/bin/verity " <<<"$plan"'

# A real build of the generated code and two objects that include its
# header, twice: the second has nothing to do.
objs="$fresh/obj/proto/codec.o $fresh/obj/storage/batch.o $fresh/obj/gen/verity.pb-c.o"
check "first build of generated code + objects" quiet make --no-print-directory -C "$src" -j2 BUILD="$fresh" $objs
check "second make has nothing to do" make --no-print-directory -C "$src" -q BUILD="$fresh" $objs

# The project's own build directory: after `make`, nothing to do for `make`.
build=$(dirname "$BIN")
check "make (all) in $build" quiet make --no-print-directory -C "$src" BUILD="$build" all
check "second make in $build has nothing to do" make --no-print-directory -C "$src" -q BUILD="$build" all
ops_done
