#!/usr/bin/env bash
# A BuildGrid 0.4.4 remote-execution server on loopback for thindist's tests: PostgreSQL 15 for
# its scheduler, an in-memory CAS, an action cache. Workers are `thindist worker` processes.
#
#   ci/buildgrid.sh install          # venv with BuildGrid (idempotent)
#   ci/buildgrid.sh start DIR PORT   # PostgreSQL on PORT+1, BuildGrid on 127.0.0.1:PORT
#   ci/buildgrid.sh stop DIR
#
# BUILDGRID_THREADS=N sets BuildGrid's gRPC thread pool (its limit of concurrent RPCs: every
# bot session's long-poll and every client Execute stream holds one; default 128, for thindist's
# 64 jobs in flight and a few workers) and its database pool to match.
set -euo pipefail

# Outside thindist's own cache directory ($XDG_CACHE_HOME/thindist), which `thindist cache clear`
# empties and the tests must never touch.
venv=${THINDIST_BUILDGRID_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/thindist-buildgrid-venv}
pg_bin=/usr/lib/postgresql/15/bin

die() { echo "buildgrid.sh: error: $*" >&2; exit 1; }

install() {
    if [ -x "$venv/bin/bgd" ]; then
        return
    fi
    echo "== installing BuildGrid 0.4.4 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "buildgrid[database]==0.4.4"
}

as_postgres() {
    # PostgreSQL refuses to run as root.
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local dir=$1 port=$2 pg_port=$(($2 + 1))
    [ -x "$venv/bin/bgd" ] || die "BuildGrid is not installed: run ci/buildgrid.sh install"
    [ -x "$pg_bin/initdb" ] || die "PostgreSQL 15 is not installed: apt-get install postgresql-15"
    mkdir -p "$dir/pg"
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
    as_postgres "$pg_bin/initdb" -D "$dir/pg" -A trust -U postgres >"$dir/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$dir/initdb.log")"
    as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w \
        -o "-k $dir/pg -p $pg_port -c listen_addresses=127.0.0.1" start >/dev/null || die "PostgreSQL did not start: $(tail -5 "$dir/pg/server.log")"
    as_postgres psql -h 127.0.0.1 -p "$pg_port" -U postgres -q -c "create database bgd" postgres
    local db="postgresql+psycopg2://postgres@127.0.0.1:$pg_port/bgd"
    "$venv/bin/bgd" migrate apply "$db" >"$dir/migrate.log" 2>&1 || die "migration failed: $(tail -5 "$dir/migrate.log")"
    local threads=${BUILDGRID_THREADS:-128}
    cat >"$dir/buildgrid.yml" <<YAML
thread-pool-size: $threads
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true
authorization:
  method: none
connections:
  - !sql-connection &sql
    connection-string: $db
    pool-size: $((threads / 4 + 5))
storages:
  - !lru-storage &cas
    size: 2048MB
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    bot-session-keepalive-timeout: 20
    # The defaults (assign every 1-2 s while idle, poll bots and operations every 1 s) add about
    # a second to every short action; a back-end compile takes tens of milliseconds.
    poll-interval: 0.05
    bot-poll-interval: 0.05
    assigners:
      - !priority-age-assigner
        interval: 0.02
        jitter-factor: 0.01
instances:
  - name: ''
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
YAML
    "$venv/bin/bgd" server start -v --pid-file "$dir/bgd.pid" "$dir/buildgrid.yml" >"$dir/bgd.log" 2>&1 &
    echo $! >"$dir/bgd.pid.shell"
    for _ in $(seq 1 150); do
        if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            echo "BuildGrid is serving on 127.0.0.1:$port (PostgreSQL on $pg_port)"
            return
        fi
        kill -0 "$(cat "$dir/bgd.pid.shell")" 2>/dev/null || die "BuildGrid exited: $(tail -20 "$dir/bgd.log")"
        sleep 0.2
    done
    die "BuildGrid did not start listening on $port within 30 s: $(tail -20 "$dir/bgd.log")"
}

stop() {
    local dir=$1
    for pidfile in "$dir/bgd.pid" "$dir/bgd.pid.shell"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ -f "$dir/pg/postmaster.pid" ]; then
        as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
    install) install ;;
    start) [ $# = 3 ] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR PORT | stop DIR" ;;
esac
