# json-c: CMake + Ninja, shared and static libjson-c and its test programs, run by ctest.
# Its CMakeLists adds -ffunction-sections -fdata-sections to the C flags, which reach the link.
# Sourced by run.sh.
build() {
    # lld 22 defaults to --no-undefined-version, which json-c's version script fails (in-process
    # too); clang 22's deprecation warnings would be errors without DISABLE_WERROR.
    cmake -G Ninja -S . -B build \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_COMPILER=clang-22 \
        ${CC_LAUNCHER:+"-DCMAKE_C_COMPILER_LAUNCHER=$CC_LAUNCHER"} \
        -DCMAKE_C_FLAGS="$CFLAGS" \
        -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" \
        -DCMAKE_SHARED_LINKER_FLAGS="$LDFLAGS -Wl,--undefined-version" \
        -DCMAKE_AR="/usr/bin/$AR" -DCMAKE_RANLIB="/usr/bin/$RANLIB" \
        -DDISABLE_WERROR=ON
    ninja -j"$JOBS" -C build
}
check() {
    (cd build && ctest -j"$JOBS" --output-on-failure)
}
relink() {
    remove_link_outputs
    ninja -j"$JOBS" -C build
}
