#!/usr/bin/env bash
# The project's test command: every test, with real clang/lld, a real BuildGrid server, a real
# kernel tree and the corpus of Debian projects. Installs what it needs first (ci/install-deps.sh
# test, ci/buildgrid.sh install).
#
# The tests run with HOME and XDG_CACHE_HOME pointing to an empty read-only directory, so a test
# that reads or writes the user's cache or configuration fails instead of passing by luck.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh test

# Everything that needs the real home, resolved before it goes away.
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export THINDIST_BUILDGRID_VENV=${THINDIST_BUILDGRID_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/thindist-buildgrid-venv}
ci/buildgrid.sh install

# The crates a user installs (thindist, thindist-reapi) package and build as published. Cargo
# reuses an earlier extraction of a packaged crate of the same name and version from its
# registry directory, so an earlier run's thindist-reapi would be verified against instead.
rm -rf "$CARGO_HOME"/registry/src/*/thindist-reapi-* "$CARGO_HOME"/registry/src/*/thindist-[0-9]*
cargo publish --workspace --dry-run

empty=$(mktemp -d "${TMPDIR:-/tmp}/thindist-empty-home.XXXXXX")
trap 'rmdir "$empty"' EXIT
chmod 555 "$empty"
if [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    # Permissions do not stop root: mount an empty read-only tmpfs there, in a mount namespace of
    # the tests' own.
    unshare --mount --propagation private sh -c \
        'mount -t tmpfs -o ro,mode=555,size=4k thindist-empty-home "$1" && shift && exec "$@"' \
        sh "$empty" env HOME="$empty" XDG_CACHE_HOME="$empty" cargo test --workspace --release
else
    [ "$(id -u)" = 0 ] && echo "ci/test.sh: warning: cannot make a mount namespace; the empty HOME is read-only only by its permissions, which root ignores" >&2
    HOME=$empty XDG_CACHE_HOME=$empty cargo test --workspace --release
fi
