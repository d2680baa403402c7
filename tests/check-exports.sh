#!/bin/sh
# check-exports.sh SHARED-LIBRARY — make check-exports: the shared library
# must export the public API only (cf_*; the cf__ext_* entries of
# src/backend.c, for backends built apart, are counted with them). Make sets NM and AWK. A build with
# no shared library (--disable-shared) has nothing to check.

so=$1
if [ ! -f "$so" ]; then
    echo "check-exports: no shared library built, skipped"
    exit 0
fi
# shellcheck disable=SC2016  # awk's own $NF
syms=$(${NM:-nm} -D --defined-only "$so" | ${AWK:-awk} '{ print $NF }')
extra=$(printf '%s\n' "$syms" | grep -v '^cf_')
if [ -n "$extra" ]; then
    echo "check-exports: $so exports symbols outside the API:" >&2
    echo "$extra" >&2
    exit 1
fi
echo "check-exports: $so exports $(printf '%s\n' "$syms" | grep -c '^cf_') cf_* symbols and nothing else"
