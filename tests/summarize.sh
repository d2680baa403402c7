#!/bin/sh
# summarize.sh LOG... — prints what a test run left, then one closing line.
#
# For each LOG (a test's .log, beside its .trs as Automake's test driver
# writes them), prints a header with the .trs result, the log itself, and a
# note when the program was killed by its watchdog or a sanitizer reported
# errors. Then the line
#
#   N passed, N failed[, N skipped][, N cut]
#
# A Criterion suite counts its tests (its "Synthesis" line); a program cut
# short by a time budget (result CUT, written by tests/valgrind.sh) counts the
# tests it finished ([PASS] / [FAIL] lines) and one cut program; any other
# test counts as one. Criterion judges a test only by what its child process
# reported, so a sanitizer report written after the test ended (a leak found
# at exit, a race) does not fail it: this script fails such a program here.
#
# CF_SUMMARY_NOTE, when set, is printed just before the closing line.
# Exit status: 1 when anything failed or did not run, else 0; with
# CF_SUMMARY_STATUS=ignore always 0 (for scripts that read the closing line).

sanitizer_re='ERROR: (Address|Leak|Memory|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:'

passed=0 failed=0 skipped=0 cut=0 status=0 bad=
for log in "$@"; do
    trs=${log%.log}.trs
    if [ ! -f "$log" ] || [ ! -f "$trs" ]; then
        echo ">>>>> $log: did not run"
        failed=$((failed + 1)) status=1 bad="$bad $log"
        continue
    fi
    res=$(sed -n 's/^:test-result: *//p' "$trs" | sort -u | tr '\n' ' ')
    res=${res% }
    echo ">>>>> $log: $res"
    cat "$log"
    syn=$(sed -n 's/.*Synthesis: Tested: *[0-9]* *| *Passing: *\([0-9]*\) *| *Failing: *\([0-9]*\).*/\1 \2/p' "$log" | tail -n 1)
    p=0 f=0 s=0
    if [ -n "$syn" ]; then
        set -- $syn
        p=$1 f=$2
    else
        case "$res" in
        *FAIL*|*ERROR*) f=1 ;;
        *CUT*)
            p=$(grep -c '^\[PASS\]' "$log")
            f=$(grep -c '^\[FAIL\]' "$log")
            cut=$((cut + 1))
            echo ">>>>> $log: cut short by its time budget; $p tests finished and passed, $f failed"
            ;;
        *SKIP*) s=1 ;;
        *) p=1 ;;
        esac
    fi
    case "$res" in
    *FAIL*|*ERROR*) status=1; [ "$f" -eq 0 ] && f=1 ;;
    esac
    [ "$f" -gt 0 ] && status=1
    if grep -E '\(exit status: (124|137)\)$' "$log" >/dev/null 2>&1; then
        case "$res" in
        *CUT*) ;;
        *) echo ">>>>> $log: killed by the watchdog (still running after its time limit)" ;;
        esac
    fi
    if grep -E "$sanitizer_re" "$log" >/dev/null 2>&1; then
        echo ">>>>> $log: a sanitizer reported errors (above)"
        status=1
        if [ "$f" -eq 0 ]; then f=1 p=$((p - 1)); fi
    fi
    [ "$p" -lt 0 ] && p=0
    [ "$f" -gt 0 ] && bad="$bad $log"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done

echo
[ -n "$bad" ] && echo ">>>>> failed:$bad"
[ -n "${CF_SUMMARY_NOTE:-}" ] && echo "$CF_SUMMARY_NOTE"
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
[ "$cut" -gt 0 ] && line="$line, $cut cut"
echo "$line"
[ "$status" -eq 0 ] || [ "${CF_SUMMARY_STATUS:-strict}" = ignore ]
