#!/bin/sh
# test-cfbench.sh — smoke test of benchmarks/cfbench (make check runs it).
#
# Runs every section with --quick, in JSON and with --svg, then CSV and text
# for a few sections, and checks that each output parses: the JSON is valid
# and has every section, the CSV has five fields a line, every chart is
# well-formed SVG. benchmarks/outcheck does the checking, so python3 and
# xmllint are not needed (python3's json.tool also checks the JSON when it
# is there). No timing is asserted: the figures of a quick run mean nothing.
#
# Progress: no run above the "progress" block has stdout or stderr on a
# terminal, so none of their output may hold a carriage return, an escape
# sequence or a status line ("cfbench [k/n] ..."). --progress must draw the
# status line on stderr all the same, and, when script(1) is there to give
# cfbench a terminal, a text run on it must show the status line, and a
# --json run or a run whose stdout is piped must not.
set -u

builddir=${top_builddir:-.}
bin=$builddir/benchmarks/cfbench
check=$builddir/benchmarks/outcheck
sections="primes overhead sleep latency throughput bigmap scaling balance startup trace drain"
charts="speedup.svg primes-thread.svg primes-process.svg scaling.svg"
charts="$charts balance-thread.svg balance-process.svg"

# A build with MPI has the section mpi (cfbench-mpi under mpirun -np 3).
if "$bin" --help 2>/dev/null | grep -q '^  mpi '; then
    sections="$sections mpi"
fi

for prog in "$bin" "$check"; do
    if [ ! -x "$prog" ]; then
        echo "test-cfbench: $prog is not built"
        exit 99
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-cfbench.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
# Open MPI's session directory for the mpi section's mpirun, this run's
# own: jobs sharing the default one race to make and remove it
# (tests/mpi-harness.h, mh_private_tmpdir).
if [ -z "${OMPI_MCA_orte_tmpdir_base-}" ]; then
    mkdir "$tmp/ompi" && OMPI_MCA_orte_tmpdir_base=$tmp/ompi && export OMPI_MCA_orte_tmpdir_base
fi
failed=0

fail() {
    echo "FAIL: $*"
    failed=1
}

pass() {
    echo "ok: $*"
}

echo "== cfbench --quick --json --svg DIR (every section)"
if "$bin" --quick --json --svg "$tmp/svg" >"$tmp/all.json" 2>"$tmp/all.err"; then
    pass "cfbench exited 0"
else
    fail "cfbench exited $?"
fi
cat "$tmp/all.err"
# shellcheck disable=SC2086  # one word per section
if "$check" json "$tmp/all.json" $sections; then
    pass "valid JSON with every section"
else
    fail "JSON output (below)"
    cat "$tmp/all.json"
fi
if command -v python3 >/dev/null 2>&1; then
    if python3 -m json.tool "$tmp/all.json" >/dev/null; then
        pass "python3 -m json.tool reads it"
    else
        fail "python3 -m json.tool rejects the JSON"
    fi
fi
if grep -q "$(printf '\033')" "$tmp/all.err"; then
    fail "a progress line reached stderr, which is not a terminal"
else
    pass "no progress line on a stderr that is not a terminal"
fi
for chart in $charts; do
    if [ ! -s "$tmp/svg/$chart" ]; then
        fail "$chart was not written"
    elif "$check" svg "$tmp/svg/$chart"; then
        pass "$chart is well-formed SVG"
    else
        fail "$chart is not well-formed"
    fi
done

echo "== cfbench --quick --csv --no-python latency startup"
if "$bin" --quick --csv --no-python latency startup >"$tmp/some.csv" 2>"$tmp/some.err" &&
    "$check" csv "$tmp/some.csv"; then
    pass "CSV: header and five fields a line"
else
    fail "CSV output (below)"
    cat "$tmp/some.csv"
fi
cat "$tmp/some.err"
# The start-up floor: the minimal fork pool and the process pool, each alone
# and beside a caller with 200 MB resident, all four with a ratio to the floor.
floor_rows=$(grep -c '^startup,startup_floor,.*,vs_floor,[0-9][0-9.e+-]*$' "$tmp/some.csv")
if [ "$floor_rows" -eq 4 ] && grep -q '^startup,startup_floor,"process pool, caller with 200 MB resident",' "$tmp/some.csv"; then
    pass "startup against the minimal fork pool: 4 rows"
else
    fail "startup floor table: $floor_rows rows with a ratio, expected 4 (CSV above)"
fi

echo "== cfbench --quick --no-python sleep (tables)"
if "$bin" --quick --no-python sleep >"$tmp/sleep.txt" 2>"$tmp/sleep.err" &&
    grep -q '^== sleep: add() sleeping' "$tmp/sleep.txt" &&
    grep -q '^== sleep: add() computing' "$tmp/sleep.txt"; then
    pass "both sleep tables printed"
else
    fail "text output (below)"
    cat "$tmp/sleep.txt"
fi
cat "$tmp/sleep.err"

echo "== cfbench --quick --no-python throughput (the oneTBB row, built or not)"
# Built with oneTBB (the header says "oneTBB: N threads") the row has figures;
# built without, it is there all the same and says "not built".
if "$bin" --quick --no-python throughput >"$tmp/tbb.txt" 2>"$tmp/tbb.err"; then
    if grep -q '^oneTBB: [0-9][0-9]* threads$' "$tmp/tbb.txt"; then
        want='^  oneTBB task_group: run() stream, then wait()  *[0-9][0-9]*  *[0-9.][0-9.]*  *[0-9.][0-9.]*  *-$'
    else
        want='^  oneTBB task_group: run() stream, then wait() (not built)'
    fi
    if grep -q "$want" "$tmp/tbb.txt"; then
        pass "the oneTBB row: $(grep '^oneTBB:' "$tmp/tbb.txt")"
    else
        fail "no oneTBB row as the header says (below)"
        cat "$tmp/tbb.txt"
    fi
    # System calls per streamed task: a figure on each pool's second stream
    # (on its spare futures), where cfbench counts them, or a note that says
    # why they could not be counted.
    row="the same again, on the pool's spare futures  *[0-9][0-9]*  *[0-9.][0-9.]*  *[0-9.][0-9.]*  *[0-9][0-9]*\\.[0-9]*$"
    if [ "$(grep -c "$row" "$tmp/tbb.txt")" -eq 2 ] ||
        grep -q '^  note: syscalls/task not counted: ' "$tmp/tbb.txt"; then
        pass "syscalls per task: $(grep 'note: syscalls/task' "$tmp/tbb.txt")"
    else
        fail "no syscalls per task on the stream rows, nor why (below)"
        cat "$tmp/tbb.txt"
    fi
else
    fail "cfbench throughput exited $?"
fi
cat "$tmp/tbb.err"

echo "== progress: none when piped, a status line on a terminal"
cr=$(printf '\r')
esc=$(printf '\033')
# has_progress FILE: FILE holds a carriage return, an escape or a status line.
has_progress() {
    grep -q "$cr" "$1" || grep -q "$esc" "$1" || grep -q 'cfbench \[[0-9]*/[0-9]*\]' "$1"
}
for out in all.json all.err some.csv some.err sleep.txt sleep.err; do
    if has_progress "$tmp/$out"; then
        fail "$out (piped) holds progress text"
    else
        pass "$out (piped): no carriage return, escape or status line"
    fi
done
"$bin" --quick --no-python --progress latency >"$tmp/forced.txt" 2>"$tmp/forced.err"
if grep -q "cfbench \[1/1\] latency" "$tmp/forced.err" && grep -q "$cr" "$tmp/forced.err" &&
    ! has_progress "$tmp/forced.txt"; then
    pass "--progress: status lines on stderr, none on stdout"
else
    fail "--progress (stderr below)"
    tr '\r' '\n' <"$tmp/forced.err"
    echo
fi
if command -v script >/dev/null 2>&1 && script -qec true /dev/null </dev/null >/dev/null 2>&1; then
    # script(1) runs the command on a new terminal and copies what it shows.
    on_tty() {
        script -qec "$1" /dev/null </dev/null >"$2" 2>&1
    }
    on_tty "'$bin' --quick --no-python latency" "$tmp/tty.txt"
    if grep -q "cfbench \[1/1\] latency" "$tmp/tty.txt"; then
        pass "on a terminal: a status line"
    else
        fail "on a terminal: no status line (below)"
        tr '\r' '\n' <"$tmp/tty.txt"
        echo
    fi
    on_tty "'$bin' --quick --no-python --json latency" "$tmp/tty-json.txt"
    if grep -q 'cfbench \[' "$tmp/tty-json.txt" || grep -q "$esc" "$tmp/tty-json.txt"; then
        fail "--json on a terminal: progress text (below)"
        tr '\r' '\n' <"$tmp/tty-json.txt"
        echo
    else
        pass "--json on a terminal: no status line"
    fi
    on_tty "'$bin' --quick --no-python latency | cat" "$tmp/tty-piped.txt"
    if grep -q 'cfbench \[' "$tmp/tty-piped.txt" || grep -q "$esc" "$tmp/tty-piped.txt"; then
        fail "stdout piped, stderr on a terminal: progress text (below)"
        tr '\r' '\n' <"$tmp/tty-piped.txt"
        echo
    else
        pass "stdout piped, stderr on a terminal: no status line"
    fi
else
    echo "script(1) not found: the terminal cases were not run"
fi

echo "== command line"
"$bin" --help >"$tmp/help.txt" 2>&1
if [ $? -eq 0 ] && grep -q '^usage: cfbench' "$tmp/help.txt"; then
    pass "--help"
else
    fail "--help"
fi
"$bin" no-such-section >/dev/null 2>&1
if [ $? -eq 2 ]; then pass "an unknown section exits 2"; else fail "an unknown section"; fi
"$bin" --csv --json latency >/dev/null 2>&1
if [ $? -eq 2 ]; then pass "two output formats exit 2"; else fail "two output formats"; fi
"$bin" --scale 0 primes >/dev/null 2>&1
if [ $? -eq 2 ]; then pass "--scale 0 exits 2"; else fail "--scale 0"; fi
if "$bin" --help 2>&1 | grep -q -- '--no-progress'; then
    pass "--help lists --progress and --no-progress"
else
    fail "--help does not list --no-progress"
fi

exit $failed
