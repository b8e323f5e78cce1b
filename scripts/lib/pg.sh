# A private PostgreSQL cluster for benchmark and shell test scripts (the shell
# twin of testkit/src/pg.rs). Source it; bash or POSIX sh.
#
#   pg_start DIR    initdb into DIR/data (DIR must exist, without data/, and its
#                   parents must be searchable by `nobody`),
#                   as `nobody` when run as root, and start the server with its
#                   unix socket in DIR and a free 127.0.0.1 port. Sets:
#                     PG_BIN      Debian's /usr/lib/postgresql/<major>/bin
#                     PG_PORT     the TCP port (127.0.0.1)
#                     PG_SOCKDIR  DIR (the socket is DIR/.s.PGSQL.$PG_PORT)
#                     PG_PASSWORD the superuser `postgres`'s password (TCP)
#                     PG_URL      postgresql://postgres:PW@127.0.0.1:PORT/postgres
#                   Returns 2 with a "SKIP: ..." line on stderr when PostgreSQL
#                   is not installed; 1 when it fails to start.
#   pg_stop DIR     fast shutdown of the cluster in DIR (only the postmaster
#                   pg_start started, found by DIR/data/postmaster.pid).
#   pg_psql DB SQL  runs SQL as the superuser over the socket (stops at errors).
#
# Unix-socket connections are trusted; TCP needs the password (scram-sha-256).
# PG_SETTINGS: extra "-c name=value" options for the server. Durable settings
# (fsync on) unless the caller adds e.g. PG_SETTINGS="-c fsync=off".

pg_find_bin() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        return 0
    fi
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/postgres" ]; then
        echo "SKIP: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin; apt-get install postgresql)" >&2
        return 2
    fi
}

# Runs a command as the server's user (nobody when we are root).
pg_as_user_() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u nobody -- "$@"
    else
        "$@"
    fi
}

pg_free_port_() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() { # pg_start DIR
    pg_dir_=$1
    pg_find_bin || return $?
    [ "$(id -u)" = 0 ] && chown nobody: "$pg_dir_"
    chmod 0711 "$pg_dir_"
    if ! pg_as_user_ test -x "$pg_dir_"; then
        echo "pg_start: $pg_dir_ is not reachable by the server's user (make its parents searchable, e.g. chmod 0711)" >&2
        return 1
    fi
    PG_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$PG_PASSWORD" >"$pg_dir_/pwfile"
    [ "$(id -u)" = 0 ] && chown nobody: "$pg_dir_/pwfile"
    if ! (cd "$pg_dir_" && pg_as_user_ env HOME="$pg_dir_" "$PG_BIN/initdb" -D "$pg_dir_/data" \
        --username postgres --pwfile "$pg_dir_/pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync) >"$pg_dir_/initdb.log" 2>&1; then
        cat "$pg_dir_/initdb.log" >&2
        return 1
    fi
    rm -f "$pg_dir_/pwfile"
    PG_PORT=$(pg_free_port_)
    PG_SOCKDIR=$pg_dir_
    # pg_ctl -w waits until the server accepts connections (bounded by -t).
    # shellcheck disable=SC2086
    if ! (cd "$pg_dir_" && pg_as_user_ env HOME="$pg_dir_" "$PG_BIN/pg_ctl" -D "$pg_dir_/data" \
        -l "$pg_dir_/postgres.log" -w -t 60 \
        -o "-k $pg_dir_ -p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_permissions=0777 ${PG_SETTINGS:-}" \
        start) >/dev/null; then
        cat "$pg_dir_/postgres.log" >&2
        return 1
    fi
    PG_URL="postgresql://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
    export PG_BIN PG_PORT PG_SOCKDIR PG_PASSWORD PG_URL
}

pg_stop() { # pg_stop DIR
    pg_dir_=$1
    [ -f "$pg_dir_/data/postmaster.pid" ] || return 0
    pg_find_bin || return 0
    (cd "$pg_dir_" && pg_as_user_ "$PG_BIN/pg_ctl" -D "$pg_dir_/data" -m fast -w -t 30 stop) >/dev/null 2>&1 ||
        (cd "$pg_dir_" && pg_as_user_ "$PG_BIN/pg_ctl" -D "$pg_dir_/data" -m immediate -w -t 30 stop) >/dev/null 2>&1 ||
        true
}

pg_psql() { # pg_psql DB SQL
    PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" \
        -U postgres -d "$1" -c "$2"
}
