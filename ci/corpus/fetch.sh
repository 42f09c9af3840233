#!/usr/bin/env bash
# Prints the path of the upstream tarball of Debian 12 source package NAME, downloading it with
# `apt-get source --download-only` into $THINDIST_CORPUS_DIR (default /var/cache/thindist-corpus)
# the first time, so reruns and CI never fetch it again.
#
#   ci/corpus/fetch.sh NAME
set -euo pipefail
name=${1:?usage: fetch.sh SOURCE-PACKAGE}
dir=${THINDIST_CORPUS_DIR:-/var/cache/thindist-corpus}
die() { echo "fetch.sh: error: $*" >&2; exit 1; }

find_tarball() {
    local f
    for f in "$dir/${name}"_*.orig.tar.*; do
        case $f in *.asc) continue ;; esac
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

find_tarball && exit 0

# apt-get source needs a deb-src entry for bookworm; add one beside the deb entry if none exists.
if ! apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx Sources; then
    [ "$(id -u)" = 0 ] || die "no deb-src entry for bookworm: add one (Types: deb-src) and run apt-get update, or put ${name}_*.orig.tar.* into $dir"
    cat >/etc/apt/sources.list.d/thindist-corpus-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >&2
fi
mkdir -p "$dir"
(cd "$dir" && apt-get source --download-only -qq -o APT::Sandbox::User=root "$name" >&2 2>&1) ||
    die "apt-get source --download-only $name failed"
find_tarball || die "apt-get source $name left no ${name}_*.orig.tar.* in $dir"
