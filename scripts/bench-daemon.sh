#!/bin/bash
# Benchmark: saslgated against Debian's stock `saslauthd -a sasldb` (with and
# without its cache, -c) and against two ceilings, in the same run with the same
# closed-loop C client (c-tests/bench/closed_loop.c: connect, one write, read,
# close), at concurrency 1, 8 and 32:
#   saslgated            app password, cache off
#   saslgated -c         app password, cache on (against stock -c)
#   saslgated noop       the hidden --bench-noop: answers OK without deciding
#                        (the ceiling of saslgated's serving path)
#   C no-op              c-tests/bench/noop_server.c: 5 threads blocking in
#                        accept, read, answer OK (the machine's ceiling)
#   saslauthd -a sasldb  stock, as Debian runs it (no -d), -n 5
#   saslauthd -c         the same with its credential cache
# Rows alternate (every server once per round, BENCH_ROUNDS rounds, default 3)
# so that other load on the machine hits all alike; the table shows medians.
# Then bcrypt master-password throughput against the physical limit (cores /
# bcrypt time) and RSS. Prints markdown tables (paste them into doc/saslgated.md).
#
# Needs: root (the stock daemon always reads /etc/sasldb2, so it runs under
# `unshare -m` with a private file bind-mounted over it), sasl2-bin.
# Env: BENCH_SECONDS (default 3) per measurement, BENCH_ROUNDS (3), BCRYPT_COST (10),
# BENCH_GATED_N=N runs saslgated with -n N (default: its own default),
# BENCH_BEFORE=PATH a saslgated binary of an earlier build: adds its row
# ("saslgated (before)", same database, cache off) to the alternation.
# Only UNIX sockets under a temp dir; kills only what it started.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
COST=${BCRYPT_COST:-10}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin saslgate --bin saslgated >&2
BIN=$TARGET/release
CORES=$(nproc)
GATED_N=${BENCH_GATED_N:-}
if [ -n "$GATED_N" ]; then GATED_LABEL="saslgated -n $GATED_N"; else GATED_LABEL="saslgated (default: 4 acceptors per core)"; fi

STOCK=yes
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: stock saslauthd comparison needs root (unshare -m + bind mount over /etc/sasldb2)" >&2
    STOCK=no
elif ! command -v saslauthd >/dev/null || ! command -v saslpasswd2 >/dev/null; then
    echo "SKIP: stock saslauthd comparison: install sasl2-bin" >&2
    STOCK=no
elif [ ! -e /etc/sasldb2 ]; then
    echo "SKIP: stock saslauthd comparison: /etc/sasldb2 (the bind-mount target) does not exist" >&2
    STOCK=no
fi

TMP=$(mktemp -d /tmp/saslgate-bench.XXXXXX)
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/closed_loop" c-tests/bench/closed_loop.c
cc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/noop_server" c-tests/bench/noop_server.c
CLIENT=$TMP/closed_loop
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    rm -rf "$TMP"
}
trap cleanup EXIT

# --- test data -------------------------------------------------------------
CONF=$TMP/saslgate.conf
cat >"$CONF" <<EOF
db = "$TMP/sg.db"
bcrypt_cost = $COST
EOF
$BIN/saslgate --config "$CONF" init >/dev/null 2>&1
$BIN/saslgate --config "$CONF" user add bench >/dev/null 2>&1
printf '%s' 'bench master pw' | $BIN/saslgate --config "$CONF" passwd bench --stdin >/dev/null 2>&1
APP=$($BIN/saslgate --config "$CONF" app-password add bench --label load --services imap 2>/dev/null)

rss_kb() { # sum of VmRSS of a pid and its children
    local total=0 p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo $total
}

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
    cat "$(dirname "$1").log" >&2 2>/dev/null || true
    return 1
}

# --- servers --------------------------------------------------------------------
start_stock() { # start_stock DIR [flags] -> pid in STOCK_PID
    local dir=$1; shift
    mkdir -p "$dir"
    # As Debian runs it: no -d. Under -d the stock daemon writes a debug line per
    # request and loses ~30% of its throughput, which would flatter saslgated.
    # Without -d it detaches; its pid file says which process is the master.
    setsid unshare -m sh -c "mount --bind '$TMP/sasldb2' /etc/sasldb2 && exec saslauthd -a sasldb -m '$dir' -n 5 $*" \
        >"$dir.log" 2>&1
    wait_socket "$dir/mux"
    STOCK_PID=$(cat "$dir/saslauthd.pid")
    PIDS+=("$STOCK_PID")
}
start_gated() { # start_gated DIR [flags] -> pid in GATED_PID
    local dir=$1; shift
    # As a new user runs it: the default acceptor count unless BENCH_GATED_N is set.
    ${GATED_BIN:-$BIN/saslgated} -a saslgate -f -m "$dir" --config "$CONF" ${GATED_N:+-n "$GATED_N"} --fail-delay 0 "$@" 2>/dev/null &
    GATED_PID=$!
    PIDS+=("$GATED_PID")
    wait_socket "$dir/mux"
}

# NAME|SOCKET|USER|PASS|PID for each server, in the order the rows alternate.
SERVERS=()
if [ $STOCK = yes ]; then
    printf '%s' 'plain pw' | saslpasswd2 -p -f "$TMP/sasldb2" -c bench
    start_stock "$TMP/stock"; SERVERS+=("saslauthd -a sasldb|$TMP/stock/mux|bench|plain pw|$STOCK_PID")
    start_stock "$TMP/stock-c" -c; SERVERS+=("saslauthd -a sasldb -c|$TMP/stock-c/mux|bench|plain pw|$STOCK_PID")
fi
start_gated "$TMP/gated"; SERVERS+=("saslgated|$TMP/gated/mux|bench|$APP|$GATED_PID"); GATED_MAIN=$GATED_PID
start_gated "$TMP/gated-c" -c -t 600; SERVERS+=("saslgated -c|$TMP/gated-c/mux|bench|$APP|$GATED_PID")
if [ -n "${BENCH_BEFORE:-}" ]; then
    GATED_BIN=$BENCH_BEFORE start_gated "$TMP/gated-before"; SERVERS+=("saslgated (before)|$TMP/gated-before/mux|bench|$APP|$GATED_PID")
fi
start_gated "$TMP/gated-noop" --bench-noop; SERVERS+=("saslgated --bench-noop|$TMP/gated-noop/mux|bench|x|$GATED_PID")
"$TMP/noop_server" "$TMP/cnoop.sock" 5 &
PIDS+=("$!"); SERVERS+=("C no-op (5 threads, blocking accept)|$TMP/cnoop.sock|bench|x|$!")
for _ in $(seq 100); do [ -S "$TMP/cnoop.sock" ] && break; sleep 0.05; done
sleep 0.5

RSS=()
if [ $STOCK = yes ]; then
    RSS+=("| saslauthd -a sasldb -n 5 (all processes) | idle | $(( $(rss_kb "$(cut -d'|' -f5 <<<"${SERVERS[0]}")") / 1024 )) MiB |")
fi
RSS+=("| $GATED_LABEL | idle | $(( $(rss_kb $GATED_MAIN) / 1024 )) MiB |")

cpu_ticks() { # user+system clock ticks of a pid and its children (all threads)
    local total=0 p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        total=$((total + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)))
    done
    echo $total
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# load SOCKET USER PASS C -> JSON line with "cpu_us" added (the server's CPU
# time per request: user + system, all its threads and processes; much less
# moved by other load on the machine than req/s); samples RSS of PID into $TMP/peak
load() {
    local sock=$1 user=$2 pass=$3 c=$4 pid=$5
    local t0
    t0=$(cpu_ticks "$pid")
    "$CLIENT" "$sock" "$user" "$pass" imap "$c" "$SECONDS_PER" >"$TMP/out" &
    local lp=$! m=0 r
    while kill -0 $lp 2>/dev/null; do r=$(rss_kb "$pid"); [ "$r" -gt "$m" ] && m=$r; sleep 0.5; done
    echo "$m" >"$TMP/peak"
    wait $lp || { echo "load run failed: $sock c=$c" >&2; return 1; }
    local ticks=$(( $(cpu_ticks "$pid") - t0 ))
    sed -E "s/\}\$//" "$TMP/out" | tr -d '\n'
    awk -v t="$ticks" -v us="$TICK_US" -v n="$(field requests "$(cat "$TMP/out")")" \
        'BEGIN { printf(",\"cpu_us\":%.2f}\n", n > 0 ? t * us / n : 0) }'
}
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\\1/" <<<"$2"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RPS P50 P99 CPU PEAKS
for c in 1 8 32; do
    for round in $(seq "$ROUNDS"); do
        for s in "${SERVERS[@]}"; do
            IFS='|' read -r name sock user pass pid <<<"$s"
            out=$(load "$sock" "$user" "$pass" "$c" "$pid")
            RPS[$name,$c]+=" $(field rps "$out")"
            P50[$name,$c]+=" $(field p50_ms "$out")"
            P99[$name,$c]+=" $(field p99_ms "$out")"
            CPU[$name,$c]+=" $(field cpu_us "$out")"
            if [ "$c" = 32 ]; then
                PEAKS[$name]=$(( $(cat "$TMP/peak") > ${PEAKS[$name]:-0} ? $(cat "$TMP/peak") : ${PEAKS[$name]:-0} ))
            fi
            echo "round $round c=$c $name: $out (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        done
    done
done
if [ $STOCK = yes ]; then
    RSS+=("| saslauthd -a sasldb -n 5 (all processes) | under load (peak, c=32) | $(( ${PEAKS[saslauthd -a sasldb]} / 1024 )) MiB |")
fi
RSS+=("| $GATED_LABEL | under load (peak, c=32) | $(( ${PEAKS[saslgated]} / 1024 )) MiB |")

BC=()
for c in 1 $CORES 8; do
    out=$("$CLIENT" "$TMP/gated/mux" bench 'bench master pw' imap "$c" "$SECONDS_PER")
    BC+=("| saslgated | master (bcrypt $COST) | $c | $(field rps "$out") | $(field p50_ms "$out") | $(field p99_ms "$out") |")
    if [ "$c" = 1 ]; then BC1=$(field p50_ms "$out"); fi
    if [ "$c" = 8 ]; then BCN=$(field rps "$out"); fi
done

# --- report -------------------------------------------------------------------
med() { median <<<"$1"; }
echo
echo "Machine: $CORES cores, $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg);"
echo "$SECONDS_PER s per row, $ROUNDS rounds, rows alternating; medians; closed-loop C client on the same machine."
echo
echo "| server | concurrency | req/s (median) | p50 ms | p99 ms | server CPU µs per request (median) | req/s of each round |"
echo "|---|---|---|---|---|---|---|"
for c in 1 8 32; do
    for s in "${SERVERS[@]}"; do
        name=${s%%|*}
        echo "| $name | $c | $(med "${RPS[$name,$c]}") | $(med "${P50[$name,$c]}") | $(med "${P99[$name,$c]}") | $(med "${CPU[$name,$c]}") |${RPS[$name,$c]} |"
    done
done
echo
echo "| concurrency | saslgated ÷ C no-op | saslgated ÷ stock | saslgated -c ÷ stock -c | saslgated --bench-noop ÷ C no-op | p99 saslgated / stock (ms) | p99 saslgated -c / stock -c (ms) |"
echo "|---|---|---|---|---|---|---|"
for c in 1 8 32; do
    g=$(med "${RPS[saslgated,$c]}"); gc=$(med "${RPS[saslgated -c,$c]}"); gn=$(med "${RPS[saslgated --bench-noop,$c]}")
    cn=$(med "${RPS[C no-op (5 threads, blocking accept),$c]}")
    s=$(med "${RPS[saslauthd -a sasldb,$c]:-0}"); sc=$(med "${RPS[saslauthd -a sasldb -c,$c]:-0}")
    gp=$(med "${P99[saslgated,$c]}"); sp=$(med "${P99[saslauthd -a sasldb,$c]:-0}")
    gcp=$(med "${P99[saslgated -c,$c]}"); scp=$(med "${P99[saslauthd -a sasldb -c,$c]:-0}")
    awk -v c="$c" -v g="$g" -v gc="$gc" -v gn="$gn" -v cn="$cn" -v s="$s" -v sc="$sc" -v gp="$gp" -v sp="$sp" -v gcp="$gcp" -v scp="$scp" 'BEGIN {
        printf("| %d | %.2f | %s | %s | %.2f | %s / %s | %s / %s |\n", c, g / cn, (s > 0 ? sprintf("%.2f", g / s) : "-"),
               (sc > 0 ? sprintf("%.2f", gc / sc) : "-"), gn / cn, gp, (sp > 0 ? sp : "-"), gcp, (scp > 0 ? scp : "-")) }'
done
echo
echo "| daemon | credential | concurrency | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${BC[@]}"
if [ -n "${BC1:-}" ]; then
    awk -v t="$BC1" -v n="$BCN" -v c="$CORES" 'BEGIN {
        lim = c * 1000 / t;
        printf("\nbcrypt cost '"$COST"': one verification ~%.1f ms (p50 at concurrency 1), physical limit %d cores / %.1f ms = %.0f req/s; saslgated at concurrency 8: %s req/s (%.0f%% of the limit)\n", t, c, t, lim, n, 100 * n / lim) }'
fi
echo
echo "| daemon | state | RSS |"
echo "|---|---|---|"
printf '%s\n' "${RSS[@]}"
