#!/bin/bash
# End-to-end test of saslgated's auth_http face: the real nginx mail proxy
# (Debian's nginx + libnginx-mod-mail, loaded with load_module) in front of
# real Cyrus IMAP/POP3 and real Postfix (XCLIENT), asking saslgated on the
# UNIX socket of the documented [http] block. The saslgate.conf [http]
# block, the nginx mail { } block and the Postfix XCLIENT service are read
# out of debian/saslgate.README.Debian (only the port numbers are changed),
# and must appear verbatim in README.md and doc/saslgated.md too.
#
# Root only. Like tests/e2e/run.sh (and with its helpers, tests/e2e/lib/):
# everything runs in a private mount namespace (/etc/saslgate,
# /var/lib/saslgate, /run/saslgate and Postfix's queue and data directories
# are temporary), on free loopback ports, and exactly the processes started
# here are stopped at the end (nginx with its own prefix and pid file).
#
# Environment: CARGO_TARGET_DIR, SASLGATE_E2E_BIN=DIR (prebuilt binaries),
# SASLGATE_E2E_KEEP=1 (keep the temp dir). Output: one line per check, then
# "e2e-nginx: N passed, N failed"; exit 1 on any failure.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SELF="$ROOT/tests/e2e/nginx.sh"
# ok, bad, skip, expect, summary
. "$ROOT/scripts/lib/check.sh"
# snippet, private Postfix and Cyrus, smtp, pid bookkeeping, host undo list
. "$ROOT/tests/e2e/lib/servers.sh"
# checks_tls, checks_block, checks_alias, checks_ticket, checks_hold
. "$ROOT/tests/e2e/lib/nginx_policy.sh"
DOC="$ROOT/debian/saslgate.README.Debian"
PKGCONF="$ROOT/debian/saslgate.conf"
ADDR_FAILURES=4 # [throttle] address_failures in the test config
MAIL_MODULE=/usr/lib/nginx/modules/ngx_mail_module.so
PW_MASTER='pass word 100% sûr' # space, % and UTF-8: nginx %-escapes the first two

log() { echo "e2e-nginx: $*" >&2; }

# login_via imap|pop3|pop3s PORT login|plain USER PASSWORD SOURCE: logs in through
# nginx from SOURCE; prints "OK SECONDS" (logged in, INBOX selected / STAT
# answered), "NO SECONDS TEXT" or "ERR SECONDS TEXT".
login_via() {
    timeout 60 python3 - "$@" 2>>"$LOGS/clients.log" <<'EOF'
import imaplib, poplib, socket, ssl, sys, time
proto, port, how, user, pw, src = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]

class IMAP(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))

class POP(poplib.POP3):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))

class POPS(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
        return self.context.wrap_socket(sock, server_hostname="localhost")

def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return ctx

def out(word, text=""):
    print(("%s %.1f %s" % (word, time.monotonic() - t0, text)).strip())
    sys.stderr.write("%s %s %s %s from %s: %s %s\n" % (proto, port, how, user, src, word, text))

t0 = time.monotonic()
try:
    if proto == "imap":
        m = IMAP("127.0.0.1", port, timeout=30)
        t0 = time.monotonic()
        try:
            if how == "login":
                m.login(user, pw)
            else:
                m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())
        except imaplib.IMAP4.error as e:
            out("NO", str(e)); sys.exit()
        typ, _ = m.select("INBOX")
        out("OK" if typ == "OK" else "SELECT-" + typ)
        m.logout()
    else:
        if proto == "pop3s":
            m = POPS("127.0.0.1", port, timeout=30, context=unverified())
        else:
            m = POP("127.0.0.1", port, timeout=30)
        t0 = time.monotonic()
        try:
            m.user(user)
            m.pass_(pw)
        except poplib.error_proto as e:
            out("NO", str(e)); sys.exit()
        m.stat()
        out("OK")
        m.quit()
except Exception as e:
    out("ERR", repr(e))
EOF
}

# ---------------------------------------------------------------- inner part
inner() {
    LOGS=$T/logs
    mkdir -p "$LOGS"
    trap inner_cleanup EXIT
    trap 'exit 130' INT TERM

    # ---- the documented paths, privately
    mount --make-rprivate /
    mkdir -p "$T/etc-saslgate" "$T/lib"
    mount --bind "$T/etc-saslgate" /etc/saslgate
    chmod 0700 "$T/lib"
    mount --bind "$T/lib" /var/lib/saslgate
    mount -t tmpfs -o mode=0755 saslgate-e2e-nginx /run/saslgate
    postfix_private_spool || return 1

    # ---- ports: nginx in front, Cyrus and Postfix behind
    N_IMAP=$(free_port) N_POP=$(free_port) N_SMTP=$(free_port) N_POPS=$(free_port)
    C_IMAP=$(free_port) C_POP=$(free_port) P_XCLIENT=$(free_port) C_IMAP2=$(free_port)

    # ---- the documented blocks, in the other documents too
    local name f
    for name in saslgate-http saslgate-tickets nginx-mail postfix-xclient; do
        snippet "$name" >"$T/block-$name" || { bad "README.Debian has no block $name"; return 1; }
        for f in README.md doc/saslgated.md; do
            if python3 -c 'import sys; sys.exit(open(sys.argv[1]).read() not in open(sys.argv[2]).read())' \
                "$T/block-$name" "$ROOT/$f"; then
                ok "block $name of README.Debian is in $f verbatim"
            else
                bad "block $name of README.Debian is not in $f verbatim"
            fi
        done
    done

    # ---- saslgate: the packaged file, bcrypt cost 4, small budget, the [http] block
    CONF=/etc/saslgate/saslgate.conf
    {
        # POP3 only over TLS (nginx's Auth-SSL); the documented proxy-ticket
        # backends (both IMAP ports here); a hold turns into a temporary
        # failure after 3 s.
        echo 'tls_required = ["pop3"]'
        sed -e "s/\"127\.0\.0\.1:10143\"/\"127.0.0.1:$C_IMAP\", \"127.0.0.1:$C_IMAP2\"/" \
            -e "s/:10110\"/:$C_POP\"/" "$T/block-saslgate-tickets"
        sed -e 's/^#bcrypt_cost = .*/bcrypt_cost = 4/' \
            -e "s/^#address_failures = .*/address_failures = $ADDR_FAILURES/" \
            -e 's/^db_group = .*/db_group = ""/' "$PKGCONF"
        echo
        sed -e "s/:10143\"/:$C_IMAP\"/" -e "s/:10110\"/:$C_POP\"/" -e "s/:10025\"/:$P_XCLIENT\"/" \
            -e 's/^listen = .*/&\nmax_hold = "3s"/' -e 's/^group = .*/group = "mail"/' "$T/block-saslgate-http"
    } >"$CONF"
    expect "test config: bcrypt cost, budget and the three backends" 5 \
        "$(grep -cE "^(bcrypt_cost = 4|address_failures = $ADDR_FAILURES|(imap|pop3|smtp) = \"127\.0\.0\.1:($C_IMAP|$C_POP|$P_XCLIENT)\")\$" "$CONF")"
    SG() { "$BIN/saslgate" --config "$CONF" "$@"; }
    local err="$LOGS/cli.log"
    SG init 2>"$err" || { bad "saslgate init ($(cat "$err"))"; return 1; }
    SG user add n-app 2>>"$err" || bad "user n-app"
    printf '%s' 'master n-app' | SG passwd n-app --stdin 2>>"$err"
    APP_IMAP=$(SG app-password add n-app --label imap --services imap 2>>"$err")
    APP_POP=$(SG app-password add n-app --label pop --services pop 2>>"$err")
    APP_SMTP=$(SG app-password add n-app --label smtp --services smtp 2>>"$err")
    SG user add n-master 2>>"$err" && printf '%s' "$PW_MASTER" | SG passwd n-master --stdin 2>>"$err" ||
        bad "user n-master"
    SG user add n-throttled 2>>"$err" && printf '%s' 'master n-throttled' | SG passwd n-throttled --stdin 2>>"$err" ||
        bad "user n-throttled"
    [ -n "$APP_IMAP" ] && [ -n "$APP_POP" ] && [ -n "$APP_SMTP" ] || bad "app passwords not printed (see $err)"
    policy_users

    # ---- saslgated: saslauthd socket for Cyrus (--group), auth_http socket
    # for nginx ([http] group), both group mail here (cyrus's group; nginx's
    # workers run as www-data:mail).
    "$BIN/saslgated" -a saslgate -d -m /run/saslgate --group mail --config "$CONF" \
        >"$LOGS/saslgated.log" 2>&1 &
    record_pid $! saslgated
    wait_socket /run/saslgate/mux && wait_socket /run/saslgate/http ||
        { bad "saslgated did not create /run/saslgate/mux and /run/saslgate/http ($(tail -n3 "$LOGS/saslgated.log"))"; return 1; }
    expect "auth_http socket mode 660 group mail" "660 mail" "$(stat -c '%a %G' /run/saslgate/http)"

    # ---- Cyrus imapd + pop3d, checking LOGIN / USER+PASS through saslgated
    local CY=$T/cyrus
    mkdir -p "$CY/conf" "$CY/part" "$CY/run"
    { cyrus_base_conf "$CY"; snippet cyrus-daemon; } >"$CY/imapd.conf"
    cat >"$CY/cyrus.conf" <<EOF
START {
  recover cmd="ctl_cyrusdb -r -C $CY/imapd.conf"
}
SERVICES {
  imap cmd="imapd -C $CY/imapd.conf" listen="127.0.0.1:$C_IMAP" prefork=0 maxchild=10
  imap2 cmd="imapd -C $CY/imapd.conf" listen="127.0.0.1:$C_IMAP2" prefork=0 maxchild=10
  pop3 cmd="pop3d -C $CY/imapd.conf" listen="127.0.0.1:$C_POP" prefork=0 maxchild=10
}
EVENTS {
}
EOF
    start_cyrmaster "$CY" "$CY/imapd.conf"

    # ---- Postfix: the documented XCLIENT smtpd on its port
    {
        postfix_master_base "$LOGS/postfix.log"
        sed -e "s/^127\.0\.0\.1:10025 /127.0.0.1:$P_XCLIENT /" "$T/block-postfix-xclient"
        echo "  -o syslog_name=postfix/e2e-xclient"
        echo "  -o maillog_file=$LOGS/postfix.log"
        echo "  -o maillog_file_prefixes=$LOGS/postfix.log"
        echo "  -o smtpd_tls_security_level=none"
    } >"$T/master.cf"
    grep -q "^127\.0\.0\.1:$P_XCLIENT inet" "$T/master.cf" || { bad "postfix-xclient block: port not found"; return 1; }
    start_postfix "$T/master.cf" || return 1

    # ---- nginx: its own prefix, pid file and logs; the documented mail block
    local NG=$T/nginx
    mkdir -p "$NG/logs"
    {
        echo "load_module $MAIL_MODULE;"
        echo "user www-data mail;"
        echo "worker_processes 1;"
        echo "pid $NG/nginx.pid;"
        echo "error_log $LOGS/nginx-error.log info;"
        echo "events { worker_connections 256; }"
        # The documented block, and a POP3-over-TLS server before its closing brace.
        sed -e "s/^\( *listen\) 143;/\1 127.0.0.1:$N_IMAP;/" -e "s/^\( *listen\) 110;/\1 127.0.0.1:$N_POP;/" \
            -e "s/^\( *listen\) 587;/\1 127.0.0.1:$N_SMTP;/" -e '$d' "$T/block-nginx-mail"
        echo "    server {"
        echo "        listen 127.0.0.1:$N_POPS ssl;"
        echo "        protocol pop3;"
        echo "        ssl_certificate $NG/cert.pem;"
        echo "        ssl_certificate_key $NG/key.pem;"
        echo "    }"
        echo "}"
    } >"$NG/nginx.conf"
    openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 \
        -keyout "$NG/key.pem" -out "$NG/cert.pem" >"$LOGS/openssl.log" 2>&1 || bad "openssl req (test certificate)"
    expect "nginx config: the three listen ports replaced" 3 "$(grep -c 'listen 127\.0\.0\.1:[0-9]*;' "$NG/nginx.conf")"
    if ! nginx -t -p "$NG/" -c "$NG/nginx.conf" -e "$LOGS/nginx-error.log" >"$LOGS/nginx-t.log" 2>&1; then
        bad "nginx -t ($(tail -n3 "$LOGS/nginx-t.log"))"
        return 1
    fi
    nginx -p "$NG/" -c "$NG/nginx.conf" -e "$LOGS/nginx-error.log" >>"$LOGS/nginx-t.log" 2>&1 ||
        { bad "nginx did not start ($(tail -n3 "$LOGS/nginx-error.log"))"; return 1; }
    wait_file "$NG/nginx.pid" && record_pid "$(cat "$NG/nginx.pid")" nginx
    local port
    for port in $C_IMAP $C_IMAP2 $C_POP $P_XCLIENT $N_IMAP $N_POP $N_SMTP $N_POPS; do
        wait_port "$port" || bad "nothing listens on 127.0.0.1:$port"
    done
    echo "--- nginx $(nginx -v 2>&1 | sed 's|.*/||') on 127.0.0.1:$N_IMAP (imap) :$N_POP (pop3) :$N_SMTP (smtp) -> Cyrus :$C_IMAP :$C_POP, Postfix $(postconf -h mail_version) :$P_XCLIENT (XCLIENT)"

    checks
    return 0
}

# word_of "RESULT SECONDS TEXT": RESULT
word_of() { printf '%s\n' "${1%% *}"; }
# secs_of "RESULT SECONDS TEXT": SECONDS
secs_of() { local r=${1#* }; printf '%s\n' "${r%% *}"; }

checks() {
    local got i n
    # ---- IMAP
    got=$(login_via imap "$N_IMAP" login n-app "$APP_IMAP" 127.0.0.1)
    expect "nginx imap: LOGIN app password + SELECT INBOX" OK "$(word_of "$got")"
    got=$(login_via imap "$N_IMAP" plain n-app "$APP_IMAP" 127.0.0.1)
    expect "nginx imap: AUTHENTICATE PLAIN app password + SELECT INBOX" OK "$(word_of "$got")"
    got=$(login_via imap "$N_IMAP" plain n-master "$PW_MASTER" 127.0.0.1)
    expect "nginx imap: AUTHENTICATE PLAIN, password with space, % and UTF-8 (nginx-escaped)" OK "$(word_of "$got")"
    got=$(login_via imap "$N_IMAP" login n-app "$APP_SMTP" 127.0.0.5)
    expect "nginx imap: smtp-only app password refused" NO "$(word_of "$got")"
    local mboxes
    mboxes=$(su cyrus -s /bin/sh -c "/usr/lib/cyrus/bin/ctl_mboxlist -d -C $T/cyrus/imapd.conf" 2>&1)
    printf '%s\n' "$mboxes" >"$LOGS/mboxlist.txt"
    expect "nginx imap: the logins opened user.n-app and user.n-master, no other" "user.n-app user.n-master" \
        "$(grep -o 'user\.[a-z-]*' <<<"$mboxes" | sort -u | tr '\n' ' ' | sed 's/ $//')"

    # ---- wrong password: NO only after the Auth-Wait delay (1 s)
    got=$(login_via imap "$N_IMAP" login n-app 'not the password' 127.0.0.2)
    expect "nginx imap: wrong password refused" NO "$(word_of "$got")"
    case $got in
        *'authentication failed'*) ok "nginx imap: the refusal says 'authentication failed'" ;;
        *) bad "nginx imap: refusal text (got: $got)" ;;
    esac
    if python3 -c "import sys; sys.exit(not float(sys.argv[1]) >= 0.9)" "$(secs_of "$got")"; then
        ok "nginx imap: the NO came after the Auth-Wait delay ($(secs_of "$got") s)"
    else
        bad "nginx imap: the NO came after $(secs_of "$got") s, not after Auth-Wait 1"
    fi

    # ---- POP3, a TLS-required service in this config
    checks_tls

    # ---- SMTP: nginx answers AUTH, Postfix gets XCLIENT LOGIN=
    expect "nginx smtp: AUTH PLAIN smtp app password 235 (XCLIENT to Postfix accepted)" 235 \
        "$(smtp "$N_SMTP" PLAIN n-app "$APP_SMTP")"
    expect "nginx smtp: AUTH LOGIN smtp app password 235" 235 "$(smtp "$N_SMTP" LOGIN n-app "$APP_SMTP")"
    expect "nginx smtp: AUTH PLAIN wrong password 535" 535 "$(smtp "$N_SMTP" PLAIN n-app 'wrong' 127.0.0.6)"
    expect "nginx smtp: imap-only app password 535" 535 "$(smtp "$N_SMTP" PLAIN n-app "$APP_IMAP" 127.0.0.6)"
    # XCLIENT LOGIN= made the session authenticated: Postfix logs the user
    # name nginx gave (Auth-User) when the first RCPT opens the queue file.
    local got_rcpt seen=no
    got_rcpt=$(smtp_rcpt "$N_SMTP" PLAIN n-app "$APP_SMTP")
    for i in $(seq 50); do
        grep -Eq 'postfix/e2e-xclient/smtpd.*: client=[^ ]*, sasl_method=[^ ]*, sasl_username=n-app$' "$LOGS/postfix.log" 2>/dev/null &&
            seen=yes && break
        sleep 0.1
    done
    expect "nginx smtp: RCPT after AUTH: Postfix (XCLIENT) logs sasl_username=n-app" "235 250 yes" "$got_rcpt $seen"

    # ---- throttling by Client-IP: 127.0.0.3 over its budget, 127.0.0.1 unaffected
    n=0
    for i in $(seq "$ADDR_FAILURES"); do
        got=$(login_via imap "$N_IMAP" login n-throttled "wrong $i" 127.0.0.3)
        [ "$(word_of "$got")" = NO ] && n=$((n + 1))
    done
    expect "nginx imap: $ADDR_FAILURES wrong passwords from 127.0.0.3 refused" "$ADDR_FAILURES" "$n"
    got=$(login_via imap "$N_IMAP" login n-throttled 'master n-throttled' 127.0.0.3)
    case $got in
        NO*'try again later'*) ok "nginx imap: right password from 127.0.0.3 refused as temporary ($got)" ;;
        *) bad "nginx imap: right password from 127.0.0.3 not refused as temporary (got: $got)" ;;
    esac
    expect "nginx smtp: from 127.0.0.3 454 (temporary)" 454 "$(smtp "$N_SMTP" PLAIN n-app "$APP_SMTP" 127.0.0.3)"
    got=$(login_via imap "$N_IMAP" login n-throttled 'master n-throttled' 127.0.0.1)
    expect "nginx imap: right password from 127.0.0.1 still accepted" OK "$(word_of "$got")"

    # ---- block list, aliases, proxy tickets, backend holds
    checks_block
    checks_alias
    checks_ticket
    checks_hold

    # ---- what saslgated logged
    grep 'face=http' "$LOGS/saslgated.log" >"$LOGS/http-lines.log"
    expect "saslgated: throttled refusal logged with client 127.0.0.3" yes \
        "$(grep 'reason=throttled' "$LOGS/http-lines.log" | grep -q 'client="127.0.0.3"' && echo yes || echo no)"
    expect "saslgated: nginx's login attempt and protocol logged" yes \
        "$(grep 'result=OK' "$LOGS/http-lines.log" | grep -q 'protocol="smtp" client="127.0.0.1" attempt=1' && echo yes || echo no)"
    expect "saslgated: no password in its log" no \
        "$(grep -qF -e "$APP_IMAP" -e 'master n-' -e 'pass word' "$LOGS/saslgated.log" && echo yes || echo no)"
}

inner_cleanup() {
    local rc=$?
    stop_recorded
    if [ "$rc" -ne 0 ] && [ "$CHECK_FAILED" -eq 0 ]; then
        bad "e2e-nginx aborted (exit $rc)"
    fi
    echo "--- finished in $(($(date +%s) - STARTED)) s (logs: $T/logs, kept on failure)"
    summary e2e-nginx && [ "$rc" -eq 0 ] || exit 1
    exit 0
}

# ---------------------------------------------------------------- outer part
outer() {
    if [ "$(id -u)" != 0 ]; then
        skip "tests/e2e/nginx.sh needs root (real nginx, Cyrus IMAP and Postfix)"
        summary e2e-nginx
        exit 0
    fi
    local started c f
    started=$(date +%s)
    install_missing nginx libnginx-mod-mail postfix cyrus-imapd cyrus-pop3d swaks python3 oathtool openssl ||
        { bad "apt-get install"; summary e2e-nginx; exit 1; }
    for c in unshare nginx postfix cyrmaster swaks python3 oathtool openssl; do
        command -v "$c" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
        command -v "$c" >/dev/null || { bad "missing $c"; summary e2e-nginx; exit 1; }
    done
    [ -e "$MAIL_MODULE" ] || { bad "missing $MAIL_MODULE (libnginx-mod-mail)"; summary e2e-nginx; exit 1; }
    [ -x /usr/lib/cyrus/bin/pop3d ] || { bad "missing /usr/lib/cyrus/bin/pop3d (cyrus-pop3d)"; summary e2e-nginx; exit 1; }
    if [ -n "${SASLGATE_E2E_BIN:-}" ]; then
        BIN=$SASLGATE_E2E_BIN
    else
        BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
        log "cargo build --release (saslgate, saslgated)"
        (cd "$ROOT" && cargo build --release --bin saslgate --bin saslgated) >&2 ||
            { bad "cargo build"; summary e2e-nginx; exit 1; }
    fi
    for f in saslgate saslgated; do
        [ -e "$BIN/$f" ] || { bad "$BIN/$f missing"; summary e2e-nginx; exit 1; }
    done
    BIN=$(cd "$BIN" && pwd)

    trap outer_cleanup EXIT
    trap 'exit 130' INT TERM
    T=$(mktemp -d /tmp/saslgate-e2e-nginx.XXXXXX)
    chmod 0711 "$T"
    ensure_dir /etc/saslgate
    ensure_dir /var/lib/saslgate
    ensure_dir /run/saslgate
    unshare -m --propagation private env SASLGATE_E2E_INNER=1 STARTED="$started" T="$T" BIN="$BIN" \
        PATH="$PATH" "$SELF"
    RESULT=$?
    exit $RESULT
}

if [ "${SASLGATE_E2E_INNER:-0}" = 1 ]; then
    inner
else
    outer
fi
