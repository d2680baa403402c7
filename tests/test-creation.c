/*
 * How a process pool's creation waits. It waits for two kinds of news: each
 * worker's start, on the shared ready word (a futex), and the standby
 * zygote's, on the zygote's socket. Waiting on the futex for news that come
 * on the socket costs a nap each time (10 ms): creation used to take 11 ms
 * instead of under 1 whenever the standby came after the workers.
 *
 * This program defines syscall(), which libcfutures' calls then bind to, as
 * benchmarks/scalesim.c does: the standby's fork (a clone with CLONE_PARENT,
 * made in the zygote, a fork of this program) is held back, and the futex
 * waits of this process that ran out of time while a pool was being created
 * are counted. The count is the assertion, not a time.
 */
#include "helpers.h"

#include <dlfcn.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#define STANDBY_LATE_MS (500 * CF_TEST_SCALE())   /* how late the standby comes */
#define NAP_MS          10                        /* creation's nap (src/pp_zygote.c) */
#define WORKERS         2

static long (*real_syscall)(long, ...);
static _Atomic int creating;          /* a pool is being created in this process */
static _Atomic int timed_out;         /* futex waits that ran out of time meanwhile, all workers started */

long syscall(long nr, ...)
{
    long a[6];
    va_list ap;
    va_start(ap, nr);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (real_syscall == NULL)
        real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    if (nr == SYS_clone && (a[0] & CLONE_PARENT)) {
        /* The zygote makes its standby: later than the workers' start. */
        struct timespec ts = {STANDBY_LATE_MS / 1000, (long)(STANDBY_LATE_MS % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    long rc = real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    /* During creation the library waits on one futex only: the ready word,
     * which each worker bumps once started. A wait that ran out of time
     * while a worker was still starting is right; one that ran out with
     * every worker started waited on the wrong kind of news. */
    if (nr == SYS_futex && ((int)a[1] & FUTEX_CMD_MASK) == FUTEX_WAIT && rc == -1 && errno == ETIMEDOUT &&
        atomic_load(&creating) && atomic_load((_Atomic uint32_t *)a[0]) >= WORKERS)
        atomic_fetch_add(&timed_out, 1);
    return rc;
}

/*
 * The standby comes STANDBY_LATE_MS after the zygote was asked for it, after
 * the workers started (they may take a few hundred ms to, exec'd under a
 * sanitizer on a loaded machine). Waiting on the ready word for it, creation
 * would run out of time there every NAP_MS from the workers' start to the
 * standby's (tens of times); waiting on the socket, never, or once if the
 * last worker's wake-up came as the wait ran out. And the pool has its
 * standby once created.
 */
Test(creation, a_late_standby_is_waited_for_on_the_socket, .timeout = TEST_TIMEOUT)
{
    for (int kind = 0; kind < 2; kind++) {
        cf_options o = { .workers = WORKERS, .start = kind == 0 ? CF_START_FORK : CF_START_EXEC };
        cf_executor *ex = NULL;
        atomic_store(&timed_out, 0);
        atomic_store(&creating, 1);
        int rc = cf_process_pool_new(&ex, &o);
        atomic_store(&creating, 0);
        cr_assert_eq(rc, 0, "cf_process_pool_new: %s", cf_strerror(rc));
        int naps = atomic_load(&timed_out);
        cr_assert_gt(find_standby(NULL, 0), 0, "%s pool: created without its standby", kind ? "exec" : "fork");
        cr_assert_leq(naps, 1,
                     "%s pool: with its workers started, creation slept on their ready word %d times while the standby was on its way",
                     kind ? "exec" : "fork", naps);
        cf_future *f;
        int wid = -2;
        cr_assert_eq(cf_submit(ex, task_worker_id, NULL, 0, sizeof wid, &f), 0);
        cr_assert_eq(cf_future_result(f, &wid, sizeof wid, -1), 0);
        cr_assert(wid == 0 || wid == 1, "a task ran on worker %d", wid);
        cf_future_free(f);
        cf_executor_free(ex);
    }
}
