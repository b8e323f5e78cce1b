#!/bin/sh
# Soak test of saslgated (tests/soak.rs): REQUESTS requests (default 100000; the
# full run is REQUESTS=1000000) at concurrency 64 (SOAK_CONCURRENCY), mixing every
# outcome; fails on any wrong or failed answer, RSS / fd growth over 10 % after
# warm-up, unpruned audit rows or a database larger than the retention allows.
# Prints the figures, then "soak: N passed, N failed" (one check: the test binary;
# scripts/lib/check.sh). Needs: sqlite3 (Debian package). Honours CARGO_TARGET_DIR.
# Env: REQUESTS, SOAK_CONCURRENCY (64), SOAK_WORKERS (saslgated -n, 2),
#      SOAK_RETENTION_SECONDS (audit retention in the soak config, 20).
set -eu
cd "$(dirname "$0")/.."
# ok, bad, check, summary
. ./scripts/lib/check.sh
command -v sqlite3 >/dev/null || { bad "soak: sqlite3 missing (apt-get install sqlite3)"; summary soak; exit 1; }
REQUESTS=${REQUESTS:-100000}
echo "soak: building (cargo build --release)"
cargo build --release --bins --quiet || { bad "soak: cargo build"; summary soak; exit 1; }
check "soak: $REQUESTS requests through saslgated (tests/soak.rs)" \
    env SOAK_REQUESTS="$REQUESTS" cargo test --release --quiet --test soak -- --ignored --nocapture --test-threads=1
summary soak
