#!/usr/bin/env bash
# Builds thindist, then the demo with it, and shows what happened: the jobs, the native object
# kept per module, and the per-module flags that reached the back end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cargo build --release --quiet -p thindist
cd "$here"
make --no-print-directory clean >/dev/null
make --no-print-directory THINDIST="$here/../../target/release/thindist"
echo
echo "== the program"
./demo
echo
echo "== native objects kept beside their bitcode (objtool and livepatch tools read these)"
find . -name '*.thinlto-native.o' | sort
echo
echo "== words.o was compiled with -ffunction-sections; its native object has a section per function:"
llvm-readelf-22 -S --wide words.thinlto-native.o | grep -o '\.text\.[a-z_]*' | sort -u
