# zstd: plain Makefiles; lib/libzstd.mk probes the compiler by linking to /dev/null. Builds the
# zstd program (`make zstd`) and runs `make check` (playTests.sh without its long tests, which
# itself checks that /dev/null is still a character device). Sourced by run.sh.
zstd_make() {
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" "$@"
}
build() {
    zstd_make zstd
}
check() {
    zstd_make check
}
relink() {
    remove_link_outputs
    zstd_make zstd
    zstd_make -C tests datagen
}
