#!/usr/bin/env bash
# Builds thindist, then the demo with it in a build directory outside the source tree (the
# argument, else a new temporary one), and shows what happened: the jobs, the native object kept
# per module, and the per-module flags that reached the back end. Installs clang-22, lld-22 and
# llvm-22 first if they are missing (ci/install-deps.sh demo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
"$root/ci/install-deps.sh" demo
cd "$root"
cargo build --release --quiet -p thindist
thindist="${CARGO_TARGET_DIR:-$root/target}/release/thindist"
case $thindist in /*) ;; *) thindist="$root/$thindist" ;; esac
build=${1:-$(mktemp -d "${TMPDIR:-/tmp}/thindist-demo.XXXXXX")}
mkdir -p "$build"
cd "$build"
echo "== building the demo in $build"
make --no-print-directory -f "$here/Makefile" SRC="$here" clean >/dev/null
make --no-print-directory -f "$here/Makefile" SRC="$here" THINDIST="$thindist"
echo
echo "== the program"
./demo
echo
echo "== native objects kept beside their bitcode (objtool and livepatch tools read these)"
find . -name '*.thinlto-native.o' | sort
echo
echo "== words.o was compiled with -ffunction-sections; its native object has a section per function:"
llvm-readelf-22 -S --wide words.thinlto-native.o | grep -o '\.text\.[a-z_]*' | sort -u
