#!/bin/bash
# Instruction counts per request (valgrind --tool=callgrind), daemon and client
# measured separately: repeatable to about 1 % on a busy machine, where the
# req/s of scripts/bench-daemon.sh are not.
#
#   daemon: saslgated -n 2 (app password, audit level `all`, cache off) under
#           callgrind, counters off during start-up and a warm-up, then on for
#           CG_SECONDS (default 6) of c-tests/bench/closed_loop at concurrency 2
#           (run natively); instructions of all daemon threads ÷ requests answered.
#   noop:   the same with --bench-noop (the serving path alone).
#   client: closed_loop under callgrind (concurrency 1) against a native saslgated.
#
# Prints a markdown table with the totals and the inclusive cost of the parts
# (Gate::decide, the audit flusher, accept/answer), per request.
# Env: CG_SECONDS, CG_KEEP=1 keeps the callgrind.out files (path printed),
# CG_SASLGATED=PATH measures that saslgated binary (an earlier build) instead.
# Needs valgrind. Only UNIX sockets under a temp dir; kills only what it started.
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${CG_SECONDS:-6}
TARGET=${CARGO_TARGET_DIR:-target}
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
    echo "SKIP: callgrind counts need valgrind (apt-get install valgrind)" >&2
    exit 0
fi
cargo build --release --bin saslgate --bin saslgated >&2
BIN=$TARGET/release
GATED=${CG_SASLGATED:-$BIN/saslgated}
TMP=$(mktemp -d /tmp/saslgate-cg.XXXXXX)
cc -O2 -g -Wall -Wextra -Werror -pthread -o "$TMP/closed_loop" c-tests/bench/closed_loop.c
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    if [ "${CG_KEEP:-0}" = 1 ]; then echo "kept: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

CONF=$TMP/saslgate.conf
printf 'db = "%s"\nbcrypt_cost = 4\n' "$TMP/sg.db" >"$CONF"
$BIN/saslgate --config "$CONF" init >/dev/null 2>&1
$BIN/saslgate --config "$CONF" user add bench >/dev/null 2>&1
APP=$($BIN/saslgate --config "$CONF" app-password add bench --label load --services imap 2>/dev/null)

wait_socket() { # wait_socket PATH
    for _ in $(seq 600); do
        if [ -S "$1" ] && [[ $(testsaslauthd -f "$1" -u bench -p "$APP" -s imap 2>/dev/null || true) == 0:* ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "daemon on $1 did not come up" >&2
    return 1
}
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\\1/" <<<"$2"; }
total_ir() { # total Ir in a callgrind output file
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); v = $1} END {print v + 0}'
}
incl() { # incl FILE PATTERN -> inclusive Ir of the first function matching PATTERN
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        grep -E "$2" | awk 'NR == 1' | awk '{gsub(",", "", $1); v = $1} END {print v + 0}'
}

# daemon NAME [flags]: runs the load against a daemon under callgrind.
daemon() {
    local name=$1; shift
    local dir=$TMP/$name out=$TMP/cg.$name
    mkdir -p "$dir"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$GATED" -a saslgate -f -m "$dir" --config "$CONF" -n 2 --fail-delay 0 "$@" \
        2>"$TMP/$name.vg" &
    local pid=$!
    PIDS+=("$pid")
    wait_socket "$dir/mux"
    "$TMP/closed_loop" "$dir/mux" bench "$APP" imap 2 1 >/dev/null # warm-up
    callgrind_control -i on "$pid" >/dev/null
    local res
    res=$("$TMP/closed_loop" "$dir/mux" bench "$APP" imap 2 "$SECS") || { echo "load failed: $res" >&2; return 1; }
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    local n ir
    n=$(field requests "$res")
    ir=$(total_ir "$out")
    echo "$name $n $ir" >&2
    awk -v ir="$ir" -v n="$n" 'BEGIN { printf("%.0f", ir / n) }' >"$TMP/$name.per"
    echo "$n" >"$TMP/$name.n"
}

daemon gated
daemon noop --bench-noop

# The client alone: closed_loop under callgrind against a native daemon.
mkdir -p "$TMP/native"
"$GATED" -a saslgate -f -m "$TMP/native" --config "$CONF" -n 2 --fail-delay 0 2>/dev/null &
PIDS+=("$!")
wait_socket "$TMP/native/mux"
res=$(valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.client" \
    "$TMP/closed_loop" "$TMP/native/mux" bench "$APP" imap 1 "$SECS" 2>/dev/null)
client=$(awk -v ir="$(total_ir "$TMP/cg.client")" -v n="$(field requests "$res")" 'BEGIN { printf("%.0f", ir / n) }')

n=$(cat "$TMP/gated.n")
per() { awk -v ir="${1:-0}" -v n="$n" 'BEGIN { printf("%.0f", ir / n) }'; }
f=$TMP/cg.gated
echo
echo "callgrind, $(date -u '+%Y-%m-%d %H:%M UTC'), $GATED ($(git rev-parse --short HEAD 2>/dev/null || echo '?')); $SECS s at concurrency 2; Ir per request"
echo
echo "| part | Ir per request |"
echo "|---|---|"
echo "| whole daemon (all threads) | $(cat "$TMP/gated.per") |"
echo "| \`Gate::decide\` | $(per "$(incl "$f" 'engine::Gate::decide')") |"
echo "| of which keyed hash (HMAC-SHA256; software SHA-256 under valgrind, SHA-NI natively) | $(per "$(incl "$f" 'sha2::sha256::compress256 \[')") |"
echo "| of which the generation and throttle rows (\`Fresh::generation_and_throttle\`: from memory while the WAL-index header is unchanged, else one statement) | $(per "$(incl "$f" 'generation_and_throttle \[')") |"
echo "| audit flusher (\`Gate::flush\`) | $(per "$(incl "$f" 'Gate>::flush \[')") |"
echo "| the daemon's own work (accept, read, answer, close, log line: the rest) | $(awk -v w="$(cat "$TMP/gated.per")" -v d="$(per "$(incl "$f" 'engine::Gate::decide')")" -v fl="$(per "$(incl "$f" 'Gate>::flush \[')")" 'BEGIN { print w - d - fl }') |"
echo "| malloc + free (all threads) | $(per "$(( $(incl "$f" 'malloc.c:malloc \[') + $(incl "$f" 'malloc.c:free \[') + $(incl "$f" 'malloc.c:realloc \[') ))") |"
echo "| \`--bench-noop\` (serving path only) | $(cat "$TMP/noop.per") |"
echo "| client \`closed_loop\` (C, concurrency 1) | $client |"
