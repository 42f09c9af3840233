#!/usr/bin/env bash
# One step of a corpus project's build, in the current directory (a fresh copy of its upstream
# tree), the way the project's users build it, with clang-22 and lld-22 and ThinLTO:
#
#   ci/corpus/run.sh PROJECT MODE STEP
#
# PROJECT: a recipe ci/corpus/PROJECT.sh defining the functions build, check and relink.
# MODE:    inprocess   clang-22 -flto=thin -fuse-ld=lld (lld runs the back ends itself)
#          thindist    CC='thindist cc -- clang-22' and thindist-ld as the linker; needs
#                      THINDIST (the thindist binary) and THINDIST_LD (a thindist-ld symlink)
# STEP:    build       configure and build
#          check       the project's own test suite (a quick target where the full one is long)
#          relink      after the linked outputs were removed: link them again, nothing else
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=${1:?usage: run.sh PROJECT MODE STEP} mode=${2:?} step=${3:?}

# What every recipe uses: the C compiler (one word for CMake, the full command for make), the
# link flags, the binutils.
CFLAGS="-O2 -flto=thin"
AR=llvm-ar-22 RANLIB=llvm-ranlib-22 NM=llvm-nm-22
case $mode in
inprocess)
    CC=clang-22
    CC_LAUNCHER=
    LDFLAGS="-fuse-ld=lld"
    LIBTOOL_LDFLAGS=$LDFLAGS
    ;;
thindist)
    : "${THINDIST:?THINDIST must name the thindist binary}"
    : "${THINDIST_LD:?THINDIST_LD must name a thindist-ld symlink to it}"
    export THINDIST_LINKER=ld.lld-22
    CC="$THINDIST cc -- clang-22"
    CC_LAUNCHER="$THINDIST;cc;--"
    LDFLAGS="-fuse-ld=lld --ld-path=$THINDIST_LD"
    # libtool drops --ld-path from the links it runs (it passes on only the compiler flags it
    # knows, -fuse-ld=* among them); -Wc,FLAG hands FLAG to the compiler driver of its links.
    LIBTOOL_LDFLAGS="-fuse-ld=lld -Wc,--ld-path=$THINDIST_LD"
    ;;
*)
    echo "run.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
JOBS=${CORPUS_JOBS:-2}

# Removes what the build linked (executables, shared libraries, libtool's .la files and wrapper
# scripts), so that `relink` links exactly those again from the same objects.
remove_link_outputs() {
    local f
    while IFS= read -r -d '' f; do
        case $f in
        *.la) rm -f "$f"; continue ;;
        esac
        # ELF type at offset 16: 2 executable, 3 shared object (1, relocatable, stays).
        if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            case $(od -An -tu1 -j16 -N1 "$f" | tr -d ' ') in
            2 | 3) rm -f "$f" ;;
            esac
        elif head -c 200 "$f" | grep -q 'temporary wrapper script for'; then
            rm -f "$f"
        fi
    done < <(find . -path ./CMakeFiles -prune -o -path '*/CMakeFiles/[0-9]*' -prune -o -type f -print0)
}

# shellcheck source=/dev/null
. "$here/$project.sh"
# A relink is checked by thindist's summary lines, which the link of a compile-and-link command
# (zstd's datagen) prints only with -v.
[ "$step" = relink ] && export THINDIST_VERBOSE=1
case $step in
build | check | relink) "$step" ;;
*)
    echo "run.sh: unknown step $step" >&2
    exit 2
    ;;
esac
