#!/bin/sh
# test-man.sh — checks the manual pages in man/ (make check runs it).
#
#   1. every page is clean for groff: `groff -ww -z -man` (every warning on)
#      prints nothing; a page that is a one-line `.so man3/x.3` link is not
#      formatted on its own, its target must be a page of man/ instead
#   2. every exported function has a page (man/NAME.3, a page or a link):
#      each CF_EXPORT declaration of include/cfutures.h, and each cf_* symbol
#      that `nm -D` finds in the built library when there is one (but the
#      cf__ext_* entries of src/backend.c, which are not API); the
#      missing ones are named
#   3. every page is listed in man/Makemodule.am (else it is not installed),
#      the NAME section of a page lists every function linked to it, and
#      every cross-reference (.BR cf_x (3)) names a page that exists
#   4. cf_strerror.3 lists every code of CF_ERRNO_MAP with its value
#   5. the limits the pages state are those of the code (src/internal.h, src/ring.h,
#      src/process_pool.c), and every .TH carries the package's version
#   6. every EXAMPLES program with a main() compiles against cfutures.h
#      ($CC or cc with -fsyntax-only -Wall -Wextra -Werror), when there is a
#      C compiler
#
# Without groff, step 1 is skipped and the test ends as skipped (77) once
# the others pass. No page is rendered with man(1): that needs an install
# (make installcheck does it, see man/Makemodule.am).
set -u

srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
man=$srcdir/man
header=$srcdir/include/cfutures.h
failed=0
skipped=

fail() {
    echo "FAIL: $*"
    failed=1
}

pass() {
    echo "ok: $*"
}

if [ ! -d "$man" ] || [ ! -f "$header" ]; then
    echo "test-man: no $man or $header (top_srcdir=$srcdir)"
    exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

# A link page is one line: .so man3/<target>.3
link_target() {
    sed -n '1s,^\.so man3/\([A-Za-z0-9_]*\.3\)$,\1,p' "$1"
}

pages=
links=
for f in "$man"/*.3; do
    [ -f "$f" ] || continue
    base=${f##*/}
    if [ -n "$(link_target "$f")" ]; then
        links="$links $base"
    else
        pages="$pages $base"
    fi
done
if [ -z "$pages" ]; then
    echo "test-man: no page in $man"
    exit 99
fi

# ---- 1. groff lint --------------------------------------------------------------

echo "== groff -ww -z -man"
if command -v groff >/dev/null 2>&1; then
    for p in $pages; do
        if ! groff -ww -z -man "$man/$p" >"$tmp/lint" 2>&1; then
            fail "$p: groff exited non-zero"
            cat "$tmp/lint"
        elif [ -s "$tmp/lint" ]; then
            fail "$p: groff warns"
            cat "$tmp/lint"
        else
            pass "$p"
        fi
    done
else
    echo "groff not found: the pages were not linted (Debian: apt-get install groff-base)"
    skipped=groff
fi
for l in $links; do
    t=$(link_target "$man/$l")
    if [ "$(wc -l <"$man/$l")" -ne 1 ]; then
        fail "$l: a link page must be the one line .so man3/$t"
    elif [ ! -f "$man/$t" ] || [ -n "$(link_target "$man/$t")" ]; then
        fail "$l: links to $t, which is not a page of man/"
    else
        pass "$l -> $t"
    fi
done

# ---- 2. a page for every exported function ---------------------------------------

echo "== a page for every exported function"
# The name before the parenthesis of each CF_EXPORT declaration.
sed -n 's/^CF_EXPORT[^(]*[ *]\(cf_[A-Za-z0-9_]*\)(.*/\1/p' "$header" >"$tmp/api"
so=$builddir/.libs/libcfutures.so
if [ -f "$so" ] && command -v nm >/dev/null 2>&1; then
    nm -D --defined-only "$so" | awk '$NF ~ /^cf_/ && $NF !~ /^cf__/ { print $NF }' >>"$tmp/api"
    echo "(the CF_EXPORT declarations of cfutures.h and the cf_* symbols of $so)"
else
    echo "(the CF_EXPORT declarations of cfutures.h; no built library to read)"
fi
sort -u "$tmp/api" -o "$tmp/api"
if [ ! -s "$tmp/api" ]; then
    fail "found no CF_EXPORT declaration in $header"
fi
missing=
while read -r fn; do
    [ -f "$man/$fn.3" ] || missing="$missing $fn"
done <"$tmp/api"
if [ -n "$missing" ]; then
    fail "no page for:$missing (add man/NAME.3, a page or a one-line"
    echo "      '.so man3/PAGE.3' link, and list it in man/Makemodule.am)"
else
    pass "$(wc -l <"$tmp/api") functions, each with a page"
fi

# ---- 3. installed, named, cross-referenced ------------------------------------------

echo "== listed, named, cross-referenced"
before=$failed
failed=0
for f in $pages $links; do
    if ! grep -q "man/$f\\( \\|\$\\)" "$man/Makemodule.am"; then
        fail "man/$f is not listed in man/Makemodule.am (it would not be installed)"
    fi
done
# The NAME section: the lines between .SH NAME and the next .SH.
name_of() {
    sed -n '/^\.SH NAME/,/^\.SH/{/^\.SH/d;p;}' "$man/$1"
}
for p in $pages; do
    stem=${p%.3}
    if ! name_of "$p" | grep -q "\\(^\\|[ ,]\\)$stem\\([ ,]\\|\$\\)"; then
        fail "$p: its NAME section does not name $stem"
    fi
done
for l in $links; do
    t=$(link_target "$man/$l")
    [ -f "$man/$t" ] || continue
    if ! name_of "$t" | grep -q "\\(^\\|[ ,]\\)${l%.3}\\([ ,]\\|\$\\)"; then
        fail "$l links to $t, whose NAME section does not name ${l%.3}"
    fi
done
for p in $pages; do
    sed -n 's/^\.BR \(cf[A-Za-z0-9_]*\) (3).*/\1/p' "$man/$p" | sort -u >"$tmp/refs"
    while read -r ref; do
        [ -f "$man/$ref.3" ] || fail "$p refers to $ref(3), which has no page"
    done <"$tmp/refs"
done
[ "$failed" -eq 0 ] && pass "every page listed, named, and every reference found"
[ "$before" -eq 0 ] || failed=1

# ---- 4. every error code in cf_strerror(3) ------------------------------------------

echo "== cf_strerror(3) lists every code of CF_ERRNO_MAP"
sed -n 's/^ *X(\([A-Z0-9]*\), *\(-[0-9]*\),.*/\1 \2/p' "$header" >"$tmp/codes"
if [ ! -s "$tmp/codes" ]; then
    fail "found no X(NAME, VALUE, ...) row of CF_ERRNO_MAP in $header"
fi
while read -r code value; do
    # ".BR CF_EINVAL " (\-22)"" in the page.
    v=$(printf '%s' "$value" | sed 's/-/\\\\-/')
    if grep -q "^\\.BR CF_$code \" ($v)\"" "$man/cf_strerror.3"; then
        pass "CF_$code ($value)"
    else
        fail "cf_strerror.3 does not list CF_$code ($value) as '.BR CF_$code \" (\\$value)\"'"
    fi
done <"$tmp/codes"

# ---- 5. limits and version ---------------------------------------------------------------

echo "== the limits the pages state, and the version"
# define_of FILE NAME: the number of "#define NAME <number>[u]".
define_of() {
    sed -n "s/^#define $2 *\\([0-9][0-9]*\\)u\\{0,1\\}\\( .*\\)\\{0,1\\}\$/\\1/p" "$1"
}
# says PAGE TEXT: the page says TEXT (whatever the line breaks).
says() {
    tr '\n' ' ' <"$man/$1" | grep -q "$2" ||
        fail "man/$1 does not say '$2' (the code's figure): update the page"
}
workers=$(define_of "$srcdir/src/internal.h" CF__MAX_WORKERS)
slots=$(define_of "$srcdir/src/ring.h" CF__NSLOTS)
shift=$(sed -n 's/^#define ARENA_SIZE *((size_t)1 << \([0-9]*\)).*/\1/p' "$srcdir/src/process_pool.c")
maxsize=$(sed -n 's/^ *\.max_size = ARENA_SIZE \/ 2,$/half/p' "$srcdir/src/process_pool.c")
if [ -z "$workers" ] || [ -z "$slots" ] || [ -z "$shift" ] || [ "$maxsize" != half ]; then
    fail "could not read CF__MAX_WORKERS (src/internal.h), CF__NSLOTS (src/ring.h), ARENA_SIZE or"
    echo "      .max_size (src/process_pool.c): update the limits in the pages and this test"
else
    arena_mib=$((1 << (shift - 20)))
    if [ $((arena_mib % 1024)) -eq 0 ]; then arena="$((arena_mib / 1024)) GiB"; else arena="$arena_mib MiB"; fi
    big="$((arena_mib / 2)) MiB"
    says cfutures.3 "at most $workers workers"
    says cfutures.3 "capped at $workers"
    says cf_process_pool_new.3 "at most $workers\\."
    says cf_process_pool_new.3 "More than $workers is"
    says cfutures.3 "at most $slots tasks"
    says cf_submit.3 "while $slots tasks"
    says cfutures.3 "one region of $arena"
    says cfutures.3 "at most $big"
    says cf_submit.3 "process pool, $big"
    says cf_map.3 "process pool, $big"
    pass "at most $workers workers, $slots slots, arena $arena, $big per argument"
fi
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$builddir/config.h" 2>/dev/null)
if [ -z "$version" ]; then
    version=$(sed -n 's/^AC_INIT(\[cfutures\], *\[\([^]]*\)\].*/\1/p' "$srcdir/configure.ac")
fi
for p in $pages; do
    grep -q "^\\.TH [A-Z0-9_]* 3 [0-9-]* \"cfutures $version\"" "$man/$p" ||
        fail "$p: its .TH line does not say \"cfutures $version\""
done
pass "version $version in every .TH"

# ---- 6. the examples compile ----------------------------------------------------------------

echo "== EXAMPLES programs compile"
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "no C compiler ($cc): examples not compiled"
else
    for p in $pages; do
        # Each .nf/.fi block of the EXAMPLES section, escapes undone.
        awk -v out="$tmp/ex" '
            /^\.SH / { inex = ($0 ~ /^\.SH EXAMPLES/) }
            inex && /^\.nf/ { n++; keep = 1; next }
            inex && /^\.fi/ { keep = 0; next }
            keep { print > (out "." n ".c") }
        ' "$man/$p"
        for ex in "$tmp"/ex.*.c; do
            [ -f "$ex" ] || continue
            if grep -q '^int main(' "$ex"; then
                sed -i -e 's/\\e/\\/g' -e 's/\\-/-/g' -e 's/\\&//g' -e 's/\\(dq/"/g' "$ex"
                if "$cc" -fsyntax-only -Wall -Wextra -Werror -I"$srcdir/include" \
                    -x c "$ex" >"$tmp/cc" 2>&1; then
                    pass "$p: its example compiles"
                else
                    fail "$p: its example does not compile"
                    cat "$tmp/cc"
                fi
            fi
            rm -f "$ex"
        done
    done
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
if [ -n "$skipped" ]; then
    exit 77
fi
exit 0
