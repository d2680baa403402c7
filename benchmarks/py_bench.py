#!/usr/bin/env python3
"""py_bench.py: Python's concurrent.futures on cfbench's workloads.

benchmarks/cfbench runs this script before its own sections and reads the
one flat JSON object it prints on stdout ({"section.figure": value, ...}).
By hand:

    python3 benchmarks/py_bench.py [--quick] [--workers N] [--sections primes,latency]

Sections: primes, overhead, latency, throughput, startup. The whole run
stays within a few seconds: the prime list keeps the seed's shape (five
primes, then a composite whose smallest factor is large) at a hundredth of
its magnitude, and the counts are smaller than cfbench's (the JSON says
which were used, and rates and ratios compare).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from multiprocessing import Pool

# The seed's PRIMES divided by 100 and moved to the next prime; the last is
# 330611 * 33263677, as the seed's last is 3306091 * 332636609.
PRIMES = [1122725350963, 1125827059429, 1122725350963, 1152800951941,
          1157978480779, 10997337516647]


def is_prime(n):
    if n % 2 == 0:
        return False
    sqrt_n = int(math.floor(math.sqrt(n)))
    for i in range(3, sqrt_n + 1, 2):
        if n % i == 0:
            return False
    return True


def noop(x=None):
    return x


def pow10(x):
    return x ** 10


def best(f, reps):
    """Best wall time of reps calls of f."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def started(executor):
    """Runs one task so that the measurements do not pay for starting workers."""
    executor.submit(noop, 0).result()
    return executor


def bench_primes(out, workers, quick):
    numbers = PRIMES * (1 if quick else 2)
    out["primes.count"] = len(numbers)
    out["primes.workers"] = workers
    out["primes.straight_s"] = best(lambda: list(map(is_prime, numbers)), 1)
    with ThreadPoolExecutor(workers) as te:
        out["primes.threads_s"] = best(lambda: list(te.map(is_prime, numbers)), 1)
    with started(ProcessPoolExecutor(workers)) as pe:
        out["primes.processes_s"] = best(lambda: list(pe.map(is_prime, numbers)), 1)


def bench_overhead(out, workers, quick):
    n = 3000
    xs = range(n)
    out["overhead.n"] = n
    out["overhead.serial_s"] = best(lambda: list(map(pow10, xs)), 3 if quick else 20)
    with started(ProcessPoolExecutor(workers)) as pe:
        out["overhead.map1_s"] = best(lambda: list(pe.map(pow10, xs)), 1)
        split = -(-n // workers)
        out["overhead.split_s"] = best(lambda: list(pe.map(pow10, xs, chunksize=split)),
                                       1 if quick else 5)
    with Pool(workers) as p:
        out["overhead.pool_auto_s"] = best(lambda: p.map(pow10, xs), 1 if quick else 5)


def median_round_trip(executor, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        executor.submit(noop, 0).result()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_latency(out, workers, quick):
    reps = 200 if quick else 1000
    out["latency.reps"] = reps
    with started(ProcessPoolExecutor(workers)) as pe:
        median_round_trip(pe, reps // 10)
        out["latency.process_us"] = median_round_trip(pe, reps) * 1e6
    with started(ThreadPoolExecutor(workers)) as te:
        median_round_trip(te, reps // 10)
        out["latency.thread_us"] = median_round_trip(te, reps) * 1e6


def bench_throughput(out, workers, quick):
    n = 1000 if quick else 5000
    m = 20000 if quick else 200000
    with started(ProcessPoolExecutor(workers)) as pe:
        t0 = time.perf_counter()
        wait([pe.submit(noop) for _ in range(n)])
        out["throughput.submit_n"] = n
        out["throughput.submit_per_s"] = n / (time.perf_counter() - t0)
        chunk = max(1, m // (4 * workers))
        t0 = time.perf_counter()
        for _ in pe.map(noop, range(m), chunksize=chunk):
            pass
        out["throughput.map_n"] = m
        out["throughput.map_per_s"] = m / (time.perf_counter() - t0)


def bench_startup(out, workers, quick):
    del workers  # cfbench's startup section always uses pools of two
    reps = 3 if quick else 5
    out["startup.reps"] = reps
    for kind, cls in (("process", ProcessPoolExecutor), ("thread", ThreadPoolExecutor)):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with cls(2) as ex:
                ex.submit(noop, 0).result()
            times.append(time.perf_counter() - t0)
        out[f"startup.{kind}_ms"] = statistics.median(times) * 1e3
        out[f"startup.{kind}_best_ms"] = min(times) * 1e3


SECTIONS = {
    "primes": bench_primes,
    "overhead": bench_overhead,
    "latency": bench_latency,
    "throughput": bench_throughput,
    "startup": bench_startup,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = parser.parse_args()
    out = {"python.version": platform.python_version()}
    for name in args.sections.split(","):
        if name in SECTIONS:
            SECTIONS[name](out, max(1, args.workers), args.quick)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
