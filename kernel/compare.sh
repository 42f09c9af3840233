#!/usr/bin/env bash
# Compares two built kernel trees' vmlinux: symbols only in one of them (llvm-nm-22) and
# section sizes (llvm-size-22), e.g. thindist's build against in-process ThinLTO's.
#
#   kernel/compare.sh /tmp/thindist-linux-inprocess /tmp/thindist-linux-thindist
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 TREE_A TREE_B" >&2; exit 2; }
a=$1/vmlinux b=$2/vmlinux
for f in "$a" "$b"; do [ -f "$f" ] || { echo "compare.sh: error: $f does not exist (build the tree first)" >&2; exit 1; }; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Names only; promoted locals carry a per-module hash (.llvm.NNNN) that differs between builds.
symbols() { llvm-nm-22 --defined-only "$1" | awk '{print $3}' | sed 's/\.llvm\.[0-9]*$//' | sort -u; }
symbols "$a" >"$tmp/a"
symbols "$b" >"$tmp/b"
echo "== symbols: $(wc -l <"$tmp/a") in A, $(wc -l <"$tmp/b") in B"
echo "-- only in A ($a):"
comm -23 "$tmp/a" "$tmp/b" | head -n 40
echo "-- only in B ($b):"
comm -13 "$tmp/a" "$tmp/b" | head -n 40
echo "   ($(comm -23 "$tmp/a" "$tmp/b" | wc -l) only in A, $(comm -13 "$tmp/a" "$tmp/b" | wc -l) only in B)"

# Decimal sizes, so that no awk extension is needed (Debian's awk is mawk).
sections() { llvm-size-22 -A "$1" | awk 'NR > 2 && NF == 3 && $1 != "Total" {print $1, $2}' | sort; }
sections "$a" >"$tmp/sa"
sections "$b" >"$tmp/sb"
echo "== section sizes (bytes): A, B, B-A"
join -a1 -a2 -e 0 -o 0,1.2,2.2 "$tmp/sa" "$tmp/sb" | awk '$2 != $3 {printf "  %-28s %10d %10d %+10d\n", $1, $2, $3, $3-$2}'
