#!/usr/bin/env bash
# The README's test command: runs every test CI runs.
#
#   scripts/test-all.sh
#
# Suites, in order (each one prints its own results; a suite that cannot run here,
# e.g. without root, prints a loud SKIP line instead of passing silently):
#   fmt       cargo fmt --check
#   layout    no src file over 650 lines, no import cycle   (scripts/check-layout.py)
#   doc-refs  every test name and file path in backticks in the docs exists
#             (scripts/check-doc-refs.py)
#   clippy    cargo clippy --workspace --all-targets -- -D warnings (the [lints] of Cargo.toml)
#   doc       cargo doc --no-deps with warnings denied
#   cargo     cargo test --release: unit tests, core (library + CLI) on SQLite and on a
#             private PostgreSQL, saslgated with the real testsaslauthd and libsasl2,
#             the auth_http face, the C ABI from Rust
#   web       saslgate-web in real chromium (WebDriver): app password made on the
#             page logs in through testsaslauthd and libsasl2, TOTP with oathtool
#             (tests/web/run.sh)
#   c-tests   the plugin in the real libsasl2 next to the stock plugins, the C ABI,
#             fork/threads, once under valgrind                (c-tests/run.sh)
#   e2e       real Postfix and real Cyrus IMAP (root)          (tests/e2e/run.sh)
#   e2e-nginx real nginx mail proxy (auth_http face) in front of real Cyrus
#             IMAP/POP3 and Postfix (XCLIENT) (root)          (tests/e2e/nginx.sh)
#   deb       build, lintian, install, use, remove, purge the Debian packages (root)
#   valgrind  the plugin's C entry points (fake libsasl2 caller) and the C ABI
#             under valgrind                                   (scripts/valgrind-ffi.sh)
#   fuzz, soak, faults  every fuzz target briefly, 100,000 requests through
#             saslgated, storage faults under load (scripts/fuzz-brief.sh,
#             scripts/soak.sh, scripts/faults.sh; doc/hardening.md)
# Environment: CARGO_TARGET_DIR is honoured; ONLY="cargo c-tests" runs a subset.
# A suite that prints a line starting with "SKIP" (it could not run all of its
# checks here, e.g. without root) is counted as skipped, not passed; with
# CI=true a skip fails the run, since CI runs as root with every package.
# The last line is "test-all: N passed, N failed, N skipped" (suites); exit 1 if
# any failed (or, with CI=true, skipped).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=""
SKIPPED_NAMES=""
START=$(date +%s)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

suite() { # suite NAME command...
    local name=$1; shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    local t0=$(date +%s)
    echo
    echo "=================== $name: $* ==================="
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    local took=$(( $(date +%s) - t0 ))
    if [ "$rc" != 0 ]; then
        FAILED=$((FAILED + 1))
        FAILED_NAMES="$FAILED_NAMES $name"
        echo "=================== $name: FAILED ($took s) ==================="
    elif grep -q '^SKIP' "$OUT/$name.log"; then
        SKIPPED=$((SKIPPED + 1))
        SKIPPED_NAMES="$SKIPPED_NAMES $name"
        echo "=================== $name: SKIPPED (in whole or in part; $took s) ==================="
    else
        PASSED=$((PASSED + 1))
        echo "=================== $name: passed ($took s) ==================="
    fi
}

optional() { # optional SCRIPT args...: a suite script that may not exist yet
    if [ -x "$1" ]; then "$@"; else echo "SKIP - *** $1 is not in this tree ***"; fi
}

suite fmt cargo fmt --all -- --check
suite layout python3 scripts/check-layout.py
suite doc-refs python3 scripts/check-doc-refs.py
suite clippy cargo clippy --release --workspace --all-targets -- -D warnings
suite doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release
suite cargo cargo test --release --workspace
suite c-tests c-tests/run.sh
suite web tests/web/run.sh
suite e2e tests/e2e/run.sh
suite e2e-nginx tests/e2e/nginx.sh
suite deb tests/deb/run.sh
suite valgrind optional scripts/valgrind-ffi.sh
suite fuzz optional scripts/fuzz-brief.sh
suite soak optional scripts/soak.sh
suite faults optional scripts/faults.sh

echo
echo "total time: $(( $(date +%s) - START )) s${FAILED_NAMES:+; failed:$FAILED_NAMES}${SKIPPED_NAMES:+; skipped:$SKIPPED_NAMES}"
if [ "${CI:-}" = true ] && [ "$SKIPPED" != 0 ]; then
    echo "CI=true: a suite CI is meant to run was skipped:$SKIPPED_NAMES"
    FAILED=$((FAILED + SKIPPED))
fi
echo "test-all: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]
