# Shared by the end-to-end suites (tests/e2e/run.sh, tests/e2e/nginx.sh):
# blocks out of README.Debian, a private Postfix and Cyrus IMAP inside the
# caller's mount namespace, mail clients, the processes started (stopped at
# the end, only those) and the host changes to undo. Bash; source it after
# scripts/lib/check.sh. Uses $DOC (README.Debian), $T (the temp dir), $LOGS.

# Prints the body of the block "--- NAME: FILE ---" ... "--- end ---" of README.Debian.
snippet() {
    local body
    body=$(awk -v id="$1" '
        index($0, "--- " id ": ") == 1 { on = 1; next }
        on && $0 == "--- end ---" { exit }
        on { print }' "$DOC")
    if [ -z "$body" ]; then
        echo "$(basename "$0"): README.Debian has no block '$1'" >&2
        return 1
    fi
    printf '%s\n' "$body"
}

# record_pid PID NAME: stop_recorded stops it at the end (while it is still NAME).
record_pid() { echo "$1 $2" >>"$T/pids"; }

# Inside the private mount namespace: a fresh copy of Postfix's queue
# directory (which is also smtpd's chroot) and data directory under $T,
# mounted over the real ones.
postfix_private_spool() {
    local spool data d
    # A private Postfix: the queue directory (which is also smtpd's chroot) and
    # the data directory are fresh copies, so our master's locks, pid file and
    # queue never meet those of a Postfix the machine may be running.
    spool=$(postconf -h queue_directory) data=$(postconf -h data_directory)
    [ "$spool" = /var/spool/postfix ] || { bad "queue_directory is $spool, not Debian's /var/spool/postfix"; return 1; }
    mkdir "$T/spool" "$T/postfix-data"
    chown --reference="$spool" "$T/spool" && chmod --reference="$spool" "$T/spool"
    chown --reference="$data" "$T/postfix-data" && chmod --reference="$data" "$T/postfix-data"
    for d in "$spool"/*/; do
        d=$(basename "$d")
        case $d in
            var) ;;
            etc|lib|usr|dev) cp -a "$spool/$d" "$T/spool/" 2>/dev/null ;; # the chroot's files
            *) mkdir "$T/spool/$d" && chown --reference="$spool/$d" "$T/spool/$d" &&
                chmod --reference="$spool/$d" "$T/spool/$d" ;;
        esac
    done
    mkdir -p "$T/spool/var/run" "$T/spool/var/lib/saslgate"
    mount --bind "$T/spool" /var/spool/postfix
    mount --bind "$T/postfix-data" "$data"
}

# postfix_master_base LOGFILE: the host's master.cf without its inet
# services (no port 25), the postlog service writing LOGFILE.
postfix_master_base() {
    awk -v logf="$1" '
        /^[^#[:space:]]/ { skip = ($2 == "inet") }
        skip && !/^#/ { next }
        { print }
        /^postlog[[:space:]]/ { print "  -o maillog_file=" logf; print "  -o maillog_file_prefixes=" logf }' /etc/postfix/master.cf
}

# start_postfix MASTER.CF: the private Postfix (after postfix_private_spool)
# with this master.cf; its master is recorded for stop_recorded.
start_postfix() {
    mount --bind "$1" /etc/postfix/master.cf
    if ! postfix start >"$LOGS/postfix-start.log" 2>&1; then
        bad "postfix start ($(tail -n3 "$LOGS/postfix-start.log"))"
        return 1
    fi
    wait_file /var/spool/postfix/pid/master.pid &&
        record_pid "$(tr -d ' ' </var/spool/postfix/pid/master.pid)" master
}

# cyrus_base_conf DIR: the imapd.conf lines every private Cyrus shares
# (its state under DIR, plain-text logins allowed, INBOX created on login).
cyrus_base_conf() {
    cat <<EOF
configdirectory: $1/conf
defaultpartition: default
partition-default: $1/part
proc_path: $1/run/proc
mboxname_lockpath: $1/run/lock
lmtpsocket: $1/run/lmtp
idlesocket: $1/run/idle
notifysocket: $1/run/notify
syslog_prefix: cyrus-e2e
allowplaintext: yes
autocreate_quota: 0
failedloginpause: 0
EOF
}

# start_cyrmaster DIR IMAPD.CONF: cyrmaster as cyrus with DIR/cyrus.conf
# (DIR from cyrus_base_conf); recorded for stop_recorded.
start_cyrmaster() {
    chown -R cyrus:mail "$1"
    su cyrus -s /bin/sh -c "cyrmaster -C $2 -M $1/cyrus.conf -p $1/master.pid -d" \
        >"$LOGS/cyrmaster.log" 2>&1
    wait_file "$1/master.pid" && record_pid "$(cat "$1/master.pid")" cyrmaster
}

# smtp PORT MECH USER PASSWORD [SOURCE-ADDRESS]: prints the SMTP code of the AUTH answer.
smtp() {
    local out
    out=$(timeout 60 swaks --server 127.0.0.1 --port "$1" --local-interface "${5:-127.0.0.1}" \
        --ehlo e2e.saslgate.test --auth "$2" --auth-user "$3" --auth-password "$4" \
        --quit-after AUTH 2>&1)
    printf '%s\n' "=== swaks :$1 $2 $3 from ${5:-127.0.0.1}" "$out" >>"$LOGS/swaks.log"
    printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\(235\|535\|454\|5[0-9][0-9]\|4[0-9][0-9]\) .*/\1/p' | tail -n1 |
        grep . || echo none
}

# smtp_rcpt PORT MECH USER PASSWORD: AUTH, MAIL, RCPT (which opens the queue
# file, so smtpd logs sasl_username), QUIT; prints the AUTH and RCPT codes.
smtp_rcpt() {
    local out
    out=$(timeout 60 swaks --server 127.0.0.1 --port "$1" --ehlo e2e.saslgate.test \
        --auth "$2" --auth-user "$3" --auth-password "$4" \
        --from sender@example.net --to postmaster@localhost --quit-after RCPT 2>&1)
    printf '%s\n' "=== swaks :$1 $2 $3 to RCPT" "$out" >>"$LOGS/swaks.log"
    printf '%s %s\n' \
        "$(printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\(235\|535\) .*/\1/p' | tail -n1)" \
        "$(printf '%s\n' "$out" | sed -n '/^ *[-~*]*> *RCPT TO/,$p' | sed -n 's/^<[-~*]* *\([0-9][0-9][0-9]\) .*/\1/p' | head -n1)"
}

# imap PORT login|plain USER PASSWORD: prints OK (authenticated and INBOX selected), NO or ERR.
imap() {
    timeout 60 python3 - "$@" 2>>"$LOGS/imap.log" <<'EOF'
import imaplib, sys
port, how, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    m = imaplib.IMAP4("127.0.0.1", port)
except Exception as e:
    print("ERR"); sys.stderr.write("connect: %r\n" % e); sys.exit()
try:
    if how == "login":
        m.login(user, pw)
    else:
        m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())
except imaplib.IMAP4.error as e:
    print("NO"); sys.stderr.write("%s %s %s: %s\n" % (port, how, user, e)); sys.exit()
typ, data = m.select("INBOX")
print("OK" if typ == "OK" else "SELECT-" + typ)
m.logout()
EOF
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    local i
    for i in $(seq 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
wait_file() { local i; for i in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }
wait_socket() { local i; for i in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }

# Stops the processes recorded in $T/pids (only those, and only while they are
# still the program recorded), TERM then KILL.
stop_recorded() {
    [ -f "$T/pids" ] || return 0
    local pid name i
    while read -r pid name; do
        [ -n "$pid" ] || continue
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
            kill -TERM "$pid" 2>/dev/null
            for i in $(seq 100); do
                [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || break
                sleep 0.1
            done
            if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
                kill -KILL "$pid" 2>/dev/null
            fi
        fi
    done < <(tac "$T/pids")
    : >"$T/pids"
}

# ---- host side (outer part): changes made on the host, undone at the end
HOST_UNDO=()
undo() { HOST_UNDO+=("$*"); }

ensure_dir() { # creates a missing mount point on the host, to be removed afterwards
    local d=$1 missing=()
    while [ ! -e "$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
    for d in "${missing[@]}"; do
        mkdir "$d" && undo rmdir "$d"
    done
}

outer_cleanup() {
    local i
    [ -n "${T:-}" ] && [ -d "$T" ] && stop_recorded
    for ((i = ${#HOST_UNDO[@]} - 1; i >= 0; i--)); do
        eval "${HOST_UNDO[$i]}" >/dev/null 2>&1 || log "could not undo: ${HOST_UNDO[$i]}"
    done
    HOST_UNDO=()
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        # kept on failure (the inner part printed where the logs are)
        if [ "${SASLGATE_E2E_KEEP:-0}" != 1 ] && [ "${RESULT:-1}" = 0 ]; then
            rm -rf "$T"
        fi
    fi
}

# install_missing PACKAGE...: apt-get installs those not installed, without
# letting their daemons start.
install_missing() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    log "installing ${need[*]}"
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string saslgate.test" | debconf-set-selections
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e $policy ]; then # do not let the packages start their daemons
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 || {
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
    }
    local rc=$?
    [ $made_policy = 1 ] && rm -f $policy
    return $rc
}
