# zstd: plain Makefiles; lib/libzstd.mk probes the compiler by linking to /dev/null. Builds the
# zstd program (`make zstd`) and runs `make check` (playTests.sh without its long tests, which
# itself checks that /dev/null is still a character device). Sourced by run.sh.
#
# CORPUS_ZSTD_VOID=FILE (a file outside the tree) makes the probes link to FILE instead of
# /dev/null (in both modes), to check the rest while thindist still replaces /dev/null.
zstd_make() {
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" \
        ${CORPUS_ZSTD_VOID:+"VOID=$CORPUS_ZSTD_VOID"} "$@"
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
