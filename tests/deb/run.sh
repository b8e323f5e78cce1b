#!/bin/bash
# Debian package test: builds the packages (make deb), runs lintian, installs
# them with apt-get, checks what they set up (plugin seen by libsasl2, group,
# user, database permissions, conffile, units, man pages), runs saslgated with
# the packaged configuration (no systemctl) against the real testsaslauthd,
# runs saslgate as root and as a member of the group saslgate, reinstalls
# (upgrade path: backup + migration), removes and purges, and checks what is
# left after each.
# Least privilege (issue 11, finding 5): a user in only the socket group
# (saslgated.socket's SocketGroup, saslgate-auth) logs in through saslgated
# but cannot open the database, not even for reading, nor use the plugin; a
# user in the database group saslgate logs in through the installed plugin
# in-process (real libsasl2, sasl_server_start PLAIN).
#
# saslgate-web (issue 25): installed with its own user, socket group and unit,
# the unit neither enabled nor started; run by hand as its user with a [web]
# section, it serves the sign-in page (200, CSP) on its UNIX socket to root and
# to nginx's group, not to others. Purge removes its user and group.
#
# Upgrade backups (issue 23, finding 1): the package, repacked as older
# versions, is installed and upgraded; a member of the group saslgate plants a
# backup/ directory with symlinks under /var/lib/saslgate; the upgrade to the
# real package must write through none of them and keep its backup in the
# root-only /var/backups/saslgate.
#
# Root only; refuses (loud SKIP) when saslgate is already installed, since
# the test purges it at the end.
# Environment: CARGO_TARGET_DIR (the .debs go to $CARGO_TARGET_DIR/deb, default
# ./target/deb), SASLGATE_DEB_DIR=DIR to test prebuilt .debs in DIR instead of
# building them.
# Output: one line per check (scripts/lib/check.sh), then "deb: N passed, N failed";
# exit 1 on any failure.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# ok, bad, skip, check, check_fails, expect, summary; check writes the
# commands' output to $CHECK_LOG (set below, once the temp dir exists).
. "$ROOT/scripts/lib/check.sh"
skip_all() { # the whole suite cannot run here
    skip "tests/deb/run.sh: $*"
    summary deb
    exit 0
}

[ "$(id -u)" = 0 ] || skip_all "needs root (installs and purges the packages)"
export PATH=$PATH:/usr/sbin:/sbin
for p in saslgate libsasl2-modules-saslgate; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed'; then
        skip_all "$p is installed on this machine; this test would purge it and its data"
    fi
done
for u in sgdebtest sgdebauth sgdebplant; do
    getent passwd "$u" >/dev/null && skip_all "user $u exists; this test creates and deletes it"
done
getent passwd saslgate-web >/dev/null &&
    skip_all "user saslgate-web exists (left by an earlier install?); the package creates it and this test checks its groups"
command -v curl >/dev/null || echo "      (curl missing: saslgate-web's page will not be fetched)"

for c in dpkg-buildpackage lintian apt-get testsaslauthd saslpluginviewer runuser cc sqlite3; do
    command -v "$c" >/dev/null || skip_all "$c is missing (apt-get install debhelper lintian sasl2-bin sqlite3)"
done
BACKUPS=/var/backups/saslgate # the package's root-only backup directory
[ -e "$BACKUPS" ] || [ -L "$BACKUPS" ] && skip_all "$BACKUPS exists; this test creates and deletes it"

STARTED=$(date +%s)
TMP=$(mktemp -d /tmp/saslgate-deb.XXXXXX)
chmod 0755 "$TMP"
LOG=$TMP/log
CHECK_LOG=$LOG
TESTUSER=sgdebtest
AUTHUSER=sgdebauth # in the socket group only (the daemon path)
CREATED_AUTHUSER=0
DAEMON_PID=
WEB_PID=    # saslgate-web (its own pid, from the pid file its shell writes)
WEB_RUNUSER=
INSTALLED=0
CREATED_USER=0
PLANTUSER=sgdebplant # in the database group, plants links before an upgrade
CREATED_PLANTUSER=0

# Stops the saslgate-web this test started (by its pid), if it still runs.
stop_web() {
    if [ -n "$WEB_PID" ] && [ "$(readlink "/proc/$WEB_PID/exe" 2>/dev/null)" = /usr/sbin/saslgate-web ]; then
        kill "$WEB_PID" 2>/dev/null
    fi
    [ -n "$WEB_RUNUSER" ] && wait "$WEB_RUNUSER" 2>/dev/null
    WEB_PID= WEB_RUNUSER=
}
cleanup() {
    local rc=$?
    if [ -n "$DAEMON_PID" ] && [ "$(cat "/proc/$DAEMON_PID/comm" 2>/dev/null)" = saslgated ]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    stop_web
    [ "$CREATED_USER" = 1 ] && userdel "$TESTUSER" >/dev/null 2>&1
    [ "$CREATED_AUTHUSER" = 1 ] && userdel "$AUTHUSER" >/dev/null 2>&1
    [ "$CREATED_PLANTUSER" = 1 ] && userdel "$PLANTUSER" >/dev/null 2>&1
    if [ "$INSTALLED" = 1 ]; then # a check failed half-way: leave no package behind
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q saslgate libsasl2-modules-saslgate >>"$LOG" 2>&1
    fi
    # Purge keeps the backups (doc/packaging.md); this test made them.
    rm -rf "$BACKUPS"
    if [ "$rc" -ne 0 ] && [ "$CHECK_FAILED" -eq 0 ]; then
        bad "deb test aborted (exit $rc)"
    fi
    if [ "$CHECK_FAILED" -gt 0 ]; then
        echo "--- finished in $(($(date +%s) - STARTED)) s (logs kept in $TMP)"
        summary deb
        exit 1
    fi
    echo "--- finished in $(($(date +%s) - STARTED)) s"
    summary deb
    rm -rf "$TMP"
    exit 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build
if [ -n "${SASLGATE_DEB_DIR:-}" ]; then
    DEBS=$(cd "$SASLGATE_DEB_DIR" && pwd)
else
    DEBS=${CARGO_TARGET_DIR:-$ROOT/target}/deb
    echo "--- make deb (log: $TMP/build.log)"
    if make -C "$ROOT" deb DEB_OUT="$DEBS" >"$TMP/build.log" 2>&1; then
        ok "make deb (dpkg-buildpackage -us -uc -b)"
    else
        tail -n 30 "$TMP/build.log"
        bad "make deb"
        exit 1
    fi
fi
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
PKG_MAIN=$(ls "$DEBS"/saslgate_"$VERSION"_*.deb 2>/dev/null | head -n1)
PKG_PLUGIN=$(ls "$DEBS"/libsasl2-modules-saslgate_"$VERSION"_*.deb 2>/dev/null | head -n1)
if [ -z "$PKG_MAIN" ] || [ -z "$PKG_PLUGIN" ]; then
    bad "packages for version $VERSION (Cargo.toml) in $DEBS"
    exit 1
fi
expect "package version matches Cargo.toml" "$VERSION $VERSION" \
    "$(dpkg-deb -f "$PKG_MAIN" Version) $(dpkg-deb -f "$PKG_PLUGIN" Version)"

# ---- lintian: no errors; warnings must be listed in doc/packaging.md
lintian --display-info "$PKG_MAIN" "$PKG_PLUGIN" >"$TMP/lintian.txt" 2>&1
if grep -q '^E: ' "$TMP/lintian.txt"; then
    grep '^E: ' "$TMP/lintian.txt"
    bad "lintian: errors"
else
    ok "lintian: no errors"
fi
undocumented=0
while read -r tag; do
    if ! grep -q -- "$tag" "$ROOT/doc/packaging.md" 2>/dev/null; then
        echo "      lintian warning not explained in doc/packaging.md: $tag"
        undocumented=1
    fi
done < <(sed -n 's/^W: [^ ]*: \([^ ]*\).*/\1/p' "$TMP/lintian.txt" | sort -u)
[ $undocumented = 0 ] && ok "lintian: every warning fixed or explained in doc/packaging.md" ||
    bad "lintian: warnings not explained in doc/packaging.md"
echo "      lintian: $(grep -c '^E: ' "$TMP/lintian.txt") errors, $(grep -c '^W: ' "$TMP/lintian.txt") warnings, $(grep -c '^I: ' "$TMP/lintian.txt") info"

# ---- the packaged configuration documents every key of src/config.rs
keys=$(awk '/^struct (ConfigFile|ThrottleFile) \{/ { on = 1; next } on && /^\}/ { on = 0 } on' "$ROOT/src/config.rs" |
    sed -n 's/^ *\([a-z0-9_]*\): Option<.*/\1/p' | grep -v '^throttle$')
missing=""
for k in $keys; do
    grep -Eq "^#? ?$k = |^#? ?\[$k\]" "$ROOT/debian/saslgate.conf" || missing="$missing conf:$k"
    grep -q "$k" "$ROOT/doc/man/saslgate.conf.5" || missing="$missing man:$k"
done
expect "saslgate.conf and saslgate.conf(5) document every key of src/config.rs ($(echo $keys | wc -w) keys)" "" "${missing# }"

# ---- install
echo "--- apt-get install ./saslgate ./libsasl2-modules-saslgate"
INSTALLED=1
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$PKG_MAIN" "$PKG_PLUGIN" >"$TMP/install.log" 2>&1; then
    ok "apt-get install ./$(basename "$PKG_MAIN") ./$(basename "$PKG_PLUGIN")"
else
    tail -n 20 "$TMP/install.log"
    bad "apt-get install"
    exit 1
fi
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
check "plugin installed in /usr/lib/$MA/sasl2/libsaslgate.so" test -f "/usr/lib/$MA/sasl2/libsaslgate.so"
saslpluginviewer >"$TMP/pluginviewer.txt" 2>&1
check "saslpluginviewer lists the saslgate server plugin with PLAIN and LOGIN" sh -c \
    "grep -A1 '^Plugin \"saslgate\" \[loaded\]' '$TMP/pluginviewer.txt' | grep -q 'mechanism: PLAIN,' &&
     grep -A1 '^Plugin \"saslgate\" \[loaded\]' '$TMP/pluginviewer.txt' | grep -q 'mechanism: LOGIN,'"
check "saslpluginviewer lists the saslgate auxprop plugin" \
    sh -c "grep -A1 'auxprop mechanisms are' '$TMP/pluginviewer.txt' | tail -n1 | grep -qw saslgate"
check "system group saslgate" getent group saslgate
check "system group saslgate-auth" getent group saslgate-auth
check "system group saslgate-http (the auth_http socket's), saslgate a member" sh -c \
    'getent group saslgate-http | cut -d: -f4 | tr , "\n" | grep -qx saslgate'
check "system user saslgate (no login shell)" sh -c 'getent passwd saslgate | grep -q ":/usr/sbin/nologin$"'
expect "/var/lib/saslgate is saslgate:saslgate 2770" "2770 saslgate:saslgate" "$(stat -c '%a %U:%G' /var/lib/saslgate)"
DB=/var/lib/saslgate/saslgate.db
expect "database initialised on first install, group saslgate, mode 0660" "660 saslgate" "$(stat -c '%a %G' "$DB" 2>&1)"
check "/etc/saslgate/saslgate.conf is a conffile" \
    sh -c "dpkg-query -W -f='\${Conffiles}' saslgate | grep -q ' /etc/saslgate/saslgate.conf '"
check "man pages saslgate(8) saslgated(8) saslgate.conf(5)" \
    test -f /usr/share/man/man8/saslgate.8.gz -a -f /usr/share/man/man8/saslgated.8.gz -a -f /usr/share/man/man5/saslgate.conf.5.gz
check "README.Debian installed" test -f /usr/share/doc/saslgate/README.Debian.gz
check "systemd units saslgated.service and saslgated.socket" \
    test -f /lib/systemd/system/saslgated.service -a -f /lib/systemd/system/saslgated.socket
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/saslgated.socket /lib/systemd/system/saslgated.service \
        /lib/systemd/system/saslgate-web.service \
        >"$TMP/verify.txt" 2>&1
    expect "systemd-analyze verify: units clean" "" "$(cat "$TMP/verify.txt")"
fi
check "service hardened (ProtectSystem=strict, NoNewPrivileges, PrivateTmp, ReadWritePaths)" sh -c \
    'u=/lib/systemd/system/saslgated.service; grep -q "^ProtectSystem=strict" $u && grep -q "^NoNewPrivileges=yes" $u &&
     grep -q "^PrivateTmp=yes" $u && grep -q "^ReadWritePaths=/var/lib/saslgate$" $u'
check "socket and service enabled" sh -c \
    'test -L /etc/systemd/system/sockets.target.wants/saslgated.socket && test -L /etc/systemd/system/multi-user.target.wants/saslgated.service'

# ---- saslgate as root
SG=/usr/sbin/saslgate
check "root: saslgate user add alice" $SG user add alice
check "root: saslgate passwd alice --stdin" sh -c "printf %s 'root set pw' | $SG passwd alice --stdin"
APP=$($SG app-password add alice --label phone --services imap 2>>"$LOG")
check "root: saslgate app-password add (printed $APP)" test -n "$APP"
check "root: saslgate verify accepts the app password for imap" sh -c "printf %s '$APP' | $SG verify alice --service imap"

# ---- saslgate as a member of the group saslgate, and as a non-member
if ! getent passwd "$TESTUSER" >/dev/null; then
    useradd -M -N -g nogroup -G saslgate -s /bin/sh "$TESTUSER" && CREATED_USER=1
fi
check "group member: saslgate user add bob" runuser -u "$TESTUSER" -- $SG user add bob
check "group member: saslgate passwd bob" runuser -u "$TESTUSER" -- sh -c "printf %s 'member pw' | $SG passwd bob --stdin"
check "group member: saslgate user list shows alice and bob" \
    sh -c "runuser -u $TESTUSER -- $SG user list | grep -q alice && runuser -u $TESTUSER -- $SG user list | grep -q bob"
check "group member: saslgate log alice" runuser -u "$TESTUSER" -- $SG log alice
runuser -u nobody -- $SG user list >>"$LOG" 2>&1
rc=$?
expect "non-member (nobody): saslgate refused access to the database (exit 3)" 3 "$rc"
world=$(find /var/lib/saslgate -perm -o=r | head -n1)
expect "nothing under /var/lib/saslgate is world-readable" "" "$world"

# ---- saslgated with the packaged configuration, as the unit runs it, without systemctl
EXEC=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/saslgated.service)
UNIT_USER=$(sed -n 's/^User=//p' /lib/systemd/system/saslgated.service)
SOCK=$(sed -n 's/^ListenStream=//p' /lib/systemd/system/saslgated.socket)
# The group that the mail services on the daemon path join (README.Debian), and
# the mode, as saslgated.socket sets them.
SOCK_GROUP=$(sed -n 's/^SocketGroup=//p' /lib/systemd/system/saslgated.socket)
SOCK_MODE=$(sed -n 's/^SocketMode=//p' /lib/systemd/system/saslgated.socket)
DB_GROUP=$(stat -c %G "$DB")
expect "saslgated.socket: SocketGroup=saslgate-auth" saslgate-auth "$SOCK_GROUP"
expect "saslgated.service: ExecStart passes --group saslgate-auth (for a socket it creates itself)" \
    saslgate-auth "$(echo "$EXEC" | sed -n 's/.* --group \([^ ]*\).*/\1/p')"
# Finding 5 of issue 11: one group for both let the services on the daemon path
# write every account.
if [ -n "$SOCK_GROUP" ] && [ "$SOCK_GROUP" != "$DB_GROUP" ]; then
    ok "the socket group ($SOCK_GROUP) is not the database group ($DB_GROUP)"
else
    bad "the socket group ($SOCK_GROUP) is not the database group ($DB_GROUP)"
fi
# A user in the socket group only, as README.Debian sets up postfix and cyrus
# for the daemon path.
if [ -n "$SOCK_GROUP" ] && useradd -M -N -g nogroup -G "$SOCK_GROUP" -s /bin/sh "$AUTHUSER" >>"$LOG" 2>&1; then
    CREATED_AUTHUSER=1
fi
expect "$AUTHUSER created with the socket group only" "nogroup $SOCK_GROUP" "$(id -nG "$AUTHUSER" 2>&1)"
# open_as USER r|w FILE: what opening FILE as USER says (empty: it opened).
# Read: "<"; write: ">>", which appends nothing, so a wrongly allowed open changes nothing.
open_as() {
    local op='exec 3<"$1"'
    [ "$2" = w ] && op='exec 3>>"$1"'
    id "$1" >/dev/null 2>&1 || { echo "no user $1"; return; }
    runuser -u "$1" -- sh -c "$op" sh "$3" 2>&1 | sed 's/.*: //'
}
# The unit's command line, in the foreground with logs on stderr (-d instead of -f),
# with the socket directory of saslgated.socket moved to a temp dir.
RUN=$TMP/run
install -d -o "$UNIT_USER" -g saslgate -m 0755 "$RUN"
CMD=$(echo "$EXEC" | sed -e 's/ -f / -d /' -e "s# -m $(dirname "$SOCK") # -m $RUN #")
echo "      unit: $EXEC"
echo "      test: runuser -u $UNIT_USER -- $CMD"
# shellcheck disable=SC2086
runuser -u "$UNIT_USER" -- $CMD >"$TMP/saslgated.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$RUN/mux" ] && break; sleep 0.1; done
check "saslgated (packaged config, user $UNIT_USER) listens on $RUN/mux" test -S "$RUN/mux"
out=$(testsaslauthd -f "$RUN/mux" -s imap -u alice -p "$APP" 2>&1)
expect "testsaslauthd: imap app password accepted" '0: OK "Success."' "$out"
out=$(testsaslauthd -f "$RUN/mux" -s smtp -u alice -p "$APP" 2>&1)
case $out in *NO*) ok "testsaslauthd: same app password for smtp refused" ;; *) bad "testsaslauthd smtp: $out" ;; esac
out=$(testsaslauthd -f "$RUN/mux" -s imap -u bob -p 'member pw' 2>&1)
expect "testsaslauthd: master password set by a group member accepted" '0: OK "Success."' "$out"
out=$(testsaslauthd -f "$RUN/mux" -s imap -u bob -p 'wrong' 2>&1)
case $out in *NO*) ok "testsaslauthd: wrong password refused" ;; *) bad "testsaslauthd wrong password: $out" ;; esac
expect "socket made by saslgated (unit's --group): mode 660, group $SOCK_GROUP" "660 $SOCK_GROUP" \
    "$(stat -c '%a %G' "$RUN/mux" 2>&1)"
out=$(runuser -u "$AUTHUSER" -- testsaslauthd -f "$RUN/mux" -s imap -u alice -p "$APP" 2>&1)
expect "$AUTHUSER (socket group only): testsaslauthd through saslgated accepted" '0: OK "Success."' "$out"
out=$(runuser -u nobody -- testsaslauthd -f "$RUN/mux" -s imap -u alice -p "$APP" 2>&1)
if [ "$out" != '0: OK "Success."' ]; then
    ok "nobody (in neither group) cannot use saslgated's socket"
else
    bad "nobody (in neither group) cannot use saslgated's socket: $out"
fi
kill "$DAEMON_PID" 2>/dev/null
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
# The same through socket activation, as saslgated.socket + saslgated.service run it:
# the listening socket is handed over as fd 3 (systemd-socket-activate), the
# daemon runs as the unit's user with the unit's flags (-f: logs to syslog).
if command -v systemd-socket-activate >/dev/null && command -v setpriv >/dev/null; then
    RUN2=$TMP/run2
    install -d -o "$UNIT_USER" -g saslgate -m 0755 "$RUN2"
    CMD2=$(echo "$EXEC" | sed -e "s# -m $(dirname "$SOCK") # -m $RUN2 #")
    # shellcheck disable=SC2086
    systemd-socket-activate -l "$RUN2/mux" \
        setpriv --reuid="$UNIT_USER" --regid=saslgate --init-groups -- $CMD2 >"$TMP/saslgated-activated.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do [ -S "$RUN2/mux" ] && break; sleep 0.1; done
    # What saslgated.socket sets and systemd-socket-activate cannot: group and mode.
    chgrp "$SOCK_GROUP" "$RUN2/mux" && chmod "$SOCK_MODE" "$RUN2/mux"
    out=$(timeout 20 testsaslauthd -f "$RUN2/mux" -s imap -u alice -p "$APP" 2>&1)
    expect "socket-activated saslgated (unit's ExecStart, user $UNIT_USER): app password accepted" '0: OK "Success."' "$out"
    out=$(timeout 20 runuser -u "$AUTHUSER" -- testsaslauthd -f "$RUN2/mux" -s imap -u alice -p "$APP" 2>&1)
    expect "socket-activated saslgated: $AUTHUSER (socket group only) accepted" '0: OK "Success."' "$out"
    if [ "$(cat "/proc/$DAEMON_PID/comm" 2>/dev/null)" = saslgated ]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    DAEMON_PID=
else
    echo "      (systemd-socket-activate or setpriv missing: socket activation not tested)"
fi
check "saslgate log shows the daemon's decisions" sh -c "$SG log bob | grep -q refused"

# ---- saslgate-web: installed, off until configured; then run by hand as its user
WEB=/usr/sbin/saslgate-web
WEBUNIT=/lib/systemd/system/saslgate-web.service
check "saslgate-web installed in /usr/sbin" test -x "$WEB"
check "saslgate-web --help names --config and --listen" sh -c "$WEB --help | grep -q -- --config && $WEB --help | grep -q -- --listen"
check "man page saslgate-web(8)" test -f /usr/share/man/man8/saslgate-web.8.gz
check "system group saslgate-web-http (saslgate-web's socket group, for nginx)" getent group saslgate-web-http
check "system user saslgate-web (no login shell)" sh -c 'getent passwd saslgate-web | grep -q ":/usr/sbin/nologin$"'
expect "user saslgate-web: in saslgate-web-http and the database group saslgate only" "saslgate saslgate-web-http" \
    "$(id -nG saslgate-web 2>&1 | tr ' ' '\n' | sort | xargs)"
check "systemd unit saslgate-web.service installed" test -f "$WEBUNIT"
check_fails "saslgate-web.service not enabled (no multi-user.target.wants link)" \
    test -e /etc/systemd/system/multi-user.target.wants/saslgate-web.service
expect "systemctl is-enabled saslgate-web.service" disabled "$(systemctl is-enabled saslgate-web.service 2>&1)"
web_running() { # any process running the installed binary
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$WEB" ] && return 0
    done
    return 1
}
check_fails "saslgate-web not started by the install" web_running
unit_key() { sed -n "s/^$1=//p" "$WEBUNIT"; }
expect "saslgate-web.service: User, Group, ExecStart" \
    "saslgate-web saslgate-web-http $WEB --config /etc/saslgate/saslgate.conf" \
    "$(unit_key User) $(unit_key Group) $(unit_key ExecStart)"
expect "saslgate-web.service: hardened like saslgated's" \
    "strict yes yes /var/lib/saslgate yes AF_UNIX" \
    "$(unit_key ProtectSystem) $(unit_key NoNewPrivileges) $(unit_key PrivateTmp) $(unit_key ReadWritePaths) $(unit_key PrivateNetwork) $(unit_key RestrictAddressFamilies)"
# README.Debian's [web] listen, its nginx block and the unit's runtime directory
# name one socket.
zcat /usr/share/doc/saslgate/README.Debian.gz >"$TMP/readme.txt" 2>>"$LOG"
WEB_SOCK=$(sed -n 's/^ *listen = "\(\/run\/saslgate-web\/[^"]*\)"$/\1/p' "$TMP/readme.txt" | head -n1)
expect "README.Debian's [web] listen is in the unit's RuntimeDirectory" "/run/$(unit_key RuntimeDirectory)/http" "$WEB_SOCK"
check "README.Debian's nginx block proxies to that socket" \
    grep -qx "    proxy_pass http://unix:$WEB_SOCK:;" "$TMP/readme.txt"
expect "unit's UMask and RuntimeDirectoryMode (socket 0770, directory 0750, group saslgate-web-http)" "0007 0750" \
    "$(unit_key UMask) $(unit_key RuntimeDirectoryMode)"
runuser -u saslgate-web -- "$WEB" --config /etc/saslgate/saslgate.conf >"$TMP/web-unconfigured.log" 2>&1
expect "the packaged configuration ([web] commented out): saslgate-web refuses to start (exit 2)" 2 "$?"
# Configured: the packaged file plus a [web] section naming a socket in a
# directory made as the unit's RuntimeDirectory is (owner, group, mode).
WEBRUN=$TMP/webrun
install -d -o saslgate-web -g saslgate-web-http -m 0750 "$WEBRUN"
{ cat /etc/saslgate/saslgate.conf
  printf '\n[web]\nlisten = "%s/http"\npublic_url = "https://account.example.org"\n' "$WEBRUN"; } >"$TMP/web.conf"
chmod 0644 "$TMP/web.conf"
# As the unit starts it (user, primary group, umask), in the foreground.
runuser -u saslgate-web -- sh -c 'echo $$ >"$1/pid"; umask 0007; exec "$2" --config "$3"' \
    sh "$WEBRUN" "$WEB" "$TMP/web.conf" >"$TMP/saslgate-web.log" 2>&1 &
WEB_RUNUSER=$!
for _ in $(seq 100); do [ -S "$WEBRUN/http" ] && break; sleep 0.1; done
WEB_PID=$(cat "$WEBRUN/pid" 2>/dev/null)
check "saslgate-web (as its user, packaged config + [web]) listens on $WEBRUN/http" test -S "$WEBRUN/http"
expect "its socket: mode 770, saslgate-web:saslgate-web-http" "770 saslgate-web:saslgate-web-http" \
    "$(stat -c '%a %U:%G' "$WEBRUN/http" 2>&1)"
if command -v curl >/dev/null; then
    web_get() { # web_get [runuser args --]: the status code of GET /signin over the socket
        "$@" curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
            --unix-socket "$WEBRUN/http" -H 'X-Real-IP: 192.0.2.9' http://account.example.org/signin 2>>"$LOG"
    }
    expect "saslgate-web (as its user, packaged config) serves the sign-in page on its socket: 200" 200 \
        "$(curl -s -o "$TMP/signin.html" -D "$TMP/signin.headers" -w '%{http_code}' --max-time 10 \
            --unix-socket "$WEBRUN/http" -H 'X-Real-IP: 192.0.2.9' http://account.example.org/signin 2>>"$LOG")"
    expect "  with the CSP header" \
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" \
        "$(sed -n 's/^[Cc]ontent-[Ss]ecurity-[Pp]olicy: *\(.*\)\r$/\1/p' "$TMP/signin.headers")"
    check "  and the sign-in form" grep -q 'name="password"' "$TMP/signin.html"
    expect "a member of saslgate-web-http (nginx's group) can connect: 200" 200 \
        "$(web_get runuser -u nobody -g saslgate-web-http --)"
    out=$(web_get runuser -u nobody --)
    if [ "$out" != 200 ]; then
        ok "nobody (not in saslgate-web-http) cannot connect to saslgate-web's socket"
    else
        bad "nobody (not in saslgate-web-http) cannot connect to saslgate-web's socket (got $out)"
    fi
else
    skip "curl missing: saslgate-web's page not fetched (apt-get install curl)"
fi
stop_web
check_fails "saslgate-web stopped (SIGTERM)" web_running

# ---- least privilege: the socket group cannot open the database; the database
# group can use the plugin (in-process, real libsasl2 with the installed plugins)
for f in "$DB" "$DB-wal"; do
    [ -e "$f" ] || continue
    expect "$AUTHUSER (socket group only) cannot open $(basename "$f") for reading" \
        "Permission denied" "$(open_as "$AUTHUSER" r "$f")"
    expect "$AUTHUSER (socket group only) cannot open $(basename "$f") for writing" \
        "Permission denied" "$(open_as "$AUTHUSER" w "$f")"
done
# The same check passes for the database group (so it tells the two apart).
expect "$TESTUSER (group $DB_GROUP) can open the database for reading and writing" "" \
    "$(open_as "$TESTUSER" r "$DB")$(open_as "$TESTUSER" w "$DB")"
rc=$(id "$AUTHUSER" >/dev/null 2>&1 && { runuser -u "$AUTHUSER" -- $SG user list >>"$LOG" 2>&1; echo $?; })
expect "$AUTHUSER (socket group only): saslgate refused access to the database (exit 3)" 3 "$rc"
# One PLAIN login through libsasl2 with the installed plugins, as Postfix's
# smtpd does with "saslgate_config" (prints sasl_server_start's result).
cat >"$TMP/plugin_login.c" <<'CEOF'
#include <sasl/sasl.h>
#include <stdio.h>
#include <string.h>
static int getopt_cb(void *ctx, const char *plugin, const char *opt, const char **res, unsigned *len)
{
    const char *v = NULL;
    (void)ctx;
    (void)plugin;
    if (!strcmp(opt, "mech_list")) v = "PLAIN";
    else if (!strcmp(opt, "saslgate_config")) v = "/etc/saslgate/saslgate.conf";
    if (!v) return SASL_FAIL;
    *res = v;
    if (len) *len = (unsigned)strlen(v);
    return SASL_OK;
}
typedef int (*cb_fn)(void);
static sasl_callback_t cbs[] = {
    {SASL_CB_GETOPT, (cb_fn)(void (*)(void))getopt_cb, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};
int main(int argc, char **argv)
{
    sasl_conn_t *conn = NULL;
    char msg[512];
    const char *out;
    unsigned outlen;
    int rc, len;
    if (argc != 4) return 2;
    rc = sasl_server_init(cbs, "saslgate-deb-test");
    if (rc == SASL_OK)
        rc = sasl_server_new(argv[1], NULL, NULL, "127.0.0.1;143", "192.0.2.7;40000", NULL, 0, &conn);
    if (rc == SASL_OK) {
        len = snprintf(msg, sizeof msg, "%c%s%c%s", 0, argv[2], 0, argv[3]);
        rc = sasl_server_start(conn, "PLAIN", msg, (unsigned)len, &out, &outlen);
    }
    printf("%d\n", rc);
    if (conn) sasl_dispose(&conn);
    sasl_done();
    return 0;
}
CEOF
if cc -Wall -o "$TMP/plugin_login" "$TMP/plugin_login.c" -lsasl2 >>"$LOG" 2>&1; then
    # SASL_OK 0; SASL_UNAVAIL -24: the database cannot be opened (fail closed).
    expect "$TESTUSER (group $DB_GROUP): plugin login with the app password accepted (SASL_OK)" 0 \
        "$(runuser -u "$TESTUSER" -- "$TMP/plugin_login" imap alice "$APP" 2>&1)"
    out=$(runuser -u "$TESTUSER" -- "$TMP/plugin_login" imap alice 'wrong password' 2>&1)
    case $out in -*) ok "$TESTUSER: plugin login with a wrong password refused ($out)" ;;
        *) bad "$TESTUSER: plugin login with a wrong password refused (got $out)" ;; esac
    expect "$AUTHUSER (socket group only): plugin login unavailable (SASL_UNAVAIL), no database access" -24 \
        "$(id "$AUTHUSER" >/dev/null 2>&1 && runuser -u "$AUTHUSER" -- "$TMP/plugin_login" imap alice "$APP" 2>&1)"
else
    bad "cc plugin_login.c -lsasl2 (build-essential and libsasl2-dev are build dependencies)"
fi
# README.Debian sends the daemon path to the socket group only.
zcat /usr/share/doc/saslgate/README.Debian.gz 2>/dev/null |
    awk '/^-+$/ { sec = prev } { if (sec ~ /^(Postfix|Cyrus IMAP): through saslgated/) print; prev = $0 }' \
    >"$TMP/readme-daemon.txt"
check "README.Debian, daemon path: adduser postfix/cyrus saslgate-auth, never the database group" sh -c \
    "grep -q 'adduser postfix saslgate-auth' '$TMP/readme-daemon.txt' && grep -q 'adduser cyrus saslgate-auth' '$TMP/readme-daemon.txt' &&
     ! grep -Eq 'adduser [a-z]+ saslgate([^-]|\$)' '$TMP/readme-daemon.txt'"
files=$(find /var/lib/saslgate -name 'saslgate.db*' ! -group saslgate | head -n1)
expect "database files (incl. -wal/-shm) all group saslgate" "" "$files"

# ---- the installed packages in the real Postfix and Cyrus IMAP (tests/e2e/run.sh
# with the packaged binaries and plugin; skip with SASLGATE_DEB_E2E=0)
if [ "${SASLGATE_DEB_E2E:-1}" = 1 ] && [ -x "$ROOT/tests/e2e/run.sh" ]; then
    echo "--- tests/e2e/run.sh with the installed packages (log: $TMP/e2e.log)"
    SASLGATE_E2E_BIN=installed "$ROOT/tests/e2e/run.sh" >"$TMP/e2e.log" 2>&1
    rc=$?
    # e2e's last line (summary): "e2e: N passed, N failed[, N skipped]"
    e2e_counts=$(sed -n 's/^e2e: \([0-9]* passed, [0-9]* failed\(, [0-9]* skipped\)\{0,1\}\)$/\1/p' "$TMP/e2e.log" | tail -n1)
    if [ $rc = 0 ]; then
        ok "installed packages in real Postfix and Cyrus IMAP: e2e $e2e_counts"
    else
        grep -E '^FAIL' "$TMP/e2e.log" | sed 's/^/      /'
        bad "installed packages in real Postfix and Cyrus IMAP: e2e ${e2e_counts:-aborted}"
    fi
fi

# ---- upgrade path: reinstall runs postinst configure with the old version
echo "--- reinstall (upgrade path)"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$PKG_MAIN" "$PKG_PLUGIN" >"$TMP/reinstall.log" 2>&1; then
    ok "reinstall (dpkg -i over the installed version)"
else
    tail -n 20 "$TMP/reinstall.log"
    bad "reinstall"
fi
check "upgrade backed up the database to $BACKUPS/" \
    sh -c "ls $BACKUPS/saslgate.db.* >/dev/null 2>&1"
check_fails "upgrade wrote no backup under /var/lib/saslgate (the database group can write there)" \
    test -e /var/lib/saslgate/backup
check "upgrade kept the accounts" sh -c "$SG user list | grep -q bob"
check_fails "upgrade: saslgate-web.service still not enabled" \
    test -e /etc/systemd/system/multi-user.target.wants/saslgate-web.service
check_fails "upgrade: saslgate-web still not started" web_running
world=$(find /var/lib/saslgate -perm -o=r | head -n1)
expect "nothing under /var/lib/saslgate is world-readable after the upgrade" "" "$world"
# Upgrade from 0.1, whose socket group was saslgate: dpkg runs "postinst configure
# 0.1.0"; members of saslgate keep the daemon path (added to saslgate-auth) and
# are told how to drop database access.
/var/lib/dpkg/info/saslgate.postinst configure 0.1.0 >"$TMP/postinst-0.1.log" 2>&1
check "postinst configure 0.1.0 (upgrade from 0.1)" test $? = 0
expect "upgrade from 0.1: $TESTUSER (group saslgate) added to saslgate-auth" "nogroup saslgate saslgate-auth" \
    "$(id -nG "$TESTUSER" 2>&1 | tr ' ' '\n' | sort | xargs)"
check "upgrade from 0.1: postinst tells how to drop database access (deluser $TESTUSER saslgate)" \
    grep -q "deluser $TESTUSER saslgate" "$TMP/postinst-0.1.log"
expect "upgrade from 0.1: $AUTHUSER still in the socket group only" "nogroup saslgate-auth" "$(id -nG "$AUTHUSER" 2>&1)"
expect "daemon user saslgate in saslgate (database), saslgate-auth and saslgate-http (sockets)" "saslgate saslgate-auth saslgate-http" \
    "$(id -nG saslgate 2>&1 | tr ' ' '\n' | sort | xargs)"
expect "upgrade from 0.1: saslgate-web not added to saslgate-auth (database group only)" "saslgate saslgate-web-http" \
    "$(id -nG saslgate-web 2>&1 | tr ' ' '\n' | sort | xargs)"

# ---- remove: data and configuration stay, plugin goes
echo "--- apt-get remove"
check "apt-get remove saslgate libsasl2-modules-saslgate" \
    env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q saslgate libsasl2-modules-saslgate
check "after remove: database kept" test -f "$DB"
check "after remove: /etc/saslgate/saslgate.conf kept" test -f /etc/saslgate/saslgate.conf
check "after remove: group saslgate kept" getent group saslgate
check "after remove: group saslgate-auth kept" getent group saslgate-auth
check "after remove: plugin gone" test ! -e "/usr/lib/$MA/sasl2/libsaslgate.so"
saslpluginviewer >"$TMP/pluginviewer2.txt" 2>&1
check "after remove: libsasl2 still lists the stock PLAIN and LOGIN, and no saslgate" sh -c \
    "grep -q 'Plugin \"plain\"' '$TMP/pluginviewer2.txt' && grep -q 'Plugin \"login\"' '$TMP/pluginviewer2.txt' && ! grep -q saslgate '$TMP/pluginviewer2.txt'"

# ---- purge: nothing left
echo "--- apt-get purge"
[ "$CREATED_USER" = 1 ] && userdel "$TESTUSER" >/dev/null 2>&1 && CREATED_USER=0
[ "$CREATED_AUTHUSER" = 1 ] && userdel "$AUTHUSER" >/dev/null 2>&1 && CREATED_AUTHUSER=0
check "apt-get purge saslgate libsasl2-modules-saslgate" \
    env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q saslgate libsasl2-modules-saslgate
INSTALLED=0
check "after purge: /var/lib/saslgate gone" test ! -e /var/lib/saslgate
check "after purge: /etc/saslgate gone" test ! -e /etc/saslgate
check "after purge: the backups in $BACKUPS kept" sh -c "ls $BACKUPS/saslgate.db.* >/dev/null 2>&1"
check_fails "after purge: group saslgate gone" getent group saslgate
check_fails "after purge: group saslgate-auth gone" getent group saslgate-auth
check_fails "after purge: user saslgate gone" getent passwd saslgate
check_fails "after purge: user saslgate-web gone" getent passwd saslgate-web
check_fails "after purge: group saslgate-web-http gone" getent group saslgate-web-http
check "after purge: saslgate-web's unit and binary gone" test ! -e "$WEBUNIT" -a ! -e "$WEB"
check "after purge: no units left" test ! -e /lib/systemd/system/saslgated.service -a ! -e /etc/systemd/system/sockets.target.wants/saslgated.socket
left=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' saslgate libsasl2-modules-saslgate 2>/dev/null | grep -v '^un ' | grep -v '^ *$' || true)
expect "after purge: dpkg knows neither package" "" "$left"


# ---- upgrade backups (issue 23, finding 1): root writes only where root alone can.
# The package just built, repacked as older versions (same scripts; what is
# tested is what the real package's postinst does on the upgrade from them).
echo "--- upgrade from older versions with links planted by a member of the group saslgate"
rm -rf "$BACKUPS"
OLD1=0.1.0-1
OLD2=0.2.0~r2-1 # below $VERSION (~ sorts first)
check "repacked $(basename "$PKG_MAIN") as $OLD1 and $OLD2" sh -c \
    'repack() { rm -rf "$1/repack" && dpkg-deb -R "$2" "$1/repack" &&
        sed -i "s/^Version: .*/Version: $3/" "$1/repack/DEBIAN/control" && dpkg-deb -b "$1/repack" "$4"; }
     repack "$1" "$2" "$3" "$1/old1.deb" && repack "$1" "$2" "$4" "$1/old2.deb"' sh "$TMP" "$PKG_MAIN" "$OLD1" "$OLD2"
INSTALLED=1
check "dpkg -i saslgate $OLD1 (fresh install)" env DEBIAN_FRONTEND=noninteractive dpkg -i "$TMP/old1.deb"
check "$OLD1: saslgate user add carol, passwd" sh -c "$SG user add carol && printf %s 'carol pw' | $SG passwd carol --stdin"
check "dpkg -i saslgate $OLD2 (upgrade from $OLD1)" env DEBIAN_FRONTEND=noninteractive dpkg -i "$TMP/old2.deb"
expect "installed: $OLD2" "$OLD2" "$(dpkg-query -W -f='${Version}' saslgate 2>&1)"
if useradd -M -N -g nogroup -G saslgate -s /bin/sh "$PLANTUSER" >>"$LOG" 2>&1; then
    CREATED_PLANTUSER=1
fi
expect "$PLANTUSER created in the database group" "nogroup saslgate" "$(id -nG "$PLANTUSER" 2>&1)"
# Root-owned targets in a directory only root can write.
VICTIMS=$TMP/victims
install -d -m 0755 "$VICTIMS" "$VICTIMS/dir"
printf 'root-owned target; must stay as it is\n' >"$VICTIMS/file"
chmod 0644 "$VICTIMS/file"
cp -p "$VICTIMS/file" "$TMP/victim.orig"
victims_state() { # content hash, owner, mode of both targets; the links
    printf '%s %s %s | %s %s\n' "$(sha256sum <"$VICTIMS/file" | cut -c1-16)" \
        "$(stat -c '%U:%G %a' "$VICTIMS/file")" "$(stat -c '%U:%G %a' "$VICTIMS/dir")" \
        "$(ls -A "$VICTIMS/dir" | wc -l)" "$(find /var/lib/saslgate/backup -mindepth 1 ! -type l 2>/dev/null | wc -l)"
}
# As the review did: a member moves any backup/ away, makes its own, and plants
# links named as the postinst names its backups, for the next 120 seconds.
plant=$(runuser -u "$PLANTUSER" -- sh -c '
    cd /var/lib/saslgate || exit 1
    [ ! -e backup ] || mv backup backup.moved || exit 1
    mkdir backup && chmod 0775 backup || exit 1
    now=$(date +%s) i=0
    while [ $i -lt 120 ]; do
        ln -s "$1" "backup/saslgate.db.$2.$(date -d @$((now + i)) +%Y%m%d%H%M%S)" || exit 1
        i=$((i + 1))
    done
    ls backup | wc -l' sh "$VICTIMS/file" "$OLD2" 2>&1)
expect "$PLANTUSER planted /var/lib/saslgate/backup/ with 120 links to a root-owned file" 120 "$plant"
BEFORE=$(victims_state)
echo "--- dpkg -i $(basename "$PKG_MAIN") (upgrade from $OLD2)"
DEBIAN_FRONTEND=noninteractive dpkg -i "$PKG_MAIN" >"$TMP/upgrade-planted.log" 2>&1
rc=$?
sed -n 's/^\(saslgate: .*\)/      \1/p' "$TMP/upgrade-planted.log"
expect "dpkg -i $VERSION over $OLD2 succeeds" 0 "$rc"
expect "installed: $VERSION" "$VERSION" "$(dpkg-query -W -f='${Version}' saslgate 2>&1)"
expect "link targets unchanged (content, owner, mode), nothing but links in the planted backup/" "$BEFORE" "$(victims_state)"
check "root-owned target still holds its own text" cmp -s "$TMP/victim.orig" "$VICTIMS/file"
expect "$BACKUPS: a directory, root:root, mode 700" "directory root:root 700" "$(stat -c '%F %U:%G %a' "$BACKUPS" 2>&1)"
NEWB=$(ls -t "$BACKUPS"/saslgate.db."$OLD2".* 2>/dev/null | head -n1)
expect "backup of $OLD2's database in $BACKUPS: regular file, root:root, mode 600" "regular file root:root 600" \
    "$(stat -c '%F %U:%G %a' "${NEWB:-$BACKUPS/saslgate.db.$OLD2.(none)}" 2>&1)"
expect "the backup is a valid database (integrity_check) holding carol" "ok 1" \
    "$(sqlite3 -readonly "${NEWB:-/nonexistent}" "PRAGMA integrity_check; SELECT count(*) FROM accounts WHERE name = 'carol';" 2>&1 | xargs)"
check "the upgrade kept carol" sh -c "$SG user list | grep -q carol"

# The postinst on its own (dpkg runs it as "configure OLD"): refusals, and a
# planted backup -> directory link is never followed.
postinst_again() { /var/lib/dpkg/info/saslgate.postinst configure "$OLD2" >"$TMP/postinst-again.log" 2>&1; }
runuser -u "$PLANTUSER" -- sh -c 'cd /var/lib/saslgate || exit 1
    [ ! -e backup ] || mv backup "backup.moved.$$" || exit 1
    ln -s "$1" backup' sh "$VICTIMS/dir" >>"$LOG" 2>&1
expect "$PLANTUSER planted /var/lib/saslgate/backup as a link to a root-owned directory" "$VICTIMS/dir" \
    "$(readlink /var/lib/saslgate/backup)"
BEFORE=$(victims_state)
postinst_again
expect "postinst configure with backup -> a root-owned directory planted: succeeds" 0 "$?"
expect "  and neither follows nor chmods the link (target dir unchanged, empty)" "$BEFORE" "$(victims_state)"
mv "$BACKUPS" "$BACKUPS.real" 2>>"$LOG"
refused() { # refused WHAT: postinst fails, names $BACKUPS, migrates nothing
    postinst_again
    local rc=$?
    if [ $rc != 0 ] && grep -q "$BACKUPS" "$TMP/postinst-again.log" && grep -qi 'not migrat' "$TMP/postinst-again.log"; then
        ok "postinst refuses $1 (exit $rc: $(grep -m1 "$BACKUPS" "$TMP/postinst-again.log"))"
    else
        bad "postinst refuses $1 (exit $rc: $(tr '\n' ' ' <"$TMP/postinst-again.log"))"
    fi
}
ln -s "$VICTIMS/dir" "$BACKUPS"
refused "$BACKUPS as a symlink"
expect "  and wrote nothing through it" "$BEFORE" "$(victims_state)"
rm -f "$BACKUPS"
install -d -m 0770 -g saslgate "$BACKUPS"
refused "$BACKUPS writable by a group"
chmod 0700 "$BACKUPS" && chown nobody "$BACKUPS"
refused "$BACKUPS owned by a user other than root"
rmdir "$BACKUPS"
: >"$BACKUPS"
refused "$BACKUPS as a regular file"
rm -f "$BACKUPS"
[ ! -e "$BACKUPS.real" ] || mv "$BACKUPS.real" "$BACKUPS"
# A backup that fails (here: a read-only $BACKUPS) stops the configure too,
# with saslgate backup's own message, and no copy by other means.
if mount --bind "$BACKUPS" "$BACKUPS" 2>>"$LOG" && mount -o remount,ro,bind "$BACKUPS" 2>>"$LOG"; then
    refused "to go on when saslgate backup fails (read-only $BACKUPS)"
    check "  with saslgate backup's reason (Read-only file system)" grep -q 'Read-only file system' "$TMP/postinst-again.log"
    umount "$BACKUPS"
else
    umount "$BACKUPS" 2>/dev/null
    echo "      (mount --bind not permitted here: a failing saslgate backup not tested)"
fi
[ "$CREATED_PLANTUSER" = 1 ] && userdel "$PLANTUSER" >/dev/null 2>&1 && CREATED_PLANTUSER=0
check "apt-get purge saslgate (after the planted upgrade)" \
    env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q saslgate
INSTALLED=0
check "after purge: /var/lib/saslgate gone" test ! -e /var/lib/saslgate
expect "after purge: link target unchanged" "$BEFORE" "$(victims_state)"
