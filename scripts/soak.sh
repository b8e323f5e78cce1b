#!/bin/sh
# Soak test of saslgated (tests/soak.rs): REQUESTS requests (default 100000; the
# full run is REQUESTS=1000000) at concurrency 64 (SOAK_CONCURRENCY), mixing every
# outcome; fails on any wrong or failed answer, RSS / fd growth over 10 % after
# warm-up, unpruned audit rows or a database larger than the retention allows.
# Prints the figures. Needs: sqlite3 (Debian package). Honours CARGO_TARGET_DIR.
# Env: REQUESTS, SOAK_CONCURRENCY (64), SOAK_WORKERS (saslgated -n, 2),
#      SOAK_RETENTION_SECONDS (audit retention in the soak config, 20).
set -eu
cd "$(dirname "$0")/.."
command -v sqlite3 >/dev/null || { echo "soak: FAIL: sqlite3 missing (apt-get install sqlite3)" >&2; exit 1; }
REQUESTS=${REQUESTS:-100000}
echo "soak: building (cargo build --release)"
cargo build --release --bins --quiet
SOAK_REQUESTS=$REQUESTS cargo test --release --quiet --test soak -- --ignored --nocapture --test-threads=1
