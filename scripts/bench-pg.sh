#!/bin/bash
# Benchmark: saslgate on PostgreSQL, against the stock alternatives on the same
# PostgreSQL server (a private cluster, scripts/lib/pg.sh), in one run:
#
#  (a) in-process PLAIN through the real libsasl2 (c-tests/bench/plain_sql.c):
#      saslgate's plugin with an app password, database on PostgreSQL, against
#      libsasl2's own `sql` auxprop (Debian libsasl2-modules-sql, sql_engine
#      pgsql, a plaintext password column); target >= 100x logins/s.
#  (b) saslgated on PostgreSQL against stock `saslauthd -a sasldb` at
#      concurrency 8 (closed-loop C client, c-tests/bench/closed_loop.c), p99
#      included, and `pgbench -S -M prepared` at 8 clients in the same rounds;
#      target >= 1.0x stock, or >= 60 % of pgbench -S.
#  (c) saslgated on PostgreSQL against saslgated on SQLite (same account and
#      app password: the SQLite database is copied into PostgreSQL with
#      `saslgate copy`) at concurrency 1, 8 and 32 (BENCH_CONCURRENCY), with
#      the broadcast (issue 28) and without it (SASLGATE_PG_BROADCAST=off:
#      a read per login, the behaviour before); target >= 0.7x SQLite.
#  (d) the plugin in-process on PostgreSQL against the plugin on SQLite
#      (the same PLAIN loop as (a)), with and without the broadcast;
#      target >= 0.5x.
#  (e) revoke-to-refusal across two processes (tests/pg_notify.rs
#      `revoke_to_refusal_across_two_processes`, with and without the
#      broadcast) and the failover figures (tests/pg_failover.rs), printed
#      as those tests print them (cargo; BENCH_TESTS=0 skips them).
#
# Rows alternate (every server once per round, BENCH_ROUNDS rounds) so that
# other load on the machine hits all alike; the tables show medians. Prints
# markdown (paste it into README.md, "PostgreSQL" under Performance).
#
# saslgate connects as the login role made by `saslgate init --login-role`
# (password in a db_password_file), the CLI as the cluster's superuser; the
# stock sql auxprop as its own role. All TCP on 127.0.0.1 with
# scram-sha-256, as a remote database would be reached.
#
# Needs: root for the stock saslauthd row (it always reads /etc/sasldb2: it runs
# under `unshare -m` with a private file bind-mounted over it), sasl2-bin,
# postgresql, libsasl2-modules-sql, libsasl2-dev, cc. Rows that cannot run say
# SKIP. Env: BENCH_SECONDS (3) per measurement, BENCH_ROUNDS (3), SKIP_BUILD=1.
# Only loopback and sockets under a temp dir; kills only what it started.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib/pg.sh
SECONDS_PER=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
CORES=$(nproc)
SASL_SYS=${SASL_PLUGIN_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/sasl2}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --lib --bin saslgate --bin saslgated >&2
CONCURRENCY=${BENCH_CONCURRENCY:-1 8 32}

TMP=$(mktemp -d /tmp/saslgate-benchpg.XXXXXX)
chmod 0711 "$TMP" # the cluster runs as nobody under it
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    pg_stop "$TMP/pg"
    rm -rf "$TMP"
}
trap cleanup EXIT

mkdir "$TMP/pg"
if ! pg_start "$TMP/pg"; then
    echo "SKIP: bench-pg: no PostgreSQL cluster (see above)"
    exit 0
fi
PGBENCH=$PG_BIN/pgbench
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, data in $TMP/pg" >&2

# --- saslgate: SQLite database, then copied into PostgreSQL -----------------
SQ_CONF=$TMP/sqlite.conf
printf 'db = "%s"\nbcrypt_cost = 10\n' "$TMP/sg.db" >"$SQ_CONF"
SG="$BIN/saslgate --config $SQ_CONF"
$SG init 2>/dev/null
$SG user add bench 2>/dev/null
printf '%s' 'bench master pw' | $SG passwd bench --stdin 2>/dev/null
APP=$($SG app-password add bench --label load --services imap 2>/dev/null)

pg_psql postgres "CREATE DATABASE saslgate" >/dev/null
pg_psql postgres "CREATE ROLE saslgate_login LOGIN PASSWORD 'login-pw'" >/dev/null
umask 077
printf '%s\n' "$PG_PASSWORD" >"$TMP/admin.pw"
printf '%s\n' 'login-pw' >"$TMP/login.pw"
umask 022
ADMIN_CONF=$TMP/pg-admin.conf
LOGIN_CONF=$TMP/pg-login.conf
printf 'db = "postgresql://postgres@127.0.0.1:%s/saslgate"\ndb_password_file = "%s"\nbcrypt_cost = 10\n' \
    "$PG_PORT" "$TMP/admin.pw" >"$ADMIN_CONF"
printf 'db = "postgresql://saslgate_login@127.0.0.1:%s/saslgate"\ndb_password_file = "%s"\nbcrypt_cost = 10\n' \
    "$PG_PORT" "$TMP/login.pw" >"$LOGIN_CONF"
# Read by saslgated (root here) and by the plugin in this process.
chmod 0644 "$LOGIN_CONF" "$ADMIN_CONF"

PG_GATE=yes
if ! out=$($BIN/saslgate --config "$ADMIN_CONF" init --login-role saslgate_login 2>&1); then
    echo "SKIP: saslgate on PostgreSQL rows: $out"
    PG_GATE=no
elif ! out=$($BIN/saslgate --config "$ADMIN_CONF" --db "$TMP/sg.db" copy \
    --to "postgresql://postgres@127.0.0.1:$PG_PORT/saslgate" 2>&1); then
    echo "SKIP: saslgate on PostgreSQL rows: copy failed: $out"
    PG_GATE=no
fi

# --- (a) in-process PLAIN: saslgate plugin vs the sql auxprop -----------------
pg_psql postgres "CREATE ROLE sasl_sql LOGIN PASSWORD 'sql-pw'" >/dev/null
pg_psql postgres "CREATE DATABASE mailusers OWNER sasl_sql" >/dev/null
pg_psql mailusers "CREATE TABLE users (username text PRIMARY KEY, password text NOT NULL);
    INSERT INTO users VALUES ('dave', 'dave pw'); GRANT SELECT ON users TO sasl_sql" >/dev/null

PLAIN_ROWS=()
if [ ! -e "$SASL_SYS/libsql.so" ] || [ ! -e /usr/include/sasl/sasl.h ]; then
    echo "SKIP: (a) in-process PLAIN: needs libsasl2-modules-sql and libsasl2-dev"
else
    mkdir "$TMP/plugins"
    cp "$BIN/libsaslgate.so" "$TMP/plugins/"
    for p in libplain.so libsql.so; do ln -s "$SASL_SYS/$p" "$TMP/plugins/$p"; done
    cc -O2 -Wall -Wextra -Werror -o "$TMP/plain_sql" c-tests/bench/plain_sql.c -lsasl2
    sg_conf=""
    [ $PG_GATE = yes ] && sg_conf=$LOGIN_CONF
    PLUGDIR=$TMP/plugins SQL_HOSTNAMES=127.0.0.1:$PG_PORT SQL_USER=sasl_sql SQL_PASSWD=sql-pw \
        SQL_DATABASE=mailusers SQL_SELECT="SELECT password FROM users WHERE username = '%u'" \
        STOCK_USER=dave STOCK_PW='dave pw' SG_CONF=$sg_conf SG_USER=bench SG_PW=$APP \
        "$TMP/plain_sql" "$SECONDS_PER" "$ROUNDS" >"$TMP/plain.out"
    # (d): the plugin on SQLite, and on PostgreSQL without the broadcast.
    for variant in sqlite nobroadcast; do
        conf=$LOGIN_CONF
        env_off=()
        [ $variant = sqlite ] && conf=$SQ_CONF
        [ $variant = nobroadcast ] && env_off=(SASLGATE_PG_BROADCAST=off)
        [ $variant = nobroadcast ] && [ $PG_GATE != yes ] && continue
        env "${env_off[@]}" PLUGDIR=$TMP/plugins SQL_HOSTNAMES=127.0.0.1:$PG_PORT SQL_USER=sasl_sql \
            SQL_PASSWD=sql-pw SQL_DATABASE=mailusers \
            SQL_SELECT="SELECT password FROM users WHERE username = '%u'" \
            STOCK_USER=dave STOCK_PW='dave pw' SG_CONF=$conf SG_USER=bench SG_PW=$APP \
            "$TMP/plain_sql" "$SECONDS_PER" "$ROUNDS" | sed -n "s/^saslgate /saslgate_$variant /p" >>"$TMP/plain.out"
    done
    while read -r name n secs fails; do
        rate=$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')
        us=$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.1f", s * 1e6 / n}')
        case $name in
        saslgate) label="saslgate plugin, app password, PostgreSQL (broadcast)" ;;
        saslgate_nobroadcast) label="saslgate plugin, app password, PostgreSQL (SASLGATE_PG_BROADCAST=off: a read per login)" ;;
        saslgate_sqlite) label="saslgate plugin, app password, SQLite" ;;
        *) label="libsasl2 sql auxprop (pgsql, plaintext column)" ;;
        esac
        PLAIN_ROWS+=("| $label | $n | $rate | $us | $fails |")
        eval "PLAIN_RATE_$name=$rate"
    done <"$TMP/plain.out"
fi

# --- (b), (c) daemons ------------------------------------------------------------
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/closed_loop" c-tests/bench/closed_loop.c

wait_socket() { # wait_socket PATH
    for _ in $(seq 200); do
        if [ -S "$1" ]; then
            local said
            said=$(testsaslauthd -f "$1" -u x -p y 2>/dev/null || true)
            [[ $said == 0:* ]] && return 0
        fi
        sleep 0.05
    done
    echo "daemon on $1 did not come up" >&2
    return 1
}
start_gated() { # start_gated DIR CONF WORKERS [ENV=VALUE...]
    env "${@:4}" $BIN/saslgated -a saslgate -f -m "$1" --config "$2" -n "$3" --fail-delay 0 2>"$1.log" &
    PIDS+=("$!")
    wait_socket "$1/mux"
}

C=8
PG_WORKERS=${BENCH_PG_WORKERS:-$(printf '%s\n' "$CORES" "$C" | sort -un | tr '\n' ' ')}
SERVERS=() # NAME|SOCKET|USER|PASS
STOCK=yes
if [ "$(id -u)" != 0 ] || ! command -v saslauthd >/dev/null || [ ! -e /etc/sasldb2 ]; then
    echo "SKIP: stock saslauthd row: needs root, sasl2-bin and an /etc/sasldb2 to bind-mount over"
    STOCK=no
else
    printf '%s' 'plain pw' | saslpasswd2 -p -f "$TMP/sasldb2" -c bench
    mkdir "$TMP/stock"
    setsid unshare -m sh -c "mount --bind '$TMP/sasldb2' /etc/sasldb2 && exec saslauthd -a sasldb -m '$TMP/stock' -n 5" \
        >"$TMP/stock.log" 2>&1
    wait_socket "$TMP/stock/mux"
    PIDS+=("$(cat "$TMP/stock/saslauthd.pid")")
    SERVERS+=("saslauthd -a sasldb|$TMP/stock/mux|bench|plain pw")
fi
mkdir "$TMP/gated-sqlite"
start_gated "$TMP/gated-sqlite" "$SQ_CONF" "$CORES"
SERVERS+=("saslgated -n $CORES, SQLite|$TMP/gated-sqlite/mux|bench|$APP")
if [ $PG_GATE = yes ]; then
    # A worker waits on the network for PostgreSQL (one connection each), so
    # besides one per core: as many as concurrent clients (pgbench has one
    # connection per client).
    for n in $PG_WORKERS; do
        mkdir "$TMP/gated-pg-$n"
        start_gated "$TMP/gated-pg-$n" "$LOGIN_CONF" "$n"
        SERVERS+=("saslgated -n $n, PostgreSQL|$TMP/gated-pg-$n/mux|bench|$APP")
    done
    # Before the broadcast: the generation and throttle read on every login.
    n=$(echo $PG_WORKERS | awk '{print $NF}')
    mkdir "$TMP/gated-pg-off"
    start_gated "$TMP/gated-pg-off" "$LOGIN_CONF" "$n" SASLGATE_PG_BROADCAST=off
    SERVERS+=("saslgated -n $n, PostgreSQL, broadcast off|$TMP/gated-pg-off/mux|bench|$APP")
fi

PGB=yes
if ! "$PGBENCH" -i -s 1 -q -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres postgres >"$TMP/pgbench-init.log" 2>&1; then
    echo "SKIP: pgbench row: pgbench -i failed"
    PGB=no
fi

field() { sed -E "s/.*\"$1\":([0-9.]+).*/\\1/" <<<"$2"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
declare -A RPS P50 P99 RPSC
for round in $(seq "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        IFS='|' read -r name sock user pass <<<"$s"
        out=$("$TMP/closed_loop" "$sock" "$user" "$pass" imap "$C" "$SECONDS_PER")
        [ "$(field errors "$out")" = 0 ] || echo "WARNING: $name: errors in $out" >&2
        RPS[$name]+=" $(field rps "$out")"
        P50[$name]+=" $(field p50_ms "$out")"
        P99[$name]+=" $(field p99_ms "$out")"
        echo "round $round $name: $out" >&2
        # (c): SQLite and PostgreSQL (with and without the broadcast) at
        # each concurrency.
        case $name in *SQLite* | *PostgreSQL*) ;; *) continue ;; esac
        at_c=$out
        for c in $CONCURRENCY; do
            [ "$c" = "$C" ] && { RPSC["$name@$c"]+=" $(field rps "$at_c")"; continue; }
            out=$("$TMP/closed_loop" "$sock" "$user" "$pass" imap "$c" "$SECONDS_PER")
            [ "$(field errors "$out")" = 0 ] || echo "WARNING: $name c$c: errors in $out" >&2
            RPSC["$name@$c"]+=" $(field rps "$out")"
            echo "round $round $name c$c: $out" >&2
        done
    done
    if [ $PGB = yes ]; then
        # Over TCP with the password, as saslgated reaches the server.
        tps=$(PGPASSWORD=$PG_PASSWORD "$PGBENCH" -S -M prepared -c "$C" -j "$CORES" \
            -T "$SECONDS_PER" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres 2>/dev/null |
            awk '/^tps = / {print int($3)}' | tail -n 1)
        RPS[pgbench]+=" $tps"
        echo "round $round pgbench -S -M prepared -c $C: $tps tps" >&2
    fi
done
med() { median <<<"$1"; }

# --- report ------------------------------------------------------------------
echo
echo "Machine: $CORES cores, $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), same machine, default settings, TCP 127.0.0.1, scram-sha-256; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
echo "$SECONDS_PER s per row, $ROUNDS rounds, rows alternating."
echo
if [ ${#PLAIN_ROWS[@]} -gt 0 ]; then
    echo "(a) In-process PLAIN through the real libsasl2, one whole SASL connection per login:"
    echo
    echo "| path | logins | logins/s | µs/login | failures |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${PLAIN_ROWS[@]}"
    if [ -n "${PLAIN_RATE_saslgate:-}" ]; then
        awk -v g="$PLAIN_RATE_saslgate" -v s="$PLAIN_RATE_sql" 'BEGIN {
            printf("\nsaslgate ÷ sql auxprop: %.0f× (target ≥ 100×)\n", g / s) }'
    fi
    echo
fi
echo "(b), (c) Daemons at concurrency $C (closed-loop C client, one request per connection), medians:"
echo
echo "| server | req/s | p50 ms | p99 ms | req/s of each round |"
echo "|---|---|---|---|---|"
for s in "${SERVERS[@]}"; do
    name=${s%%|*}
    echo "| $name | $(med "${RPS[$name]}") | $(med "${P50[$name]}") | $(med "${P99[$name]}") |${RPS[$name]} |"
done
if [ $PGB = yes ]; then
    echo "| pgbench -S -M prepared -c $C (transactions/s) | $(med "${RPS[pgbench]}") | - | - |${RPS[pgbench]} |"
fi
if [ $PG_GATE = yes ]; then
    echo
    for n in $PG_WORKERS; do
        g=$(med "${RPS[saslgated -n $n, PostgreSQL]}")
        if [ $STOCK = yes ]; then
            awk -v n="$n" -v g="$g" -v s="$(med "${RPS[saslauthd -a sasldb]}")" 'BEGIN {
                printf("- saslgated -n %s on PostgreSQL ÷ saslauthd -a sasldb: %.2f× (target ≥ 1.0×)\n", n, g / s) }'
        fi
        if [ $PGB = yes ]; then
            awk -v n="$n" -v g="$g" -v p="$(med "${RPS[pgbench]}")" 'BEGIN {
                printf("- saslgated -n %s on PostgreSQL ÷ pgbench -S: %.0f%% (target ≥ 60%% if below stock)\n", n, 100 * g / p) }'
        fi
        awk -v n="$n" -v g="$g" -v q="$(med "${RPS[saslgated -n $CORES, SQLite]}")" 'BEGIN {
            printf("- saslgated -n %s on PostgreSQL ÷ saslgated on SQLite: %.2f×\n", n, g / q) }'
    done
fi

if [ $PG_GATE = yes ]; then
    echo
    echo "(c) saslgated req/s by concurrency (medians), and PostgreSQL ÷ SQLite (target ≥ 0.7×):"
    echo
    echo "| server | $(for c in $CONCURRENCY; do printf 'c%s | ' "$c"; done)"
    echo "|---|$(for c in $CONCURRENCY; do printf -- '---|'; done)"
    for s in "${SERVERS[@]}"; do
        name=${s%%|*}
        case $name in *SQLite* | *PostgreSQL*) ;; *) continue ;; esac
        printf '| %s |' "$name"
        for c in $CONCURRENCY; do printf ' %s |' "$(med "${RPSC[$name@$c]}")"; done
        echo
    done
    echo
    for s in "${SERVERS[@]}"; do
        name=${s%%|*}
        case $name in *PostgreSQL*) ;; *) continue ;; esac
        for c in $CONCURRENCY; do
            awk -v name="$name" -v c="$c" -v g="$(med "${RPSC[$name@$c]}")" \
                -v q="$(med "${RPSC[saslgated -n $CORES, SQLite@$c]}")" 'BEGIN {
                printf("- %s ÷ SQLite at c%s: %.2f×\n", name, c, g / q) }'
        done
    done
fi
if [ -n "${PLAIN_RATE_saslgate_sqlite:-}" ] && [ -n "${PLAIN_RATE_saslgate:-}" ]; then
    echo
    awk -v g="$PLAIN_RATE_saslgate" -v q="$PLAIN_RATE_saslgate_sqlite" -v o="${PLAIN_RATE_saslgate_nobroadcast:-0}" 'BEGIN {
        printf("(d) plugin in-process, PostgreSQL ÷ SQLite: %.2f× with the broadcast (target ≥ 0.5×), %.2f× without\n", g / q, o / q) }'
fi
if [ "${BENCH_TESTS:-1}" = 1 ]; then
    echo
    echo "(e) Revoke-to-refusal (two processes) and failover, from the tests:"
    echo
    for off in "" off; do
        line=$(SASLGATE_PG_BROADCAST=$off BENCH_REVOKES=${BENCH_REVOKES:-100} cargo test -q --release \
            --test pg_notify revoke_to_refusal -- --ignored --nocapture 2>/dev/null | grep '^revoke-to-refusal' || true)
        echo "- ${off:+broadcast off: }${line:-revoke-to-refusal: did not run}"
    done
    failover=$(cargo test -q --release --test pg_failover -- --nocapture 2>&1 || true)
    grep -E '^failover \(' <<<"$failover" | grep -v 'REPLAY accepted' | sed 's/^/- /' ||
        echo "- failover: did not run"
fi
exit 0
