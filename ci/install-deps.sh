#!/usr/bin/env bash
# Installs the Debian 12 packages a set of thindist's commands needs, with apt-get when root;
# not root, prints the one `sudo apt-get install` command for what is missing and fails.
# Quick and silent when everything is there (dpkg-query only; apt-get update only when something
# is missing).
#
#   ci/install-deps.sh demo    # examples/demo/run.sh: clang, lld, llvm tools, make
#   ci/install-deps.sh test    # ci/test.sh: the demo set, the kernel build and boot, BuildGrid's
#                              # PostgreSQL and venv, the corpus projects' build tools
set -euo pipefail

demo=(clang-22 lld-22 llvm-22 make libc6-dev)
test=(
    "${demo[@]}"
    # BuildGrid (ci/buildgrid.sh): its scheduler's database and the venv it lives in
    postgresql-15 python3-venv
    # the kernel build and boot (kernel/build-and-boot.sh)
    linux-source-6.12 qemu-system-x86 flex bison bc libelf-dev libssl-dev cpio xz-utils
    # tests that compare with another compiler or time themselves
    clang-14 gcc time
    # the corpus (crates/thindist/tests/corpus.rs): apt-get source, CMake + Ninja, unpacking,
    # zstd's test suite (file)
    dpkg-dev cmake ninja-build tar file
)

case ${1-} in
demo) wanted=("${demo[@]}") ;;
test) wanted=("${test[@]}") ;;
*)
    echo "usage: ci/install-deps.sh demo|test" >&2
    exit 2
    ;;
esac

installed=" $({ dpkg-query -W -f='${db:Status-Status}:${Package} ' "${wanted[@]}" 2>/dev/null || true; } |
    tr ' ' '\n' | sed -n 's/^installed://p' | tr '\n' ' ')"
missing=()
for p in "${wanted[@]}"; do
    case $installed in *" $p "*) ;; *) missing+=("$p") ;; esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing Debian packages; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
echo "== installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
