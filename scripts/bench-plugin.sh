#!/bin/bash
# Benchmark: in-process PLAIN through the real libsasl2, saslgate with an app
# password against stock PLAIN with the sasldb auxprop (plaintext), same run.
# Usage (repo root): scripts/bench-plugin.sh [N]   (N logins per path, default 2000)
# Honours CARGO_TARGET_DIR; SKIP_BUILD=1 skips cargo build.
set -eu
cd "$(dirname "$0")/.."
N=${1:-${BENCH_N:-2000}}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
LIBDIR=$TARGET_DIR/release
SASL_SYS=${SASL_PLUGIN_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/sasl2}
for need in cc saslpasswd2 "$SASL_SYS/libplain.so" "$SASL_SYS/libsasldb.so" /usr/include/sasl/sasl.h; do
    if ! command -v "$need" >/dev/null 2>&1 && [ ! -e "$need" ]; then
        echo "SKIP - *** bench-plugin: missing $need ***"; exit 0
    fi
done
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --lib --bin saslgate
T=$(mktemp -d /tmp/saslgate-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/plugins" "$T/conf-empty"
cp "$LIBDIR/libsaslgate.so" "$T/plugins/"
for p in libplain.so liblogin.so libsasldb.so; do ln -s "$SASL_SYS/$p" "$T/plugins/$p"; done
printf 'db = "%s"\nbcrypt_cost = 10\n' "$T/sg.db" >"$T/sg.conf"
SG="$LIBDIR/saslgate --config $T/sg.conf"
$SG init 2>/dev/null
$SG user add alice 2>/dev/null
printf '%s' 'alice master pw' | $SG passwd alice --stdin 2>/dev/null
APP_IMAP=$($SG app-password add alice --label bench --services imap 2>/dev/null)
printf '%s' 'dave pw' | SASL_PATH=$T/plugins SASL_CONF_PATH=$T/conf-empty \
    saslpasswd2 -f "$T/sasldb2" -u sgtest.example -c -p dave
cc -O2 -Wall -Wextra -Werror -o "$T/bench_plain" c-tests/bench_plain.c -lsasl2
echo "libsaslgate.so $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -m)"
PLUGDIR=$T/plugins SASLDB=$T/sasldb2 SG_CONF=$T/sg.conf APP_IMAP=$APP_IMAP DAVE_PW='dave pw' \
    "$T/bench_plain" "$N"
