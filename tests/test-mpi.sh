#!/bin/sh
# test-mpi.sh — make check runs tests/test-mpi (libcfutures-mpi) under
# mpirun with 3 ranks on this machine: rank 0 the root, ranks 1 and 2
# serving. As root, mpirun needs --allow-run-as-root; --oversubscribe lets 3
# ranks run on fewer cores. Each run is bounded (timeout): a hang fails.
# Then demo/cluster, whose output is checked. Skipped (77) without mpirun.
set -u
builddir=${top_builddir:-.}
prog=$builddir/tests/test-mpi
command -v mpirun >/dev/null 2>&1 || { echo "no mpirun: skipped"; exit 77; }
[ -x "$prog" ] || { echo "$prog not built"; exit 99; }
bound=${CF_MPI_TEST_TIMEOUT:-300}
run() {
    echo "mpirun -np 3 $prog $1"
    timeout --kill-after=10 "$bound" mpirun --allow-run-as-root --oversubscribe -np 3 \
        "$prog" "$1"
}
rc=0
run main || rc=1
run mismatch || rc=1
# demo/cluster: every answer but the one that crashes on purpose.
demo=$builddir/demo/cluster
if [ -x "$demo" ]; then
    echo "mpirun -np 3 $demo"
    out=$(timeout --kill-after=10 "$bound" mpirun --allow-run-as-root --oversubscribe -np 3 \
        "$demo" 2>&1) || rc=1
    printf '%s\n' "$out" | grep -v '^\[' 
    [ "$(printf '%s\n' "$out" | grep -c ': prime$')" -eq 5 ] || { echo "FAIL: demo/cluster: not 5 primes"; rc=1; }
    printf '%s\n' "$out" | grep -q 'rank [0-9]*: worker killed by signal 11' ||
        { echo "FAIL: demo/cluster: no crash reported"; rc=1; }
fi
exit $rc
