#!/usr/bin/env python3
"""py_mpi_bench.py: mpi4py.futures' MPIPoolExecutor on cfbench's mpi work.

cfbench's section mpi runs it, when mpi4py is importable, as

    mpirun --oversubscribe -np 3 python3 -m mpi4py.futures py_mpi_bench.py [--quick]

(rank 0 runs this script, the other ranks are the executor's workers, as
rank 0 of cfbench-mpi is the root of its pool and the others serve it), and
reads the one flat JSON object it prints on stdout: the median round trip
of an empty task (submit, then result) and the throughput of empty tasks
streamed (all submitted, then all waited for; best of 3), as cfbench-mpi
measures them.
"""
import argparse
import json
import statistics
import time
from concurrent.futures import wait

import mpi4py
from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def noop(x=None):
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rt_reps = 100 if args.quick else 1000
    stream_n = 500 if args.quick else 10000
    stream_reps = 1 if args.quick else 3
    out = {"mpi4py.version": mpi4py.__version__,
           "mpi4py.workers": MPI.COMM_WORLD.Get_size() - 1}
    with MPIPoolExecutor() as ex:
        ex.submit(noop).result()    # the workers are up
        times = []
        for _ in range(rt_reps + rt_reps // 10):
            t0 = time.perf_counter()
            ex.submit(noop).result()
            times.append(time.perf_counter() - t0)
        out["mpi4py.roundtrip_us"] = statistics.median(times[rt_reps // 10:]) * 1e6
        best_s = None
        for _ in range(stream_reps):
            t0 = time.perf_counter()
            futures = [ex.submit(noop) for _ in range(stream_n)]
            wait(futures)
            t = time.perf_counter() - t0
            best_s = t if best_s is None else min(best_s, t)
        out["mpi4py.stream_tasks_s"] = stream_n / best_s
        out["mpi4py.stream_reps"] = stream_reps
        out["mpi4py.stream_n"] = stream_n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
