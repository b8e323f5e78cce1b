#!/bin/bash
# Debian package test: builds the packages (make deb), runs lintian, installs
# them with apt-get, checks what they set up (plugin seen by libsasl2, group,
# user, database permissions, conffile, units, man pages), runs saslgated with
# the packaged configuration (no systemctl) against the real testsaslauthd,
# runs saslgate as root and as a member of the group saslgate, reinstalls
# (upgrade path: backup + migration), removes and purges, and checks what is
# left after each.
#
# Root only; refuses (loud SKIP) when saslgate is already installed, since
# the test purges it at the end.
# Environment: CARGO_TARGET_DIR (the .debs go to $CARGO_TARGET_DIR/deb, default
# ./target/deb), SASLGATE_DEB_DIR=DIR to test prebuilt .debs in DIR instead of
# building them.
# Output: one line per check, then "N passed, N failed"; exit 1 on any failure.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PASS=0 FAIL=0
ok()  { PASS=$((PASS + 1)); echo "PASS  $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL  $*"; }
check() { # check NAME COMMAND...: passes when the command succeeds
    local name=$1; shift
    if "$@" >>"$LOG" 2>&1; then ok "$name"; else bad "$name"; fi
}
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected $2, got $3)"; fi; }

skip() {
    echo "=================================================================="
    echo "SKIP: tests/deb/run.sh: $*"
    echo "=================================================================="
    exit 0
}

[ "$(id -u)" = 0 ] || skip "needs root (installs and purges the packages)"
export PATH=$PATH:/usr/sbin:/sbin
for p in saslgate libsasl2-modules-saslgate; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed'; then
        skip "$p is installed on this machine; this test would purge it and its data"
    fi
done
for c in dpkg-buildpackage lintian apt-get testsaslauthd saslpluginviewer runuser; do
    command -v "$c" >/dev/null || skip "$c is missing (apt-get install debhelper lintian sasl2-bin)"
done

STARTED=$(date +%s)
TMP=$(mktemp -d /tmp/saslgate-deb.XXXXXX)
chmod 0755 "$TMP"
LOG=$TMP/log
TESTUSER=sgdebtest
DAEMON_PID=
INSTALLED=0
CREATED_USER=0

cleanup() {
    local rc=$?
    if [ -n "$DAEMON_PID" ] && [ "$(cat "/proc/$DAEMON_PID/comm" 2>/dev/null)" = saslgated ]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    [ "$CREATED_USER" = 1 ] && userdel "$TESTUSER" >/dev/null 2>&1
    if [ "$INSTALLED" = 1 ]; then # a check failed half-way: leave no package behind
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q saslgate libsasl2-modules-saslgate >>"$LOG" 2>&1
    fi
    if [ "$rc" -ne 0 ] && [ "$FAIL" -eq 0 ]; then
        bad "deb test aborted (exit $rc)"
    fi
    if [ "$FAIL" -gt 0 ]; then
        echo "--- finished in $(($(date +%s) - STARTED)) s (logs kept in $TMP)"
        echo "$PASS passed, $FAIL failed"
        exit 1
    fi
    echo "--- finished in $(($(date +%s) - STARTED)) s"
    echo "$PASS passed, $FAIL failed"
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
    sed -n 's/^ *\([a-z_]*\): Option<.*/\1/p' | grep -v '^throttle$')
missing=""
for k in $keys; do
    grep -Eq "^#? ?$k = |^\[$k\]" "$ROOT/debian/saslgate.conf" || missing="$missing conf:$k"
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
    out=$(timeout 20 testsaslauthd -f "$RUN2/mux" -s imap -u alice -p "$APP" 2>&1)
    expect "socket-activated saslgated (unit's ExecStart, user $UNIT_USER): app password accepted" '0: OK "Success."' "$out"
    if [ "$(cat "/proc/$DAEMON_PID/comm" 2>/dev/null)" = saslgated ]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    DAEMON_PID=
else
    echo "      (systemd-socket-activate or setpriv missing: socket activation not tested)"
fi
check "saslgate log shows the daemon's decisions" sh -c "$SG log bob | grep -q refused"
files=$(find /var/lib/saslgate -name 'saslgate.db*' ! -group saslgate | head -n1)
expect "database files (incl. -wal/-shm) all group saslgate" "" "$files"

# ---- the installed packages in the real Postfix and Cyrus IMAP (tests/e2e/run.sh
# with the packaged binaries and plugin; skip with SASLGATE_DEB_E2E=0)
if [ "${SASLGATE_DEB_E2E:-1}" = 1 ] && [ -x "$ROOT/tests/e2e/run.sh" ]; then
    echo "--- tests/e2e/run.sh with the installed packages (log: $TMP/e2e.log)"
    SASLGATE_E2E_BIN=installed "$ROOT/tests/e2e/run.sh" >"$TMP/e2e.log" 2>&1
    rc=$?
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$TMP/e2e.log" | tail -n1)
    if [ $rc = 0 ]; then
        ok "installed packages in real Postfix and Cyrus IMAP: e2e $summary"
    else
        grep -E '^FAIL' "$TMP/e2e.log" | sed 's/^/      /'
        bad "installed packages in real Postfix and Cyrus IMAP: e2e ${summary:-aborted}"
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
check "upgrade backed up the database to /var/lib/saslgate/backup/" \
    sh -c 'ls /var/lib/saslgate/backup/saslgate.db.* >/dev/null 2>&1'
check "upgrade kept the accounts" sh -c "$SG user list | grep -q bob"
world=$(find /var/lib/saslgate -perm -o=r | head -n1)
expect "nothing under /var/lib/saslgate is world-readable after the upgrade" "" "$world"

# ---- remove: data and configuration stay, plugin goes
echo "--- apt-get remove"
check "apt-get remove saslgate libsasl2-modules-saslgate" \
    env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q saslgate libsasl2-modules-saslgate
check "after remove: database kept" test -f "$DB"
check "after remove: /etc/saslgate/saslgate.conf kept" test -f /etc/saslgate/saslgate.conf
check "after remove: group saslgate kept" getent group saslgate
check "after remove: plugin gone" test ! -e "/usr/lib/$MA/sasl2/libsaslgate.so"
saslpluginviewer >"$TMP/pluginviewer2.txt" 2>&1
check "after remove: libsasl2 still lists the stock PLAIN and LOGIN, and no saslgate" sh -c \
    "grep -q 'Plugin \"plain\"' '$TMP/pluginviewer2.txt' && grep -q 'Plugin \"login\"' '$TMP/pluginviewer2.txt' && ! grep -q saslgate '$TMP/pluginviewer2.txt'"

# ---- purge: nothing left
echo "--- apt-get purge"
[ "$CREATED_USER" = 1 ] && userdel "$TESTUSER" >/dev/null 2>&1 && CREATED_USER=0
check "apt-get purge saslgate libsasl2-modules-saslgate" \
    env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q saslgate libsasl2-modules-saslgate
INSTALLED=0
check "after purge: /var/lib/saslgate gone" test ! -e /var/lib/saslgate
check "after purge: /etc/saslgate gone" test ! -e /etc/saslgate
check "after purge: group saslgate gone" sh -c '! getent group saslgate'
check "after purge: user saslgate gone" sh -c '! getent passwd saslgate'
check "after purge: no units left" test ! -e /lib/systemd/system/saslgated.service -a ! -e /etc/systemd/system/sockets.target.wants/saslgated.socket
left=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' saslgate libsasl2-modules-saslgate 2>/dev/null | grep -v '^un ' | grep -v '^ *$' || true)
expect "after purge: dpkg knows neither package" "" "$left"
