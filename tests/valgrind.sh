#!/bin/sh
# valgrind.sh [--preflight] PROGRAM... — runs test programs under valgrind
# memcheck, in the order given (put the most valuable first), then prints
# every log and the closing "N passed, N failed" line (tests/summarize.sh).
# With --preflight it only checks that it can: a build without sanitizers,
# valgrind found, at least one program (make check-valgrind asks before it
# builds them).
#
# Run by `make check-valgrind` from the build directory, which sets:
#   SANITIZER                 the build's sanitizer (configure): must be none
#   VALGRIND, VALGRIND_FLAGS  the tool and its flags (--log-file is added here)
#   LIBTOOL                   so that valgrind sees the real binary, not the
#                             libtool wrapper script
#   SHELL, AWK                for the TAP driver
#   TIMEOUT                   coreutils timeout, or empty
#   CF_VALGRIND_TIMEOUT       seconds one program may take at most
#   CF_VALGRIND_BUDGET        seconds for the whole run; empty or 0: no budget
#   VALGRIND_LOGDIR           where the logs go (emptied first)
#   CF_VALGRIND_FIRST         programs to run first, in this order (the
#                             suites that exercise the library's own memory
#                             handling most for their time); the others
#                             follow in the order given
#   CF_TEST_TIMEOUT_SCALE     what the tests' own time bounds are multiplied
#                             by (tests/helpers.h); 10 when unset, since
#                             valgrind runs them 10 to 50 times slower, and a
#                             slow machine more. A hang is still bounded, by
#                             the program's limit above.
#
# Each program runs as in make check, through Automake's TAP driver and
# tests/tap-run.sh (one result per Criterion test), with valgrind in front.
# Criterion runs each test in a fresh execution of the test program, which
# --trace-children=yes follows, and a process pool forks workers, which
# valgrind follows anyway. Criterion ignores the exit status valgrind gives a
# test's process, so valgrind writes one log per process (%p) and any log
# whose ERROR SUMMARY is not 0 adds a failure to the program's results.
#
# With a budget, each program gets what is left of it (at most
# CF_VALGRIND_TIMEOUT): a program still running when the budget ends is
# stopped and marked CUT (the tests it finished count, and must have passed;
# its processes' valgrind logs must be clean), and programs after it do not
# run (SKIP, "not run"). Neither is a failure: the closing line says "N cut".

here=$(dirname "$0")
shell=${SHELL:-/bin/sh}

if [ "${1:-}" = --preflight ]; then
    shift
    if [ "${SANITIZER:-none}" != none ]; then
        echo "check-valgrind: this build uses $SANITIZER; configure without sanitizers" >&2
        exit 1
    fi
    if [ -z "${VALGRIND:-}" ]; then
        echo "check-valgrind: valgrind was not found by configure (apt-get install valgrind)" >&2
        exit 1
    fi
    if [ $# -eq 0 ]; then
        echo "check-valgrind: no test program (is Criterion installed?)" >&2
        exit 1
    fi
    exit 0
fi

logdir=${VALGRIND_LOGDIR:-valgrind-logs}
budget=${CF_VALGRIND_BUDGET:-0}
limit=${CF_VALGRIND_TIMEOUT:-3600}
min_run=30    # seconds: below this, starting another program is pointless
CF_TEST_TIMEOUT_SCALE=${CF_TEST_TIMEOUT_SCALE:-10}
export CF_TEST_TIMEOUT_SCALE

now() { date +%s; }

# The order: CF_VALGRIND_FIRST (those of them given), then the rest.
ordered=
for t in ${CF_VALGRIND_FIRST:-}; do
    for a in "$@"; do
        [ "$a" = "$t" ] && ordered="$ordered $t"
    done
done
for a in "$@"; do
    case " $ordered " in
    *" $a "*) ;;
    *) ordered="$ordered $a" ;;
    esac
done
# shellcheck disable=SC2086
set -- $ordered

rm -rf "$logdir"
mkdir -p "$logdir" || exit 99
start=$(now)
logs=
ran=0 cut=0 skipped=0
skipped_names=
for t in "$@"; do
    name=$(echo "$t" | sed 's|/|_|g')
    base=$logdir/$name
    logs="$logs $base.log"
    t_limit=$limit
    if [ "$budget" -gt 0 ]; then
        left=$((start + budget - $(now)))
        if [ "$left" -lt "$min_run" ]; then
            skipped=$((skipped + 1)) skipped_names="$skipped_names $t"
            echo "not run: the valgrind budget of $budget s was spent" >"$base.log"
            echo ":test-result: SKIP" >"$base.trs"
            continue
        fi
        [ "$left" -lt "$t_limit" ] && t_limit=$left
    fi
    echo "  VALGRIND $t (at most $t_limit s)"
    t0=$(now)
    watchdog=
    [ -n "$TIMEOUT" ] && watchdog="$TIMEOUT --kill-after=30 $t_limit"
    # A stop by the budget (not by the program's own limit) is a cut.
    cutmark=
    [ "$budget" -gt 0 ] && [ "$t_limit" -lt "$limit" ] && cutmark=$base.cut
    rm -f "$base.cut"
    # shellcheck disable=SC2086  # word lists
    CF_TAP_CUT=$cutmark AM_TAP_AWK=${AWK:-awk} \
    $shell "$here/../build-aux/tap-driver.sh" --test-name "$t" \
        --log-file "$base.log" --trs-file "$base.trs" \
        --color-tests no --enable-hard-errors yes --expect-failure no -- \
        $shell "$here/tap-run.sh" $watchdog -- \
        $LIBTOOL --mode=execute $VALGRIND $VALGRIND_FLAGS \
        --log-file="$base.%p.vg" "./$t" >/dev/null
    ran=$((ran + 1))
    if [ -f "$base.cut" ]; then
        echo ":test-result: CUT" >>"$base.trs"
        cut=$((cut + 1))
    fi
    echo "$t: $(($(now) - t0)) s under valgrind" >>"$base.log"
    vg_failed=0
    for vg in "$base".*.vg; do
        [ -f "$vg" ] || continue
        if grep -E 'ERROR SUMMARY: [1-9]' "$vg" >/dev/null; then
            { echo "--- valgrind errors in $vg:"; cat "$vg"; } >>"$base.log"
            vg_failed=1
        fi
    done
    # One failure for the program, whichever of its processes had errors.
    [ "$vg_failed" = 1 ] && echo ":test-result: FAIL" >>"$base.trs"
done

budget_note=
[ "$budget" -gt 0 ] && budget_note=" (budget $budget s)"
CF_SUMMARY_NOTE="valgrind coverage: $((ran - cut)) of $# programs in full, $cut cut, $skipped not run${skipped_names:+:$skipped_names}; $(($(now) - start)) s$budget_note"
export CF_SUMMARY_NOTE
# shellcheck disable=SC2086
exec "$(dirname "$0")/summarize.sh" $logs
