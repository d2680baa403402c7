#!/bin/sh
# test-demos.sh — runs every demo of demo/ and checks what it prints.
#
# Run by `make check` (from the build directory, with top_builddir set), or
# by hand: top_builddir=build sh tests/test-demos.sh. The demos run in their
# quick mode (CF_DEMO_QUICK=1), each under a timeout. The checks are about
# results and lessons, never about speed: timings vary from run to run.
# Exit status: 0 when every check passed, 1 otherwise.

top_builddir=${top_builddir:-.}
demo=$top_builddir/demo
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cf-demos.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

CF_DEMO_QUICK=1
export CF_DEMO_QUICK
# demo/crash crashes a worker on purpose: no core file, and in a sanitized
# build SIGSEGV must kill the worker rather than be reported.
ulimit -c 0
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}handle_segv=0"
export ASAN_OPTIONS TSAN_OPTIONS

failed=0
ok() { echo "  ok: $*"; }
fail() { echo "  FAIL: $*"; failed=1; }
# check DESCRIPTION COMMAND...: one assertion.
check() {
    what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

# run NAME [ARGS...]: runs demo/NAME into $tmp/NAME.out and shows its output.
run() {
    name=$1
    shift
    echo "=== demo/$name $*"
    timeout -k 5 60 "$demo/$name" "$@" >"$tmp/$name.out" 2>&1
    rc=$?
    sed 's/^/| /' "$tmp/$name.out"
    check "demo/$name exits with status 0 (it was $rc)" test "$rc" -eq 0
}

# has NAME REGEX: the output of demo NAME has a line matching REGEX (grep -E).
has() { grep -Eq -- "$2" "$tmp/$1.out"; }
# count NAME REGEX: how many lines match.
count() { grep -Ec -- "$2" "$tmp/$1.out"; }
# section NAME FIRST NEXT: the lines from the one starting with FIRST to the
# one before the next that starts with NEXT.
section() { sed -n "/^$2/,/^$3/p" "$tmp/$1.out"; }

# ---- globals ---------------------------------------------------------------
run globals
s1=$(section globals '1\.' '2\.')
s2=$(section globals '2\.' '3\.')
check "thread pool: the caller's total is 15" \
    sh -c 'echo "$1" | grep -q "total in the caller: 15$"' - "$s1"
lost=$(echo "$s1" | sed -n 's/.* gave [0-9]*, so \([0-9]*\)$/\1/p')
check "the plain += race is reported (lost updates: ${lost:-none printed}, may be 0)" \
    test -n "$lost"
check "process pool: the caller's total is still 0" \
    sh -c 'echo "$1" | grep -q "total in the caller: 0$"' - "$s2"
kept=$(echo "$s2" | sed -n 's/.*worker 0: \([0-9]*\), worker 1: \([0-9]*\)$/\1 + \2/p')
check "process pool: the workers' own subtotals add up to 15 ($kept)" \
    test "$(expr ${kept:-0 + 0})" -eq 15
check "return values reduced in the caller: 15" has globals 'added up in the caller: 15$'
check "shared counter in cf_shared_alloc memory: 15" has globals 'cf_shared_alloc memory: 15$'
check "factor changed late: the thread pool sees it (150)" has globals 'thread pool \(the same memory\): 150$'
check "factor changed late: the fork workers do not (15)" has globals 'process pool \(its snapshot says 1\): 15$'
check "factor as an argument: 150" has globals 'passed as arguments.*: 150$'
check "factor through the initializer of fresh (exec) workers: 150" has globals 'from initargs: 150$'

# ---- primes ----------------------------------------------------------------
run primes
check "loop, thread pool, process pool and futures all answer [T,T,T,T,T,F]" \
    test "$(count primes '\[True, True, True, True, True, False\]$')" -eq 4
for i in 0 1 2 3 4 5; do
    if [ "$i" -eq 5 ]; then want='is not prime'; else want='is prime'; fi
    check "as_completed reports #$i once, and it $want" \
        test "$(count primes "#$i [0-9]+ $want \(worker [0-9]+\)$")" -eq 1
done

# ---- overhead --------------------------------------------------------------
run overhead
check "all five ways give the loop's results" test "$(count overhead 'results match$')" -eq 5
check "the rule of thumb is printed" has overhead '^Rule of thumb'

# ---- sleep -----------------------------------------------------------------
run sleep
check "every run adds the ten pairs right" \
    test "$(count sleep 'results: 11 12 13 14 15 6 4 2 4 7$')" -eq 6
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
check "the core estimate is printed beside sysconf's answer ($cpus)" \
    has sleep "so about [0-9]+ \(sysconf\(_SC_NPROCESSORS_ONLN\) says $cpus[;)]"

# ---- balance ---------------------------------------------------------------
run balance
# tasks NAME FIRST NEXT: the task counts per worker printed in that section.
tasks() { section balance "$1" "$2" | sed -n 's/^  worker [0-9]*: *\([0-9]*\) tasks.*/\1/p'; }
static=$(tasks 'Static' 'Load')
balanced=$(tasks 'Load' 'cf_map')
sum() { s=0; for c in $1; do s=$((s + c)); done; echo "$s"; }
check "static split: 4 workers ran 32 tasks ($(echo $static))" \
    test "$(echo "$static" | wc -l)" -eq 4 -a "$(sum "$static")" -eq 32
whole=1
for c in $static; do [ $((c % 8)) -eq 0 ] || whole=0; done
check "static split: every worker ran whole shares of 8 tasks" test "$whole" -eq 1
check "load balanced: 4 workers ran 32 tasks ($(echo $balanced))" \
    test "$(echo "$balanced" | wc -l)" -eq 4 -a "$(sum "$balanced")" -eq 32

# ---- crash -----------------------------------------------------------------
run crash
check "task 3 failed with CF_ECRASHED and SIGSEGV" \
    has crash '^  task 3: CF_ECRASHED .* SIGSEGV '
for i in 0 1 2 4 5 6 7; do
    check "task $i still delivered $i squared" has crash "^  task $i: $i squared is $((i * i)) "
done
check "the summary counts 7 right and 1 crash" \
    has crash '^7 of 8 results correct, 1 task crashed with SIGSEGV\.$'
check "the pool works after the crash" has crash '^After the crash, 8 more tasks all succeed'

# ---- interrupt -------------------------------------------------------------
echo "=== demo/interrupt 30, then SIGINT to its process group"
# alive PID: the process exists and has not exited (a zombie has exited and
# only waits for its parent to collect its status).
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}
ended() { [ -n "$1" ] && ! alive "$1"; }
# setsid: a session and process group of its own, so the SIGINT sent to that
# group reaches the demo and its workers and not this script or make.
out=$tmp/interrupt.out
setsid "$demo/interrupt" 30 >"$out" 2>&1 &
bg=$!
i=0
while ! grep -q 'Press Ctrl-C' "$out" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
line=$(sed -n 's/^caller pid \([0-9]*\), process group \([0-9]*\), worker pids: \(.*\)$/\1 \2 \3/p' "$out")
pid=$(echo "$line" | cut -s -d' ' -f1)
pgid=$(echo "$line" | cut -s -d' ' -f2)
workers=$(echo "$line" | cut -s -d' ' -f3-)
check "the demo printed its pid, process group and 2 worker pids ($line)" \
    test -n "$pid" -a -n "$pgid" -a "$(echo $workers | wc -w)" -eq 2
if [ -n "$pgid" ]; then
    sleep 0.5     # the map is under way
    kill -s INT -- -"$pgid"
fi
i=0
while [ -n "$pid" ] && alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check "the demo ended within 5 s of SIGINT" ended "$pid"
if [ "$bg" = "$pid" ]; then
    wait "$bg"
    rc=$?
    check "it was ended by SIGINT (status $rc, 130 expected)" test "$rc" -eq 130
else
    wait "$bg"
fi
gone=1
for w in $workers; do
    i=0
    while alive "$w" && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
    if alive "$w"; then gone=0; fi
done
check "no worker process remains 2 s later ($workers)" test -n "$workers" -a "$gone" -eq 1
# Nor any other process of its session (the pool may have helpers of its own).
left=
if [ -n "$pgid" ]; then
    i=0
    while :; do
        left=$(ps -e -o sid=,pid=,stat=,comm= | awk -v s="$pgid" '$1 == s && $3 !~ /^Z/ { print $2 " " $4 }')
        [ -z "$left" ] || [ $i -ge 20 ] && break
        sleep 0.1
        i=$((i + 1))
    done
fi
check "no process of its session remains${left:+ (left: $left)}" test -n "$pgid" -a -z "$left"
sed 's/^/| /' "$out"
check "exactly one line about the interrupt" test "$(count interrupt 'Ctrl-C: stopping now')" -eq 1
check "and it is the last line" sh -c 'tail -n 1 "$1" | grep -q "Ctrl-C: stopping now"' - "$out"
check "the map did not run to its end" test "$(count interrupt '^Nobody pressed Ctrl-C')" -eq 0
# Leave nothing behind even when a check failed.
[ -n "$pgid" ] && kill -s KILL -- -"$pgid" 2>/dev/null

# ---- progress --------------------------------------------------------------
# Quick mode: the map is cancelled by its 1 s time limit.
run progress
check "the map was cancelled by the time limit" has progress '^cancelled by the time limit after'
ran=$(sed -n 's/^cancelled by .*: \([0-9]*\) elements ran, \([0-9]*\) never ran.*/\1 \2/p' "$tmp/progress.out")
check "ran + never ran = 2000 elements ($ran)" \
    test -n "$ran" -a "$(echo "$ran" | awk '{print $1 + $2}')" = 2000
check "the element callback and the status array agree" has progress 'they agree$'
check "the pool goes on after the cancel" has progress '^the pool goes on: .* returned success'

# Without a limit: SIGINT (to the caller alone, as its handler is what matters) cancels the map.
echo "=== demo/progress, then SIGINT"
out=$tmp/progress-int.out
"$demo/progress" 0 >"$out" 2>&1 &
bg=$!
i=0
while ! grep -q 'Press Ctrl-C' "$out" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
kill -s INT "$bg"
i=0
while alive "$bg" && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
check "the demo ended within 30 s of SIGINT" ended "$bg"
kill -s KILL "$bg" 2>/dev/null
wait "$bg"
rc=$?
sed 's/^/| /' "$out"
check "it exited with status 0 (it was $rc)" test "$rc" -eq 0
check "the map was cancelled by Ctrl-C" grep -q '^cancelled by Ctrl-C after' "$out"
check "the element callback and the status array agree" grep -q 'they agree$' "$out"

echo
if [ "$failed" -eq 0 ]; then echo "test-demos: all checks passed"; else echo "test-demos: some checks FAILED"; fi
exit "$failed"
