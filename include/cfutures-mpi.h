/*
 * cfutures-mpi.h — the same futures across MPI ranks (libcfutures-mpi).
 *
 * One SPMD program, launched by mpirun or srun, the same binary on every
 * rank:
 *
 *     MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
 *     cf_executor *ex;
 *     if (cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, NULL) == 0 && ex != NULL) {
 *         ... cf_submit, cf_map, futures, as with any executor ...
 *         cf_executor_free(ex);      (the other ranks return from their call)
 *     }
 *     MPI_Finalize();
 *
 * Link with libcfutures-mpi, libcfutures and MPI (pkg-config cfutures-mpi).
 *
 * What travels: the bytes of each argument and result, and each function
 * as (loaded object, offset), as exec workers get them: a function must lie
 * in an object every rank loaded when the pool was created (the program
 * or a library it links), never a pointer into the root's memory. What does
 * not: anything an argument points to; cf_shared_alloc memory, which is per
 * machine (a task on another rank reads that rank's own copy, in whatever
 * state it is there, and its writes never reach the root); the root's
 * globals (a task sees its rank's).
 *
 * What MPI cannot survive: with Open MPI 4.1 (no ULFM) a rank that dies
 * (killed, or its node lost) ends the whole job; mpirun then stops every
 * rank, the root included. A task that dies does not kill its rank: each
 * serving rank runs its tasks in a local cfutures process pool, so a task
 * that segfaults fails alone (CF_ECRASHED, cf_future_signal SIGSEGV) and
 * the pool goes on.
 */
#ifndef CFUTURES_MPI_H
#define CFUTURES_MPI_H

#include <mpi.h>

#include "cfutures.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Collective over comm: every rank of comm calls it, with the same root.
 *
 * On the root it writes to *ex an executor with the whole cfutures API
 * (cf_submit, cf_submit_with, cf_map, cf_map_chunks, the submitted maps,
 * futures, waits, callbacks, queues, cf_shutdown, cf_executor_free). The
 * root runs no task itself: tasks go to the other ranks, at most 32
 * per worker of a rank in flight there at a time (a map chunk counts as
 * 16), the rest wait on the root.
 * cf_executor_workers is the sum of the other ranks' workers. A comm of one
 * rank has no one to run tasks: CF_EINVAL.
 *
 * On every other rank it serves tasks, through a local process pool made
 * with cf_process_pool_new(opts) (opts NULL or workers 0: that rank's
 * CPUs; task_timeout_ms, max_tasks_per_worker, max_worker_rss_kb and the
 * initializer apply on that rank), until the root frees its executor;
 * then it frees the local pool, returns 0 and writes NULL to *ex.
 *
 * Semantics on the root, where they differ from a process pool:
 *   - a task that crashes its worker ends CF_ECRASHED with its signal, a
 *     task past its limit (the serving rank's task_timeout_ms, or
 *     cf_submit_with's timeout_ms) CF_ETIMEDOUT; cf_future_error_text
 *     begins with "rank N: ".
 *   - cf_future_cancel cancels a task still waiting on the root at once;
 *     for a task sent to a rank it asks that rank, which cancels it in its
 *     process pool (killing the worker if the task runs), and waits for the
 *     answer: 0 if cancelled, CF_EBUSY if the task had ended first (or if
 *     called from a done-callback, which cannot wait there).
 *     cf_future_running is true once the task was sent to a rank.
 *   - cf_map and cf_map_chunks send chunks as tasks (at most 4 MiB of
 *     inputs and outputs each); a chunk whose worker died reports
 *     CF_ECRASHED for each of its elements. The root keeps a bounded
 *     number of chunks in memory whatever n. In a map element,
 *     cf_task_index is the element's index, as on a process pool.
 *     Cancelling a map ends its chunks waiting on the root at once and
 *     asks the ranks to cancel the ones sent (a running one's worker is
 *     killed); element callbacks run in the progress thread and may
 *     cancel their map.
 *   - cf_shutdown with cancel_pending cancels the tasks and map chunks
 *     waiting on the root and asks the ranks to cancel the ones sent there
 *     that no worker took yet (one a worker takes meanwhile is stopped, as
 *     cf_future_cancel stops it); cf_shutdown_now cancels those and asks
 *     the ranks to stop the running ones too. The requests travel after
 *     cf_shutdown returns: one that reaches a rank after a worker there
 *     took a task stops it (cf_shutdown_now) or lets it run
 *     (cancel_pending). With wait, cf_shutdown returns once every task has
 *     ended.
 *   - done-callbacks run in the executor's progress thread: one that waits
 *     for another future of the same executor waits for ever.
 *   - cf_executor_resize answers CF_EINVAL: the workers are the ranks'.
 *   - cf_future_info: worker is the rank's worker id, start_ns and end_ns
 *     the root's clock when the task was sent and when its result came.
 *   - a function in no object loaded at creation: cf_submit and cf_map
 *     answer CF_EINVAL. Arguments and results: up to 512 MiB each.
 *
 * Threads: on the root all MPI calls after creation come from one progress
 * thread of the executor, and none from the caller's threads; the
 * constructor and cf_executor_free make theirs from the calling thread,
 * never at the same time as the progress thread. So the root needs
 * MPI_THREAD_SERIALIZED (or MULTIPLE); two executors alive at once on a
 * rank need MULTIPLE (two progress threads), and a communicator each
 * (MPI_Comm_dup). A serving rank makes every MPI call
 * from the thread that called cf_mpi_pool_new: MPI_THREAD_FUNNELED suffices
 * there. Another thread of the program must make no MPI call on comm while
 * the executor lives. cf_executor_free on the root must be called (it is
 * what releases the other ranks) before MPI_Finalize.
 *
 * Build check: at creation all ranks compare a hash of the GNU build-ids of
 * the program, libcfutures and libcfutures-mpi; if one differs from the
 * root's, every rank returns CF_EINVAL and the root prints which rank on
 * stderr. (CFUTURES_MPI_BUILD_SALT, read with secure_getenv, is added to a
 * rank's hash: the test suite sets it on one rank to see the refusal.)
 *
 * Returns 0; CF_EINVAL for a NULL ex, a null or invalid comm, a root out of
 * range, MPI not initialised or already finalised, a thread level too low
 * (see above), fewer than 2 ranks, a build that differs, or bad opts; the
 * errors of cf_process_pool_new on a serving rank (then on every rank);
 * CF_ENOMEM; CF_EAGAIN when the progress thread could not be started. On
 * error *ex is not written. Not from a task or a worker.
 */
CF_EXPORT int cf_mpi_pool_new(cf_executor **ex, MPI_Comm comm, int root, const cf_options *opts);

#ifdef __cplusplus
}
#endif

#endif /* CFUTURES_MPI_H */
