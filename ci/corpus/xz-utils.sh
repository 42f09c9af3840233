# xz-utils: autoconf + libtool, liblzma as a shared (and a static) library, the xz programs
# linked against the shared one. configure's probes link with $LDFLAGS; make's libtool links with
# $LIBTOOL_LDFLAGS. Sourced by run.sh.
build() {
    ./configure CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" AR="$AR" RANLIB="$RANLIB" NM="$NM"
    make -j"$JOBS" LDFLAGS="$LIBTOOL_LDFLAGS"
}
check() {
    make -j"$JOBS" LDFLAGS="$LIBTOOL_LDFLAGS" check
}
relink() {
    remove_link_outputs
    # Builds the programs and the test programs again without running the tests.
    make -j"$JOBS" LDFLAGS="$LIBTOOL_LDFLAGS" check TESTS=
}
