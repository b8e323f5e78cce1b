# Pass/fail helpers shared by the shell test suites (c-tests/run.sh,
# tests/e2e/run.sh, tests/deb/run.sh, scripts/faults.sh, scripts/soak.sh,
# scripts/fuzz-brief.sh). Source it; POSIX sh (dash) and bash.
#
#   ok MSG                 a passed check:            "ok   - MSG"
#   bad MSG                a failed check:            "FAIL - MSG"
#   skip MSG               a check that could not run: "SKIP: MSG"
#                          (scripts/test-all.sh counts a suite printing a line
#                          that starts with "SKIP" as skipped, not passed)
#   check MSG CMD...       passes when CMD succeeds
#   check_fails MSG CMD... passes when CMD fails
#   expect MSG WANT GOT    passes when GOT is WANT; else "FAIL - MSG (expected WANT, got GOT)"
#   summary NAME           prints "NAME: N passed, N failed" (", N skipped" when any);
#                          returns 1 when any check failed
#
# CHECK_LOG=FILE: check/check_fails append CMD's stdout and stderr to FILE
# instead of letting them through. Counters: CHECK_PASSED, CHECK_FAILED,
# CHECK_SKIPPED.

CHECK_PASSED=0
CHECK_FAILED=0
CHECK_SKIPPED=0

ok() {
    CHECK_PASSED=$((CHECK_PASSED + 1))
    printf 'ok   - %s\n' "$*"
}

bad() {
    CHECK_FAILED=$((CHECK_FAILED + 1))
    printf 'FAIL - %s\n' "$*"
}

skip() {
    CHECK_SKIPPED=$((CHECK_SKIPPED + 1))
    printf 'SKIP: %s\n' "$*"
}

# Runs CMD... with its output going to $CHECK_LOG when that is set.
check_run_() {
    if [ -n "${CHECK_LOG:-}" ]; then
        "$@" >>"$CHECK_LOG" 2>&1
    else
        "$@"
    fi
}

check() { # check MSG CMD...
    check_msg_=$1
    shift
    if check_run_ "$@"; then ok "$check_msg_"; else bad "$check_msg_"; fi
}

check_fails() { # check_fails MSG CMD...
    check_msg_=$1
    shift
    if check_run_ "$@"; then bad "$check_msg_"; else ok "$check_msg_"; fi
}

expect() { # expect MSG WANT GOT
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected $2, got $3)"; fi
}

summary() { # summary NAME
    if [ "$CHECK_SKIPPED" -gt 0 ]; then
        printf '%s: %d passed, %d failed, %d skipped\n' "$1" "$CHECK_PASSED" "$CHECK_FAILED" "$CHECK_SKIPPED"
    else
        printf '%s: %d passed, %d failed\n' "$1" "$CHECK_PASSED" "$CHECK_FAILED"
    fi
    [ "$CHECK_FAILED" -eq 0 ]
}
