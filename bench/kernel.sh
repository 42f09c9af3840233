#!/usr/bin/env bash
# Kernel benchmark, side by side in one run on linux-source-6.12 (tinyconfig + ThinLTO):
#  1. the whole `make -j2 bzImage modules` from clean, in-process ThinLTO against thindist;
#  2. the seed's own kbuild series (bench/seed-6.12.patch, CONFIG_LTO_CLANG_THIN_DIST) on its
#     own copy of the tree, compiled once so that only its distributed link step is timed;
#  3. the vmlinux.o link alone, 554 modules, caches off: lld in-process (--thinlto-jobs=2),
#     the seed's flow (`make -j2 vmlinux_a`: thin link, back ends, archive of the natives, then
#     the `ld -r` of those natives) and `thindist ld -j2 --no-cache`;
#  4. a comparison of the two vmlinux images (kernel/compare.sh).
# Prints wall, CPU and peak RSS with ratios, and thindist's orchestration overhead.
#
#  5. rebuilds of the vmlinux.o link (no change, one file changed), lld's --thinlto-cache-dir
#     against thindist's cache.
#
#   cargo build --release -p thindist && [BENCH_ROUNDS=2] bench/kernel.sh [WORKDIR [SECTION...]]
#
# SECTION is build, seed, link, cache or compare (default: all); link, cache and compare reuse
# the trees that build (and seed, for the seed's row) left in WORKDIR. The thindist binary is
# taken from $CARGO_TARGET_DIR (default target/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
thindist=${CARGO_TARGET_DIR:-$repo/target}/release/thindist
[ -x "$thindist" ] || { echo "build thindist first: cargo build --release -p thindist" >&2; exit 1; }
work=${1:-${TMPDIR:-/tmp}/thindist-kernel-bench}
shift || true
sections=${*:-build seed link cache compare}
wants() { [[ " $sections " == *" $1 "* ]]; }
mkdir -p "$work"
export THINDIST_CACHE_DIR=$work/cache

# measure NAME COMMAND...: runs it under GNU time, records "wall cpu maxrss_kib" in $work/NAME
# (the wall time to the millisecond, which GNU time gives only to the hundredth).
measure() {
    local name=$1; shift
    # What the last command left to write back is written now, not during this one: the
    # first run after a recompile used to pay for it (about 100 ms of lld's one-file relink).
    sync
    local start end
    start=$(date +%s%N)
    /usr/bin/time -f "%U %S %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1 || {
        tail -20 "$work/$name.log" >&2; echo "bench: $name failed (log: $work/$name.log)" >&2; exit 1; }
    end=$(date +%s%N)
    awk -v ns=$((end - start)) '{printf "%.3f %.2f %d\n", ns / 1e9, $1 + $2, $3}' "$work/$name.time" >"$work/$name"
}
row() { read -r w c m <"$work/$2"; printf "  %-40s %8.2f s wall %8.2f s CPU %8.1f MiB peak\n" "$1" "$w" "$c" "$(echo "$m/1024" | bc -l)"; }
ratio() {
    read -r w1 c1 m1 <"$work/$2"; read -r w2 c2 m2 <"$work/$3"
    printf "  %-40s %8.2fx wall %8.2fx CPU %8.2fx peak\n" "$1" "$(echo "$w1/$w2" | bc -l)" "$(echo "$c1/$c2" | bc -l)" "$(echo "$m1/$m2" | bc -l)"
}
# keep_round NAME: appends this round's wall time of row NAME to $work/NAME.rounds, then keeps
# the best round as keep_best does (which may put an earlier round in $work/NAME, so not before).
keep_round() { cut -d' ' -f1 "$work/$1" >>"$work/$1.rounds"; keep_best "$1"; }
# paired LABEL A B: the rounds of rows A and B (lld's and thindist's, from keep_round) side by
# side: both means, B - A per round (mean and standard error), B / A (mean and median), and in
# how many rounds B was no slower. On a noisy machine the best of each row favours the one
# with the wider spread; these do not.
paired() {
    paste -d' ' "$work/$2.rounds" "$work/$3.rounds" | awk -v label="$1" '
        { d = $2 - $1; sa += $1; sb += $2; sd += d; sdd += d * d
          r[NR] = $2 / $1; sr += r[NR]; if ($2 <= $1) le++ }
        END {
            n = NR; if (n < 2) { printf "  %s: fewer than two rounds\n", label; exit }
            m = sd / n; se = sqrt((sdd - n * m * m) / (n - 1) / n)
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
            med = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
            printf "  %s, %d rounds: lld %.3f s, thindist %.3f s (means); thindist - lld %+.1f +- %.1f ms (mean +- standard error); thindist / lld %.3f (mean), %.3f (median); thindist no slower in %d\n",
                label, n, sa / n, sb / n, m * 1000, se * 1000, sr / n, med, le + 0
        }'
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

# The seed's tree: its own copy of the source with the ported series, configured as
# build-and-boot.sh configures the others but with LTO_CLANG_THIN_DIST, and compiled up to
# vmlinux.o once (the front ends are not part of the link step measured below).
seed=$work/linux-seed
seed_make=(make LLVM=-22 -j2)
if wants seed; then
echo "== the seed's tree: unpack, apply bench/seed-6.12.patch, configure, compile"
rm -rf "$seed" "$seed.unpack"
mkdir -p "$seed.unpack"
tar -C "$seed.unpack" -xJf /usr/src/linux-source-6.12.tar.xz
mv "$seed.unpack/linux-source-6.12" "$seed"
rmdir "$seed.unpack"
(
    cd "$seed"
    patch -p1 --quiet <"$repo/bench/seed-6.12.patch"
    make LLVM=-22 tinyconfig >/dev/null
    scripts/config -e 64BIT -d LTO_NONE -e LTO_CLANG_THIN_DIST -e PRINTK -e TTY -e SERIAL_8250 \
        -e SERIAL_8250_CONSOLE -e BINFMT_ELF -e BLK_DEV_INITRD -e RD_GZIP -e MODULES -e MODULE_UNLOAD \
        -m CRC_ITU_T -m CRC7
    make LLVM=-22 olddefconfig >/dev/null
    grep -q '^CONFIG_LTO_CLANG_THIN_DIST=y' .config || { echo "bench: CONFIG_LTO_CLANG_THIN_DIST did not stay enabled in $seed/.config" >&2; exit 1; }
    "${seed_make[@]}" vmlinux_o >"$work/seed-prepare.log" 2>&1 || { tail -20 "$work/seed-prepare.log" >&2; exit 1; }
    echo "  $(wc -l <vmlinux.thinlto-index) modules in the seed's thin-link index"
)
fi
wants link || wants cache || wants compare || exit 0
[ -f "$work/linux-thindist/.vmlinux.o.cmd" ] || { echo "bench: no built tree in $work: run the build section first" >&2; exit 1; }

# The vmlinux.o link command kbuild ran, without the linker itself, in $args.
args=$(sed -n 's/^savedcmd_vmlinux.o := //p' "$work/linux-thindist/.vmlinux.o.cmd" | sed 's/ ; .*//')
args=${args#* }

# The link and cache rows are measured this many times, interleaved; each keeps its best.
rounds=${BENCH_ROUNDS:-2}
# keep_best NAME: of this round's NAME and the best of the rounds before, keeps the one with
# the shorter wall time (and its log).
keep_best() {
    local f=$work/$1
    if [ -f "$f.best" ] && awk '{exit !($1 > w)}' w="$(cut -d' ' -f1 "$f.best")" "$f"; then
        cp "$f.best" "$f"; cp "$f.best.log" "$f.log"
    fi
    cp "$f" "$f.best"; cp "$f.log" "$f.best.log"
}

if wants link; then
rounds=${BENCH_ROUNDS:-2}
echo "== the vmlinux.o link alone (thindist tree, same inputs), best of $rounds interleaved rounds"
rm -f "$work"/link-*.best
seed_args=""
[ -f "$seed/vmlinux.thinlto-index" ] && seed_args=$(sed -n 's/^savedcmd_vmlinux.o := //p' "$seed/.vmlinux.o.cmd" | sed 's/ ; .*//')
for _ in $(seq "$rounds"); do
    cd "$work/linux-thindist"
    # shellcheck disable=SC2086
    measure link-inprocess ld.lld-22 $args --thinlto-jobs=2 -o vmlinux.bench-inprocess.o
    keep_best link-inprocess
    # shellcheck disable=SC2086
    measure link-thindist "$thindist" ld -j2 --no-cache -- ld.lld-22 $args -o vmlinux.bench-thindist.o
    keep_best link-thindist
    [ -n "$seed_args" ] || continue
    # The seed's step from bitcode to vmlinux.o, without its objtool run (the other rows have
    # none): remove what it made, then its own target and the `ld -r` kbuild runs after it.
    cd "$seed"
    find . -name '*.thinlto-native.o' -delete -o -name '*.o.thinlto.bc' -delete
    rm -f vmlinux.a vmlinux.thinlto-index
    # shellcheck disable=SC2086
    measure link-seed bash -c '"${@:2}" vmlinux_a && ld.lld-22 $1 -o vmlinux.bench-seed.o' \
        seed-link "${seed_args#* }" "${seed_make[@]}"
    keep_best link-seed
done
if [ -n "$seed_args" ]; then
    # make's walk of the tree with nothing to do, included in the seed's row.
    cd "$seed"
    measure link-seed-walk "${seed_make[@]}" vmlinux_a
fi
cd "$work/linux-thindist"
# shellcheck disable=SC2086
measure link-thindist-warm-1 "$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o
# shellcheck disable=SC2086
measure link-thindist-warm "$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o
row "ld.lld-22 --thinlto-jobs=2 (in-process)" link-inprocess
[ -n "$seed_args" ] && row "seed's flow (make -j2 vmlinux_a; ld -r)" link-seed
[ -n "$seed_args" ] && row "  of which make's walk with nothing to do" link-seed-walk
row "thindist ld -j2 --no-cache" link-thindist
row "thindist ld -j2, warm cache" link-thindist-warm
ratio "thindist / in-process" link-thindist link-inprocess
[ -n "$seed_args" ] && ratio "seed's flow / in-process" link-seed link-inprocess
[ -n "$seed_args" ] && ratio "thindist / seed's flow" link-thindist link-seed
ratio "thindist warm cache / in-process" link-thindist-warm link-inprocess
summary=$(grep ' modules in ' "$work/link-thindist.log" | tail -1)
echo "  thindist: ${summary#thindist: }"
wall=$(echo "$summary" | sed -n 's/.* in \([0-9.]*\)s wall.*/\1/p')
summed=$(echo "$summary" | sed -n 's/.*wall, \([0-9.]*\)s summed.*/\1/p')
jobs=$(echo "$summary" | sed -n 's/thindist: \([0-9]*\) modules.*/\1/p')
echo "  orchestration overhead: $(echo "$wall - $summed / 2" | bc -l | cut -c1-5) s (wall - summed job time / 2 slots), $(echo "($wall - $summed / 2) * 1000 / $jobs" | bc -l | cut -c1-5) ms per job over $jobs jobs"

fi

if wants cache; then
echo "== rebuilds of the vmlinux.o link, warm caches: lld --thinlto-cache-dir against thindist, best of $rounds rounds and the rounds paired"
cd "$work/linux-thindist"
lld_cached=(ld.lld-22 $args --thinlto-jobs=2 --thinlto-cache-dir="$work/lld-cache" -o vmlinux.bench-lldcache.o)
thindist_cached=("$thindist" ld -j2 -- ld.lld-22 $args -o vmlinux.bench-cached.o)
# Both caches start empty: edits of earlier runs must not be hits for either.
rm -rf "$work/lld-cache" "$THINDIST_CACHE_DIR"
measure cache-lld-fill "${lld_cached[@]}"
measure cache-thindist-fill "${thindist_cached[@]}"
rm -f "$work"/cache-*.best "$work"/cache-*.rounds
# One file changed: a new function in kernel/fork.c (another one each round, so that neither
# cache has it yet), recompiled with kbuild's saved command.
edited=kernel/fork.c
cp "$edited" "$work/fork.c.orig"
recompile() { sh -c "$(sed -n 's/^savedcmd_kernel\/fork.o := //p' kernel/.fork.o.cmd)"; }
trap 'cp "$work/fork.c.orig" "$work/linux-thindist/$edited"' EXIT
for round in $(seq "$rounds"); do
    measure cache-lld-nochange "${lld_cached[@]}"
    keep_round cache-lld-nochange
    measure cache-thindist-nochange "${thindist_cached[@]}"
    keep_round cache-thindist-nochange
    cp "$work/fork.c.orig" "$edited"
    printf '\nint thindist_bench_edit(void);\nint thindist_bench_edit(void) { return %d; }\n' "$((41 + round))" >>"$edited"
    recompile
    # Each goes first in every other round.
    onefile_rows=(lld thindist)
    [ $((round % 2)) = 0 ] && onefile_rows=(thindist lld)
    for who in "${onefile_rows[@]}"; do
        case $who in
            lld) measure cache-lld-onefile "${lld_cached[@]}" ;;
            thindist) measure cache-thindist-onefile "${thindist_cached[@]}" ;;
        esac
        keep_round cache-$who-onefile
    done
    # Back to the tree both caches hold, for the next round's no-change rows.
    cp "$work/fork.c.orig" "$edited"
    recompile
    measure cache-lld-refill "${lld_cached[@]}"
    measure cache-thindist-refill "${thindist_cached[@]}"
done
trap - EXIT
row "lld, no change" cache-lld-nochange
row "thindist, no change" cache-thindist-nochange
ratio "thindist / lld, no change" cache-thindist-nochange cache-lld-nochange
row "lld, kernel/fork.c changed" cache-lld-onefile
row "thindist, kernel/fork.c changed" cache-thindist-onefile
ratio "thindist / lld, one file changed" cache-thindist-onefile cache-lld-onefile
paired "no change, round by round" cache-lld-nochange cache-thindist-nochange
paired "kernel/fork.c changed, round by round" cache-lld-onefile cache-thindist-onefile
echo "  thindist after the change: $(grep ' modules in ' "$work/cache-thindist-onefile.log" | tail -1 | sed 's/.*; cache/cache/')"
fi

if wants compare; then
echo "== vmlinux: in-process (A) against thindist (B)"
"$repo/kernel/compare.sh" "$work/linux-inprocess" "$work/linux-thindist"
fi
