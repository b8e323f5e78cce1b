#!/bin/sh
# Runs every cargo-fuzz target of fuzz/ briefly (FUZZ_SECONDS each, default 20)
# from the committed seeds; exits non-zero on a crash, a hang or a leak-free OOM.
#
#   scripts/fuzz-brief.sh                      # all targets, 20 s each
#   FUZZ_SECONDS=600 scripts/fuzz-brief.sh decide   # one target, 10 minutes
#
# cargo fuzz needs a nightly compiler (-Z sanitizer=address); these machines
# cannot fetch one, so the stable toolchain is used with RUSTC_BOOTSTRAP=1, which
# unlocks the nightly flags on stable (fine for a test build, never for a
# release). If cargo-fuzz is missing and `cargo install cargo-fuzz` fails, the
# script prints a SKIP line and exits 0.
# Output: one line per target (scripts/lib/check.sh), then "fuzz-brief: N passed,
# N failed".
#
# Crash inputs are kept under $FUZZ_ARTIFACTS (default: a temp dir, printed);
# copy them to fuzz/regressions/TARGET/ so tests/fuzz_corpus.rs replays them.
# Env: CARGO_TARGET_DIR (the fuzz build goes to $CARGO_TARGET_DIR/fuzz, default
# fuzz/target), FUZZ_SECONDS, FUZZ_ARTIFACTS, FUZZ_JOBS_LOG (append a summary line
# per target to this file).
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# ok, bad, skip, summary
. ./scripts/lib/check.sh
SECONDS_EACH=${FUZZ_SECONDS:-20}
ALL="saslauthd_frame plain_message cli_args config_file decide plugin_mech auth_http"
TARGETS=${*:-$ALL}

skip_all() { # cargo-fuzz cannot be had: nothing runs
    skip "fuzz-brief: $*"
    summary fuzz-brief
    exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-brief: cargo-fuzz missing, trying: cargo install cargo-fuzz" >&2
    cargo install cargo-fuzz >&2 || skip_all "cargo-fuzz is not installed and 'cargo install cargo-fuzz' failed"
    cargo fuzz --version >/dev/null 2>&1 || skip_all "cargo-fuzz still not usable after install"
fi

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    FUZZ_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
else
    FUZZ_TARGET_DIR="$ROOT/fuzz/target"
fi
export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN="$FUZZ_TARGET_DIR/$TRIPLE/release"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/saslgate-fuzz.XXXXXX")
ARTIFACTS=${FUZZ_ARTIFACTS:-$WORK/artifacts}
mkdir -p "$ARTIFACTS"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "fuzz-brief: building the fuzz targets (ASan, RUSTC_BOOTSTRAP=1, stable $(rustc --version | cut -d' ' -f2))"
# shellcheck disable=SC2086
RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz $TARGETS >/dev/null 2>"$WORK/build.log" || {
    # cargo fuzz build takes one target or all of them.
    RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz 2>"$WORK/build.log" || {
        tail -30 "$WORK/build.log" >&2
        bad "fuzz-brief: build failed"
        summary fuzz-brief || exit 1
    }
}


# The bundled SQLite is C compiled by the cc crate inside the instrumented build;
# ASan's ODR check reports its static tables (e.g. `aiOff`) as a false
# odr-violation at start-up. Everything else stays on.
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

for t in $TARGETS; do
    if [ ! -x "$BIN/$t" ]; then
        bad "$t: no binary $BIN/$t"
        continue
    fi
    mkdir -p "$WORK/corpus/$t" "$ARTIFACTS/$t"
    log="$WORK/$t.log"
    echo "fuzz-brief: $t for ${SECONDS_EACH}s ..."
    set +e
    "$BIN/$t" "$WORK/corpus/$t" "$ROOT/fuzz/seeds/$t" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t/" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    line="$t: ${SECONDS_EACH}s, ${runs:-?} execs, cov ${cov:-?}, peak RSS ${peak:-?} MB, corpus $(ls "$WORK/corpus/$t" | wc -l), exit $rc"
    [ -n "${FUZZ_JOBS_LOG:-}" ] && echo "$(date -u +%FT%TZ) $line" >>"$FUZZ_JOBS_LOG"
    if [ "$rc" -ne 0 ] || ls "$ARTIFACTS/$t" | grep -q .; then
        grep -E "ERROR|panicked|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
        bad "$line: found a problem; inputs in $ARTIFACTS/$t, log $log"
        echo "fuzz-brief: copy them to fuzz/regressions/$t/ and fix the bug" >&2
        trap - EXIT # keep the logs and inputs
    else
        ok "$line"
    fi
done

summary fuzz-brief
