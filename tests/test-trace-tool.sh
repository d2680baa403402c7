#!/bin/sh
# test-trace-tool.sh — cfutures-trace draws a trace and refuses anything else.
#
# tests/trace-sample.json is a trace in the format the library writes (three
# workers, a task that crashed): the tool must draw one lane per worker and
# cross the crashed task out. Files that are not exactly that format, a
# missing file and a bad command line must be refused with a message and a
# non-zero status (1, and 2 for usage).
set -u
: "${top_srcdir:=.}" "${top_builddir:=.}"
tool="$top_builddir/tools/cfutures-trace"
sample="$top_srcdir/tests/trace-sample.json"
work=$(mktemp -d "${TMPDIR:-/tmp}/cftrace-tool.XXXXXX") || exit 99
trap 'rm -rf "$work"' EXIT
fails=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

if ! "$tool" "$sample" "$work/out.svg" 2>"$work/err"; then
    fail "the sample was refused: $(cat "$work/err")"
elif ! head -c 200 "$work/out.svg" | grep -q '<svg'; then
    fail "no SVG written"
else
    lanes=$(grep -c '>worker [0-9]*</text>' "$work/out.svg")
    [ "$lanes" -eq 3 ] || fail "$lanes lanes for 3 workers"
    grep -q 'cfutures process pool 1 (fork, 3 workers)' "$work/out.svg" ||
        fail "the pool's name is not the panel's title"
    crosses=$(grep -c 'stroke="#c0392b" stroke-width="2.5"' "$work/out.svg")
    [ "$crosses" -eq 2 ] || fail "$crosses cross strokes for one crashed task (2 expected)"
    echo "ok: the sample drawn, $lanes lanes, the crash crossed out"
fi

# Each malformed file: refused with status 1 and a message naming the file.
refuse() {
    what=$1
    "$tool" "$work/bad.json" "$work/bad.svg" 2>"$work/err"
    st=$?
    if [ "$st" -ne 1 ]; then
        fail "$what: exit status $st, expected 1"
    elif ! grep -q 'cfutures-trace: .*bad.json' "$work/err"; then
        fail "$what: no message naming the file: $(cat "$work/err")"
    else
        echo "ok: $what refused: $(cat "$work/err")"
    fi
}

head -c 700 "$sample" >"$work/bad.json"
refuse "a truncated file"
{ cat "$sample"; echo '{}'; } >"$work/bad.json"
refuse "trailing bytes"
sed 's/"dur":400.125/"dur":4e2/' "$sample" >"$work/bad.json"
refuse "an exponent"
sed 's/"ph":"X","name":"square","pid":4242,"tid":0/"ph":"X","colour":"red","name":"square","pid":4242,"tid":0/' \
    "$sample" >"$work/bad.json"
refuse "an unknown member"
sed 's/"ph":"X","name":"square","pid":4242,"tid":1,"ts":1012.000,"dur":300.000,/"ph":"X","name":"square","pid":4242,"tid":1,"ts":1012.000,/' \
    "$sample" >"$work/bad.json"
refuse "a complete event without dur"
echo '[{"ph":"X"}]' >"$work/bad.json"
refuse "a bare array"
printf '' >"$work/bad.json"
refuse "an empty file"
rm -f "$work/bad.json"
refuse "a missing file"

"$tool" >/dev/null 2>&1
st=$?
[ "$st" -eq 2 ] || fail "no arguments: exit status $st, expected 2"

[ "$fails" -eq 0 ] || exit 1
exit 0
