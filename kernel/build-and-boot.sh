#!/usr/bin/env bash
# Builds Debian's linux-source-6.12 (tinyconfig + ThinLTO + modules) with clang-22, either with
# thindist as the linker (distributed ThinLTO, each object's back end compiled with the flags
# kbuild saved for it) or with lld's in-process ThinLTO, then boots it under qemu with an
# initramfs whose init prints a marker and loads a module built in the same run.
#
#   kernel/build-and-boot.sh --mode thindist --thindist target/release/thindist
#   kernel/build-and-boot.sh --mode inprocess --tree /tmp/linux-inprocess --skip-boot
#
# --autofdo-propeller adds Linux 7.x's AutoFDO (with a small text profile) and Propeller link
# options to every link (kernel/autofdo-propeller.mk) and checks that vmlinux.o got them.
#
# Exits 0 only when the build succeeds and (unless --skip-boot) both markers reach the console.
set -euo pipefail

mode=thindist
tree=""
thindist=""
jobs=2
skip_boot=0
autofdo_propeller=0
source_tarball=/usr/src/linux-source-6.12.tar.xz
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "build-and-boot: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=$2; shift 2 ;;
        --mode=*) mode=${1#*=}; shift ;;
        --tree) tree=$2; shift 2 ;;
        --tree=*) tree=${1#*=}; shift ;;
        --thindist) thindist=$2; shift 2 ;;
        --thindist=*) thindist=${1#*=}; shift ;;
        --jobs) jobs=$2; shift 2 ;;
        --jobs=*) jobs=${1#*=}; shift ;;
        --skip-boot) skip_boot=1; shift ;;
        --autofdo-propeller) autofdo_propeller=1; shift ;;
        *) die "unknown argument $1 (see the comment at the top of $0)" ;;
    esac
done
case "$mode" in thindist|inprocess) ;; *) die "--mode must be thindist or inprocess, not '$mode'" ;; esac
[ -f "$source_tarball" ] || die "$source_tarball is missing: apt-get install linux-source-6.12"
for tool in clang-22 ld.lld-22 llvm-ar-22 qemu-system-x86_64 cpio gzip flex bison bc; do
    command -v "$tool" >/dev/null || die "$tool is not installed (see .ci/run for the package list)"
done
tree=${tree:-${TMPDIR:-/tmp}/thindist-linux-$mode}

make_args=(LLVM=-22 -j"$jobs")
if [ "$mode" = thindist ]; then
    [ -n "$thindist" ] || die "--mode thindist needs --thindist PATH"
    thindist=$(realpath "$thindist")
    [ -x "$thindist" ] || die "$thindist is not an executable"
    bindir="$tree.bin"
    mkdir -p "$bindir"
    ln -sf "$thindist" "$bindir/thindist-ld"
    make_args+=(LD="$bindir/thindist-ld")
    export THINDIST_LINKER=ld.lld-22
fi

# Unpack once; later runs reuse the tree and rebuild incrementally.
if [ ! -f "$tree/Makefile" ]; then
    echo "== unpacking $source_tarball into $tree"
    mkdir -p "$tree.unpack"
    tar -C "$tree.unpack" -xJf "$source_tarball"
    rm -rf "$tree"
    mv "$tree.unpack/linux-source-6.12" "$tree"
    rmdir "$tree.unpack"
fi
cd "$tree"

if [ ! -f .config ] || ! grep -q '^CONFIG_LTO_CLANG_THIN=y' .config; then
    echo "== configuring: tinyconfig + ThinLTO + modules"
    make LLVM=-22 tinyconfig >/dev/null
    scripts/config -e 64BIT -d LTO_NONE -e LTO_CLANG_THIN -e PRINTK -e TTY -e SERIAL_8250 \
        -e SERIAL_8250_CONSOLE -e BINFMT_ELF -e BLK_DEV_INITRD -e RD_GZIP -e MODULES -e MODULE_UNLOAD \
        -m CRC_ITU_T -m CRC7
    make LLVM=-22 olddefconfig >/dev/null
    grep -q '^CONFIG_LTO_CLANG_THIN=y' .config || die "CONFIG_LTO_CLANG_THIN did not stay enabled in $tree/.config"
    grep -q '^CONFIG_CRC7=m' .config || die "CONFIG_CRC7 is not a module in $tree/.config"
fi

if [ "$autofdo_propeller" = 1 ]; then
    # 6.12 has no Makefile.autofdo or Makefile.propeller: include their link options from the
    # end of the top Makefile (once), and give them a profile of two kernel functions.
    grep -q 'autofdo-propeller.mk' Makefile || echo "include $here/autofdo-propeller.mk" >> Makefile
    profile="$tree.autofdo.txt"
    printf 'start_kernel:1000:1\n 0: 1\n 1: 1\nkernel_init:100:1\n 0: 1\n' > "$profile"
    make_args+=(CLANG_AUTOFDO_PROFILE="$profile")
fi

echo "== building bzImage and modules ($mode, -j$jobs)"
start=$(date +%s.%N)
make "${make_args[@]}" bzImage modules
end=$(date +%s.%N)
echo "== build took $(echo "$end - $start" | bc) s"

# Not `llvm-readelf | grep -q` below: under pipefail, grep's early exit can fail readelf with
# SIGPIPE on vmlinux.o's long section list.
sections=$(llvm-readelf-22 -S --wide vmlinux.o)

if [ "$mode" = thindist ]; then
    natives=$(find . -name '*.thinlto-native.o' | wc -l)
    [ "$natives" -gt 100 ] || die "only $natives native objects beside the bitcode: vmlinux.o was not linked by thindist"
    echo "== $natives native objects kept beside their bitcode"
    # kbuild runs objtool (--ibt --static-call) on vmlinux.o right after linking it; the
    # sections it writes prove that it ran on thindist's output.
    grep -q '\.ibt_endbr_seal' <<<"$sections" || die "vmlinux.o has no .ibt_endbr_seal section: objtool did not run"
    grep -q 'objtool' .vmlinux.o.cmd || die ".vmlinux.o.cmd does not record objtool"
fi

if [ "$autofdo_propeller" = 1 ]; then
    grep -q -- '--lto-sample-profile=.*-plugin-opt=-split-machine-functions --lto-basic-block-address-map' .vmlinux.o.cmd \
        || die ".vmlinux.o.cmd does not show the AutoFDO and Propeller link options"
    # The Propeller address map reached vmlinux.o's code generation.
    grep -q '\.llvm_bb_addr_map' <<<"$sections" || die "vmlinux.o has no .llvm_bb_addr_map section"
    echo "== vmlinux.o was linked with the AutoFDO and Propeller link options"
fi

[ "$skip_boot" = 1 ] && exit 0

echo "== building the initramfs"
initdir=$(mktemp -d)
trap 'rm -rf "$initdir"' EXIT
gcc -static -Os -o "$initdir/init" "$here/init.c" || die "cannot build the static init (libc6-dev provides libc.a)"
ko=$(find . -name crc7.ko | head -n1)
[ -n "$ko" ] || die "crc7.ko was not built"
cp "$ko" "$initdir/crc7.ko"
(cd "$initdir" && printf '%s\n' init crc7.ko | cpio -o -H newc --quiet | gzip -9) > "$tree.initramfs.gz"

echo "== booting under qemu"
log="$tree.console.log"
timeout 300 qemu-system-x86_64 -kernel arch/x86/boot/bzImage -initrd "$tree.initramfs.gz" \
    -append "console=ttyS0 panic=-1 reboot=t" -nographic -no-reboot -m 256 </dev/null >"$log" 2>&1 || true
if grep -q 'THINDIST-BOOT-OK' "$log" && grep -q 'THINDIST-MODULE-OK' "$log"; then
    grep 'THINDIST-' "$log"
    echo "== boot test passed ($mode)"
else
    tail -n 30 "$log" >&2
    die "the markers did not appear on the serial console (full log: $log)"
fi
