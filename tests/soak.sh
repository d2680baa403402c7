#!/bin/sh
# soak.sh — the chaos suite at full size (make soak, from the build directory).
#
# Runs tests/test-chaos on one job, through Automake's TAP driver and
# tests/tap-run.sh as in make check (one result per test, in soak.log and
# soak.trs), then prints the log and the closing line (tests/summarize.sh):
#
#   N passed, N failed[, N cut]
#
# where a stream that CF_SOAK_SECONDS stopped early ("cut by CF_SOAK_SECONDS"
# in its counts line) is also one cut. The suite prints its counts (tasks,
# kills sent, crashed, timed out, lost, hung, leaked descriptors and
# processes) and fails on any lost or hung future.
#
# Make sets: CF_SOAK_TASKS, CF_SOAK_SECONDS (read by the suite), CF_SOAK_FILTER
# (a Criterion filter, or empty), CF_SOAK_WATCHDOG (a command that bounds the
# run, or empty), SHELL, AWK, and the environment of make check.

here=$(dirname "$0")
shell=${SHELL:-/bin/sh}
export CF_SOAK_TASKS CF_SOAK_SECONDS

echo "soak: CF_SOAK_TASKS=$CF_SOAK_TASKS CF_SOAK_SECONDS=$CF_SOAK_SECONDS tests/test-chaos $CF_SOAK_FILTER"
rm -f soak.log soak.trs
# shellcheck disable=SC2086  # CF_SOAK_WATCHDOG is a list of words
AM_TAP_AWK=${AWK:-awk} \
$shell "$here/../build-aux/tap-driver.sh" --test-name soak \
    --log-file soak.log --trs-file soak.trs \
    --color-tests no --enable-hard-errors yes --expect-failure no -- \
    $shell "$here/tap-run.sh" ${CF_SOAK_WATCHDOG:-} -- \
    ./tests/test-chaos --jobs 1 ${CF_SOAK_FILTER:+"--filter=$CF_SOAK_FILTER"} >/dev/null
grep 'cut by CF_SOAK_SECONDS' soak.log | sed 's/.*/:test-result: CUT/' >>soak.trs
exec "$shell" "$here/summarize.sh" soak.log
