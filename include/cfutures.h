/*
 * cfutures — concurrent.futures for C.
 *
 * A pool of forked worker processes (or of threads, behind the very same API)
 * that runs C functions submitted by the caller and hands back futures.
 *
 *   cf_executor *ex;
 *   cf_process_pool_new(&ex, NULL);            // one worker per usable CPU
 *   cf_future *f;
 *   cf_submit(ex, square, &x, sizeof x, sizeof(long), &f);
 *   long y;
 *   cf_future_result(f, &y, sizeof y, -1);     // 0, or the task's own code
 *   cf_future_free(f);
 *   cf_executor_free(ex);
 *
 * Conventions, true of every function below unless its comment says otherwise:
 *   - 0 means success; a negative CF_E* code is the library's error (see
 *     cf_strerror); a positive code is a task's or initializer's own.
 *   - Out-parameters are written only on success: a failed call changes nothing.
 *   - Timeouts are milliseconds as in poll(2): -1 waits forever, 0 only looks.
 *     Any other negative value is CF_EINVAL.
 *   - Arguments are copied at submit: the caller may free or reuse its buffer
 *     as soon as cf_submit returns, on both kinds of pool.
 *   - Every function may be called from any thread of the process that created
 *     the executor. Inside a task (or an initializer) only cf_worker_id,
 *     cf_task_index, cf_task_error, cf_task_set_result_size, cf_worker_context,
 *     cf_worker_set_context, cf_strerror and the cf_shared_* functions are
 *     meant to be called.
 *   - No function declared here is a cancellation point (pthread_cancel).
 *     Those that can wait (cf_process_pool_new, cf_thread_pool_new,
 *     cf_submit, cf_submit_with, cf_map, cf_map_chunks, cf_map_submit,
 *     cf_map_chunks_submit, cf_shutdown, cf_shutdown_now, cf_executor_free,
 *     cf_executor_resize, cf_future_wait, cf_future_wait_callbacks,
 *     cf_future_result, cf_future_cancel, cf_wait, cf_as_completed,
 *     cf_queue_next), and cf_future_add_done_callback, cf_shared_alloc and
 *     cf_shared_free, turn the calling thread's cancellation off until they
 *     return, and then put back the state it had: a cancel request made
 *     while a thread is inside one takes effect at the thread's next
 *     cancellation point after the call returns. Callbacks that such a call
 *     runs in the calling thread (a done-callback, a process pool map's
 *     on_element) run with cancellation off too. So a thread blocked for
 *     ever in one (cf_future_result with timeout -1 on a task that never
 *     ends) cannot be cancelled out of it: give the wait a timeout, or end
 *     what it waits for (cf_future_cancel, cf_shutdown_now).
 *   - An executor and its futures serve only the process that created the
 *     executor. A fork worker, or a child the caller forked, holds copies of
 *     them: there, every call that could reach the pool answers CF_EOWNER
 *     (cf_future_running answers false; cf_executor_free and cf_future_free
 *     return doing nothing), and the pool carries on untouched in its
 *     creator. cf_future_done, _cancelled, _signal, _info and
 *     cf_executor_workers read only the copy, as it was at the fork.
 *   - A future outlives its executor: other threads may go on calling the
 *     future functions on it while the executor is freed, and after.
 *
 * Limits, and what a caller gets at each:
 *   - Workers: at most 1024 per pool (cf_options.workers, cf_executor_resize):
 *     more is CF_EINVAL. The default is one per CPU this process may use.
 *     A worker that cannot be started at creation: CF_EAGAIN (process or
 *     thread limit), CF_ENOMEM.
 *   - Tasks not yet finished, on a process pool: 1024 (tasks or map chunks);
 *     cf_submit then waits for one to finish. A thread pool's queue has no
 *     limit but memory (CF_ENOMEM).
 *   - Argument and result sizes, on a process pool: 512 MiB each (CF_E2BIG
 *     beyond), in one 1 GiB region shared by every task in flight; when it
 *     is full, cf_submit waits for room. A thread pool: memory only.
 *   - cf_shared_alloc: memory only; NULL when there is none.
 *
 * Linux only (futex, pidfd, memfd, prctl); the library needs libc and pthreads.
 */
#ifndef CFUTURES_H
#define CFUTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CF_BUILDING_LIBRARY) && defined(__GNUC__)
#  define CF_EXPORT __attribute__((visibility("default")))
#else
#  define CF_EXPORT
#endif

/* Lets the compiler check a printf-style call (cf_task_error). */
#if defined(__GNUC__)
#  define CF_PRINTF_LIKE(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#  define CF_PRINTF_LIKE(fmt, first)
#endif

#define CF_VERSION_MAJOR 0
#define CF_VERSION_MINOR 1
#define CF_VERSION_PATCH 0

/*
 * Error codes. One table generates the enum and cf_strerror, so they cannot
 * drift apart. Values are negative errno numbers where Linux has a fitting
 * one, so they read naturally next to system errors.
 */
#define CF_ERRNO_MAP(X)                                                              \
    X(EINVAL,    -22,   "invalid argument")                                          \
    X(ENOMEM,    -12,   "out of memory or shared memory")                            \
    X(ETIMEDOUT, -110,  "timed out")                                                 \
    X(ECANCELED, -125,  "future was cancelled")                                      \
    X(ESHUTDOWN, -108,  "executor is shut down")                                     \
    X(ECRASHED,  -4001, "worker died while running the task")                        \
    X(E2BIG,     -7,    "argument or result larger than the pool can carry")         \
    X(EBUSY,     -16,   "task is running or already finished and cannot be cancelled") \
    X(EAGAIN,    -11,   "could not start a worker (process or thread limit reached)")  \
    X(ENOSYS,    -38,   "the kernel lacks a feature the process pool needs")         \
    X(EBROKEN,   -4002, "the pool has no live worker left")                           \
    X(EOVERRUN,  -4003, "task wrote past the end of its argument or result buffer")  \
    X(EOWNER,    -4004, "executor belongs to another process (a worker or a fork)") \
    X(EDEADLK,   -35,   "task waited for ever on a lock that nothing in its worker can release") \
    X(EEMPTY,    -4005, "queue is empty: every future added was returned")

typedef enum {
#define CF__ERR_ENUM(name, value, text) CF_##name = (value),
    CF_ERRNO_MAP(CF__ERR_ENUM)
#undef CF__ERR_ENUM
} cf_errno;

/* Bytes of an error text a future keeps, NUL included (cf_task_error). */
#define CF_ERROR_TEXT_MAX 256

typedef struct cf_executor cf_executor;   /* a process pool or a thread pool */
typedef struct cf_future   cf_future;     /* one submitted task */
typedef struct cf_queue    cf_queue;      /* futures handed back as they complete */

/*
 * A task: reads arg (arg_size bytes) and writes its result into result,
 * whose result_size bytes are a capacity: all of them, unless a task
 * submitted with cf_submit or cf_submit_with says it produced fewer
 * (cf_task_set_result_size; a cf_map element always fills its out_size).
 * Returns 0, or a positive error code of its own that the future reports. A negative return is reported as is, but is
 * then indistinguishable from the library's own codes: prefer positive codes.
 * arg may be NULL when arg_size is 0, result may be NULL when result_size is 0.
 *
 * Writing past a buffer, on a process pool: whatever a task writes up to
 * 4 KiB past the end of its argument or of its result (a string's '\0' one
 * byte too far, a loop one element too long) changes no other task's data
 * and nothing of the pool. A write that runs on from the end of a buffer is
 * caught when the task returns: the task fails with CF_EOVERRUN (its result
 * is not copied) and the pool goes on. Writing into the argument's own
 * padding or into its own result is not told apart from normal work. A task
 * that writes further, or elsewhere in the pool's shared memory, may fail any
 * task of the pool; if it destroys the pool's control data the pool breaks
 * (CF_EBROKEN, its workers killed), but the caller never crashes or hangs.
 * A thread pool gives no such protection: its tasks share the caller's heap.
 */
typedef int  cf_fn(const void *arg, size_t arg_size, void *result, size_t result_size);
/*
 * A chunk function, for cf_map_chunks: applies the work to count consecutive
 * elements, the first of them element number `first` of the map. Element k of
 * the chunk (0 <= k < count) is in + k*in_size, its result goes to
 * out + k*out_size. Returns 0, or a code of its own that stands for every
 * element of the chunk. Writing the loop itself lets the compiler inline and
 * vectorise the work, where cf_map calls cf_fn once per element.
 */
typedef int  cf_chunk_fn(const void *in, size_t in_size, void *out, size_t out_size,
                         size_t first, size_t count);
/* Runs once in each worker before its first task; non-zero stops the worker. */
typedef int  cf_init_fn(const void *arg, size_t arg_size);
/* Called once when a future is done (finished, failed or cancelled). */
typedef void cf_done_fn(cf_future *f, void *ctx);

typedef enum { CF_START_FORK = 0, CF_START_EXEC } cf_start_method;
typedef enum { CF_ALL_COMPLETED = 0, CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION } cf_wait_mode;

/* Zero-initialised = defaults. Passed by const pointer; NULL means defaults. */
typedef struct cf_options {
    unsigned        workers;               /* 0: the CPUs this process may use (its
                                              affinity mask, lowered to its cgroup's
                                              CPU quota); at most 1024 */
    cf_start_method start;                 /* process pools only (a thread pool
                                              still refuses a value outside the enum) */
    cf_init_fn     *initializer;           /* optional; runs in each worker first */
    const void     *initargs;              /* copied at creation */
    size_t          initargs_size;
    unsigned        max_tasks_per_worker;  /* 0: never recycle; process pools only */
    int             task_timeout_ms;       /* 0: none; an overrunning worker is killed */
    unsigned long   max_worker_rss_kb;     /* 0: no limit; a process worker whose resident
                                              size passed it after a task or map chunk
                                              is replaced; process pools only */
} cf_options;

/*
 * Tracing: CFUTURES_TRACE=/path/run.json in the environment (read with
 * secure_getenv each time a pool is created; unset or empty: off) makes each
 * pool write what it did as a Chrome Trace Event Format file, which Perfetto
 * (ui.perfetto.dev) and chrome://tracing open, and the installed tool
 * cfutures-trace draws as an SVG timeline. The program is not changed. It
 * is an environment variable, not a cf_options field, so that adding it
 * left cf_options, which callers allocate, the size it was.
 *
 * Files: a process's first traced pool writes to the path as given, its
 * n-th (n >= 2) to the path with ".n" before the extension (run.2.json);
 * "%p" in the path is replaced by the pid (a forked child that creates
 * pools goes on counting from its parent's count, so it may otherwise write
 * over the parent's files). A pool created inside a task is not traced. The file is written as the
 * pool goes and completed by cf_executor_free; a program that ends without
 * freeing the pool leaves it incomplete.
 *
 * Content: {"traceEvents":[...]}, times in microseconds of CLOCK_MONOTONIC
 * (as cf_future_info, three decimals), pid the caller's, one track (tid) per
 * worker id named "worker N" and a track "caller" (tid 1000); the pool's
 * name ("cfutures process pool 1 (fork, 2 workers)") as process_name. Per
 * submitted task: its wait in the queue from submit to start (async events
 * "b"/"e", category "queue", id the task's number in its pool, 1, 2, ...);
 * if it started, a complete event "X" on its worker's track, named after
 * the function (its symbol, when dladdr knows one, else its address in
 * hex), args future (that number), code and signal; an instant "i" named
 * "crashed", "timed out", "cancelled", "overrun" or "broken" when the
 * library ended it. Per cf_map or cf_map_chunks chunk, an "X" with args
 * first, count, code (on a thread pool: 0, or its worker's first failure
 * in that map when it lies in the chunk) and signal. A counter "C", "tasks
 * in flight": tasks submitted and not yet done, at each submit and end.
 *
 * Cost: off, one predictable branch in the caller's paths and none in the
 * workers. On, events are kept in two fixed buffers of 8192 records (1 MiB
 * in all) per pool: the thread that fills one (a caller's, the pool's
 * manager, or a thread pool's worker) writes it out while recording goes on
 * in the other, and cf_executor_free writes the rest: the memory used never
 * grows. Times that a process worker wrote are
 * checked first: a task whose times make no sense gets no bar, only an
 * instant "times unreadable". A file that cannot be opened leaves the pool
 * untraced, with one line on stderr; a write that fails stops the trace
 * likewise. Either way the pool works as usual.
 */

/*
 * A map's element callback (cf_map_options.on_element): element `index` ran
 * and ended with `status` (its cf_fn's code; for cf_map_chunks its chunk's
 * code; CF_ECRASHED, CF_EOVERRUN as in `status`). Python's imap_unordered
 * for C: a progress line or a streaming consumer needs no polling.
 */
typedef void cf_element_fn(size_t index, int status, void *ctx);

/* NULL or zero-initialised = defaults. */
typedef struct cf_map_options {
    size_t chunksize;                      /* 0: automatic */
    int   *status;                         /* optional: n per-element result codes */
    cf_element_fn *on_element;             /* optional: called once per element that ran */
    void  *ctx;                            /* passed to on_element */
} cf_map_options;

/*
 * When and where a task ran; see cf_future_info. The times are
 * CLOCK_MONOTONIC nanoseconds. Where the kernel's clock source is the
 * processor's time-stamp counter, they are read from that counter along a
 * line that follows the clock within a microsecond: a worker's time can
 * then precede, by up to about 0.1 us, the caller's clock_gettime of an
 * event that came before it (a cache line's transfer between cores).
 */
typedef struct cf_task_info {              /* filled once the future is done */
    int      worker;                       /* cf_worker_id of the worker that ran it, or -1 */
    uint64_t start_ns;                     /* CLOCK_MONOTONIC when it started, 0 if it never did */
    uint64_t end_ns;                       /* CLOCK_MONOTONIC when it ended, 0 if unknown */
} cf_task_info;

/* ---- Executors --------------------------------------------------------- */

/*
 * Creates a pool of worker processes and writes it to *out.
 *
 * Every worker is started by a small helper process of the pool (its zygote),
 * forked once, at creation, next to a standby copy of it; the workers are
 * the zygote's children, and all die with the caller (within a second of a
 * SIGKILL, even a worker whose task dropped its parent-death signal). If the
 * zygote dies (an operator's kill, the OOM killer), so do its workers: the
 * tasks they ran fail with CF_ECRASHED, the standby becomes the zygote (and
 * makes a standby of its own), and pending tasks run on its new workers;
 * likewise a dead standby is replaced. Only the loss of both at once breaks
 * the pool (CF_EBROKEN), as does the zygote's death while it makes a new
 * standby (that one is then killed and reaped). Workers get the highest oom_score_adj, so that an
 * out-of-memory kill fails one task (CF_ECRASHED, SIGKILL) instead of
 * killing the zygote or the caller.
 *
 * CF_START_FORK (the default): each worker is a fork of the caller as it was
 * when the pool was created, replacements included (those of a replacement
 * zygote too: it is a copy made at creation, never a new fork of the caller). It inherits the caller's
 * memory at that moment: globals changed later by the caller are not seen by
 * the workers, and globals changed by a task are never seen by the caller.
 * It also inherits any lock another thread of the caller held at that moment
 * (a logger's mutex, a FILE's lock mid-fprintf), held for ever: nothing in
 * the worker can release it. A task that then waits for it does not hang
 * the pool: a worker whose one thread sleeps on a process-private lock or
 * condition variable with no timeout (which nothing can ever wake; a task
 * that locks a mutex it already holds, on any start method, is the same) is
 * seen by the pool (it looks at a worker whose task has run 100 ms, through
 * /proc/<pid>/stat and /proc/<pid>/syscall) and killed: the task fails with
 * CF_EDEADLK, the pool goes on, and the first time in a process one line on
 * stderr says why. Waits with a timeout, on process-shared objects, or in a
 * task that started threads of its own are never judged. In a multi-threaded
 * program whose tasks take such locks, create the pool before the other
 * threads start, or use CF_START_EXEC (README: "Choosing a start method").
 *
 * CF_START_EXEC: each worker is a fresh execution of the program image
 * (/proc/self/exe) that becomes a worker in a library constructor, before
 * the program's own constructors and main run: globals that those fill (a
 * C++ static std::vector, a C constructor) read as zero in tasks. A program
 * that calls cf_main_guard first thing in main has its workers start at
 * that call instead, after its constructors (see cf_main_guard). Either
 * way a worker gets argv {"cfutures-worker", NULL}, the caller's
 * environment at pool creation, and its stdout and stderr; its stdin is the
 * caller's too, except in a worker that starts at cf_main_guard, where it
 * is an empty pipe (reads return end of file). It inherits no memory, no lock
 * and no descriptor of the caller, only the pool's shared memory and the
 * cf_shared_alloc regions mapped before the pool, at the same addresses.
 * Function pointers still work: they are translated by their offset in the
 * executable or shared library that holds them, which must be one loaded when
 * the pool was created and loaded again at the program's start (a library
 * opened with dlopen is not: cf_submit and cf_map then answer CF_EINVAL).
 * An exec worker knows itself by the environment variable CFUTURES_WORKER,
 * which the library reads in a constructor of every program linked with it:
 * a program that finds the variable set without having been started by a
 * pool (its value malformed, or its parent or descriptors not a pool's)
 * prints one line naming cfutures and the variable on stderr and exits with
 * status 114 before main, without using anything the variable points at.
 * A worker whose copy of the library lays the pool's shared memory out
 * differently from the caller's (the library on disk was replaced since the
 * program started) says so in one line on stderr and exits with status 115
 * before main; creation then fails with CF_ECRASHED. A worker that should
 * start at cf_main_guard but whose program did something else first exits
 * with status 116 (see cf_main_guard); creation then fails likewise. A
 * secure-execution program (set-user-ID, set-group-ID, or one that gains
 * capabilities) never reads the variable, and refuses CF_START_EXEC with
 * CF_EINVAL: its workers could not tell a pool's variable from a forged one.
 *
 * A task may close any descriptor of its worker, even all of them
 * (close_range), and open files that then get the same numbers: the worker
 * checks its own descriptors (moved to high numbers at start) before each
 * use and never writes to one that is no longer its own. It then exits,
 * once the task has ended: the task keeps its result (it ran to its end),
 * callbacks and waits see it, and the pool starts a replacement.
 *
 * A replacement, or a worker added by cf_executor_resize, runs the
 * initializer again. One whose initializer fails is not started again; nor
 * is a worker whose process died before its initializer returned (exited
 * or crashed) three times in a row: it is started again 0.1 s after the
 * first such death and 0.2 s after the second. One killed by SIGKILL while
 * it starts (the OOM killer, an operator) is started again 0.1 s later,
 * however often. A pool left with
 * no worker is broken: pending tasks and map elements end with CF_EBROKEN,
 * and cf_submit and cf_map answer it.
 *
 * Recycling: a worker leaves after a task once it has run
 * max_tasks_per_worker tasks (0: no count), or once its resident set size
 * is above max_worker_rss_kb KiB (0: no limit), which it reads from
 * /proc/self/statm after each task and each map chunk. The pool starts a
 * replacement with the same worker id, which runs the initializer again;
 * the task or chunk that just finished keeps its result, and no task fails
 * or waits for ever. The resident size is the one top(1) shows: every page
 * the worker has in memory, including what a fork worker shares with the
 * caller as it was at creation, the program's code, and the pages of shared
 * memory it touched (arguments, results, cf_shared_alloc arrays): leave
 * room for them. A limit below what a worker holds right after its start is
 * allowed: each worker then runs one task or chunk and leaves, as with
 * max_tasks_per_worker = 1, and the pool goes on at the cost of a process
 * start per task (never more than one start per finished task or chunk).
 * With the limit set, each task costs a read of /proc/self/statm more (a
 * microsecond or two); a task after which the file cannot be read (say, it
 * closed the worker's copy and used up the descriptors) is not counted
 * against the limit.
 *
 * A worker that runs out of work spins for up to 60 microseconds before it
 * sleeps (as a thread waiting on a future does for 40), so that work which
 * arrives meanwhile costs no wake-up: an idle pool uses no CPU, a pool fed a
 * task at a time keeps a core busy for that long after each.
 *
 * Returns once every worker has run the initializer. Returns CF_EINVAL for a
 * NULL out or bad options (or an initializer an exec worker cannot find, or
 * CF_START_EXEC in a secure-execution program),
 * CF_EAGAIN when a process cannot be started, CF_ENOMEM (also when an exec
 * worker cannot map the shared memory at the caller's address), CF_ENOSYS on
 * a kernel without memfd, CF_ECRASHED if a worker died while starting, or
 * the initializer's own positive code if it failed in a worker.
 * Free the pool with cf_executor_free.
 */
CF_EXPORT int cf_process_pool_new(cf_executor **out, const cf_options *opts);

/*
 * Creates a pool of threads with the same API. A thread cannot be killed, so
 * task_timeout_ms must be 0 (else CF_EINVAL), max_tasks_per_worker is
 * accepted and ignored, and `start` must be a valid cf_start_method
 * (CF_START_FORK or CF_START_EXEC, else CF_EINVAL, as on a process pool)
 * and is otherwise ignored. max_worker_rss_kb must be 0
 * (else CF_EINVAL): a thread's memory is the whole process's, which no
 * thread gives back by leaving. Idle threads spin briefly
 * before they sleep, as process workers do. Returns once every thread has
 * run the initializer; errors as for cf_process_pool_new.
 *
 * A task that ends its thread (pthread_exit, or a cancellation it enabled:
 * pool threads otherwise run with cancellation disabled) fails alone, as a
 * task whose worker process died: its future ends with CF_ECRASHED and
 * cf_future_signal 0 (a cf_map element: CF_ECRASHED for it and for the rest
 * of its chunk, which never ran). The pool starts a new thread in its place,
 * which runs the initializer again, so the number of workers holds. An
 * initializer that ends its thread makes creation fail with CF_ECRASHED. If
 * no thread is left and none can be started (pthread_create fails, or every
 * replacement's initializer failed), the pool is broken: pending tasks and
 * map elements end with CF_EBROKEN, and cf_submit, cf_map and their
 * variants answer it.
 */
CF_EXPORT int cf_thread_pool_new(cf_executor **out, const cf_options *opts);

/*
 * Submits fn(arg, arg_size, result, result_size) and writes its future to
 * *out. result_size is the result's capacity: the task may produce fewer
 * bytes (cf_task_set_result_size). The argument is copied before cf_submit
 * returns. The future belongs
 * to the caller, who frees it with cf_future_free (before or after it is
 * done). Blocks while the pool's task queue is full.
 *
 * CF_EINVAL: NULL ex, fn or out, or arg NULL with arg_size > 0.
 * CF_EOWNER: called from a process other than the pool's creator (a fork
 * worker, even one of this pool, or a forked child).
 * CF_ESHUTDOWN: after cf_shutdown. CF_EBROKEN: the pool can start no worker
 * any more. CF_E2BIG: arg_size or result_size larger than the pool can
 * carry. CF_ENOMEM.
 */
CF_EXPORT int cf_submit(cf_executor *ex, cf_fn *fn, const void *arg, size_t arg_size,
                        size_t result_size, cf_future **out);

/* Per-task options for cf_submit_with. NULL or zero-initialised = cf_submit. */
typedef struct cf_submit_options {
    int timeout_ms;    /* 0: the pool's task_timeout_ms; > 0: this task's own
                          limit instead; -1: none for this task (process pools) */
} cf_submit_options;

/*
 * cf_submit with per-task options. A task with a time limit of its own
 * (timeout_ms > 0) is killed once it has run that long, whatever the pool's
 * task_timeout_ms: its future ends with CF_ETIMEDOUT, and the pool starts a
 * replacement worker. The limit counts from the task's start, not from
 * submit; the kill comes within a few milliseconds of it. A thread cannot be
 * killed: on a thread pool any timeout_ms other than 0 is CF_EINVAL.
 *
 * Errors as for cf_submit; also CF_EINVAL for timeout_ms below -1.
 */
CF_EXPORT int cf_submit_with(cf_executor *ex, cf_fn *fn, const void *arg, size_t arg_size,
                             size_t result_size, const cf_submit_options *opts, cf_future **out);

/*
 * Applies fn to n elements: element i is in + i*in_size (in_size bytes), its
 * result goes to out + i*out_size (out_size bytes). Blocks until every element
 * is done. Elements are handed to workers in chunks (opts->chunksize, or an
 * automatic size that keeps per-element overhead small and all workers busy:
 * guided, starting at n / (4 workers) and shrinking with what is left to
 * about n / (32 workers), so that heavy elements at the end still spread).
 * On a thread pool the automatic chunks come from one range of the elements
 * per worker (up to 16): each worker takes its own range's first, then helps
 * with the others', so that maps repeated over the same arrays give each
 * worker the same elements (and their cache lines).
 * On a process pool, where each chunk is a hand-off through shared memory,
 * automatic chunks shrink once one has run 0.2 ms; those of a small map
 * (up to 256 KiB copied) from the first, unless the same function's last
 * map of automatic chunks on this pool failed nothing and ran every chunk
 * in less than 0.2 ms.
 * On a process pool the input streams through shared memory chunk by chunk,
 * so n is not limited by the pool's shared memory.
 *
 * Returns 0 when every element returned 0, else the code of the first (lowest
 * index) failing element; opts->status, if given, receives every element's
 * code (a chunk whose worker died reports CF_ECRASHED for its elements that
 * did not finish; elements not yet started when the pool broke report
 * CF_EBROKEN, and the call returns). On a pool broken before the call,
 * none runs: it returns CF_EBROKEN, and every element's status is
 * CF_EBROKEN, on both kinds of pool. n == 0 returns 0 at once.
 * On a process pool an element that writes past its output writes into the
 * next element's, as it would in a serial loop; one that writes (up to
 * 4 KiB) past the end of its chunk's copy of the input or output harms no
 * other chunk, and every element of its chunk reports CF_EOVERRUN, outputs
 * not copied back. Arrays from cf_shared_alloc are used in place: writes
 * past them land in the caller's own memory, as in a serial loop.
 * CF_EINVAL: NULL ex or fn, NULL in with in_size > 0, NULL out with
 * out_size > 0 (when n > 0). CF_EOWNER (as cf_submit), CF_ESHUTDOWN,
 * CF_EBROKEN (see status above), CF_E2BIG, CF_ENOMEM.
 */
CF_EXPORT int cf_map(cf_executor *ex, cf_fn *fn, const void *in, size_t in_size,
                     void *out, size_t out_size, size_t n, const cf_map_options *opts);

/*
 * cf_map for work too small to pay a call per element: fn runs once per
 * chunk (see cf_chunk_fn), with the chunks, streaming and arguments of
 * cf_map. A chunk's code stands for each of its elements: opts->status, if
 * given, receives it for every element, and the return value is the code of
 * the first failing chunk. A chunk whose worker died reports CF_ECRASHED for
 * all its elements, and with heap arrays on a process pool none of its
 * outputs is copied back (cf_shared_alloc arrays may hold part of them).
 * A chunk that writes past its input or output (up to 4 KiB) reports
 * CF_EOVERRUN for all its elements, as in cf_map. The same errors as cf_map.
 */
CF_EXPORT int cf_map_chunks(cf_executor *ex, cf_chunk_fn *fn, const void *in, size_t in_size,
                            void *out, size_t out_size, size_t n, const cf_map_options *opts);

/*
 * Element callbacks (opts->on_element), in cf_map, cf_map_chunks and their
 * _submit forms: called exactly once for every element, with the code
 * `status` receives, once its result is in `out` (the elements of a chunk
 * whose worker died: CF_ECRASHED), except for the elements the map never
 * ran because it was cancelled or the pool broke first (`status` says
 * CF_ECANCELED or CF_EBROKEN). Elements are reported in no set order,
 * and a call may come while other elements still run. Where it runs: on a
 * thread pool, in the pool thread that ran the element, right after it
 * (several at once, so it must be thread-safe); on a process pool, in the
 * thread that drives the map (cf_map's caller, or a library thread for a
 * submitted map), chunk by chunk as each chunk's outputs are copied back.
 * Keep it short: while it runs, no more of the map is handed out from that
 * thread. It may call cf_future_progress, cf_future_cancel on its own map
 * (which then returns at once; the map stops after the callback) and any
 * function of another executor; it must not wait for its own map or free
 * its executor.
 */

/*
 * cf_map and cf_map_chunks as futures: they start the map and return at
 * once, writing to *out a future for the whole map (result_size 0). The
 * future works as any other: cf_future_wait (with a timeout),
 * cf_future_result (returns what cf_map would: 0 or the code of the first
 * failing element), cf_wait, cf_as_completed, a cf_queue,
 * cf_future_add_done_callback, cf_future_progress, cf_future_free.
 *
 * in, out and opts->status must stay valid, and must not be touched by the
 * caller, until the future is done; opts itself is copied. The map runs on
 * a thread of the library (signals blocked): one that an earlier submitted
 * map of the same executor left waiting (a thread waits up to a second for
 * the next map; cf_executor_free ends those that wait), or else one started
 * here, which costs a thread start (tens of microseconds) more than cf_map.
 * A submitted map is accepted work: a later cf_shutdown lets it run to its
 * end (with cancel_pending, the chunks no worker took are cancelled;
 * cf_shutdown_now stops it), and cf_executor_free waits for it.
 *
 * Cancelling (cf_future_cancel) stops the map: chunks that no worker took
 * never run; on a process pool chunks that run are stopped (their workers
 * are killed and replaced), their elements that had not finished end
 * CF_ECANCELED; on a thread pool each thread stops at its next element.
 * Elements that ran keep their outputs and codes. The future then ends
 * cancelled (cf_future_result: CF_ECANCELED), and cf_future_cancel
 * returns 0 once it is done; CF_EBUSY if every element had run already.
 * Called from the map's own on_element, it asks and returns 0 at once.
 *
 * Returns 0, or the errors of cf_map (CF_EINVAL, CF_EOWNER, CF_ESHUTDOWN,
 * CF_E2BIG, CF_ENOMEM), CF_EBROKEN when the pool is broken already, as
 * cf_submit answers it (a pool that breaks while the map runs ends the
 * elements not yet run with CF_EBROKEN, as in cf_map), CF_EINVAL for a
 * NULL out, CF_EAGAIN when no thread can be started; nothing was started
 * then, and opts->status is not written. n == 0 gives a future done at
 * once with code 0.
 */
CF_EXPORT int cf_map_submit(cf_executor *ex, cf_fn *fn, const void *in, size_t in_size,
                            void *out, size_t out_size, size_t n, const cf_map_options *opts,
                            cf_future **future);
CF_EXPORT int cf_map_chunks_submit(cf_executor *ex, cf_chunk_fn *fn, const void *in,
                                   size_t in_size, void *out, size_t out_size, size_t n,
                                   const cf_map_options *opts, cf_future **future);

/*
 * Stops the executor from accepting work (later submits get CF_ESHUTDOWN).
 * cancel_pending cancels the tasks that have not started, and, as Python's
 * cancel_futures does for a map's items, the chunks of running maps that no
 * worker took: their elements end CF_ECANCELED (in `status`), chunks that
 * run finish, and the map returns (its future ends cancelled). wait blocks until
 * every remaining task has finished and the workers have exited; without
 * wait, they finish in the background. Once no task is left, the workers of
 * a process pool leave at once; one still there 5 s later (a replacement
 * whose initializer has not returned, or a process whose task wrote over
 * its slot to end it and ran on) is killed. Calling it again is harmless.
 * Returns 0, CF_EINVAL for a NULL ex, or CF_EOWNER from a process other than
 * the pool's creator.
 */
CF_EXPORT int cf_shutdown(cf_executor *ex, bool wait, bool cancel_pending);

/*
 * Stops the executor now (Python's terminate_workers, Java's shutdownNow):
 * it accepts no more work (CF_ESHUTDOWN), and then, on a process pool:
 *   - tasks not started end CF_ECANCELED (as with cf_shutdown's cancel_pending);
 *   - tasks running are cancelled at once: their futures end CF_ECANCELED
 *     (cf_future_signal 0), their workers are killed, and nothing they still
 *     write reaches the caller;
 *   - a cf_map or cf_map_chunks running in another thread stops: its chunks
 *     waiting or running end CF_ECANCELED, the elements not yet sent too (in
 *     `status`), and the call returns CF_ECANCELED (or an earlier element's
 *     own failure);
 *   - finished futures keep their results.
 * Returns once every worker has ended. On a thread pool, a running task
 * cannot be stopped: pending tasks end CF_ECANCELED and it waits for the
 * running ones, which keep their results (cf_shutdown(ex, true, true)).
 * Calling it again, or after cf_shutdown, is harmless. Returns 0, CF_EINVAL
 * for a NULL ex, CF_EOWNER from a process other than the pool's creator. Not
 * from a task of the pool itself (it would wait for its own end).
 */
CF_EXPORT int cf_shutdown_now(cf_executor *ex);

/*
 * Shuts the executor down (waiting, without cancelling) if still running,
 * and releases everything it owns: after it returns no worker process or
 * thread, no descriptor and no shared memory of the executor remains.
 * Futures still held by the caller stay valid (they are all done) and are
 * still freed with cf_future_free; other threads may be calling the future
 * functions on them meanwhile. Must not be called from a task or a
 * done-callback of this executor. NULL is a no-op, and so is a call from a
 * process other than the pool's creator (a fork worker, a forked child):
 * the pool there is a copy, left as it is; only its creator frees the pool.
 */
CF_EXPORT void cf_executor_free(cf_executor *ex);

/*
 * The number of workers the pool runs (0 for NULL): the count asked of the
 * last cf_executor_resize as soon as it returns, even while surplus workers
 * finish their task; in another process, the copy's.
 */
CF_EXPORT unsigned cf_executor_workers(const cf_executor *ex);

/*
 * Changes the number of workers, on both kinds of pool, at any time between
 * creation and shutdown, from any thread (not from a task or a callback of
 * this pool). Growing starts the new workers at once; each runs the
 * initializer, and one whose initializer fails is not started again (as for
 * a replacement). Shrinking kills nothing: a worker past the new count
 * finishes the task or map chunk it runs, then leaves; pending tasks and
 * the rest of a map run on the workers that stay, so no task is lost.
 * Returns 0; CF_EINVAL for NULL, 0 or more than 1024 workers; CF_ESHUTDOWN
 * after cf_shutdown; CF_EBROKEN for a broken pool; CF_EOWNER from another
 * process. On a thread pool, CF_EAGAIN or CF_ENOMEM when a thread could not
 * be started: the pool keeps the ones it started, and cf_executor_workers
 * says how many it runs. On a process pool, new workers are started by the
 * pool's manager thread, and one whose process cannot be made is retried
 * as a replacement is.
 */
CF_EXPORT int cf_executor_resize(cf_executor *ex, unsigned workers);

/* ---- Futures ----------------------------------------------------------- */

/*
 * 0 when f is done, CF_ETIMEDOUT if the timeout passed first, CF_EINVAL, or
 * CF_EOWNER from a process other than the creator of f's executor.
 */
CF_EXPORT int cf_future_wait(cf_future *f, int timeout_ms);

/* True when the future finished, failed or was cancelled. False for NULL. */
CF_EXPORT bool cf_future_done(const cf_future *f);

/*
 * True once a worker has taken the task, until the future is done: as in
 * Python, a future goes from pending to running to done and never back, so
 * once this answered true it answers true until cf_future_done does. False
 * for NULL, once done, and in a process other than the creator of f's
 * executor.
 */
CF_EXPORT bool cf_future_running(const cf_future *f);

/* True when the future was cancelled. False for NULL. */
CF_EXPORT bool cf_future_cancelled(const cf_future *f);

/*
 * Cancels the task. A pending task never runs. On a process pool a running
 * task is stopped by killing its worker, which the pool replaces. Returns 0
 * when the future is (now or already) cancelled; CF_EBUSY when it has already
 * finished, or is running on a thread pool; CF_EINVAL for NULL; CF_EOWNER
 * from a process other than the creator of f's executor.
 */
CF_EXPORT int cf_future_cancel(cf_future *f);

/*
 * Waits for the future and copies its result into result, whose size
 * result_size must equal the capacity given at submit. Only the bytes the
 * task produced are copied (cf_future_result_size: the capacity, unless the
 * task called cf_task_set_result_size); the rest of the caller's buffer is
 * left as it was. Returns 0, the task's own
 * positive code (the result is copied all the same), CF_ECANCELED,
 * CF_ECRASHED (see cf_future_signal), CF_ETIMEDOUT (the wait timed out, or
 * the task was killed by task_timeout_ms), CF_EOVERRUN (the task wrote past
 * its argument or result: see cf_fn; or its worker claimed a result larger
 * than the capacity: see cf_future_result_size; no result is copied), CF_EBROKEN (the
 * pool broke before the task could run or end), CF_EINVAL (NULL f, a size
 * that does not match, NULL result with result_size > 0), CF_EOWNER (from a
 * process other than the creator of f's executor: result is not written).
 * May be called again.
 */
CF_EXPORT int cf_future_result(cf_future *f, void *result, size_t result_size, int timeout_ms);

/*
 * Writes to *n how many bytes of its result f's task produced: what its
 * last cf_task_set_result_size said, or the whole capacity given at submit
 * if it never called it. Looks only, never waits. Returns 0 once f is done
 * and its task ran to its end, whatever code it returned (a task that
 * fails keeps the size it set, and cf_future_result copies that many
 * bytes, as it copies the result of any task that ran to its end). Else,
 * *n unwritten:
 *   CF_EBUSY      f is not done yet (pending or running): wait first
 *                 (cf_future_wait, cf_future_result);
 *   CF_ECANCELED, CF_ECRASHED, CF_ETIMEDOUT (killed by a time limit),
 *   CF_EOVERRUN, CF_EDEADLK, CF_EBROKEN
 *                 f has no result: the pool ended the task (or it never
 *                 ran); the same code cf_future_result returns for it;
 *   CF_EINVAL     NULL f or n.
 * On a process pool only the bytes produced travel from the worker's
 * shared memory to the future; a size that the worker's memory claims is
 * larger than the capacity (the task wrote over the pool's bookkeeping)
 * sizes nothing: the task fails with CF_EOVERRUN, and
 * cf_future_error_text says so. May be called from any thread; in a
 * process other than the creator of f's executor it reads the copy.
 */
CF_EXPORT int cf_future_result_size(const cf_future *f, size_t *n);

/*
 * Calls cb(f, ctx) once, when f is done. If f is already done, cb runs at
 * once in the calling thread. Otherwise it runs in the thread that completes
 * the future: a worker thread on a thread pool; on a process pool the pool's
 * manager thread, or a caller thread that is waiting on f (always a thread of
 * the process that created the pool). Callbacks added before completion run
 * in the order they were added, with no library lock held. A callback may
 * call any function on f except cf_future_free. Keep callbacks short and never
 * wait in one on another future: on a process pool a callback holds up the
 * thread that supervises the workers.
 * A future is done before its callbacks run: cf_future_wait,
 * cf_future_result, cf_wait and cf_as_completed may return while a callback
 * of it still runs in another thread (as in Python). Do not free what ctx
 * points at because a wait returned: wait with cf_future_wait_callbacks
 * (below), or let the callback say when it is finished with it (a counter
 * it updates last, say).
 * Returns 0, CF_EINVAL (NULL f or cb), CF_ENOMEM, CF_EOWNER (from a process
 * other than the creator of f's executor: cb is not recorded).
 */
CF_EXPORT int cf_future_add_done_callback(cf_future *f, cf_done_fn *cb, void *ctx);

/*
 * Waits until f is done and every callback added to it before it was done
 * has returned, or timeout_ms passed. Callbacks added once f was done run
 * in the adding thread, so they are over when cf_future_add_done_callback
 * returns; for a future that had none when it was done, done is enough.
 * This is what to wait on before freeing what a callback's ctx points at:
 *
 *   cf_future_add_done_callback(f, on_done, &state);
 *   ...
 *   cf_future_wait_callbacks(f, -1);    // on_done has returned
 *
 * Returns 0; CF_ETIMEDOUT (f not done yet, or a callback still running,
 * when the time passed); CF_EINVAL (NULL f, a bad timeout, or a call from
 * one of f's own callbacks, or from a callback that runs nested within one
 * of them in the same thread: it would wait for itself); CF_EOWNER (from a
 * process other than the creator of f's executor). Only that one cycle is
 * seen: callbacks in two threads that wait for each other's futures this
 * way wait for ever (with timeout_ms -1). Costs nothing when nobody waits:
 * the thread that runs the callbacks makes a system call only to wake a
 * sleeping waiter. May be called from any thread of the creator.
 */
CF_EXPORT int cf_future_wait_callbacks(cf_future *f, int timeout_ms);

/* The signal that killed the task's worker (CF_ECRASHED), or 0. */
CF_EXPORT int cf_future_signal(const cf_future *f);

/*
 * The error text of a done future, or NULL: none, f NULL, or f not done yet.
 * It is either what the task left with cf_task_error, if it returned a
 * non-zero code of its own, or, where the pool ended the task itself and
 * knows more than the code says, the pool's account of it:
 *   CF_ECRASHED   "worker killed by signal 11 (Segmentation fault)", or that
 *                 the worker process exited; on a thread pool, that the
 *                 task ended its thread
 *   CF_ETIMEDOUT  "task ran longer than its 200 ms limit; its worker was
 *                 killed" (task_timeout_ms, cf_submit_with); not for a
 *                 wait that timed out, which leaves the future pending
 *   CF_EDEADLK    the lock the task waited on for ever
 *   CF_EOVERRUN   which buffer the task wrote past (argument or result),
 *                 or that its worker claimed a result larger than the
 *                 buffer (cf_future_result_size)
 *   CF_EBROKEN    that the pool broke before the task could end
 * A cancelled future has none; the pool's text replaces the task's when both
 * exist. At most CF_ERROR_TEXT_MAX bytes, NUL included. The string belongs
 * to f and stays valid, unchanged, until cf_future_free(f). A text from a
 * process worker is only bytes to print: the pool copies at most
 * CF_ERROR_TEXT_MAX bytes and ends them with a NUL whatever the worker
 * wrote, but it may hold anything else, invalid UTF-8 included. May be
 * called from any thread; in a process other than the creator of f's
 * executor it reads the copy.
 */
CF_EXPORT const char *cf_future_error_text(const cf_future *f);

/*
 * Writes when and where the task ran into *info, once f is done: the worker
 * id, and the CLOCK_MONOTONIC start and end times in nanoseconds (start_ns
 * 0 for a task that never started). Until f is done it writes worker -1
 * and both times 0, also while the task runs (cf_future_running is true):
 * a process worker's times are read back only once its task has ended,
 * and a thread pool answers the same. A task cancelled while running on a
 * process pool ends when it was cancelled. For a submitted map
 * (cf_map_submit) worker is -1, the times the map's start and end.
 * Returns 0 or CF_EINVAL.
 */
CF_EXPORT int cf_future_info(const cf_future *f, cf_task_info *info);

/*
 * How far f has come: for a submitted map (cf_map_submit,
 * cf_map_chunks_submit), *total is its n and *done the elements that ran so
 * far (those on_element was called for), read at any time, from any
 * thread; once the future is done it stays put (done < total for a map
 * that was cancelled or broken). For a task, *total is 1 and *done 1 once
 * the future is done (cancelled too), else 0. Returns 0, CF_EINVAL for a
 * NULL argument.
 */
CF_EXPORT int cf_future_progress(const cf_future *f, size_t *done, size_t *total);

/*
 * Releases the caller's reference. A future freed before it is done is
 * detached: its task still runs (or is cancelled at shutdown) and its memory
 * is released when it ends. Its executor keeps that memory for its next
 * futures (it keeps at most as many as it had at once) and gives it back to
 * the system in cf_executor_free, or, where futures still alive share its
 * pages, when the last of them is freed. NULL is a no-op, and so is a call
 * from a process other than the creator of f's executor (f there is a copy,
 * left as it is). Not from its own done-callback.
 */
CF_EXPORT void cf_future_free(cf_future *f);

/*
 * Waits on several futures (of any executors). CF_ALL_COMPLETED returns when
 * all are done; CF_FIRST_COMPLETED when at least one is; CF_FIRST_EXCEPTION
 * when one ends with a non-zero code other than CF_ECANCELED, or all are done.
 * Returns 0 when the condition holds, CF_ETIMEDOUT, CF_EINVAL (NULL fs
 * with n > 0, a NULL entry, an unknown mode), or CF_EOWNER (a future of an
 * executor another process created). A future may appear more than once.
 * Use cf_future_done to see which.
 */
CF_EXPORT int cf_wait(cf_future *const *fs, size_t n, cf_wait_mode mode, int timeout_ms);

/*
 * as_completed: waits until one of fs is done that has not been returned
 * before, marks it in seen (n entries, all false at first) and returns its
 * index. As in Python, a future that appears at several indices is returned
 * once: at its first index not yet seen, and every index holding it is then
 * marked. Returns CF_ETIMEDOUT if none completes in time, CF_EINVAL once
 * every future has been returned (or for NULL fs/seen, a NULL entry), and
 * CF_EOWNER as cf_wait.
 *
 * Cost: each call reads all n entries, since seen[] is its only memory, so
 * draining n futures this way takes time in n squared (100,000 futures:
 * seconds). That cannot change without changing the signature: to drain
 * many futures, use a cf_queue below, which returns each in O(1).
 */
CF_EXPORT int cf_as_completed(cf_future *const *fs, size_t n, bool *seen, int timeout_ms);

/*
 * The completion queue (Java's ExecutorCompletionService, Python's
 * as_completed as a generator): add futures, of any executors and pool
 * kinds, done or not, and take them back one at a time in the order they
 * complete, each in O(1) however many were added.
 *
 * cf_queue_new: a new, empty queue in *out. Returns 0, CF_EINVAL (NULL out)
 * or CF_ENOMEM. Only the creating process may use it (others: CF_EOWNER).
 *
 * cf_queue_add: puts f in q. A future already done is ready at once; the
 * others become ready when they finish (through a done-callback: see
 * cf_future_add_done_callback for the threads it runs in). The queue takes
 * a reference of its own on f: the caller may cf_future_free its own
 * reference at any time, even at once. A future waits in one queue at a
 * time, from its add until cf_queue_next returns it; it may be added again
 * after that. Returns 0, CF_EINVAL (NULL q or f, or f waits in a queue
 * already, q or another: a future is returned once for each wait; a future
 * left in a freed queue waits there until it is done), CF_ENOMEM, CF_EOWNER
 * (q or f's executor created by another process). On an error nothing
 * changed.
 *
 * cf_queue_next: waits up to timeout_ms (0: only looks, -1: for ever) for a
 * future of q to be done, and writes the one that completed first into
 * *out. Returns 0; CF_EEMPTY once every future added has been returned
 * (nothing can come out of the queue until more are added; a taker waiting
 * on q is woken to answer it); CF_ETIMEDOUT; CF_EINVAL (NULL q or out, a
 * timeout below -1); CF_EOWNER. The returned future carries the queue's
 * reference, which passes to the caller: release it with cf_future_free
 * (besides the caller's own from cf_submit, if it still holds that).
 *
 * cf_queue_free: releases the queue and its references on the futures it
 * holds. Futures still pending are let go as they finish (their callback
 * sees the queue closed); the queue's memory goes with the last of them.
 * NULL is a no-op, and so is a call from another process (a copy).
 *
 * Any thread may call cf_queue_add and cf_queue_next, concurrently: several
 * adders and several takers are fine. cf_queue_free must be the last call
 * on q, made by one thread. A done-callback may add to a queue, but should
 * not wait in cf_queue_next (it would hold up the thread that completes
 * futures) nor free a queue.
 */
CF_EXPORT int  cf_queue_new(cf_queue **out);
CF_EXPORT int  cf_queue_add(cf_queue *q, cf_future *f);
CF_EXPORT int  cf_queue_next(cf_queue *q, int timeout_ms, cf_future **out);
CF_EXPORT void cf_queue_free(cf_queue *q);

/* ---- Exec workers and the program's main ------------------------------- */

/*
 * The guard of main, for exec workers that need the program's constructors:
 * the counterpart of Python's `if __name__ == "__main__":`. Call it first
 * thing in main, from main's thread, unconditionally:
 *
 *   int main(int argc, char **argv)
 *   {
 *       cf_main_guard();
 *       ...                    // the program, as before
 *   }
 *
 * In the program as started by its user it returns at once, and from then
 * on the CF_START_EXEC pools this process creates start their workers at
 * that call: such a worker is a fresh execution of the program whose
 * library constructor checks that a pool started it (as every exec worker
 * does) and maps the pool's memory, then lets the program's constructors
 * (C++ static objects, __attribute__((constructor)) functions, those of the
 * libraries it loads) and main run; main's cf_main_guard then makes the
 * process a worker and never returns. Tasks and the initializer so see the
 * globals those constructors set. They still see nothing main sets (before
 * or after the guard) and no library opened with dlopen. Pools created
 * before the call, and every pool of a program that never calls it, start
 * their workers before the program's constructors, as ever.
 *
 * Everything main does before the guard is done again in every worker, so
 * do nothing there: the worker's argv is {"cfutures-worker", NULL}, its
 * stdin an empty pipe (a read returns end of file at once), its stdout and
 * stderr the caller's (what it prints before the guard and has not flushed
 * is discarded at the guard); SIGINT is ignored, as in every worker. Code that blocks before the guard (waits on a
 * lock, a signal, a socket) keeps cf_process_pool_new waiting, as an
 * initializer that never returns does; such a worker still dies with the
 * caller (and with the pool's zygote), as every worker does.
 *
 * Safety: in such a worker, the program running on without reaching the
 * guard is running as if it were the caller (and a pool it created would
 * start workers that do the same). So the worker prints one line naming
 * cfutures and cf_main_guard on stderr and exits with status 116, when,
 * before the guard, it calls any other cfutures function, calls
 * cf_main_guard from a thread other than main's, or ends main (returns, or
 * calls exit: an atexit handler of the library, which runs after the
 * program's own, ends it). Pool creation then fails with CF_ECRASHED, having
 * ended every worker it started; a replacement worker that exits so is not
 * started again (as when its initializer fails), and a pool left with none
 * is broken (CF_EBROKEN).
 *
 * In the program itself, a call from a thread other than main's does
 * nothing (its pools keep starting workers before the constructors: a
 * worker could not tell which thread's guard to wait for); further calls
 * do nothing; a call in a task (of any pool) returns at once. It changes
 * nothing for fork pools (a fork worker is a copy of the caller, its
 * constructors long run) nor for thread pools. Thread-safe.
 */
CF_EXPORT void cf_main_guard(void);

/* ---- Workers, shared memory, errors ------------------------------------ */

/* 0..workers-1 inside a worker (stable per worker slot, kept by replacements), -1 elsewhere. */
CF_EXPORT int cf_worker_id(void);

/*
 * Inside a cf_fn that cf_map runs: the index (0..n-1) of the map element it
 * works on, so that a function can find data of its own by position (a
 * row of a table in cf_shared_alloc memory, a seed per element). -1
 * everywhere else: in a task submitted with cf_submit or cf_submit_with,
 * in a cf_chunk_fn (which is given `first` instead), in an initializer, in
 * the caller's threads and in threads a task starts itself. Same on thread,
 * fork and exec pools. Thread-safe; touches only the calling thread's state.
 */
CF_EXPORT long cf_task_index(void);

/*
 * Inside a task submitted with cf_submit or cf_submit_with: leaves a short
 * message for the caller, printf-style, read with cf_future_error_text once
 * the task has ended with a non-zero code of its own:
 *
 *   if (fd < 0)
 *       return cf_task_error("open %s: %s", path, strerror(errno)), 2;
 *
 * The text is formatted at the call, so its arguments may go away at once.
 * It is kept up to CF_ERROR_TEXT_MAX bytes, NUL included; a longer one is
 * cut before any UTF-8 character that would not fit whole and ends in
 * "...". A later call replaces an earlier one. A task that then returns 0
 * has no error text: the text is dropped (so is it when the pool ends the
 * task, which gives a text of its own: see cf_future_error_text). Same on
 * thread, fork and exec pools.
 *
 * Returns 0 when the text is kept; CF_EINVAL, doing nothing, for a NULL fmt,
 * a format that fails, and when called anywhere but in the thread running a
 * submitted task: in a cf_map element or cf_map_chunks chunk (a map keeps
 * only codes, in `status`), in an initializer, in the caller's threads, in
 * a thread the task started.
 */
CF_EXPORT int cf_task_error(const char *fmt, ...) CF_PRINTF_LIKE(1, 2);

/*
 * Inside a task submitted with cf_submit or cf_submit_with: says that the
 * task produced n bytes of its result buffer, whose size (result_size, given
 * at submit) is a capacity. A result of variable size, a string say:
 *
 *   int n = snprintf(res, rs, "item %d: %s", x, name);
 *   cf_task_set_result_size(n < 0 ? 0 : (size_t)n + 1 > rs ? rs : (size_t)n + 1);
 *
 * Only those n bytes travel to the caller (from a process worker's shared
 * memory to the future) and are copied by cf_future_result; the caller
 * reads n with cf_future_result_size. A later call replaces an earlier one;
 * a task that never calls it produced its whole capacity. The size holds
 * whatever code the task returns (see cf_future_result_size). Same on
 * thread, fork and exec pools.
 *
 * Returns 0; CF_EINVAL, doing nothing, when n is larger than the capacity,
 * and when called anywhere but in the thread running a submitted task: in
 * a cf_map element or cf_map_chunks chunk (a map's results have a fixed
 * stride, out_size), in an initializer, in the caller's threads, in a
 * thread the task started.
 */
CF_EXPORT int cf_task_set_result_size(size_t n);

/*
 * Per-worker state for tasks, which cf_fn has no parameter for: a database
 * handle, a loaded table, a pointer into cf_shared_alloc memory. The
 * initializer (or a task) calls cf_worker_set_context(p) in its worker, and
 * every later task that worker runs, cf_map and cf_map_chunks elements
 * included, gets p back from cf_worker_context(). A worker is a thread on a
 * thread pool (the pointer is thread-local) and a process on a process
 * pool, fork or exec. It holds NULL until set. Every new worker starts
 * with NULL, and its initializer sets it again: one that replaces another
 * (after a crash, a recycling, a task that ended its thread) as one that
 * cf_executor_resize adds.
 *
 * The library never reads, copies or frees p. On a process pool, memory the
 * worker allocated goes with its process. On a thread pool it outlives the
 * thread, and no per-worker hook frees it: keep it where the program frees
 * it after cf_executor_free (a table indexed by cf_worker_id, say).
 *
 * Outside a worker, wherever cf_worker_id() is -1 (the caller's threads,
 * a thread a task starts itself), cf_worker_context returns NULL and
 * cf_worker_set_context does nothing. Both may be called from any thread
 * and touch only the calling thread's own state.
 */
CF_EXPORT void  cf_worker_set_context(void *p);
CF_EXPORT void *cf_worker_context(void);

/*
 * Returns size bytes of zeroed memory shared by the caller and the workers of
 * every process pool created afterwards (a fork worker sees the mapping made
 * before its pool; memory allocated later is not mapped in it), or NULL when
 * size is 0 or memory is exhausted. The memory is never visible to another
 * user. Free with cf_shared_free(p, size) once no worker uses it.
 *
 * Memory allocated by one thread while another creates a pool belongs to
 * the pool's workers or not, consistently: where it does not, cf_map copies
 * it as it copies any buffer. Freed memory gives its address range back, so
 * any number of cf_shared_alloc/cf_shared_free cycles leave room for later
 * regions where exec workers can map them.
 */
CF_EXPORT void *cf_shared_alloc(size_t size);
CF_EXPORT void  cf_shared_free(void *p, size_t size);

/* A static string for any CF_E* code; "task error" for a positive code, "success" for 0. */
CF_EXPORT const char *cf_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* CFUTURES_H */
