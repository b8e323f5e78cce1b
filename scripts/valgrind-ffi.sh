#!/bin/sh
# Runs the plugin's fake-libsasl2 unit tests (src/ffi: the C entry points called
# with a fake sasl_utils_t and server params the way libsasl2 calls them,
# including the injected-panic path) and the C ABI tests (tests/plugin_capi.rs)
# under valgrind; any invalid read/write, use of uninitialised memory or definite
# leak fails the script (valgrind --error-exitcode=1).
# Miri would be the tool for the unsafe code, but it needs a nightly toolchain.
# Needs: valgrind (Debian package). Honours CARGO_TARGET_DIR.
set -eu
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind-ffi: FAIL: valgrind missing (apt-get install valgrind)" >&2
    exit 1
fi
bins() {
    # Only test-harness artifacts (profile.test): building an integration test
    # also builds the crate's binaries, whose lines must not be picked.
    cargo test --release "$@" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' | tail -1
}
echo "valgrind-ffi: building the test binaries (release, debug info)"
LIB=$(bins --lib)
CAPI=$(bins --test plugin_capi)
[ -x "$LIB" ] && [ -x "$CAPI" ] || { echo "valgrind-ffi: FAIL: build" >&2; exit 1; }
VG="valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes --num-callers=30 --quiet"
fail=0
run() {
    name=$1
    shift
    log=$(mktemp "${TMPDIR:-/tmp}/valgrind-ffi.XXXXXX")
    if $VG "$@" >"$log" 2>&1; then
        n=$(grep -c '^test .* ok$' "$log" || true)
        echo "valgrind-ffi: ok: $name: $n tests, no memory errors, no definite leaks"
        rm -f "$log"
    else
        cat "$log" >&2
        echo "valgrind-ffi: FAIL: $name under valgrind (log $log)" >&2
        fail=1
    fi
}
run "src/ffi unit tests (fake libsasl2 caller)" "$LIB" --test-threads=1 ffi::
run "tests/plugin_capi.rs (C ABI)" "$CAPI" --test-threads=1
exit $fail
