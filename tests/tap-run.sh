#!/bin/sh
# tap-run.sh [WATCHDOG...] -- COMMAND... — runs one test program and reports
# it in TAP on stdout, for Automake's TAP driver (build-aux/tap-driver.sh, the
# LOG_DRIVER of Makefile.am), which makes each TAP result one PASS, FAIL or
# SKIP in make check's counts and the .trs file that tests/summarize.sh reads.
#
# A Criterion suite writes its own report (--tap=FILE, added at the end of
# COMMAND): one result per test, "not ok" for a failed assertion, a crash or
# an expired .timeout, "ok ... # SKIP" for a skipped or disabled test. A
# program named in CF_PLAIN_TESTS (tests/tsan-stress: no Criterion) is one
# result: exit status 0 passes, 77 skips, anything else fails.
#
# Everything the program writes (Criterion's [RUN ]/[PASS]/[FAIL] lines, a
# failed assertion's file:line and message) goes to stderr once it ends,
# which the driver writes to the test's .log; the TAP report follows it.
#
# WATCHDOG (e.g. "timeout --kill-after=30 1500", or nothing) runs in front of
# COMMAND, so that this script outlives a program it stops. One "Bail out!"
# (one ERROR in the driver's counts; the driver then ignores the plan and the
# exit status) reports what the suite's own results cannot show:
#   - the runner ended without its report (stopped by the watchdog, crashed);
#   - a sanitizer report in its output: Criterion judges a test only by what
#     the test's process reported, so a leak found at exit, or a race, is
#     written after the test ended and fails nothing by itself;
#   - a non-zero exit status while no test failed.
#
# CF_TAP_CUT=FILE (tests/valgrind.sh, when the watchdog's limit is what is
# left of a time budget): a run the watchdog stops is cut short, not failed.
# The tests it finished are reported from its [PASS]/[FAIL]/[SKIP] lines and
# FILE is created, for the caller to mark the run CUT.
#
# Exit status: 0 (the results say it all), 99 when this script cannot run.

sanitizer_re='ERROR: (Address|Leak|Memory|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:'

watchdog=
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    watchdog="$watchdog $1"
    shift
done
if [ $# -lt 2 ]; then
    echo "usage: tap-run.sh [WATCHDOG...] -- COMMAND..." >&2
    exit 99
fi
shift

# The program: the last word of COMMAND that starts with ./ (make check runs
# ./tests/test-api; valgrind.sh puts ./libtool and valgrind before it).
plain=0 name=
for a in "$@"; do
    case $a in ./*) name=${a#./} ;; esac
done
name=${name:-$1}
case " ${CF_PLAIN_TESTS:-} " in *" $name "*) plain=1 ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cf-tap.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
tap=$tmp/tap
[ "$plain" = 1 ] || set -- "$@" --tap="$tap"

# The output goes to a file, then to the log (stderr), whatever stopped the
# program: no pipe, so a process it leaked, still holding its stdout, cannot
# keep the driver waiting.
# shellcheck disable=SC2086  # WATCHDOG is a list of words
$watchdog "$@" >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out" >&2

stopped=
case $rc in
124|137) stopped="stopped by the watchdog, exit status $rc" ;;
esac

if [ -n "$stopped" ] && [ -n "${CF_TAP_CUT:-}" ]; then
    : >"$CF_TAP_CUT"
    # The tests it finished, as its verbose lines named them.
    sed -n -e 's/^\[PASS\] \([^ :]*::[^ :]*\).*/ok - \1/p' \
        -e 's/^\[FAIL\] \([^ :]*::[^ :]*\).*/not ok - \1/p' \
        -e 's/^\[SKIP\] \([^ :]*::[^ :]*\).*/ok - \1 # SKIP/p' "$tmp/out" >"$tmp/done"
    cat "$tmp/done"
    echo "1..$(wc -l <"$tmp/done" | tr -d ' ')"
    echo "# $name: cut short by its time budget ($stopped)"
    exit 0
fi

if [ "$plain" = 1 ]; then
    echo "1..1"
    case $rc in
    0) echo "ok 1 - $name" ;;
    77) echo "ok 1 - $name # SKIP" ;;
    *) echo "not ok 1 - $name (${stopped:-exit status $rc})" ;;
    esac
elif [ -f "$tap" ] && grep '^1\.\.' "$tap" >/dev/null; then
    cat "$tap"
    if [ "$rc" -ne 0 ] && ! grep '^not ok' "$tap" >/dev/null; then
        echo "Bail out! $name: exit status $rc, and no test failed"
        exit 0
    fi
else
    echo "Bail out! $name ended without its test report (${stopped:-exit status $rc})"
    exit 0
fi
if grep -E "$sanitizer_re" "$tmp/out" >/dev/null; then
    echo "Bail out! $name: a sanitizer reported errors (see the log)"
fi
exit 0
