#!/bin/sh
# test-mpi.sh — make check runs tests/test-mpi (libcfutures-mpi) under
# mpirun with 3 ranks on this machine: rank 0 the root, ranks 1 and 2
# serving. As root, mpirun needs --allow-run-as-root; --oversubscribe lets 3
# ranks run on fewer cores. Each run is bounded (timeout): a hang fails.
# Modes main, mismatch, nodes and bigmap must pass; rankdeath must end the job
# (tests/test-mpi.c says what each checks). Then demo/cluster, whose output
# is checked. Skipped (77) without mpirun.
set -u
builddir=${top_builddir:-.}
prog=$builddir/tests/test-mpi
command -v mpirun >/dev/null 2>&1 || { echo "no mpirun: skipped"; exit 77; }
[ -x "$prog" ] || { echo "$prog not built"; exit 99; }
bound=${CF_MPI_TEST_TIMEOUT:-300}
# Open MPI's session directory, this script's own: jobs sharing the default
# one race to make and remove it (tests/mpi-harness.h, mh_private_tmpdir).
if [ -z "${OMPI_MCA_orte_tmpdir_base-}" ]; then
    OMPI_MCA_orte_tmpdir_base=$(mktemp -d "${TMPDIR:-/tmp}/cf-mpi-XXXXXX") || exit 99
    export OMPI_MCA_orte_tmpdir_base
    trap 'rm -rf "$OMPI_MCA_orte_tmpdir_base"' EXIT
fi
run() {
    echo "mpirun -np 3 $prog $1"
    timeout --kill-after=10 "$bound" mpirun --allow-run-as-root --oversubscribe -np 3 \
        "$prog" "$1"
}
rc=0
run main || rc=1
run mismatch || rc=1
run nodes || rc=1
run bigmap || rc=1

# A rank that dies ends the job (Open MPI 4.1 has no ULFM): mpirun must
# fail, and soon, naming the dead rank, and leave no process of the job
# behind (ranks, their pools' zygotes and workers, which all carry tag).
tag="cf-rankdeath-$$-$(date +%s%N)"
echo "mpirun -np 3 $prog rankdeath"
start=$(date +%s)
out=$(env CF_TEST_JOB_TAG="$tag" timeout --kill-after=10 "$bound" mpirun --allow-run-as-root \
      --oversubscribe -x CF_TEST_JOB_TAG -np 3 "$prog" rankdeath 2>&1)
drc=$?
took=$(( $(date +%s) - start ))
printf '%s\n' "$out" | tail -n 20
echo "rankdeath: mpirun exited $drc after ${took} s"
if [ "$drc" -eq 0 ] || [ "$took" -ge "$bound" ]; then
    echo "FAIL: rankdeath: the job went on (exit 0) or hung until the bound (${bound} s)"; rc=1
fi
printf '%s\n' "$out" | grep -q 'rank 1 with PID.*signal 9' ||
    { echo "FAIL: rankdeath: mpirun did not report rank 1 killed"; rc=1; }
left=
for i in $(seq 1 50); do
    left=$(grep -l -a -- "$tag" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | tr '\n' ' ')
    [ -z "$left" ] && break
    sleep 0.2
done
if [ -n "$left" ]; then
    echo "FAIL: rankdeath: processes of the job left: $left"
    for p in $left; do ps -o pid,ppid,stat,comm -p "$p" | tail -n +2; done
    rc=1
fi
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
