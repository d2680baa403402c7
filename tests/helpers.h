/*
 * Helpers shared by the Criterion suites.
 *
 * Tasks report back to the test through a `struct probe` that the test
 * allocates with cf_shared_alloc BEFORE it creates the pool, so that fork
 * workers and threads alike see the same memory. All accesses to it go
 * through the atomic helpers below.
 *
 * Gated tasks block until the test opens their gate: that is how a test puts
 * a task in a known state (running, pending behind it) without guessing with
 * sleeps. A gate that is never opened gives up after GATE_MAX_MS so that a
 * broken test fails instead of leaving a worker spinning.
 *
 * A count a test waits on is published after the values it vouches for:
 * `started >= n` means that pid[0..n-1] and wid[0..n-1] are written (see
 * probe_record). A pid read back from the probe or a result goes to kill()
 * through kill_one, which fails the test on a pid <= 0 instead of signalling
 * a whole process group.
 */
#ifndef CF_TESTS_HELPERS_H
#define CF_TESTS_HELPERS_H

#include <cfutures.h>
#include <criterion/criterion.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Every bound on time below is multiplied by CF_TEST_TIMEOUT_SCALE (a whole
 * number from 1 to 100, 1 when unset): tests/valgrind.sh sets it, since
 * under valgrind each worker process starts in about a second, and a slow
 * machine makes that several seconds. Criterion's .timeout of every test and
 * suite is scaled once, before the first test starts (tests/timescale.h);
 * the poll and gate bounds are scaled where they are read.
 */
#include "timescale.h"

#define TEST_TIMEOUT  60     /* seconds: Criterion's .timeout for waiting tests; generous
                                for a loaded 2-core machine */
#define SLOW_TIMEOUT  180    /* tests that start several pools or move much data */
#define POLL_MAX_MS   (10000 * test_time_scale())  /* bound on every poll loop of a test */
#define GATE_MAX_MS   (20000 * test_time_scale())  /* a gated task gives up after this long */

#define CODE_STUCK    99     /* a gated task whose gate never opened */
#define CODE_BADSIZE  98     /* a task called with sizes it did not expect */

#define PROBE_SLOTS   64

struct probe {
    int started;                /* gated tasks that have begun, pid and wid written */
    int gate[PROBE_SLOTS];      /* the test opens gate i to let task i finish */
    int count;                  /* runs of counting tasks */
    int inits;                  /* initializer runs; those that call probe_record wrote init_pid, init_wid */
    int init_bad;               /* initializer runs that saw wrong initargs */
    int value;                  /* free for a test's own use */
    int pid[PROBE_SLOTS];       /* getpid() of each started gated task */
    int wid[PROBE_SLOTS];       /* cf_worker_id() of the same */
    int init_pid[PROBE_SLOTS];  /* getpid() of each initializer run */
    int init_wid[PROBE_SLOTS];  /* cf_worker_id() of the same */
    int claimed;                /* slots of pid/wid taken; `started` counts those filled */
    int init_claimed;           /* the same for init_pid/init_wid and `inits` */
};

static inline int load_int(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void store_int(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the value before the addition. */
static inline int add_int(int *p, int v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* A pointer no library call returns: shows that a failed call left *out alone. */
static inline void *untouched(void)
{
    static char mark;
    return &mark;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Polls until *p >= v; false if POLL_MAX_MS passed first. */
static inline bool wait_int_at_least(const int *p, int v)
{
    for (int ms = 0; ms < POLL_MAX_MS; ms++) {
        if (load_int(p) >= v)
            return true;
        sleep_ms(1);
    }
    return load_int(p) >= v;
}

static inline bool wait_future_running(const cf_future *f)
{
    for (int ms = 0; ms < POLL_MAX_MS; ms++) {
        if (cf_future_running(f))
            return true;
        sleep_ms(1);
    }
    return cf_future_running(f);
}

static inline struct probe *probe_new(void)
{
    struct probe *p = cf_shared_alloc(sizeof *p);
    cr_assert_not_null(p, "cf_shared_alloc(struct probe) failed");
    return p;
}

static inline void probe_free(struct probe *p)
{
    cf_shared_free(p, sizeof *p);
}

/*
 * Records getpid() and cf_worker_id() of the caller in the next slot of
 * pid[] and wid[], then counts it in *count. A test that sees *count >= n
 * reads slots 0..n-1, so a slot is counted only once it is written, and
 * slots are counted in the order they were taken (*claimed): a task that
 * took slot s waits until the one that took s - 1 has counted it. Counting
 * first and writing after once let a test read pid 0 and kill(0, SIGINT)
 * its own process group. False, and nothing counted, if an earlier slot is
 * still not counted after GATE_MAX_MS (its task died between taking and
 * counting it): the test's wait for the count then fails.
 */
static inline bool probe_record(int *claimed, int *count, int *pid, int *wid)
{
    int slot = add_int(claimed, 1);
    if (slot < PROBE_SLOTS) {
        store_int(&wid[slot], cf_worker_id());
        store_int(&pid[slot], (int)getpid());
    }
    /* Acquire: the slots before ours are written when their count shows. */
    for (int ms = 0; __atomic_load_n(count, __ATOMIC_ACQUIRE) != slot; ms++) {
        if (ms >= GATE_MAX_MS)
            return false;
        sleep_ms(1);
    }
    /* Release: a reader that sees slot + 1 also sees pid[slot] and wid[slot]. */
    __atomic_store_n(count, slot + 1, __ATOMIC_RELEASE);
    return true;
}

/* Called by a gated task: records who runs it, then waits for gate i. */
static inline bool probe_gate_pass(struct probe *p, int i)
{
    if (!probe_record(&p->claimed, &p->started, p->pid, p->wid))
        return false;
    for (int ms = 0; ms < GATE_MAX_MS; ms++) {
        if (load_int(&p->gate[i]))
            return true;
        sleep_ms(1);
    }
    return false;
}

/*
 * kill(2) for one process whose pid was read back from shared memory or a
 * task's result: input, not truth. kill(0, sig) would signal the test's own
 * process group and kill(-1, sig) every process it may signal, so a pid
 * <= 0 fails the test instead.
 */
static inline int kill_one(pid_t pid, int sig)
{
    cr_assert_gt(pid, 0, "kill(%d, %d): not the pid of one process", (int)pid, sig);
    return kill(pid, sig);
}

static inline void probe_open(struct probe *p, int i)
{
    store_int(&p->gate[i], 1);
}

static inline void probe_open_all(struct probe *p)
{
    for (int i = 0; i < PROBE_SLOTS; i++)
        probe_open(p, i);
}

/*
 * Valgrind cannot follow an exec worker: /proc/self/exe is valgrind itself,
 * whose fixed mappings clash with the pool's, so the worker dies at start.
 * Its preload library in LD_PRELOAD gives it away.
 */
static inline bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

#define SKIP_EXEC_UNDER_VALGRIND()                                                 \
    do {                                                                           \
        if (under_valgrind())                                                      \
            cr_skip_test("CF_START_EXEC workers cannot start under valgrind");     \
    } while (0)

static inline uint64_t fnv1a(const void *data, size_t n)
{
    const unsigned char *b = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/*
 * The pool under test in the common suite: 1 = thread pool, 2 = process pool
 * (fork workers), 3 = process pool with exec workers.
 */
#ifdef CF_TEST_BACKEND
#  if CF_TEST_BACKEND == 3
#    define BACKEND_PROCESS 1
#    define BACKEND_EXEC    1
#    define BACKEND_NAME    "exec"
#  elif CF_TEST_BACKEND == 2
#    define BACKEND_PROCESS 1
#    define BACKEND_EXEC    0
#    define BACKEND_NAME    "process"
#  elif CF_TEST_BACKEND == 1
#    define BACKEND_PROCESS 0
#    define BACKEND_EXEC    0
#    define BACKEND_NAME    "thread"
#  else
#    error "CF_TEST_BACKEND must be 1 (threads), 2 (fork workers) or 3 (exec workers)"
#  endif

static inline int pool_new(cf_executor **out, const cf_options *opts)
{
#  if BACKEND_EXEC
    cf_options exec = opts != NULL ? *opts : (cf_options){0};
    exec.start = CF_START_EXEC;
    return cf_process_pool_new(out, &exec);
#  elif BACKEND_PROCESS
    return cf_process_pool_new(out, opts);
#  else
    return cf_thread_pool_new(out, opts);
#  endif
}

/* A pool of n workers that must start. */
static inline cf_executor *pool_start(unsigned workers)
{
    cf_options opts = { .workers = workers };
    cf_executor *ex = NULL;
    int rc = pool_new(&ex, &opts);
    cr_assert_eq(rc, 0, "%s pool_new(%u workers): %s", BACKEND_NAME, workers,
                 cf_strerror(rc));
    cr_assert_not_null(ex);
    return ex;
}
#endif /* CF_TEST_BACKEND */

#endif /* CF_TESTS_HELPERS_H */
