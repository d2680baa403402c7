#!/bin/sh
# summarize.sh LOG... — prints what a test run left, then one closing line:
#
#   N passed, N failed[, N skipped][, N cut]
#
# Each LOG has its .trs beside it, as Automake's drivers write them (make
# check; tests/valgrind.sh and tests/soak.sh run the same TAP driver). A .trs
# holds one ":test-result:" line per result: one per Criterion test (through
# tests/tap-run.sh), one per script or plain program. PASS and XFAIL count as
# passed; FAIL, XPASS and ERROR (a "Bail out!": a runner that ended without
# its report, a sanitizer report, an exit status no test explains) as
# failed; SKIP as skipped; CUT (written by tests/valgrind.sh and
# tests/soak.sh: a run cut short by a time budget, not a failure) as cut. A
# LOG without its .trs did not run: one failure.
#
# Prints, for each LOG, a header with its results, then the log itself.
# CF_SUMMARY_NOTE, when set, is printed just before the closing line.
# Exit status: 1 when anything failed or did not run, else 0; with
# CF_SUMMARY_STATUS=ignore always 0.

# counts PASSED FAILED SKIPPED CUT: the closing line's words.
counts() {
    c="$1 passed, $2 failed"
    [ "$3" -gt 0 ] && c="$c, $3 skipped"
    [ "$4" -gt 0 ] && c="$c, $4 cut"
    echo "$c"
}

passed=0 failed=0 skipped=0 cut=0 bad=
for log in "$@"; do
    trs=${log%.log}.trs
    if [ ! -f "$log" ] || [ ! -f "$trs" ]; then
        echo ">>>>> $log: did not run"
        failed=$((failed + 1)) bad="$bad $log"
        continue
    fi
    # shellcheck disable=SC2046  # four numbers
    set -- $(awk '$1 == ":test-result:" {
                      if ($2 == "PASS" || $2 == "XFAIL") p++
                      else if ($2 == "SKIP") s++
                      else if ($2 == "CUT") c++
                      else f++
                  }
                  END { print p + 0, f + 0, s + 0, c + 0 }' "$trs")
    echo ">>>>> $log: $(counts "$@")"
    cat "$log"
    passed=$((passed + $1)) failed=$((failed + $2)) skipped=$((skipped + $3)) cut=$((cut + $4))
    [ "$2" -eq 0 ] || bad="$bad $log"
done

echo
[ -n "$bad" ] && echo ">>>>> failed:$bad"
[ -n "${CF_SUMMARY_NOTE:-}" ] && echo "$CF_SUMMARY_NOTE"
counts "$passed" "$failed" "$skipped" "$cut"
[ -z "$bad" ] || [ "${CF_SUMMARY_STATUS:-strict}" = ignore ]
