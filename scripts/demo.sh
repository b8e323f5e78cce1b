#!/usr/bin/env bash
# The README's first command: set saslgate up and run it for real.
#
#   scripts/demo.sh            # build, create a demo database, run the checks, stop
#   DEMO_KEEP=1 scripts/demo.sh  # ... and leave saslgated running on the demo socket
#
# It builds the release binaries, creates a demo database in ./demo (config,
# database, socket; nothing outside this directory is touched), starts the
# `saslgated` daemon on ./demo/run/mux, and asks it with Debian's real
# `testsaslauthd`; then it loads libsaslgate.so into the real libsasl2 (next to
# the stock PLAIN/LOGIN plugins, the way Postfix or Cyrus would) and logs in with
# SASL PLAIN. As root it installs the Debian packages it needs; otherwise it says
# which are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
DEMO=$ROOT/demo
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
STOCK_PLUGINS=/usr/lib/$MULTIARCH/sasl2
PKGS="sasl2-bin libsasl2-dev libsasl2-modules oathtool build-essential pkg-config libclang-dev"

say() { printf '\n== %s\n' "$*"; }

# ---- 1. system packages ----
need=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ]; then
        say "installing:$need"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
    else
        echo "demo: missing Debian packages:$need (run: sudo apt-get install$need)" >&2
        exit 2
    fi
fi

# ---- 2. build ----
say "building saslgate (cargo build --release)"
cargo build --release --bins --lib
cargo build --release -p saslgate-web
cc -Wall -Wextra -Werror -O2 -o "$TARGET/sasl-plain-check" tools/sasl-plain-check.c -lsasl2
SG="$TARGET/saslgate"

# ---- 3. demo database ----
say "creating the demo database in $DEMO"
[ -S "$DEMO/run/mux" ] && [ -f "$DEMO/run/saslauthd.pid" ] && kill "$(cat "$DEMO/run/saslauthd.pid")" 2>/dev/null && sleep 0.5
rm -rf "$DEMO"
mkdir -p "$DEMO/run" "$DEMO/plugins" "$DEMO/sasl"
chmod 0700 "$DEMO"
cat > "$DEMO/saslgate.conf" <<CONF
# Demo configuration (every key and its default: debian/saslgate.conf).
db = "$DEMO/saslgate.db"
bcrypt_cost = 10
CONF
SGC=("$SG" --config "$DEMO/saslgate.conf")
"${SGC[@]}" init
"${SGC[@]}" plan set mail --services imap,pop,smtp,sieve,web
"${SGC[@]}" plan set sendonly --services smtp
"${SGC[@]}" user add alice@example.org --plan mail
printf 'alice-master-pw\n' | "${SGC[@]}" passwd alice@example.org --stdin
ALICE_PHONE=$("${SGC[@]}" app-password add alice@example.org --label phone --services imap)
ALICE_SCANNER=$("${SGC[@]}" app-password add alice@example.org --label scanner --restricted)
"${SGC[@]}" user add bob@example.org --plan mail
printf 'bob-master-pw\n' | "${SGC[@]}" passwd bob@example.org --stdin
TOTP_SECRET=JBSWY3DPEHPK3PXP
"${SGC[@]}" totp enable bob@example.org --secret "$TOTP_SECRET" >/dev/null
"${SGC[@]}" user add carol@example.org --plan sendonly
printf 'carol-master-pw\n' | "${SGC[@]}" passwd carol@example.org --stdin
"${SGC[@]}" user add dave@example.org
printf 'dave-master-pw\n' | "${SGC[@]}" passwd dave@example.org --stdin
"${SGC[@]}" user disable dave@example.org
"${SGC[@]}" user list

# ---- 4. the daemon, asked by the real testsaslauthd ----
say "starting saslgated on $DEMO/run/mux"
"$TARGET/saslgated" -a saslgate -d -m "$DEMO/run" --config "$DEMO/saslgate.conf" --fail-delay 0 \
    2> "$DEMO/saslgated.log" &
DAEMON=$!
stop_daemon() { kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true; }
[ "${DEMO_KEEP:-0}" = 1 ] || trap stop_daemon EXIT
for _ in $(seq 50); do [ -S "$DEMO/run/mux" ] && break; sleep 0.1; done

FAILED=0
expect() { # expect OK|NO description command...
    local want=$1 what=$2; shift 2
    local got; got=$("$@" 2>&1 || true)
    if [[ "$got" == *"$want"* ]]; then printf '  %-58s %s\n' "$what" "$(echo "$got" | tail -1)"
    else printf '  %-58s UNEXPECTED: %s\n' "$what" "$got"; FAILED=1; fi
}
tsa() { testsaslauthd -f "$DEMO/run/mux" -u "$1" -p "$2" -s "$3"; }
expect '0: OK' "alice, master password, imap" tsa alice@example.org alice-master-pw imap
expect '0: OK' "alice, phone app password, imap" tsa alice@example.org "$ALICE_PHONE" imap
expect '0: NO' "alice, phone app password, smtp (imap only)" tsa alice@example.org "$ALICE_PHONE" smtp
expect '0: OK' "alice, restricted scanner password, smtp" tsa alice@example.org "$ALICE_SCANNER" smtp
expect '0: NO' "alice, restricted scanner password, imap" tsa alice@example.org "$ALICE_SCANNER" imap
expect '0: NO' "alice, wrong password" tsa alice@example.org wrong-password imap
expect '0: NO' "bob (two-step), master password alone" tsa bob@example.org bob-master-pw imap
CODE=$(oathtool --totp -b "$TOTP_SECRET")
expect '0: OK' "bob, master password + oathtool code $CODE" tsa bob@example.org "bob-master-pw$CODE" imap
expect '0: NO' "bob, the same code again" tsa bob@example.org "bob-master-pw$CODE" imap
expect '0: NO' "carol (plan sendonly), imap" tsa carol@example.org carol-master-pw imap
expect '0: OK' "carol (plan sendonly), smtp" tsa carol@example.org carol-master-pw smtp
expect '0: NO' "dave (disabled)" tsa dave@example.org dave-master-pw imap
expect '0: NO' "nobody (unknown account)" tsa nobody@example.org whatever imap

# ---- 5. the plugin, loaded by the real libsasl2 ----
say "libsaslgate.so in the real libsasl2 (plugin dir with the stock PLAIN/LOGIN too)"
cp "$TARGET/libsaslgate.so" "$DEMO/plugins/"
for p in libplain.so liblogin.so; do ln -sf "$STOCK_PLUGINS/$p" "$DEMO/plugins/$p"; done
for svc in imap smtp; do
    printf 'mech_list: PLAIN LOGIN\nsaslgate_config: %s\n' "$DEMO/saslgate.conf" > "$DEMO/sasl/$svc.conf"
done
sp() { "$TARGET/sasl-plain-check" "$DEMO/plugins" "$DEMO/sasl" "$@"; }
expect 'successful' "PLAIN alice, phone app password, imap" sp imap alice@example.org "$ALICE_PHONE"
expect 'authorization failure' "PLAIN alice, phone app password, smtp" sp smtp alice@example.org "$ALICE_PHONE"
expect 'authentication failure' "PLAIN alice, wrong password" sp imap alice@example.org nope
expect 'successful' "PLAIN bob, master + next 30 s code (skew allowed)" sp imap bob@example.org "bob-master-pw$(oathtool --totp -b "$TOTP_SECRET" -N '+30 seconds')"
expect 'disabled' "PLAIN dave (disabled)" sp imap dave@example.org dave-master-pw
echo "  saslpluginviewer -p $DEMO/plugins: $(saslpluginviewer -p "$DEMO/plugins" 2>/dev/null | grep -c 'Plugin "saslgate"') saslgate entries (server mechanisms PLAIN, LOGIN; auxprop saslgate)"

say "audit trail (saslgate log)"
"${SGC[@]}" log | tail -8
say "why can't alice's phone password send mail? (saslgate explain)"
"${SGC[@]}" explain alice@example.org --service smtp || true

# ---- 6. the Password & Security pages ----
WEB_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "saslgate-web on http://127.0.0.1:$WEB_PORT (put nginx with TLS in front for real use)"
"$TARGET/saslgate-web" --config "$DEMO/saslgate.conf" --listen "127.0.0.1:$WEB_PORT" 2> "$DEMO/web.log" &
WEB=$!
stop_all() { kill "$WEB" 2>/dev/null; wait "$WEB" 2>/dev/null; stop_daemon; }
[ "${DEMO_KEEP:-0}" = 1 ] || trap stop_all EXIT
up=0
for _ in $(seq 100); do
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$WEB_PORT/signin" 2>/dev/null && { up=1; break; }
    sleep 0.1
done
if [ "$up" = 1 ]; then
    echo "  sign in at http://127.0.0.1:$WEB_PORT/signin as alice@example.org / alice-master-pw"
    if [ -x /usr/bin/chromium ] && /usr/bin/python3 -c 'import selenium' 2>/dev/null; then
        if /usr/bin/python3 tests/web/signed_in_shot.py "http://127.0.0.1:$WEB_PORT" alice@example.org \
            alice-master-pw "$DEMO/web-signed-in.png"; then
            echo "  signed-in screenshot: $DEMO/web-signed-in.png"
        else
            echo "  UNEXPECTED: the signed-in screenshot failed"; FAILED=1
        fi
    else
        echo "  (no screenshot: install chromium chromium-driver python3-selenium)"
    fi
else
    echo "  UNEXPECTED: saslgate-web did not answer (log: $DEMO/web.log)"; FAILED=1
fi

if [ "$FAILED" != 0 ]; then echo; echo "demo: some answers were not as expected (daemon log: $DEMO/saslgated.log)"; exit 1; fi
echo
echo "demo: all answers as expected."
if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "saslgated keeps running (pid $DAEMON) on $DEMO/run/mux; try:"
    echo "  testsaslauthd -f $DEMO/run/mux -u alice@example.org -p alice-master-pw -s imap"
    echo "  $SG --config $DEMO/saslgate.conf log"
    echo "saslgate-web keeps running (pid $WEB) on http://127.0.0.1:$WEB_PORT/"
    echo "stop them with: kill $DAEMON $WEB"
fi
