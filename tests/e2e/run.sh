#!/bin/bash
# End-to-end test with the real Postfix and the real Cyrus IMAP from Debian,
# driven by real clients (swaks, Python imaplib), configured with the blocks
# that debian/saslgate.README.Debian documents (read out of that file, so the
# documentation and the test cannot drift apart).
#
# Root only. It installs what it needs (apt-get) if missing, then runs
# everything inside a private mount namespace: the documented paths
# (/etc/saslgate, /var/lib/saslgate, /run/saslgate, the libsasl2 plugin
# directory, /etc/postfix/master.cf and /etc/postfix/sasl, Postfix's queue
# directory /var/spool/postfix, which is smtpd's chroot, and its data directory)
# are bind mounts of files in a temporary directory there, so the host's files
# are never modified and a Postfix the machine runs is not disturbed. On the
# host it only creates the empty mount-point directories that are missing, the group "saslgate" (if missing) and the
# postfix/cyrus memberships in it, and undoes all of that at the end.
# It listens on free loopback ports (never 25/143), starts Postfix, cyrmaster,
# the stock saslauthd and saslgated, and stops exactly those processes.
#
# Environment: CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/release, default
# ./target), SASLGATE_E2E_BIN=DIR to use prebuilt saslgate/saslgated/libsaslgate.so
# from DIR instead of building (SASLGATE_E2E_BIN=installed: the installed Debian
# packages' files), SASLGATE_E2E_KEEP=1 to keep the temp dir.
# Two rounds, each in its own namespace with fresh servers: the database in
# SQLite, then in PostgreSQL (a private initdb cluster, scripts/lib/pg.sh,
# reached over TCP on 127.0.0.1 by the chrooted smtpd, Cyrus and saslgated
# with the login role, set up as README.Debian's "PostgreSQL" section says;
# skipped when PostgreSQL is not installed). SASLGATE_E2E_DB=sqlite or
# postgresql runs one round only.
# Output: one line per check (scripts/lib/check.sh), "e2e (sqlite): N passed,
# N failed" and "e2e (postgresql): ..." after each round, then the total
# "e2e: N passed, N failed"; exit 1 on any failure.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SELF="$ROOT/tests/e2e/run.sh"
# ok, bad, skip, expect, summary
. "$ROOT/scripts/lib/check.sh"
# snippet, private Postfix and Cyrus, clients, pid bookkeeping, host undo list
. "$ROOT/tests/e2e/lib/servers.sh"
# pg_start, pg_stop, pg_psql (the PostgreSQL round)
. "$ROOT/scripts/lib/pg.sh"
DOC="$ROOT/debian/saslgate.README.Debian"
PKGCONF="$ROOT/debian/saslgate.conf"
ADDR_FAILURES=6    # [throttle] address_failures in the test config
PW_DOMAIN_BOB='domain bob pw A'   # bob@example.org
PW_PLAIN_BOB='plain bob pw B'     # bob
PW_ALICE='plain alice pw C'       # alice

log() { echo "e2e: $*" >&2; }


# ---------------------------------------------------------------- inner part
# Runs inside `unshare -m`; $T, $BIN, $SASLDIR come from the outer part.
inner() {
    LOGS=$T/logs
    mkdir -p "$LOGS"
    trap inner_cleanup EXIT
    trap 'exit 130' INT TERM

    record_pid() { echo "$1 $2" >>"$T/pids"; }

    # ---- the documented paths, privately
    mount --make-rprivate /
    mkdir -p "$T/etc-saslgate" "$T/lib"
    mount --bind "$T/etc-saslgate" /etc/saslgate
    chown root:saslgate "$T/lib" && chmod 2770 "$T/lib"
    mount --bind "$T/lib" /var/lib/saslgate
    mount -t tmpfs -o mode=0755 saslgate-e2e /run/saslgate
    postfix_private_spool || return 1

    mkdir -p "$T/sasl2"
    cp -a "$SASLDIR/." "$T/sasl2/"
    rm -f "$T/sasl2/libsaslgate.so"
    install -m 0644 "$BIN/libsaslgate.so" "$T/sasl2/libsaslgate.so"
    mount --bind "$T/sasl2" "$SASLDIR"

    # The chroot mounts, exactly as the fstab block says.
    local src dst fstype opts rest
    while read -r src dst fstype opts rest; do
        case "$src" in ''|'#'*) continue ;; esac
        mount --bind "$src" "$dst" || { bad "fstab block: mount $src $dst"; return 1; }
        case ",$opts," in *,ro,*) mount -o remount,bind,ro "$dst" ;; esac
    done < <(snippet fstab-postfix-chroot)

    # ---- saslgate configuration: the packaged file, bcrypt cost 4, small budget
    sed -e 's/^#bcrypt_cost = .*/bcrypt_cost = 4/' \
        -e "s/^#address_failures = .*/address_failures = $ADDR_FAILURES/" \
        -e 's/^#slowdown_max_delay = .*/slowdown_max_delay = "1s"/' \
        "$PKGCONF" >/etc/saslgate/saslgate.conf
    grep -q '^bcrypt_cost = 4$' /etc/saslgate/saslgate.conf || { bad "test config (bcrypt_cost)"; return 1; }
    CONF=/etc/saslgate/saslgate.conf
    ADMIN_CONF=$CONF
    if [ "$E2E_DB" = postgresql ]; then
        pg_setup || return 1
    else
        SG() { "$BIN/saslgate" --config "$ADMIN_CONF" "$@"; }
        SG init 2>"$LOGS/init.log" || { bad "saslgate init ($(cat "$LOGS/init.log"))"; return 1; }
        expect "database mode 0660 group saslgate" "660 saslgate" "$(stat -c '%a %G' /var/lib/saslgate/saslgate.db)"
    fi

    # ---- test data through the CLI
    local err="$LOGS/cli.log"
    setpw() { printf '%s' "$2" | SG passwd "$1" --stdin 2>>"$err"; }
    app() { SG app-password add "$@" 2>>"$err"; }
    SG plan set smtponly --services smtp 2>>"$err" || bad "plan set"
    declare -gA APP_SMTP APP_IMAP
    local s
    for s in pp pd cd cp; do
        SG user add "a-$s" 2>>"$err" && setpw "a-$s" "master a-$s" || bad "user a-$s"
        APP_SMTP[$s]=$(app "a-$s" --label mail --services smtp)
        APP_IMAP[$s]=$(app "a-$s" --label phone --services imap)
        SG user add "b-$s" 2>>"$err" && setpw "b-$s" "master b-$s" || bad "user b-$s"
        SG totp enable "b-$s" --secret JBSWY3DPEHPK3PXP >/dev/null 2>>"$err" || bad "totp b-$s"
        SG user add "d-$s" 2>>"$err" || bad "user d-$s"
        setpw "d-$s" "master d-$s"
        SG user disable "d-$s" 2>>"$err" || bad "disable d-$s"
        SG user add "p-$s" --plan smtponly 2>>"$err" && setpw "p-$s" "master p-$s" || bad "user p-$s"
    done
    SG user add e-pp 2>>"$err" && setpw e-pp "master e-pp" || bad "user e-pp"
    # Issue 11 findings 1-2: a domain account and a plain one with the same
    # local part, and a plain account whose name is tried under a foreign domain.
    SG user add bob@example.org 2>>"$err" && setpw bob@example.org "$PW_DOMAIN_BOB" || bad "user bob@example.org"
    SG user add bob 2>>"$err" && setpw bob "$PW_PLAIN_BOB" || bad "user bob"
    SG user add alice 2>>"$err" && setpw alice "$PW_ALICE" || bad "user alice"
    for s in pp pd cd cp; do
        case "${APP_SMTP[$s]} ${APP_IMAP[$s]}" in
            ?*-*-*-*-*?' '?*-*-*-*-*?) ;;
            *) bad "app passwords for a-$s not printed (see $err)" ;;
        esac
    done

    # ---- stock saslauthd (sasldb) for the baseline services
    rm -f "$T/sasldb2"
    local realm
    for realm in "$(postconf -h myhostname)" "$(hostname)"; do
        printf '%s' 'stock pw' | saslpasswd2 -p -f "$T/sasldb2" -c -u "$realm" stock
    done
    mount --bind "$T/sasldb2" /etc/sasldb2
    mkdir -p /var/spool/postfix/var/run/saslauthd
    saslauthd -a sasldb -m /var/spool/postfix/var/run/saslauthd -n 1 2>"$LOGS/saslauthd.log"
    wait_file /var/spool/postfix/var/run/saslauthd/saslauthd.pid &&
        record_pid "$(cat /var/spool/postfix/var/run/saslauthd/saslauthd.pid)" saslauthd

    # ---- saslgated on the socket the Postfix drop-in names
    local pf_sock
    pf_sock=$(snippet saslgated-socket-postfix | sed -n 's/^ListenStream=\(..*\)$/\1/p' | tail -n1)
    start_saslgated postfix "$(dirname "$pf_sock")" || return 1

    # ---- Postfix: three smtpd services (plugin, daemon, stock) on free ports
    P_PLUGIN=$(free_port) P_DAEMON=$(free_port) P_STOCK=$(free_port)
    mkdir -p "$T/postfix-sasl"
    cp -a /etc/postfix/sasl/. "$T/postfix-sasl/"
    snippet postfix-sasl-plugin >"$T/postfix-sasl/e2e-plugin.conf"
    snippet postfix-sasl-daemon >"$T/postfix-sasl/e2e-daemon.conf"
    printf '%s\n' 'pwcheck_method: saslauthd' 'saslauthd_path: /var/run/saslauthd/mux' \
        'mech_list: PLAIN LOGIN' >"$T/postfix-sasl/e2e-stock.conf"
    mount --bind "$T/postfix-sasl" /etc/postfix/sasl
    # master.cf: the host's file without its inet services (no port 25), the
    # postlog service writing a log file, and our three services, each with
    # the documented main.cf lines as -o overrides.
    local opts_main
    opts_main=$(snippet postfix-main | sed -n 's/^\([a-z_]*\) *= *\(.*\)$/  -o { \1 = \2 }/p')
    postfix_master_base "$LOGS/postfix.log" >"$T/master.cf"
    local name port
    for name in plugin daemon stock; do
        case $name in plugin) port=$P_PLUGIN ;; daemon) port=$P_DAEMON ;; stock) port=$P_STOCK ;; esac
        {
            echo "127.0.0.1:$port inet n - y - - smtpd"
            echo "  -o syslog_name=postfix/e2e-$name"
            echo "  -o maillog_file=$LOGS/postfix.log"
            echo "  -o maillog_file_prefixes=$LOGS/postfix.log"
            echo "$opts_main"
            echo "  -o smtpd_sasl_path=e2e-$name"
            echo "  -o smtpd_tls_security_level=none"
        } >>"$T/master.cf"
    done
    start_postfix "$T/master.cf" || return 1
    for port in $P_PLUGIN $P_DAEMON $P_STOCK; do
        wait_port "$port" || bad "postfix does not listen on 127.0.0.1:$port"
    done

    # ---- Cyrus IMAP: one cyrmaster, three imapd services (daemon, plugin, stock)
    C_DAEMON=$(free_port) C_PLUGIN=$(free_port) C_STOCK=$(free_port) C_DOMAIN=$(free_port)
    local CY=$T/cyrus
    mkdir -p "$CY/conf" "$CY/part" "$CY/run"
    cyrus_base_conf "$CY" >"$CY/base.conf"
    { cat "$CY/base.conf"; snippet cyrus-daemon; } >"$CY/imapd-daemon.conf"
    { cat "$CY/base.conf"; snippet cyrus-plugin; } >"$CY/imapd-plugin.conf"
    # The documented saslgated block plus domain logins (bob@example.org keeps its
    # domain: Cyrus's default, virtdomains off, considers only the local part).
    { cat "$CY/base.conf"; snippet cyrus-daemon; echo 'virtdomains: userid'; } >"$CY/imapd-domain.conf"
    { cat "$CY/base.conf"; printf '%s\n' 'sasl_pwcheck_method: saslauthd' \
        'sasl_saslauthd_path: /var/spool/postfix/var/run/saslauthd/mux' 'sasl_mech_list: PLAIN LOGIN'; } >"$CY/imapd-stock.conf"
    cat >"$CY/cyrus.conf" <<EOF
START {
  recover cmd="ctl_cyrusdb -r -C $CY/imapd-daemon.conf"
}
SERVICES {
  imapdaemon cmd="imapd -C $CY/imapd-daemon.conf" listen="127.0.0.1:$C_DAEMON" prefork=0 maxchild=10
  imapplugin cmd="imapd -C $CY/imapd-plugin.conf" listen="127.0.0.1:$C_PLUGIN" prefork=0 maxchild=10
  imapstock cmd="imapd -C $CY/imapd-stock.conf" listen="127.0.0.1:$C_STOCK" prefork=0 maxchild=10
  imapdomain cmd="imapd -C $CY/imapd-domain.conf" listen="127.0.0.1:$C_DOMAIN" prefork=0 maxchild=10
}
EVENTS {
}
EOF
    start_cyrmaster "$CY" "$CY/imapd-daemon.conf"
    for port in $C_DAEMON $C_PLUGIN $C_STOCK $C_DOMAIN; do
        wait_port "$port" || bad "cyrmaster does not listen on 127.0.0.1:$port"
    done

    echo "--- Postfix $(postconf -h mail_version) smtpd (chrooted) on 127.0.0.1:$P_PLUGIN (plugin), :$P_DAEMON (saslgated), :$P_STOCK (stock); Cyrus imapd on :$C_DAEMON (saslgated), :$C_PLUGIN (plugin), :$C_STOCK (stock), :$C_DOMAIN (saslgated, virtdomains: userid)"

    # ---- baseline: stock saslauthd/sasldb, with the saslgate plugin installed
    expect "stock postfix (saslgate plugin present, not enabled): PLAIN 235" 235 "$(smtp "$P_STOCK" PLAIN stock 'stock pw')"
    expect "stock postfix: LOGIN wrong password 535" 535 "$(smtp "$P_STOCK" LOGIN stock 'nope')"
    expect "stock cyrus: LOGIN + SELECT INBOX" OK "$(imap "$C_STOCK" login stock 'stock pw')"
    expect "stock cyrus: AUTHENTICATE PLAIN + SELECT INBOX" OK "$(imap "$C_STOCK" plain stock 'stock pw')"

    # ---- Postfix through the in-process plugin, then through saslgated
    postfix_matrix plugin "$P_PLUGIN" pp
    postfix_matrix saslgated "$P_DAEMON" pd
    postfix_domains saslgated "$P_DAEMON"
    local pid chrooted=0
    for pid in $(pgrep -x smtpd); do
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "127.0.0.1:$P_PLUGIN" || continue
        [ "$(readlink "/proc/$pid/root")" = /var/spool/postfix ] && chrooted=1
        grep -q "^Groups:.*\b$(getent group saslgate | cut -d: -f3)\b" "/proc/$pid/status" && chrooted=$((chrooted + 1))
    done
    expect "postfix plugin: smtpd ran chrooted in /var/spool/postfix, in group saslgate" 2 "$chrooted"

    # ---- throttling through the plugin (smtpd passes the client address)
    local i got n=0
    for i in $(seq "$ADDR_FAILURES"); do
        got=$(smtp "$P_PLUGIN" PLAIN e-pp "wrong $i" 127.0.0.2)
        [ "$got" = 535 ] && n=$((n + 1))
    done
    expect "postfix plugin: $ADDR_FAILURES wrong passwords from 127.0.0.2 refused" "$ADDR_FAILURES" "$n"
    got=$(smtp "$P_PLUGIN" PLAIN e-pp 'master e-pp' 127.0.0.2)
    case $got in # 454 (temporary failure: try later) or 535
        454|535) ok "postfix plugin: right password from 127.0.0.2 now refused ($got, throttled)" ;;
        *) bad "postfix plugin: right password from 127.0.0.2 not refused (got $got)" ;;
    esac
    expect "postfix plugin: right password from 127.0.0.1 still 235" 235 "$(smtp "$P_PLUGIN" PLAIN e-pp 'master e-pp' 127.0.0.1)"
    SG log e-pp >"$LOGS/log-e-pp.txt" 2>&1
    SG --json log e-pp >"$LOGS/log-e-pp.json" 2>&1
    if grep -i 'throttl' "$LOGS/log-e-pp.txt" | grep -q '127\.0\.0\.2'; then
        ok "saslgate log e-pp shows the refusal from 127.0.0.2 as throttled"
    else
        bad "saslgate log e-pp does not show a throttled refusal from 127.0.0.2 (see $LOGS/log-e-pp.txt)"
    fi
    # ---- the block list through the plugin: refused before any password check
    SG block add 127.0.0.9 2>>"$LOGS/cli.log" || bad "saslgate block add 127.0.0.9"
    got=$(smtp "$P_PLUGIN" PLAIN e-pp 'master e-pp' 127.0.0.9)
    case $got in
        535|554) ok "postfix plugin: right password from the blocked 127.0.0.9 refused ($got)" ;;
        *) bad "postfix plugin: right password from the blocked 127.0.0.9 not refused (got $got)" ;;
    esac
    expect "postfix plugin: the refusal is audited as blocked" yes \
        "$(SG log e-pp 2>&1 | grep '127\.0\.0\.9' | grep -qi 'blocked' && echo yes || echo no)"
    SG block remove 127.0.0.9 2>>"$LOGS/cli.log" || bad "saslgate block remove 127.0.0.9"
    expect "postfix plugin: 127.0.0.9 unblocked, 235" 235 "$(smtp "$P_PLUGIN" PLAIN e-pp 'master e-pp' 127.0.0.9)"
    # After the throttling checks: these refusals from 127.0.0.1 must not eat
    # into the address budget those checks count on.
    postfix_domains plugin "$P_PLUGIN"

    # ---- Cyrus AUTHENTICATE PLAIN through the plugin, with no saslgated on /run/saslgate
    expect "cyrus plugin: no saslgated on /run/saslgate/mux yet" absent "$( [ -S /run/saslgate/mux ] && echo present || echo absent)"
    expect "cyrus plugin: AUTHENTICATE PLAIN imap app password + SELECT INBOX" OK "$(imap "$C_PLUGIN" plain a-cp "${APP_IMAP[cp]}")"
    expect "cyrus plugin: AUTHENTICATE PLAIN smtp-only app password refused" NO "$(imap "$C_PLUGIN" plain a-cp "${APP_SMTP[cp]}")"
    # A login alias: the plugin gives libsasl2 the canonical name, so Cyrus opens a-cp's mailbox.
    SG alias add a-cp a-cp-alias 2>>"$LOGS/cli.log" || bad "saslgate alias add a-cp a-cp-alias"
    expect "cyrus plugin: AUTHENTICATE PLAIN by alias + SELECT INBOX" OK "$(imap "$C_PLUGIN" plain a-cp-alias "${APP_IMAP[cp]}")"
    expect "cyrus plugin: the alias login opened user.a-cp, not user.a-cp-alias" "yes no" "$(
        m=$(su cyrus -s /bin/sh -c "/usr/lib/cyrus/bin/ctl_mboxlist -d -C $CY/imapd-plugin.conf" 2>&1)
        grep -qE 'user\.a-cp([^-a-z]|$)' <<<"$m" && echo -n yes || echo -n no
        grep -q 'user\.a-cp-alias' <<<"$m" && echo ' yes' || echo ' no')"
    expect "cyrus plugin: AUTHENTICATE PLAIN plan without imap refused" NO "$(imap "$C_PLUGIN" plain p-cp 'master p-cp')"
    expect "cyrus plugin: LOGIN (needs saslgated) refused while it is down" NO "$(imap "$C_PLUGIN" login a-cp "${APP_IMAP[cp]}")"

    # ---- Cyrus through saslgated on the documented /run/saslgate/mux
    local cy_sock
    cy_sock=$(snippet cyrus-daemon | sed -n 's/^sasl_saslauthd_path: *//p')
    start_saslgated cyrus "$(dirname "$cy_sock")" || return 1
    expect "cyrus saslgated: LOGIN imap app password + SELECT INBOX" OK "$(imap "$C_DAEMON" login a-cd "${APP_IMAP[cd]}")"
    expect "cyrus saslgated: AUTHENTICATE PLAIN imap app password + SELECT INBOX" OK "$(imap "$C_DAEMON" plain a-cd "${APP_IMAP[cd]}")"
    expect "cyrus saslgated: LOGIN smtp-only app password refused" NO "$(imap "$C_DAEMON" login a-cd "${APP_SMTP[cd]}")"
    expect "cyrus saslgated: LOGIN plan without imap refused" NO "$(imap "$C_DAEMON" login p-cd 'master p-cd')"
    expect "cyrus saslgated: LOGIN wrong password refused" NO "$(imap "$C_DAEMON" login a-cd 'wrong')"
    expect "cyrus plugin+saslgated: LOGIN imap app password now accepted" OK "$(imap "$C_PLUGIN" login a-cp "${APP_IMAP[cp]}")"
    cyrus_domains "$CY"
    # The plugin (AUTHENTICATE PLAIN in imapd itself) takes a typed domain as is.
    expect "cyrus plugin: AUTHENTICATE PLAIN bob@example.org + plain bob's password refused" NO \
        "$(imap "$C_PLUGIN" plain bob@example.org "$PW_PLAIN_BOB")"
    expect "cyrus plugin: AUTHENTICATE PLAIN alice@victim.org + plain alice's password refused" NO \
        "$(imap "$C_PLUGIN" plain alice@victim.org "$PW_ALICE")"
    # Cyrus's default (virtdomains off, the documented block as is): a domain
    # LOGIN must never get in with the plain account's password. (With its own
    # password saslgated says OK, and this Cyrus 3.6 then refuses it too, as a
    # cross-realm identity: recorded, not judged.)
    expect "cyrus saslgated (virtdomains off): LOGIN bob@example.org + plain bob's password refused" NO \
        "$(imap "$C_DAEMON" login bob@example.org "$PW_PLAIN_BOB")"
    echo "INFO  cyrus saslgated (virtdomains off): LOGIN bob@example.org + its own password: $(imap "$C_DAEMON" login bob@example.org "$PW_DOMAIN_BOB")"
    grep ' login=\"\?bob\"\?\( \|$\)' "$LOGS/saslgated-cyrus.log" | tail -n2 | sed 's/^/INFO  saslgated-cyrus: /'

    return 0
}

# The PostgreSQL round, as README.Debian's "PostgreSQL" section says: an admin
# role owning the database and an admin.conf for the saslgate command (SG),
# `init --login-role`, the mail services' saslgate.conf on the login role with
# its password file (root:saslgate 0640), and that file copied into smtpd's
# chroot. The server is a private cluster on 127.0.0.1 (TCP, scram-sha-256).
# pg_conf URL PASSWORD-FILE: saslgate.conf (stdin) with its db and
# db_password_file lines set (in place: they are before the first [section]).
pg_conf() {
    sed -e "s|^db = .*|db = \"$1\"|" -e "s|^#\?db_password_file = .*|db_password_file = \"$2\"|"
}

pg_setup() {
    local dir=$T/pgcluster admin_pw login_pw
    mkdir -p "$dir"
    pg_start "$dir" 2>"$LOGS/pg-start.log" || { bad "private PostgreSQL ($(tail -n3 "$LOGS/pg-start.log"))"; return 1; }
    PG_DIR=$dir
    admin_pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    login_pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    # 1. (createuser --pwprompt saslgate_admin; createuser saslgate_login;
    # createdb --owner saslgate_admin saslgate)
    pg_psql postgres "CREATE ROLE saslgate_admin LOGIN PASSWORD '$admin_pw'" >/dev/null &&
        pg_psql postgres "CREATE ROLE saslgate_login LOGIN" >/dev/null &&
        pg_psql postgres "CREATE DATABASE saslgate OWNER saslgate_admin" >/dev/null ||
        { bad "PostgreSQL: admin role and database"; return 1; }
    local url="postgresql://%s@127.0.0.1:$PG_PORT/saslgate?sslmode=disable"
    # 2. the admin host's configuration and password file, init with the login role
    ADMIN_CONF=/etc/saslgate/admin.conf
    (umask 077
        printf '%s\n' "$admin_pw" >/etc/saslgate/db-admin.password
        pg_conf "$(printf "$url" saslgate_admin)" /etc/saslgate/db-admin.password \
            </etc/saslgate/saslgate.conf >"$ADMIN_CONF")
    SG() { "$BIN/saslgate" --config "$ADMIN_CONF" "$@"; }
    SG init --login-role saslgate_login 2>"$LOGS/init.log" ||
        { bad "saslgate init --login-role ($(cat "$LOGS/init.log"))"; return 1; }
    pg_psql postgres "ALTER ROLE saslgate_login PASSWORD '$login_pw'" >/dev/null ||
        { bad "PostgreSQL: login role password"; return 1; }
    # 3. every mail host: saslgate.conf on the login role
    printf '%s\n' "$login_pw" >/etc/saslgate/db-login.password
    chown root:saslgate /etc/saslgate/db-login.password && chmod 0640 /etc/saslgate/db-login.password
    local tmp=$T/saslgate.conf.pg
    pg_conf "$(printf "$url" saslgate_login)" /etc/saslgate/db-login.password <"$CONF" >"$tmp"
    cat "$tmp" >"$CONF"
    # Postfix's chroot: the password file at the same path inside it.
    install -d -m 0755 /var/spool/postfix/etc/saslgate
    install -o root -g saslgate -m 0640 /etc/saslgate/db-login.password /var/spool/postfix/etc/saslgate/
    expect "login role password file root:saslgate 0640, copied into the chroot" "640 root:saslgate 640 root:saslgate" \
        "$(stat -c '%a %U:%G' /etc/saslgate/db-login.password /var/spool/postfix/etc/saslgate/db-login.password | tr '\n' ' ' | sed 's/ $//')"
    echo "--- PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT; mail services on the login role saslgate_login, the saslgate command on saslgate_admin"
}

# Issue 11 findings 1-2 through Cyrus imapd (virtdomains: userid) and saslgated:
# libsasl2 sends LOGIN bob@example.org as login "bob" + realm "example.org".
cyrus_domains() { # cyrus_domains CYRUS-DIR
    local l="cyrus saslgated (virtdomains: userid)" p=$C_DOMAIN mboxes
    expect "$l: LOGIN bob@example.org + its password + SELECT INBOX" OK "$(imap "$p" login bob@example.org "$PW_DOMAIN_BOB")"
    expect "$l: LOGIN bob@example.org + plain bob's password refused" NO "$(imap "$p" login bob@example.org "$PW_PLAIN_BOB")"
    expect "$l: AUTHENTICATE PLAIN bob@example.org + its password" OK "$(imap "$p" plain bob@example.org "$PW_DOMAIN_BOB")"
    expect "$l: AUTHENTICATE PLAIN bob@example.org + plain bob's password refused" NO "$(imap "$p" plain bob@example.org "$PW_PLAIN_BOB")"
    expect "$l: LOGIN alice@victim.org + plain alice's password refused" NO "$(imap "$p" login alice@victim.org "$PW_ALICE")"
    expect "$l: LOGIN alice (plain) accepted" OK "$(imap "$p" login alice "$PW_ALICE")"
    # Where the logins landed: the mailbox list (Cyrus's internal names).
    mboxes=$(su cyrus -s /bin/sh -c "/usr/lib/cyrus/bin/ctl_mboxlist -d -C $1/imapd-domain.conf" 2>&1)
    printf '%s\n' "$mboxes" >"$LOGS/mboxlist.txt"
    expect "$l: bob@example.org's INBOX is example.org!user.bob" yes \
        "$(grep -q 'example\.org!user\.bob\b' <<<"$mboxes" && echo yes || echo no)"
    expect "$l: no mailbox for plain bob or alice@victim.org" no \
        "$(grep -Eq '(^|[^!.a-z])user\.bob\b|victim\.org!' <<<"$mboxes" && echo yes || echo no)"
    # What saslgated was asked and told (its log line for each request).
    expect "$l: saslgated saw login=bob realm=example.org and said account=bob@example.org" yes \
        "$(daemon_line cyrus bob example.org bob@example.org)"
    expect "$l: no login accepted as plain bob or alice from a domain login" no \
        "$(grep 'result=OK' "$LOGS/saslgated-cyrus.log" | grep -E 'realm="?(example|victim)\.org' |
            grep -Eq 'account="?(bob|alice)"?( |$)' && echo yes || echo no)"
}

# daemon_line NAME LOGIN REALM ACCOUNT: yes when saslgated-NAME.log has an OK line
# for LOGIN + REALM that names ACCOUNT (fields quoted or not).
daemon_line() {
    grep 'result=OK' "$LOGS/saslgated-$1.log" | grep -E " login=\"?$2\"?( |$)" |
        grep -E " realm=\"?${3//./\\.}\"?( |$)" | grep -Eq " account=\"?${4//./\\.}\"?( |$)" &&
        echo yes || echo no
}

# Issue 11 findings 1-2 through Postfix smtpd: saslgated (pwcheck_method:
# saslauthd, where libsasl2 splits the name) or the in-process plugin.
postfix_domains() { # postfix_domains saslgated|plugin PORT
    local l="postfix $1" p=$2
    expect "$l: AUTH PLAIN bob@example.org + its password 235" 235 "$(smtp "$p" PLAIN bob@example.org "$PW_DOMAIN_BOB")"
    expect "$l: AUTH LOGIN bob@example.org + its password 235" 235 "$(smtp "$p" LOGIN bob@example.org "$PW_DOMAIN_BOB")"
    expect "$l: AUTH PLAIN bob@example.org + plain bob's password 535" 535 "$(smtp "$p" PLAIN bob@example.org "$PW_PLAIN_BOB")"
    expect "$l: AUTH LOGIN bob@example.org + plain bob's password 535" 535 "$(smtp "$p" LOGIN bob@example.org "$PW_PLAIN_BOB")"
    expect "$l: AUTH PLAIN bob (plain) + its password 235" 235 "$(smtp "$p" PLAIN bob "$PW_PLAIN_BOB")"
    expect "$l: AUTH PLAIN alice@victim.org + plain alice's password 535" 535 "$(smtp "$p" PLAIN alice@victim.org "$PW_ALICE")"
    expect "$l: AUTH PLAIN alice (plain) 235" 235 "$(smtp "$p" PLAIN alice "$PW_ALICE")"
    [ "$1" = saslgated ] && expect "$l: saslgated saw login=bob realm=example.org and said account=bob@example.org" yes \
        "$(daemon_line postfix bob example.org bob@example.org)"
    # The name Postfix was told: smtpd logs the SASL user of the message whose
    # queue file the first accepted RCPT opens ("ID: client=..., sasl_username=").
    local got i seen=no pat="postfix/e2e-${1/saslgated/daemon}/smtpd.*client=[^ ]*, sasl_method=PLAIN, sasl_username=bob@example\\.org\$"
    got=$(smtp_rcpt "$p" PLAIN bob@example.org "$PW_DOMAIN_BOB")
    for i in $(seq 50); do
        grep -Eq "$pat" "$LOGS/postfix.log" 2>/dev/null && seen=yes && break
        sleep 0.1
    done
    expect "$l: RCPT after AUTH as bob@example.org: Postfix logs sasl_username=bob@example.org" "235 250 yes" "$got $seen"
}

postfix_matrix() { # postfix_matrix LABEL PORT SUFFIX
    local l="postfix $1" p=$2 s=$3 code
    expect "$l: AUTH PLAIN smtp app password 235" 235 "$(smtp "$p" PLAIN "a-$s" "${APP_SMTP[$s]}")"
    expect "$l: AUTH LOGIN smtp app password 235" 235 "$(smtp "$p" LOGIN "a-$s" "${APP_SMTP[$s]}")"
    expect "$l: AUTH PLAIN imap-only app password 535" 535 "$(smtp "$p" PLAIN "a-$s" "${APP_IMAP[$s]}")"
    expect "$l: AUTH PLAIN wrong password 535" 535 "$(smtp "$p" PLAIN "a-$s" 'not the password')"
    code=$(oathtool --totp -b JBSWY3DPEHPK3PXP)
    expect "$l: two-step master password + TOTP code 235" 235 "$(smtp "$p" PLAIN "b-$s" "master b-$s$code")"
    expect "$l: two-step same code again 535" 535 "$(smtp "$p" LOGIN "b-$s" "master b-$s$code")"
    expect "$l: two-step master password alone 535" 535 "$(smtp "$p" PLAIN "b-$s" "master b-$s")"
    expect "$l: disabled account 535" 535 "$(smtp "$p" PLAIN "d-$s" "master d-$s")"
}


start_saslgated() { # start_saslgated NAME DIR
    mkdir -p "$2"
    "$BIN/saslgated" -a saslgate -d -m "$2" --group saslgate --config "$CONF" \
        >"$LOGS/saslgated-$1.log" 2>&1 &
    local pid=$!
    record_pid "$pid" saslgated
    if wait_socket "$2/mux"; then
        return 0
    fi
    bad "saslgated ($1) did not create $2/mux ($(tail -n3 "$LOGS/saslgated-$1.log"))"
    return 1
}


inner_cleanup() {
    local rc=$?
    stop_recorded
    [ -n "${PG_DIR:-}" ] && pg_stop "$PG_DIR"
    if [ "$rc" -ne 0 ] && [ "$CHECK_FAILED" -eq 0 ]; then
        bad "e2e aborted (exit $rc)"
    fi
    echo "--- $E2E_DB round finished in $(($(date +%s) - STARTED)) s (logs: $T/logs, kept on failure)"
    echo "$CHECK_PASSED $CHECK_FAILED $CHECK_SKIPPED" >"$T/counts"
    summary "e2e ($E2E_DB)" && [ "$rc" -eq 0 ] || exit 1
    exit 0
}

# ---------------------------------------------------------------- outer part


outer() {
    if [ "$(id -u)" != 0 ]; then
        skip "tests/e2e/run.sh needs root (real Postfix and Cyrus IMAP)"
        summary e2e
        exit 0
    fi
    local started
    started=$(date +%s)
    install_missing postfix cyrus-imapd swaks sasl2-bin oathtool libsasl2-modules python3 postgresql || { bad "apt-get install"; summary e2e; exit 1; }
    for c in unshare postfix cyrmaster swaks saslauthd saslpasswd2 oathtool python3; do
        command -v "$c" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
        command -v "$c" >/dev/null || { bad "missing $c"; summary e2e; exit 1; }
    done

    local arch
    arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null)
    SASLDIR=/usr/lib/$arch/sasl2
    [ -d "$SASLDIR" ] || SASLDIR=$(dirname "$(find /usr/lib -name libplain.so -path '*sasl2*' | head -n1)")

    if [ "${SASLGATE_E2E_BIN:-}" = installed ]; then
        # The installed Debian packages: /usr/sbin and the libsasl2 plugin directory.
        BIN=$(mktemp -d /tmp/saslgate-e2e-bin.XXXXXX)
        ln -s /usr/sbin/saslgate /usr/sbin/saslgated "$SASLDIR/libsaslgate.so" "$BIN/"
        undo rm -rf "$BIN"
        trap outer_cleanup EXIT
    elif [ -n "${SASLGATE_E2E_BIN:-}" ]; then
        BIN=$SASLGATE_E2E_BIN
    else
        BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
        log "cargo build --release (saslgate, saslgated, libsaslgate.so)"
        (cd "$ROOT" && cargo build --release --bin saslgate --bin saslgated --lib) >&2 ||
            { bad "cargo build"; summary e2e; exit 1; }
    fi
    for f in saslgate saslgated libsaslgate.so; do
        [ -e "$BIN/$f" ] || { bad "$BIN/$f missing"; summary e2e; exit 1; }
    done
    BIN=$(cd "$BIN" && pwd)

    trap outer_cleanup EXIT
    trap 'exit 130' INT TERM
    T=$(mktemp -d /tmp/saslgate-e2e.XXXXXX)
    chmod 0711 "$T"

    # Host side: the group, the memberships, the mount points.
    if ! getent group saslgate >/dev/null; then
        groupadd --system saslgate && undo groupdel saslgate
    fi
    local u
    for u in postfix cyrus; do
        if ! id -nG "$u" | tr ' ' '\n' | grep -qx saslgate; then
            gpasswd -a "$u" saslgate >/dev/null && undo gpasswd -d "$u" saslgate
        fi
    done
    ensure_dir /etc/saslgate
    ensure_dir /var/lib/saslgate
    ensure_dir /run/saslgate
    local src dst rest
    while read -r src dst rest; do
        case "$src" in ''|'#'*) continue ;; esac
        case "$dst" in /var/spool/postfix/*) ;; *) ensure_dir "$dst" ;; esac
    done < <(snippet fstab-postfix-chroot)
    if [ ! -e /etc/sasldb2 ]; then
        touch /etc/sasldb2 && undo rm -f /etc/sasldb2
    fi

    local db rounds=${SASLGATE_E2E_DB:-sqlite postgresql} passed=0 failed=0 skipped=0 p f s
    RESULT=0
    for db in $rounds; do
        if [ "$db" = postgresql ] && ! pg_find_bin 2>/dev/null; then
            skip "e2e on PostgreSQL: PostgreSQL is not installed"
            skipped=$((skipped + 1))
            continue
        fi
        mkdir -m 0711 "$T/$db"
        unshare -m --propagation private env SASLGATE_E2E_INNER=1 STARTED="$(date +%s)" T="$T/$db" E2E_DB="$db" \
            BIN="$BIN" SASLDIR="$SASLDIR" PATH="$PATH" "$SELF" || RESULT=1
        if read -r p f s <"$T/$db/counts" 2>/dev/null; then
            passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
        else
            failed=$((failed + 1)) RESULT=1
        fi
    done
    echo "--- e2e finished in $(($(date +%s) - started)) s"
    CHECK_PASSED=$passed CHECK_FAILED=$failed CHECK_SKIPPED=$skipped
    summary e2e || RESULT=1
    exit $RESULT
}

if [ "${SASLGATE_E2E_INNER:-0}" = 1 ]; then
    inner
else
    outer
fi
