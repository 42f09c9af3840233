#!/usr/bin/env bash
# Runs COMMAND with a private /dev when root, so a link that replaces /dev/null cannot damage the
# machine's, and reports whether /dev/null was still the null character device afterwards.
#
#   CORPUS_DEVNULL_REPORT=FILE ci/corpus/private-dev.sh COMMAND...
#
# Writes "ok" or "broken: <ls -l /dev/null>" to FILE and exits with COMMAND's status. As root,
# COMMAND runs in a mount namespace whose /dev is a fresh tmpfs with the usual character devices
# (null, zero, full, random, urandom, tty) and links (fd, stdin, stdout, stderr, shm). Not root,
# nothing can replace /dev/null, and COMMAND runs as it is.
set -uo pipefail
report=${CORPUS_DEVNULL_REPORT:?CORPUS_DEVNULL_REPORT must name the report file}

check_and_report() {
    if [ -c /dev/null ] && [ "$(stat -c '%t,%T' /dev/null)" = 1,3 ]; then
        echo ok >"$report"
    else
        echo "broken: $(ls -l /dev/null 2>&1)" >"$report"
    fi
}

if [ "${1-}" = --inside ]; then
    shift
    mount -t tmpfs -o mode=755,size=16m thindist-corpus-dev /dev || exit 125
    for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r n major minor <<<"$d"
        mknod -m 666 "/dev/$n" c "$major" "$minor" || exit 125
    done
    ln -s /proc/self/fd /dev/fd
    ln -s /proc/self/fd/0 /dev/stdin
    ln -s /proc/self/fd/1 /dev/stdout
    ln -s /proc/self/fd/2 /dev/stderr
    mkdir -m 1777 /dev/shm
    "$@"
    rc=$?
    check_and_report
    exit $rc
fi

if [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    exec unshare --mount --propagation private "$0" --inside "$@"
fi
"$@"
rc=$?
check_and_report
exit $rc
