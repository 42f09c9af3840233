#!/usr/bin/env bash
# Kernel benchmark, side by side in one run on linux-source-6.12 (tinyconfig + ThinLTO):
#  1. the whole `make -j2 bzImage modules` from clean, in-process ThinLTO against thindist;
#  2. on the thindist tree, the vmlinux.o link alone: lld in-process (--thinlto-jobs=2)
#     against `thindist ld -j2` (no cache), and against thindist with a warm cache;
#  3. a comparison of the two vmlinux images (kernel/compare.sh).
# Prints wall, CPU and peak RSS with ratios, and thindist's orchestration overhead.
#
#  4. rebuilds of the vmlinux.o link (no change, one file changed), lld's --thinlto-cache-dir
#     against thindist's cache.
#
#   cargo build --release -p thindist && bench/kernel.sh [WORKDIR [SECTION...]]
#
# SECTION is build, link, cache or compare (default: all); all but build reuse the trees a
# build section left in WORKDIR.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
thindist=$repo/target/release/thindist
[ -x "$thindist" ] || { echo "build thindist first: cargo build --release -p thindist" >&2; exit 1; }
work=${1:-${TMPDIR:-/tmp}/thindist-kernel-bench}
shift || true
sections=${*:-build link cache compare}
wants() { [[ " $sections " == *" $1 "* ]]; }
mkdir -p "$work"
export THINDIST_CACHE_DIR=$work/cache

# measure NAME COMMAND...: runs it under GNU time, records "wall cpu maxrss_kib" in $work/NAME.
measure() {
    local name=$1; shift
    /usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1 || {
        tail -20 "$work/$name.log" >&2; echo "bench: $name failed (log: $work/$name.log)" >&2; exit 1; }
    awk '{printf "%.2f %.2f %d\n", $1, $2 + $3, $4}' "$work/$name.time" >"$work/$name"
}
row() { read -r w c m <"$work/$2"; printf "  %-40s %8.2f s wall %8.2f s CPU %8.1f MiB peak\n" "$1" "$w" "$c" "$(echo "$m/1024" | bc -l)"; }
ratio() {
    read -r w1 c1 m1 <"$work/$2"; read -r w2 c2 m2 <"$work/$3"
    printf "  %-40s %8.2fx wall %8.2fx CPU %8.2fx peak\n" "$1" "$(echo "$w1/$w2" | bc -l)" "$(echo "$c1/$c2" | bc -l)" "$(echo "$m1/$m2" | bc -l)"
}

if wants build; then
echo "== whole build: make -j2 bzImage modules from a clean tree"
rm -rf "$work/linux-inprocess" "$work/linux-thindist" "$THINDIST_CACHE_DIR"
measure make-inprocess "$repo/kernel/build-and-boot.sh" --mode inprocess --tree "$work/linux-inprocess" --skip-boot
measure make-thindist "$repo/kernel/build-and-boot.sh" --mode thindist --thindist "$thindist" --tree "$work/linux-thindist" --skip-boot
# Unpacking and configuring are the same in both; report the build step as the scripts timed it.
for m in inprocess thindist; do
    echo "  $m: $(grep '^== build took' "$work/make-$m.log" | sed 's/== //')"
done
row "in-process ThinLTO (script total)" make-inprocess
row "thindist (script total)" make-thindist
ratio "thindist / in-process" make-thindist make-inprocess
fi
[ -f "$work/linux-thindist/.vmlinux.o.cmd" ] || { echo "bench: no built tree in $work: run the build section first" >&2; exit 1; }

# The vmlinux.o link command kbuild ran, without the linker itself, in $args.
args=$(sed -n 's/^savedcmd_vmlinux.o := //p' "$work/linux-thindist/.vmlinux.o.cmd" | sed 's/ ; .*//')
args=${args#* }

if wants link; then
echo "== the vmlinux.o link alone (thindist tree, same inputs)"
cd "$work/linux-thindist"
# shellcheck disable=SC2086
measure link-inprocess ld.lld-22 $args --thinlto-jobs=2 -o vmlinux.bench-inprocess.o
# shellcheck disable=SC2086
measure link-thindist "$thindist" ld -j2 --no-cache -- ld.lld-22 $args -o vmlinux.bench-thindist.o
# shellcheck disable=SC2086
measure link-thindist-warm-1 "$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o
# shellcheck disable=SC2086
measure link-thindist-warm "$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o
row "ld.lld-22 --thinlto-jobs=2 (in-process)" link-inprocess
row "thindist ld -j2 --no-cache" link-thindist
row "thindist ld -j2, warm cache" link-thindist-warm
ratio "thindist / in-process" link-thindist link-inprocess
ratio "thindist warm cache / in-process" link-thindist-warm link-inprocess
summary=$(grep ' modules in ' "$work/link-thindist.log" | tail -1)
echo "  thindist: ${summary#thindist: }"
wall=$(echo "$summary" | sed -n 's/.* in \([0-9.]*\)s wall.*/\1/p')
summed=$(echo "$summary" | sed -n 's/.*wall, \([0-9.]*\)s summed.*/\1/p')
jobs=$(echo "$summary" | sed -n 's/thindist: \([0-9]*\) modules.*/\1/p')
echo "  orchestration overhead: $(echo "$wall - $summed / 2" | bc -l | cut -c1-5) s (wall - summed job time / 2 slots), $(echo "($wall - $summed / 2) * 1000 / $jobs" | bc -l | cut -c1-5) ms per job over $jobs jobs"

fi

if wants cache; then
echo "== rebuilds of the vmlinux.o link, warm caches: lld --thinlto-cache-dir against thindist"
cd "$work/linux-thindist"
lld_cached=(ld.lld-22 $args --thinlto-jobs=2 --thinlto-cache-dir="$work/lld-cache" -o vmlinux.bench-lldcache.o)
thindist_cached=("$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o)
rm -rf "$work/lld-cache"
measure cache-lld-fill "${lld_cached[@]}"
measure cache-thindist-fill "${thindist_cached[@]}"
measure cache-lld-nochange "${lld_cached[@]}"
measure cache-thindist-nochange "${thindist_cached[@]}"
# One file changed: a new function in kernel/fork.c, recompiled with kbuild's saved command.
edited=kernel/fork.c
cp "$edited" "$work/fork.c.orig"
recompile() { sh -c "$(sed -n 's/^savedcmd_kernel\/fork.o := //p' kernel/.fork.o.cmd)"; }
trap 'cp "$work/fork.c.orig" "$work/linux-thindist/$edited"' EXIT
printf '\nint thindist_bench_edit(void);\nint thindist_bench_edit(void) { return 42; }\n' >>"$edited"
recompile
measure cache-lld-onefile "${lld_cached[@]}"
measure cache-thindist-onefile "${thindist_cached[@]}"
cp "$work/fork.c.orig" "$edited"
recompile
trap - EXIT
row "lld, no change" cache-lld-nochange
row "thindist, no change" cache-thindist-nochange
ratio "thindist / lld, no change" cache-thindist-nochange cache-lld-nochange
row "lld, kernel/fork.c changed" cache-lld-onefile
row "thindist, kernel/fork.c changed" cache-thindist-onefile
ratio "thindist / lld, one file changed" cache-thindist-onefile cache-lld-onefile
echo "  thindist after the change: $(grep ' modules in ' "$work/cache-thindist-onefile.log" | tail -1 | sed 's/.*; cache/cache/')"
fi

if wants compare; then
echo "== vmlinux: in-process (A) against thindist (B)"
"$repo/kernel/compare.sh" "$work/linux-inprocess" "$work/linux-thindist"
fi
