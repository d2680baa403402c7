#!/usr/bin/env bash
# quickstart.sh — set up, build and run cfutures on a Debian (or Ubuntu) machine.
#
#   ./quickstart.sh bench [ARGS...]   build, then run benchmarks/cfbench ARGS...
#   ./quickstart.sh test [MAKEARGS]   build, run the test suites (make check),
#                                     print every test log and "N passed, N failed"
#   ./quickstart.sh sanitize          the same with ASan + UBSan, in build-asan/
#   ./quickstart.sh valgrind [MAKEARGS]
#                                     the test suites under valgrind (in build/);
#                                     CF_VALGRIND_BUDGET=SECONDS runs what fits
#   ./quickstart.sh tsan [MAKEARGS]   ThreadSanitizer build in build-tsan/: make check
#                                     there runs tests/tsan-stress and the other plain
#                                     test programs (Criterion cannot start under TSan)
#   ./quickstart.sh soak [MAKEARGS]   the chaos soak: 10^5 tasks while workers are
#                                     killed at random (make soak, in build/);
#                                     CF_SOAK_SECONDS=SECONDS stops it in time
#
# Each mode first installs what is missing with apt-get (as root, or through
# sudo otherwise; nothing when all is there), runs autoreconf -fi when
# ./configure is missing, configures out of tree (build/, build-asan/,
# build-tsan/) and builds with every core. A second run only rebuilds what
# changed. To start over: rm -rf build build-asan build-tsan.
# test and bench also install Open MPI (openmpi-bin, libopenmpi-dev), so that
# libcfutures-mpi is built and make check runs tests/test-mpi.sh under
# mpirun; the sanitizer builds configure --without-mpi. bench also installs
# oneTBB (libtbb-dev), for cfbench's oneTBB rows, and python3-mpi4py, for
# the mpi4py.futures rows of cfbench's section mpi; run as root, it mounts
# tracefs where it is missing, for cfbench's counts of system calls.
# Environment: CC, CFLAGS and CONFIGURE_FLAGS reach a first configure;
# JOBS sets make's parallelism (default: the number of cores).
set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
cd "$top"

jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

say() { printf '==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# cfbench counts system calls per task with the raw_syscalls tracepoint,
# which it finds in tracefs. As root, mount tracefs where it is missing;
# otherwise cfbench says in a note why it could not count.
mount_tracefs() {
    [ -d /sys/kernel/tracing/events ] && return 0
    [ "$(id -u)" -eq 0 ] || return 0
    grep -qw tracefs /proc/filesystems 2>/dev/null || return 0
    say "mount -t tracefs nodev /sys/kernel/tracing (cfbench's syscall counts)"
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "tracefs could not be mounted: no syscall counts"
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
    exit "${1:-0}"
}

# ---- packages ------------------------------------------------------------------

# Prints the packages of "$@" that dpkg does not know as installed.
missing_packages() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$p"
        fi
    done
}

install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        say "not a Debian system: make sure these are installed: $*"
        return 0
    fi
    local missing sudo=
    missing=$(missing_packages "$@" | tr '\n' ' ')
    missing=${missing% }
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo) to install: $missing"
        sudo=sudo
    fi
    say "installing with apt-get: $missing"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing </dev/null
}

# ---- build -------------------------------------------------------------------------

bootstrap() {
    if [ -f config.status ]; then
        die "the source directory itself was configured; run 'make distclean' here first (quickstart builds out of tree)"
    fi
    if [ ! -x configure ] || [ ! -f Makefile.in ] || [ configure.ac -nt configure ]; then
        say "autoreconf -fi"
        autoreconf -fi
    fi
}

# configure_in DIR [CONFIGURE ARGS...]: configures once; later runs reuse DIR
# (make reruns config.status itself when configure.ac or Makefile.am change).
configure_in() {
    local dir=$1
    shift
    if [ -f "$dir/Makefile" ] && [ -f "$dir/config.status" ]; then
        # A tree configured before Criterion was installed has no test suites.
        # (A conditional is no make variable: an empty CRITERION_LIBS tells.)
        if grep -q '^CRITERION_LIBS = *$' "$dir/Makefile" && pkg-config --exists criterion 2>/dev/null; then
            say "Criterion is now installed: configuring $dir again"
        elif grep -q '^MPI_LIBS = *$' "$dir/Makefile" && pkg-config --exists ompi-c 2>/dev/null &&
            ! grep -q -e '--without-mpi' "$dir/config.status"; then
            say "Open MPI is now installed: configuring $dir again"
        elif grep -q '^TBB_LIBS = *$' "$dir/Makefile" && pkg-config --exists tbb 2>/dev/null &&
            ! grep -q -e '--without-tbb' "$dir/config.status"; then
            say "oneTBB is now installed: configuring $dir again"
        else
            return 0
        fi
    fi
    mkdir -p "$dir"
    say "configure in $dir/: ../configure $* ${CONFIGURE_FLAGS:-}"
    # shellcheck disable=SC2086  # CONFIGURE_FLAGS is a list of words
    (cd "$dir" && ../configure "$@" ${CONFIGURE_FLAGS:-})
}

build_in() {
    say "make -j$jobs in $1/"
    make -C "$1" -j"$jobs"
}

# summarize DIR TARGET [MAKEARGS...]: runs a target that prints every test log
# and then the line "N passed, N failed" (tests/summarize.sh), and fails when
# it does: something failed or did not run.
summarize() {
    local dir=$1 target=$2
    shift 2
    make -C "$dir" -s --no-print-directory "$target" "$@"
}

# check_in DIR [MAKEARGS...]: make check, then every log and the summary line.
check_in() {
    local dir=$1 rc=0
    shift
    say "make check in $dir/"
    make -C "$dir" -j"$jobs" check "$@" || rc=$?
    say "test logs"
    summarize "$dir" check-summary "$@" || rc=1
    return "$rc"
}

# ---- modes -------------------------------------------------------------------------

base_packages=(autoconf automake libtool pkg-config make gcc libc6-dev libcriterion-dev)
# Open MPI: libcfutures-mpi and its test (tests/test-mpi.sh, under mpirun),
# built and run by the test stage. The sanitizer builds leave MPI out
# (--without-mpi): Open MPI's own allocations and threads are not ours to
# report.
mpi_packages=(openmpi-bin libopenmpi-dev)
# Bench mode only: oneTBB, for cfbench's oneTBB rows (benchmarks/tbb.cc,
# C++), and mpi4py, for the mpi4py.futures rows of cfbench's section mpi
# (Debian's python3-mpi4py, for /usr/bin/python3, which that section tries
# when the python3 found first cannot import mpi4py).
bench_packages=(g++ libtbb-dev python3-mpi4py)

mode=${1:-}
[ $# -gt 0 ] && shift

case "$mode" in
    bench)
        install_packages "${base_packages[@]}" "${mpi_packages[@]}" "${bench_packages[@]}"
        bootstrap
        configure_in build
        build_in build
        bin=build/benchmarks/cfbench
        if [ ! -x "$bin" ]; then
            make -C build benchmarks/cfbench >/dev/null 2>&1 || true
        fi
        [ -x "$bin" ] || die "$bin was not built (see benchmarks/Makemodule.am)"
        mount_tracefs
        say "$bin $*"
        exec "$bin" "$@"
        ;;
    test)
        install_packages "${base_packages[@]}" "${mpi_packages[@]}"
        bootstrap
        configure_in build
        build_in build
        check_in build "$@"
        ;;
    sanitize|asan)
        install_packages "${base_packages[@]}"
        bootstrap
        configure_in build-asan --enable-sanitizers --without-mpi
        build_in build-asan
        check_in build-asan "$@"
        ;;
    valgrind)
        install_packages "${base_packages[@]}" valgrind
        bootstrap
        configure_in build
        # The library shows memcheck each future as a block of its own only
        # when src/fmem.c was compiled with valgrind's header: compiled
        # before valgrind was installed, it is compiled again.
        if [ -f /usr/include/valgrind/memcheck.h ] && [ -f build/src/.deps/libcfutures_la-fmem.Plo ] &&
            ! grep -q 'valgrind/memcheck\.h' build/src/.deps/libcfutures_la-fmem.Plo; then
            say "valgrind is now installed: compiling src/fmem.c again"
            rm -f build/src/libcfutures_la-fmem.lo build/src/libcfutures_la-fmem.o \
                build/src/.libs/libcfutures_la-fmem.o
        fi
        build_in build
        say "make check-valgrind in build/"
        summarize build check-valgrind "$@"
        ;;
    tsan)
        install_packages "${base_packages[@]}"
        bootstrap
        configure_in build-tsan --enable-tsan --without-mpi
        build_in build-tsan
        check_in build-tsan "$@"
        ;;
    soak)
        install_packages "${base_packages[@]}"
        bootstrap
        configure_in build
        build_in build
        say "make soak in build/"
        make -C build soak "$@"
        ;;
    -h|--help|help)
        usage 0
        ;;
    *)
        usage 2 >&2
        ;;
esac
