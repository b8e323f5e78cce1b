# The nginx checks of what the auth_http face decides beyond a password:
# TLS-required services, the block list, login aliases, proxy tickets for
# two-step logins and backend holds. Sourced by tests/e2e/nginx.sh after
# its helpers (login_via, word_of, secs_of, SG) and set-up (ports, CONF,
# nginx, Cyrus with two IMAP ports, saslgated).

# policy_users: the accounts these checks use.
policy_users() {
    local err="$LOGS/cli.log"
    SG user add n-totp 2>>"$err" && printf '%s' 'master n-totp' | SG passwd n-totp --stdin 2>>"$err" &&
        SG totp enable n-totp --secret JBSWY3DPEHPK3PXP >/dev/null 2>>"$err" || bad "user n-totp"
    SG user add n-held 2>>"$err" || bad "user n-held"
    APP_HELD=$(SG app-password add n-held --label imap --services imap 2>>"$err")
    [ -n "$APP_HELD" ] || bad "app password of n-held not printed (see $err)"
    SG alias add n-app n-alias 2>>"$err" || bad "saslgate alias add n-app n-alias"
}

checks_tls() {
    local got
    got=$(login_via pop3s "$N_POPS" login n-app "$APP_POP" 127.0.0.1)
    expect "nginx pop3 over TLS (Auth-SSL: on): pop app password + STAT" OK "$(word_of "$got")"
    got=$(login_via pop3s "$N_POPS" login n-app "$APP_IMAP" 127.0.0.5)
    expect "nginx pop3 over TLS: imap-only app password refused" NO "$(word_of "$got")"
    got=$(login_via pop3 "$N_POP" login n-app "$APP_POP" 127.0.0.1)
    case $got in
        NO*encryption*) ok "nginx pop3 in plain text: right password refused, TLS required ($got)" ;;
        *) bad "nginx pop3 in plain text: not refused as TLS-required (got: $got)" ;;
    esac
    expect "nginx imap in plain text: not TLS-required, accepted" OK \
        "$(word_of "$(login_via imap "$N_IMAP" login n-app "$APP_IMAP" 127.0.0.1)")"
}

checks_block() {
    local got
    SG block add 127.0.0.8/29 2>>"$LOGS/cli.log" || bad "saslgate block add 127.0.0.8/29"
    got=$(login_via imap "$N_IMAP" login n-app "$APP_IMAP" 127.0.0.9)
    expect "nginx imap: from a blocked network (127.0.0.9 in 127.0.0.8/29) refused" NO "$(word_of "$got")"
    expect "nginx smtp: from a blocked network refused" 554 "$(smtp "$N_SMTP" PLAIN n-app "$APP_SMTP" 127.0.0.10)"
    expect "nginx imap: 127.0.0.7, outside the blocked network, accepted" OK \
        "$(word_of "$(login_via imap "$N_IMAP" login n-app "$APP_IMAP" 127.0.0.7)")"
    SG block remove 127.0.0.8/29 2>>"$LOGS/cli.log" || bad "saslgate block remove"
    expect "nginx imap: 127.0.0.9 accepted once unblocked" OK \
        "$(word_of "$(login_via imap "$N_IMAP" login n-app "$APP_IMAP" 127.0.0.9)")"
}

checks_alias() {
    local got mboxes
    got=$(login_via imap "$N_IMAP" login n-alias "$APP_IMAP" 127.0.0.1)
    expect "nginx imap: LOGIN by alias n-alias + SELECT INBOX" OK "$(word_of "$got")"
    got=$(login_via imap "$N_IMAP" plain n-alias "$APP_IMAP" 127.0.0.1)
    expect "nginx imap: AUTHENTICATE PLAIN by alias" OK "$(word_of "$got")"
    mboxes=$(su cyrus -s /bin/sh -c "/usr/lib/cyrus/bin/ctl_mboxlist -d -C $T/cyrus/imapd.conf" 2>&1)
    expect "nginx imap: the alias logins used the canonical account's mailbox (no user.n-alias)" no \
        "$(grep -q 'user\.n-alias' <<<"$mboxes" && echo yes || echo no)"
    expect "saslgated: the alias login answered Auth-User n-app" yes \
        "$(grep 'face=http result=OK' "$LOGS/saslgated.log" | grep 'login="n-alias"' | grep -q 'account="n-app"' && echo yes || echo no)"
}

checks_ticket() {
    local code got
    code=$(oathtool --totp -b JBSWY3DPEHPK3PXP)
    got=$(login_via imap "$N_IMAP" login n-totp "master n-totp$code" 127.0.0.1)
    expect "nginx imap: master password + TOTP code (the backend gets a proxy ticket) + SELECT INBOX" OK \
        "$(word_of "$got")"
    got=$(login_via imap "$N_IMAP" login n-totp "master n-totp$code" 127.0.0.1)
    expect "nginx imap: the same code again refused" NO "$(word_of "$got")"
    expect "saslgated: Cyrus's check of the backend login used the ticket (credential proxy-ticket)" yes \
        "$(grep -v 'face=http' "$LOGS/saslgated.log" | grep 'result=OK' | grep 'n-totp' | grep -q 'proxy-ticket' && echo yes || echo no)"
    expect "saslgated: the code never reached the backend check" no \
        "$(grep -v 'face=http' "$LOGS/saslgated.log" | grep 'n-totp' | grep -q 'master+totp' && echo yes || echo no)"
}

# hold_login PORT USER PASSWORD OUT: a login through nginx in the background.
hold_login() {
    login_via imap "$1" login "$2" "$3" 127.0.0.1 >"$4" &
    HOLD_PID=$!
}

checks_hold() {
    local got
    SG user set-backend n-held imap "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log" || bad "saslgate user set-backend"
    # Held, then released: the login waits without an error, then succeeds.
    SG backend hold "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log" || bad "saslgate backend hold"
    hold_login "$N_IMAP" n-held "$APP_HELD" "$T/hold-1"
    sleep 2
    expect "nginx imap: a login to a held backend is still waiting after 2 s" yes \
        "$(kill -0 "$HOLD_PID" 2>/dev/null && echo yes || echo no)"
    SG backend release "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log" || bad "saslgate backend release"
    wait "$HOLD_PID"
    got=$(cat "$T/hold-1")
    expect "nginx imap: the held login succeeded once released" OK "$(word_of "$got")"
    if python3 -c "import sys; sys.exit(not float(sys.argv[1]) >= 1.9)" "$(secs_of "$got")"; then
        ok "nginx imap: it had waited ($(secs_of "$got") s)"
    else
        bad "nginx imap: the held login took only $(secs_of "$got") s"
    fi
    # Held, then the account moved to another backend: the retry goes there.
    SG backend hold "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log"
    hold_login "$N_IMAP" n-held "$APP_HELD" "$T/hold-2"
    sleep 1.5
    SG user set-backend n-held imap "127.0.0.1:$C_IMAP2" 2>>"$LOGS/cli.log" || bad "saslgate user set-backend (move)"
    wait "$HOLD_PID"
    expect "nginx imap: a held login moved to another backend succeeded" OK "$(word_of "$(cat "$T/hold-2")")"
    expect "saslgated: the moved login was sent to the second backend" yes \
        "$(grep 'face=http result=OK' "$LOGS/saslgated.log" | grep 'account="n-held"' | grep -q "127.0.0.1:$C_IMAP2" && echo yes || echo no)"
    # Held for longer than max_hold (3 s in this config): a temporary failure.
    SG user set-backend n-held imap "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log"
    sleep 3.5
    got=$(login_via imap "$N_IMAP" login n-held "$APP_HELD" 127.0.0.1)
    case $got in
        NO*'try again later'*) ok "nginx imap: a hold older than max_hold answers a temporary failure ($got)" ;;
        *) bad "nginx imap: a hold older than max_hold did not answer a temporary failure (got: $got)" ;;
    esac
    SG backend release "127.0.0.1:$C_IMAP" 2>>"$LOGS/cli.log"
    expect "nginx imap: released, the login goes through" OK \
        "$(word_of "$(login_via imap "$N_IMAP" login n-held "$APP_HELD" 127.0.0.1)")"
}
