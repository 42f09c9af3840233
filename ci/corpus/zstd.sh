# zstd: plain Makefiles; lib/libzstd.mk probes the compiler by linking to /dev/null. Builds the
# zstd program (`make zstd`) and runs `make check` (playTests.sh without its long tests).
# Sourced by run.sh.
build() {
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" zstd
}
check() {
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" check
}
relink() {
    remove_link_outputs
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" zstd
    make -j"$JOBS" -C tests CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" datagen
}
