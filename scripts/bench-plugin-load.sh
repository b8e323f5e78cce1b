#!/bin/bash
# Benchmark: what libsaslgate.so adds to every process that loads the libsasl2
# plugin directory (each Postfix smtpd, each Cyrus imapd), against the stock
# plugins alone, in the same run:
#  - the time of the real libsasl2's sasl_server_init + sasl_server_new (which
#    dlopen and initialise every plugin of the directory), median over N fresh
#    processes per case, the cases interleaved;
#  - the memory the process gains (Rss, Pss, Private_Dirty from
#    /proc/self/smaps_rollup) after init and after its first PLAIN login
#    (saslgate: an app password on SQLite; stock: PLAIN + sasldb);
#  - the shared objects mapped, and the plugin's own NEEDED libraries and
#    dynamic relocations (readelf).
# Two hosts: "bare" (the driver links libsasl2 only) and "mta" (it also links
# libssl, libcrypto, libm and libgcc_s, as Debian's smtpd and imapd are).
# Driver: c-tests/bench/plugin_load.c.
# Usage (repo root): scripts/bench-plugin-load.sh [N]   (default 200)
# Honours KEEP=1 (keep the temp dir), CARGO_TARGET_DIR, SKIP_BUILD=1,
# SASL_PLUGIN_DIR, SO=path/to/libsaslgate.so, SO_OTHER="a.so b.so" (other builds
# of libsaslgate.so, cases o1, o2, ... in the same run), STOCK="libplain.so ..."
# (default: libsasl2-modules and -db's plugins of the system directory).
# Figures and what they mean: doc/design.md, section 4.8.
set -eu
cd "$(dirname "$0")/.."
N=${1:-${BENCH_N:-200}}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
LIBDIR=$TARGET_DIR/release
SASL_SYS=${SASL_PLUGIN_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/sasl2}
STOCK=${STOCK:-libanonymous.so libcrammd5.so libdigestmd5.so liblogin.so libntlm.so libplain.so libscram.so libsasldb.so}
for need in cc readelf saslpasswd2 "$SASL_SYS/libplain.so" "$SASL_SYS/libsasldb.so" /usr/include/sasl/sasl.h; do
    if ! command -v "$need" >/dev/null 2>&1 && [ ! -e "$need" ]; then
        echo "SKIP - *** bench-plugin-load: missing $need ***"; exit 0
    fi
done
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --lib --bin saslgate
SO=${SO:-$LIBDIR/libsaslgate.so}
T=$(mktemp -d /tmp/saslgate-benchload.XXXXXX)
[ "${KEEP:-0}" = 1 ] && echo "kept: $T" || trap 'rm -rf "$T"' EXIT
CASES="stock gate"
i=0
for o in ${SO_OTHER:-}; do i=$((i + 1)); CASES="$CASES o$i"; done
mkdir -p "$T/conf-empty"
for c in $CASES; do
    mkdir -p "$T/$c"
    for p in $STOCK; do
        if [ -e "$SASL_SYS/$p" ]; then ln -s "$SASL_SYS/$p" "$T/$c/$p"; fi
    done
done
cp "$SO" "$T/gate/libsaslgate.so"
i=0
for o in ${SO_OTHER:-}; do i=$((i + 1)); cp "$o" "$T/o$i/libsaslgate.so"; done
# Written back first: a page of a file still dirty in the page cache counts as
# the process's Private_Dirty, as no installed library's would.
sync "$T"/*/libsaslgate.so
printf 'db = "%s"\nbcrypt_cost = 10\n' "$T/sg.db" >"$T/sg.conf"
SG="$LIBDIR/saslgate --config $T/sg.conf"
$SG init 2>/dev/null
$SG user add alice 2>/dev/null
printf '%s' 'alice master pw' | $SG passwd alice --stdin 2>/dev/null
APP=$($SG app-password add alice --label load --services imap 2>/dev/null)
printf '%s' 'dave pw' | SASL_PATH=$T/stock SASL_CONF_PATH=$T/conf-empty \
    saslpasswd2 -f "$T/sasldb2" -u sgtest.example -c -p dave
cc -O2 -Wall -Wextra -Werror -o "$T/load_bare" c-tests/bench/plugin_load.c -lsasl2
cc -O2 -Wall -Wextra -Werror -o "$T/load_mta" c-tests/bench/plugin_load.c \
    -Wl,--no-as-needed -lssl -lcrypto -lm -lgcc_s -Wl,--as-needed -lsasl2

run_case() { # host plugins -> one line
    local host=$1 case=$2
    if [ "$case" != stock ]; then
        SASL_CONF_PATH=$T/conf-empty PLUGDIR=$T/$case SASLDB=$T/sasldb2 SG_CONF=$T/sg.conf \
            LOGIN_USER=alice LOGIN_PW="$APP" "$T/load_$host"
    else
        SASL_CONF_PATH=$T/conf-empty PLUGDIR=$T/stock SASLDB=$T/sasldb2 SG_CONF= \
            LOGIN_USER=dave LOGIN_PW='dave pw' "$T/load_$host"
    fi
}
# Warm the page cache, and check that every case's login succeeds.
for host in bare mta; do for c in $CASES; do
    run_case $host $c >/dev/null || { echo "bench-plugin-load: $host $c: the login failed"; exit 1; }
done; done
for i in $(seq "$N"); do
    for host in bare mta; do for c in $CASES; do
        echo "$host $c $(run_case $host $c)"
    done; done
done >"$T/runs"

echo "libsaslgate.so $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($SO), $(nproc) cores, $(uname -m), $N processes per case"
echo "stock plugins: $(ls "$T/stock" | tr '\n' ' ')"
awk -v cases="$CASES" '
function pct(key, p,   n, i, j, t, a) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    if (p == 50) return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    return a[int((n - 1) * p / 100) + 1]
}
function median(key) { return pct(key, 50) }
{
    k = $1 " " $2
    for (f = 3; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
    vals[k " init"] = vals[k " init"] " " v["init_us"]
    vals[k " cpu"] = vals[k " cpu"] " " v["cpu_us"]
    for (s = 1; s <= 2; s++) {
        vals[k " rss" s] = vals[k " rss" s] " " (v["rss" s] - v["rss0"])
        vals[k " pss" s] = vals[k " pss" s] " " (v["pss" s] - v["pss0"])
        vals[k " dirty" s] = vals[k " dirty" s] " " (v["dirty" s] - v["dirty0"])
    }
    vals[k " dsos"] = vals[k " dsos"] " " v["dsos"]
    if (v["login"] != 0) fails++
}
END {
    printf "%-5s %-6s %8s %8s %8s %12s %12s %12s %12s %12s %12s %5s\n", "host", "dir", "wall us", "p10 us", "cpu us", \
        "+Rss init", "+Pss init", "+Dirty init", "+Rss login", "+Pss login", "+Dirty login", "DSOs"
    nc = split(cases, names, " ")
    for (h = 1; h <= 2; h++) {
        host = h == 1 ? "bare" : "mta"
        for (c = 1; c <= nc; c++) {
            d = names[c]; k = host " " d
            m[k] = median(k " init"); cpu[k] = median(k " cpu")
            printf "%-5s %-6s %8.0f %8.0f %8.0f %9d kB %9d kB %9d kB %9d kB %9d kB %9d kB %5d\n", host, d, m[k], pct(k " init", 10), cpu[k], \
                median(k " rss1"), median(k " pss1"), median(k " dirty1"), \
                median(k " rss2"), median(k " pss2"), median(k " dirty2"), median(k " dsos")
        }
        for (c = 2; c <= nc; c++)
            printf "%-5s stock+%s / stock: wall %.2f, cpu %.2f\n", host, names[c], \
                m[host " " names[c]] / m[host " stock"], cpu[host " " names[c]] / cpu[host " stock"]
    }
    printf "(medians but p10; gate = stock + libsaslgate.so; us = sasl_server_init + sasl_server_new;\n + = gained since before sasl_server_init; login = after the first login)\n"
    if (fails) { printf "FAILED logins: %d\n", fails; exit 1 }
}' "$T/runs"
i=0
for so in "$SO" ${SO_OTHER:-}; do
    [ $i = 0 ] && name=gate || name=o$i
    i=$((i + 1))
    echo "== $name: $so"
    echo "  NEEDED: $(readelf -d "$so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
    echo "  dynamic relocations: $(readelf -r "$so" | awk '/R_X86_64|R_AARCH64/ {print $3}' | sort | uniq -c | sort -rn | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//')"
    echo "  relocation tables: $(readelf -d "$so" | awk '$2 ~ /^\((RELASZ|RELRSZ|PLTRELSZ)\)$/ {printf "%s %d B, ", $2, $3}' | sed 's/, $//')"
    echo "  loaded: $(size "$so" | awk 'NR == 2 {printf "text %d kB, data %d kB, bss %d kB", $1 / 1024, $2 / 1024, $3 / 1024}')"
done
echo "objects mapped after init (stock+saslgate, bare host):"
SASL_CONF_PATH=$T/conf-empty PLUGDIR=$T/gate SASLDB=$T/sasldb2 SG_CONF=$T/sg.conf \
    LOGIN_USER=alice LOGIN_PW="$APP" LD_DEBUG=files "$T/load_bare" 2>&1 >/dev/null |
    sed -n 's/.*file=\([^ ]*\) \[0\];  needed by \([^ ]*\).*/  \1 (needed by \2)/p' |
    grep -v 'needed by .*/load_bare' | sort -u || true
echo "where stock+saslgate's memory lives (bare host, one process; kB):"
SASL_CONF_PATH=$T/conf-empty PLUGDIR=$T/gate SASLDB=$T/sasldb2 SG_CONF=$T/sg.conf \
    LOGIN_USER=alice LOGIN_PW="$APP" PLUGIN_LOAD_SMAPS=1 "$T/load_bare" 2>&1 >/dev/null |
    awk '/^--/ { when = $2 " " $3; next }
         { n = $3; sub(/.*\//, "", n); rss[when "|" n] += $1; dirty[when "|" n] += $2 }
         END { for (k in rss) if (rss[k] >= 64) { split(k, p, "|"); printf "  %-11s %-28s Rss %6d  Private_Dirty %6d\n", p[1], p[2], rss[k], dirty[k] } }' |
    sort -k1,2 -k3 | head -40
