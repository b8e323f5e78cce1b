#!/bin/sh
# Storage faults while load runs against saslgated (tests/faults.rs): database
# deleted, replaced by garbage, unreadable, locked by a long writer, full
# filesystem (root: tmpfs in a private mount namespace), kill -9 during heavy
# writes then restart. Exits non-zero on any failure; prints the figures.
# Needs: sqlite3 (Debian package). Honours CARGO_TARGET_DIR.
set -eu
cd "$(dirname "$0")/.."
command -v sqlite3 >/dev/null || { echo "faults: FAIL: sqlite3 missing (apt-get install sqlite3)" >&2; exit 1; }
echo "faults: building (cargo build --release)"
cargo build --release --bins --quiet
# Build the test binary, then run it directly (under unshare -m when root, so
# the tmpfs mount of the full-filesystem case stays private).
BIN=$(cargo test --release --test faults --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "faults: FAIL: could not build tests/faults.rs" >&2; exit 1; }
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m --propagation private true 2>/dev/null; then
    SASLGATE_FAULTS_UNSHARED=1 unshare -m --propagation private \
        "$BIN" --ignored --nocapture --test-threads=1
else
    echo "=================================================================="
    echo "SKIP: faults: full filesystem case needs root (unshare -m + tmpfs); running the rest"
    echo "=================================================================="
    "$BIN" --ignored --nocapture --test-threads=1
fi
