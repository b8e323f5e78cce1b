#!/usr/bin/env bash
# saslgate-web in a real browser: Debian's chromium + chromium-driver through
# WebDriver (python3-selenium), with the real testsaslauthd (saslgated) and
# the real libsasl2 + libsaslgate.so (tests/web/browser.py). Prints
# "web: N passed, N failed"; a line starting with SKIP when it cannot run.
#
#   tests/web/run.sh            screenshots in $CARGO_TARGET_DIR/web-screenshots,
#                               then the benchmark (tests/web/bench.py), printed
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
TARGET=${CARGO_TARGET_DIR:-$(pwd)/target}/release
SHOTS=${WEB_SCREENSHOTS:-${CARGO_TARGET_DIR:-$(pwd)/target}/web-screenshots}

missing=""
for tool in /usr/bin/chromium /usr/bin/chromedriver testsaslauthd oathtool cc; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing="$missing python3-selenium"
[ -f /usr/include/sasl/sasl.h ] || missing="$missing libsasl2-dev"
if [ -n "$missing" ]; then
    echo "SKIP: web: missing$missing (apt-get install chromium chromium-driver python3-selenium sasl2-bin oathtool libsasl2-dev)"
    echo "web: 0 passed, 0 failed"
    exit 0
fi
cargo build --release -q -p saslgate --bins --lib || exit 1
cargo build --release -q -p saslgate-web || exit 1
cc -Wall -Wextra -Werror -O2 -o "$TARGET/sasl-plain-check" tools/sasl-plain-check.c -lsasl2 || exit 1
rm -rf "$SHOTS"
/usr/bin/python3 tests/web/browser.py "$TARGET" "$SHOTS"
rc=$?
# Printed figures, not a test: page render time at c1/c32 against a static
# file of the same nginx (WEB_BENCH_SECONDS per case, 0 to leave out).
if [ "${WEB_BENCH_SECONDS:-2}" != 0 ]; then
    /usr/bin/python3 tests/web/bench.py "$TARGET" "${WEB_BENCH_SECONDS:-2}" | grep -v '^  ok ' \
        || echo "web-bench: could not run (not counted)"
fi
exit $rc
