#!/bin/bash
# C tests of libsaslgate.so: the libsasl2 plugin (driven through the real libsasl2
# next to the stock PLAIN/LOGIN/sasldb plugins) and the C ABI of include/saslgate.h.
#
# Run from the repository root:  c-tests/run.sh
# Honours CARGO_TARGET_DIR. Builds with `cargo build --release` unless SKIP_BUILD=1.
# Needs: cc, libsasl2-dev, libsasl2-modules (+ -db), sasl2-bin, oathtool, valgrind.
# Output: one line per check (scripts/lib/check.sh), then "c-tests: N passed, N
# failed"; exits non-zero on any failure; prints a SKIP line when a prerequisite is
# missing. VERBOSE=1 keeps the temp dir and shows libsasl2's log.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LIBDIR=$TARGET_DIR/release
SASL_SYS=${SASL_PLUGIN_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/sasl2}

# ok, bad, skip, check, check_fails, summary
. scripts/lib/check.sh

missing=""
for tool in cc saslpasswd2 saslpluginviewer oathtool nm; do
    command -v $tool >/dev/null 2>&1 || missing="$missing $tool"
done
[ -f /usr/include/sasl/sasl.h ] || missing="$missing libsasl2-dev"
for p in libplain.so liblogin.so libsasldb.so; do
    [ -e "$SASL_SYS/$p" ] || missing="$missing $SASL_SYS/$p"
done
if [ -n "$missing" ]; then
    skip "c-tests cannot run, missing:$missing (apt-get install build-essential libsasl2-dev libsasl2-modules libsasl2-modules-db sasl2-bin oathtool valgrind)"
    summary c-tests
    exit 0
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --lib --bin saslgate || { bad "cargo build"; summary c-tests; exit 1; }
fi
SO=$LIBDIR/libsaslgate.so
SG=$LIBDIR/saslgate
[ -f "$SO" ] && [ -x "$SG" ] || { bad "$SO or $SG missing"; summary c-tests; exit 1; }

T=$(mktemp -d /tmp/saslgate-ctests.XXXXXX)
cleanup() { if [ "${VERBOSE:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi; }
trap cleanup EXIT

# ---- plugin directories: saslgate + stock, and stock only (the reference) ----
mkdir -p "$T/plugins" "$T/plugins-stock" "$T/conf" "$T/conf-empty"
cp "$SO" "$T/plugins/libsaslgate.so"
for p in libplain.so liblogin.so libsasldb.so; do
    ln -s "$SASL_SYS/$p" "$T/plugins/$p"
    ln -s "$SASL_SYS/$p" "$T/plugins-stock/$p"
done

# ---- test data (the saslgate CLI) ----
cat >"$T/sg.conf" <<EOF
db = "$T/sg.db"
bcrypt_cost = 4
[throttle]
address_failures = 1000
account_address_failures = 1000
EOF
cat >"$T/sg-throttle.conf" <<EOF
db = "$T/sg.db"
bcrypt_cost = 4
[throttle]
address_failures = 3
account_address_failures = 1000
EOF
cat >"$T/sg-tls.conf" <<EOF
db = "$T/sg.db"
bcrypt_cost = 4
tls_required = ["sieve"]
[throttle]
address_failures = 1000
account_address_failures = 1000
EOF
echo 'bcrypt_cots = 4' >"$T/bad.conf"
SGC() { "$SG" --config "$T/sg.conf" "$@"; }
{
    SGC init &&
    SGC plan set imaponly --services imap &&
    SGC user add alice && printf '%s' 'alice master pw' | SGC passwd alice --stdin &&
    SGC alias add alice alice.liddell &&
    SGC user add bob && printf '%s' 'bob master pw' | SGC passwd bob --stdin &&
    SGC user add bob2 && printf '%s' 'bob master pw' | SGC passwd bob2 --stdin &&
    SGC user add carol && printf '%s' 'carol master pw' | SGC passwd carol --stdin &&
    SGC user add frank --plan imaponly && printf '%s' 'frank master pw' | SGC passwd frank --stdin &&
    SGC user add erin &&
    SGC totp enable bob --secret JBSWY3DPEHPK3PXP >/dev/null &&
    SGC totp enable bob2 --secret JBSWY3DPEHPK3PXP >/dev/null &&
    SGC user disable carol
} >"$T/setup.log" 2>&1 || { cat "$T/setup.log"; bad "test data (saslgate CLI)"; summary c-tests; exit 1; }
APP_IMAP=$(SGC app-password add alice --label phone --services imap 2>>"$T/setup.log")
APP_SMTP=$(SGC app-password add alice --label laptop --services smtp 2>>"$T/setup.log")
[ -n "$APP_IMAP" ] && [ -n "$APP_SMTP" ] || { bad "app passwords"; summary c-tests; exit 1; }
ok "test data made with the saslgate CLI"

# stock sasldb users for the service without saslgate
printf '%s' 'dave pw' | SASL_PATH=$T/plugins-stock SASL_CONF_PATH=$T/conf-empty \
    saslpasswd2 -f "$T/sasldb2" -u sgtest.example -c -p dave &&
printf '%s' 'dave2 pw' | SASL_PATH=$T/plugins-stock SASL_CONF_PATH=$T/conf-empty \
    saslpasswd2 -f "$T/sasldb2" -u sgtest.example -c -p dave2
check "sasldb users made with saslpasswd2 -f" test -s "$T/sasldb2"

# ---- saslpasswd2 through saslgate's auxprop store ----
printf 'saslgate_config: %s\nauxprop_plugin: saslgate\nmech_list: PLAIN LOGIN\n' "$T/sg.conf" \
    >"$T/conf/sgpasswd.conf"
SP() { SASL_PATH=$T/plugins SASL_CONF_PATH=$T/conf saslpasswd2 -a sgpasswd "$@"; }
printf '%s' 'erin new pw' | SP -p erin >"$T/saslpasswd2.log" 2>&1
check "saslpasswd2 (auxprop store) sets erin's master password" \
    sh -c "printf '%s' 'erin new pw' | '$SG' --config '$T/sg.conf' verify erin --service imap >/dev/null 2>&1"
printf '%s' 'x' | SP -p nosuchuser >>"$T/saslpasswd2.log" 2>&1
check "saslpasswd2 for an account saslgate does not know fails" test $? -ne 0

# ---- build the C tests ----
CFLAGS="-Wall -Wextra -Werror -O1 -g"
check "saslgate.h compiles alone (C99, pedantic)" \
    cc -std=c99 -pedantic $CFLAGS -fsyntax-only -x c include/saslgate.h
check "saslgate.h compiles as C++" sh -c "command -v c++ >/dev/null || exit 0; c++ -Wall -Wextra -Werror -fsyntax-only -x c++ include/saslgate.h"
check "build sasl_plugin_test" \
    cc $CFLAGS -I include -o "$T/sasl_plugin_test" c-tests/sasl_plugin_test.c -lsasl2 -lpthread
check "build capi_test" \
    cc $CFLAGS -I include -o "$T/capi_test" c-tests/capi_test.c -L"$LIBDIR" -lsaslgate \
    -Wl,-rpath,"$LIBDIR" -lpthread

export PLUGDIR=$T/plugins SASLDB=$T/sasldb2 SG_CONF=$T/sg.conf SG_CONF_THROTTLE=$T/sg-throttle.conf SG_CONF_TLS=$T/sg-tls.conf
export SG_DB=$T/sg.db SG_BAD_CONF=$T/bad.conf APP_IMAP APP_SMTP
export ALICE_PW='alice master pw' BOB_PW='bob master pw' CAROL_PW='carol master pw' FRANK_PW='frank master pw'
export DAVE_PW='dave pw' ERIN_PW='erin new pw' SG_SASL_LOG=$T/sasl.log

# ---- exported symbols ----
extra=$(nm -D --defined-only "$SO" | awk '{print $3}' |
    grep -v -E '^(sasl_server_plug_init|sasl_auxprop_plug_init|saslgate_[a-z_]+)$')
check "libsaslgate.so exports only sasl_*_plug_init and saslgate_* (nm -D --defined-only)" test -z "$extra"
[ -z "$extra" ] || echo "  unexpected exports: $extra"

# ---- saslpluginviewer ----
SASL_PATH=$T/plugins SASL_CONF_PATH=$T/conf-empty saslpluginviewer -s -a >"$T/viewer.txt" 2>&1
[ "${VERBOSE:-0}" = 1 ] && cat "$T/viewer.txt"
check "saslpluginviewer lists saslgate's PLAIN and LOGIN" \
    sh -c "grep -A2 'Plugin \"saslgate\"' '$T/viewer.txt' | grep -q 'PLAIN' && grep -A2 'Plugin \"saslgate\"' '$T/viewer.txt' | grep -q 'LOGIN'"
check "saslpluginviewer lists the auxprop plugin saslgate (supports store)" \
    sh -c "grep -A1 'Plugin \"saslgate\" ,' '$T/viewer.txt' | grep -q 'supports store: yes'"

# ---- the libsasl2 tests ----
run_sasl() { # label, extra env..., then the args
    BOB_TOTP=$(oathtool --totp -b JBSWY3DPEHPK3PXP) "$@"
}
BOB_USER=bob run_sasl env STOCK_TRACE="$T/stock-saslgate.txt" "$T/sasl_plugin_test" all \
    >"$T/sasl_test.out" 2>&1
rc=$?
cat "$T/sasl_test.out"
check "sasl_plugin_test (libsasl2 + saslgate + stock plugins)" test $rc -eq 0

PLUGDIR=$T/plugins-stock STOCK_TRACE="$T/stock-reference.txt" "$T/sasl_plugin_test" stockref \
    >"$T/stockref.out" 2>&1
check "stock reference run (plugin dir without saslgate)" test $? -eq 0
if diff -u "$T/stock-reference.txt" "$T/stock-saslgate.txt" >"$T/stock.diff"; then
    ok "service without saslgate options: same results as stock libplain/liblogin ($(wc -l <"$T/stock-reference.txt") scenarios)"
else
    bad "service without saslgate options differs from stock libplain/liblogin"
    cat "$T/stock.diff"
fi

"$T/capi_test" >"$T/capi.out" 2>&1
rc=$?
cat "$T/capi.out"
check "capi_test (include/saslgate.h)" test $rc -eq 0

# ---- valgrind, once ----
vg_check() { # name, log file
    local log=$2
    if grep -q -E 'Invalid (read|write|free)|uninitialised|Mismatched free' "$log"; then
        bad "$1 under valgrind: memory errors (see below)"
        grep -E -A12 'Invalid (read|write|free)|uninitialised|Mismatched free' "$log" | head -60
        return
    fi
    # definite leaks whose stack goes through saslgate's code
    local ours
    ours=$(awk '/definitely lost in loss record/{blk=1; buf=$0; next}
                blk && /^==[0-9]+== *$/{ if (buf ~ /saslgate/) print buf; blk=0; next}
                blk {buf = buf "\n" $0}' "$log")
    if [ -n "$ours" ]; then
        bad "$1 under valgrind: definite leaks from saslgate"
        echo "$ours" | head -60
    else
        ok "$1 under valgrind: no invalid reads/writes, no definite leaks from saslgate"
    fi
}
if command -v valgrind >/dev/null 2>&1; then
    VG="valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none --child-silent-after-fork=yes --num-callers=30"
    # new TOTP account: the code of this time step was used by the run above
    BOB_USER=bob2 run_sasl $VG --log-file="$T/vg-sasl.log" "$T/sasl_plugin_test" all \
        >"$T/vg-sasl.out" 2>&1
    rc=$?
    check "sasl_plugin_test under valgrind passes" test $rc -eq 0
    [ $rc -eq 0 ] || tail -20 "$T/vg-sasl.out"
    vg_check sasl_plugin_test "$T/vg-sasl.log"
    $VG --log-file="$T/vg-capi.log" "$T/capi_test" >"$T/vg-capi.out" 2>&1
    rc=$?
    check "capi_test under valgrind passes" test $rc -eq 0
    [ $rc -eq 0 ] || tail -20 "$T/vg-capi.out"
    vg_check capi_test "$T/vg-capi.log"
else
    skip "valgrind not installed: memory checks not run (apt-get install valgrind)"
fi

# ---- exit() without sasl_done still writes the buffered audit records ----
before=$(SGC log frank 2>/dev/null | grep -c accepted)
"$T/sasl_plugin_test" atexit >"$T/atexit.out" 2>&1
check "logins before exit() without sasl_done" test $? -eq 0
after=$(SGC log frank 2>/dev/null | grep -c accepted)
check "audit records of the last logins written at exit ($before -> $after, want +3)" \
    test "$after" -eq $((before + 3))

# ---- saslpasswd2 -d removes the master password ----
SP -d erin >>"$T/saslpasswd2.log" 2>&1
check_fails "saslpasswd2 -d clears erin's master password" \
    sh -c "printf '%s' 'erin new pw' | '$SG' --config '$T/sg.conf' verify erin --service imap >/dev/null 2>&1"

[ "${VERBOSE:-0}" = 1 ] && { echo "--- libsasl2 log"; cat "$T/sasl.log"; }
summary c-tests
