#!/bin/bash
# Benchmark: saslgated's auth_http face (what nginx's mail proxy asks, one
# connection per login) against its own saslauthd socket, same daemon build,
# same database, same app-password login, at concurrency 1, 8 and 32:
#   saslauthd socket   c-tests/bench/closed_loop.c on DIR/mux
#   auth_http tcp      c-tests/bench/closed_loop_http.c on 127.0.0.1:PORT
#   auth_http unix     the same client on a UNIX socket (auth_http unix:...)
# and, for the machine's ceiling, the C no-op server (c-tests/bench/noop_server.c,
# threads blocking in accept, answering OK without deciding) in the same three
# shapes: what connect/accept/close alone cost over TCP and UNIX sockets here.
# Target: auth_http at least 0.8x the saslauthd socket. Rows alternate (each
# once per round, BENCH_ROUNDS rounds, default 3) so other load on the
# machine hits all alike; the tables show medians. Prints markdown tables
# (README "Performance" has the last run).
# Env: BENCH_SECONDS (default 3) per measurement, BENCH_ROUNDS (3).
# No root needed: UNIX sockets under a temp dir, free loopback ports; kills
# only what it started.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin saslgate --bin saslgated >&2
BIN=$TARGET/release
CORES=$(nproc)

TMP=$(mktemp -d /tmp/saslgate-bench-http.XXXXXX)
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/closed_loop" c-tests/bench/closed_loop.c
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/closed_loop_http" c-tests/bench/closed_loop_http.c
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/noop_server" c-tests/bench/noop_server.c
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
NOOP_PORT=$(free_port)
CONF=$TMP/saslgate.conf
cat >"$CONF" <<EOF
db = "$TMP/sg.db"
bcrypt_cost = 10

[http.backends]
imap = "127.0.0.1:10143"
EOF
$BIN/saslgate --config "$CONF" init >/dev/null 2>&1
$BIN/saslgate --config "$CONF" user add bench >/dev/null 2>&1
APP=$($BIN/saslgate --config "$CONF" app-password add bench --label load --services imap 2>/dev/null)

start_gated() { # start_gated DIR HTTP-ADDR: one saslgated, as scripts/bench-daemon.sh runs it
    $BIN/saslgated -a saslgate -f -m "$1" --config "$CONF" -n "$CORES" --fail-delay 0 --http "$2" \
        2>"$1.log" &
    PIDS+=("$!")
    for _ in $(seq 200); do
        grep -q ' ready on ' "$1.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "saslgated did not start: $(cat "$1.log")" >&2
    return 1
}
mkdir -p "$TMP/a" "$TMP/b"
start_gated "$TMP/a" "127.0.0.1:$PORT"
start_gated "$TMP/b" "$TMP/http.sock"
"$TMP/noop_server" "$TMP/noop.sock" 5 & PIDS+=("$!")
# 64 threads: each waits for its client to close first, as saslgated's face does.
"$TMP/noop_server" --http "127.0.0.1:$NOOP_PORT" 64 & PIDS+=("$!")
"$TMP/noop_server" --http "$TMP/noop-http.sock" 64 & PIDS+=("$!")
sleep 0.3
# The saslgated behind each row is idle while the other rows run.
SERVERS=(
    "saslauthd socket|closed_loop|$TMP/a/mux"
    "auth_http tcp|closed_loop_http|127.0.0.1:$PORT"
    "auth_http unix|closed_loop_http|$TMP/http.sock"
    "no-op saslauthd|closed_loop|$TMP/noop.sock"
    "no-op http tcp|closed_loop_http|127.0.0.1:$NOOP_PORT"
    "no-op http unix|closed_loop_http|$TMP/noop-http.sock"
)
# Warm up (first connections to the database, page cache).
"$TMP/closed_loop" "$TMP/a/mux" bench "$APP" imap 2 0.5 >/dev/null
"$TMP/closed_loop_http" "127.0.0.1:$PORT" bench "$APP" imap 2 0.5 >/dev/null
"$TMP/closed_loop_http" "$TMP/http.sock" bench "$APP" imap 2 0.5 >/dev/null

field() { sed -E "s/.*\"$1\":([0-9.]+).*/\\1/" <<<"$2"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
declare -A RPS P50 P99
for c in 1 8 32; do
    for round in $(seq "$ROUNDS"); do
        for s in "${SERVERS[@]}"; do
            IFS='|' read -r name client addr <<<"$s"
            out=$("$TMP/$client" "$addr" bench "$APP" imap "$c" "$SECONDS_PER")
            if [ "$(field errors "$out")" != 0 ]; then
                echo "errors in $name c=$c: $out" >&2
            fi
            RPS[$name,$c]+=" $(field rps "$out")"
            P50[$name,$c]+=" $(field p50_ms "$out")"
            P99[$name,$c]+=" $(field p99_ms "$out")"
            echo "round $round c=$c $name: $out (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        done
    done
done

med() { median <<<"$1"; }
echo
echo "Machine: $CORES cores, $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end $(cut -d' ' -f1-3 /proc/loadavg);"
echo "saslgated -n $CORES --fail-delay 0, app password (fast path), cache off; $SECONDS_PER s per row, $ROUNDS rounds, rows alternating; medians; closed-loop C clients on the same machine."
echo
echo "| face | concurrency | req/s (median) | p50 ms | p99 ms | req/s of each round |"
echo "|---|---|---|---|---|---|"
for c in 1 8 32; do
    for s in "${SERVERS[@]}"; do
        name=${s%%|*}
        echo "| $name | $c | $(med "${RPS[$name,$c]}") | $(med "${P50[$name,$c]}") | $(med "${P99[$name,$c]}") |${RPS[$name,$c]} |"
    done
done
echo
echo "| concurrency | auth_http tcp ÷ saslauthd socket | auth_http unix ÷ saslauthd socket | no-op: http tcp ÷ saslauthd | saslgated ÷ no-op, same shape: saslauthd / http tcp / http unix |"
echo "|---|---|---|---|---|"
for c in 1 8 32; do
    m=$(med "${RPS[saslauthd socket,$c]}"); t=$(med "${RPS[auth_http tcp,$c]}"); u=$(med "${RPS[auth_http unix,$c]}")
    nm=$(med "${RPS[no-op saslauthd,$c]}"); nt=$(med "${RPS[no-op http tcp,$c]}"); nu=$(med "${RPS[no-op http unix,$c]}")
    awk -v c="$c" -v m="$m" -v t="$t" -v u="$u" -v nm="$nm" -v nt="$nt" -v nu="$nu" \
        'BEGIN { printf("| %d | %.2f | %.2f | %.2f | %.2f / %.2f / %.2f |\n", c, t / m, u / m, nt / nm, m / nm, t / nt, u / nu) }'
done
