#!/bin/sh
# Storage faults while load runs against saslgated (tests/faults.rs): database
# deleted, replaced by garbage, unreadable, locked by a long writer, full
# filesystem (root: tmpfs in a private mount namespace), kill -9 during heavy
# writes then restart. Prints the figures, then "faults: N passed, N failed"
# (one check: the test binary; scripts/lib/check.sh); exits non-zero on any failure.
# Needs: sqlite3 (Debian package). Honours CARGO_TARGET_DIR.
set -eu
cd "$(dirname "$0")/.."
# ok, bad, skip, check, summary
. ./scripts/lib/check.sh
command -v sqlite3 >/dev/null || { bad "faults: sqlite3 missing (apt-get install sqlite3)"; summary faults; exit 1; }
echo "faults: building (cargo build --release)"
cargo build --release --bins --quiet || { bad "faults: cargo build"; summary faults; exit 1; }
# Build the test binary, then run it directly (under unshare -m when root, so
# the tmpfs mount of the full-filesystem case stays private).
BIN=$(cargo test --release --test faults --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { bad "faults: could not build tests/faults.rs"; summary faults; exit 1; }
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m --propagation private true 2>/dev/null; then
    check "storage faults under load (tests/faults.rs, every case)" \
        env SASLGATE_FAULTS_UNSHARED=1 unshare -m --propagation private \
        "$BIN" --ignored --nocapture --test-threads=1
else
    skip "faults: full filesystem case needs root (unshare -m + tmpfs); running the rest"
    check "storage faults under load (tests/faults.rs, without the full filesystem case)" \
        "$BIN" --ignored --nocapture --test-threads=1
fi
summary faults
