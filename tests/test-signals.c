/*
 * Signals and deaths around a process pool:
 *
 *   - the caller is SIGKILLed while its tasks run (idle, busy, mid-map; fork
 *     and exec): its zygote and every worker are gone within a second, also
 *     when the running tasks have lost their parent-death signal (they
 *     cleared it, or dropped root). The test makes itself a child
 *     subreaper, so that the orphans become its children and it can see
 *     them go (waitpid);
 *   - Ctrl-C: SIGINT to the process group of a caller busy in cf_map ends
 *     the caller by its default action, and no worker remains;
 *   - the zygote is killed (twice in a row; fork and exec): the tasks its
 *     workers ran end CF_ECRASHED, pending ones run on the workers of its
 *     replacement with the right results, later submits and maps work, and
 *     the pool frees cleanly; a fork pool's replacement is still a copy of
 *     the caller at pool creation, also after its standby was killed too; a
 *     worker that lost its parent-death signal does not outlive its zygote;
 *     workers are the kernel's first choice for an out-of-memory kill;
 *   - a storm of signals (a handler without SA_RESTART) while callers wait
 *     changes no result and ends no wait early;
 *   - a caller that ignores SIGCHLD still sees its workers die.
 *
 * Every wait is bounded; the bounds are hang detectors, far above what the
 * machine needs, except the one the contract states: "gone within a
 * second" (ten under valgrind).
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>

#define BLOCK_MAX_MS 30000    /* a blocked task gives up after this long */

/* Shared with tasks and with forked callers: made before any fork or pool. */
struct board {
    int started;              /* blocking tasks that have begun */
    int release;              /* set: blocking tasks return */
};

static struct board *board;

static void setup(void)
{
    no_core_dumps();
    board = cf_shared_alloc(sizeof *board);
    cr_assert_not_null(board);
}

static void teardown(void)
{
    store_int(&board->release, 1);
    cf_shared_free(board, sizeof *board);
}

static int death_bound_ms(void)
{
    return under_valgrind() ? 10000 : 1000;
}

/* ---- tasks ----------------------------------------------------------------- */

struct barg {
    struct board *b;          /* the same address in exec workers (cf_shared_alloc) */
    uint64_t      i;
};

/* Counts itself started, then blocks until released (bounded). */
static int task_block(const void *arg, size_t as, void *res, size_t rs)
{
    struct barg a;
    uint64_t end;
    if (as != sizeof a)
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    add_int(&a.b->started, 1);
    end = now_ms() + BLOCK_MAX_MS;
    while (!load_int(&a.b->release) && now_ms() < end)
        sleep_ms(1);
    if (rs == sizeof a.i)
        memcpy(res, &a.i, sizeof a.i);
    return 0;
}

/*
 * task_block, in a worker that no longer has a parent-death signal: the task
 * cleared it, as a task may (prctl), or lost it by dropping root (setuid
 * clears it), so only the pool itself can end this worker.
 */
static int task_block_prctl(const void *arg, size_t as, void *res, size_t rs)
{
    prctl(PR_SET_PDEATHSIG, 0);
    return task_block(arg, as, res, rs);
}

static int task_block_setuid(const void *arg, size_t as, void *res, size_t rs)
{
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
        return CODE_BADSIZE + 1;
    return task_block(arg, as, res, rs);
}

/* ---- a doomed caller ----------------------------------------------------------- */

enum load { IDLE, BUSY, MAPPING, BUSY_PRCTL, BUSY_SETUID };

static const char *load_name[] = { "idle", "busy", "in cf_map", "busy, tasks cleared PDEATHSIG",
                                   "busy, tasks dropped root" };

#define MAX_REPORT 8

struct report {
    int   ok;
    pid_t zygote;
    int   nworkers;
    pid_t workers[MAX_REPORT];
};

struct mapper {
    cf_executor *ex;
    struct barg  in[64];
    uint64_t     out[64];
};

static void *mapper_main(void *arg)
{
    struct mapper *m = arg;
    cf_map_options mo = { .chunksize = 1 };
    cf_map(m->ex, task_block, m->in, sizeof m->in[0], m->out, sizeof m->out[0], 64, &mo);
    return NULL;
}

/*
 * Runs in the forked caller: creates a pool of two workers, loads it, reports
 * its zygote and workers through fd, then waits to be killed (or runs the
 * map itself, in the calling thread, when `map_here`: for SIGINT).
 */
static _Noreturn void doomed_caller(int fd, enum pool_kind kind, enum load load, bool map_here)
{
    cf_options o = { .workers = 2, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    struct report r = { .ok = 1 };
    static struct mapper m;
    pthread_t th;

    if (cf_process_pool_new(&ex, &o) != 0)
        _exit(10);
    if (load == BUSY || load == BUSY_PRCTL || load == BUSY_SETUID) {
        cf_fn *fn = load == BUSY_PRCTL ? task_block_prctl : load == BUSY_SETUID ? task_block_setuid : task_block;
        for (int i = 0; i < 4; i++) {
            struct barg a = { board, (uint64_t)i };
            cf_future *f;
            if (cf_submit(ex, fn, &a, sizeof a, 0, &f) != 0)
                _exit(11);
        }
    }
    if (load == MAPPING) {
        m.ex = ex;
        for (int i = 0; i < 64; i++)
            m.in[i] = (struct barg){ board, (uint64_t)i };
        if (!map_here && pthread_create(&th, NULL, mapper_main, &m) != 0)
            _exit(12);
    }
    r.zygote = find_zygote(NULL, 0);
    if (r.zygote <= 0)
        _exit(13);
    /* Both workers started (and, if loaded, both running a task). */
    for (uint64_t end = now_ms() + 30000;; sleep_ms(1)) {
        r.nworkers = proc_children(r.zygote, r.workers, MAX_REPORT, NULL);
        bool loaded = load == IDLE || map_here || load_int(&board->started) >= 2;
        if (r.nworkers == 2 && loaded)
            break;
        if (now_ms() > end)
            _exit(14);
    }
    if (!write_full(fd, &r, sizeof r))
        _exit(15);
    if (map_here)
        mapper_main(&m);    /* blocks: SIGINT ends us in there */
    for (;;)
        pause();
}

struct reaped {
    int   n;
    pid_t pid[64];
    int   status[64];
};

/*
 * As a subreaper: reaps every descendant until none is left (ECHILD) or
 * bound_ms passed. Returns the milliseconds it took, or -1 on the bound.
 */
static long reap_all(struct reaped *r, int bound_ms)
{
    uint64_t t0 = now_ms();
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid > 0) {
            if (r->n < 64) {
                r->pid[r->n] = pid;
                r->status[r->n] = st;
            }
            r->n++;
            continue;
        }
        if (pid < 0 && errno == ECHILD)
            return (long)(now_ms() - t0);
        if (pid < 0 && errno != EINTR)
            return -1;
        if (now_ms() - t0 > (uint64_t)bound_ms)
            return -1;
        sleep_ms(1);
    }
}

static int status_of(const struct reaped *r, pid_t pid)
{
    for (int i = 0; i < r->n && i < 64; i++)
        if (r->pid[i] == pid)
            return r->status[i];
    return -1;
}

/*
 * Kills leftovers of a failed test, so that they do not outlive it. The
 * caller is dead and reaped by now: its zygote is our child (we are a
 * subreaper), its workers the zygote's, or ours once the zygote is gone.
 * Pids that were reaped meanwhile may be another process's: only children
 * still where they should be are killed, workers first.
 */
static void kill_all(const struct report *rep)
{
    store_int(&board->release, 1);
    for (int i = 0; i < rep->nworkers && i < MAX_REPORT; i++)
        if (kill_child(rep->workers[i], rep->zygote, SIGKILL) != 0)
            kill_child(rep->workers[i], getpid(), SIGKILL);
    kill_child(rep->zygote, getpid(), SIGKILL);
}

static void caller_killed(enum pool_kind kind, enum load load)
{
    struct report rep = { 0 };
    struct reaped reaped = { 0 };
    int fds[2], st = 0;
    bool reported;
    pid_t caller;
    long ms;

    skip_exec_under_valgrind(kind);
    if (load == BUSY_SETUID && geteuid() != 0)
        cr_skip_test("needs root: a task drops root to lose its parent-death signal");
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    cr_assert_eq(pipe(fds), 0);
    caller = fork();
    cr_assert_geq(caller, 0);
    if (caller == 0) {
        close(fds[0]);
        doomed_caller(fds[1], kind, load, false);
    }
    close(fds[1]);
    reported = read_full(fds[0], &rep, sizeof rep);
    close(fds[0]);
    kill(caller, SIGKILL);
    waitpid(caller, &st, 0);
    cr_assert(reported, "the caller failed before it reported (status 0x%x)", st);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "caller status 0x%x", st);
    cr_assert_eq(rep.nworkers, 2);

    ms = reap_all(&reaped, death_bound_ms());
    if (ms < 0)
        kill_all(&rep);
    fprintf(stderr, "caller SIGKILLed (%s, %s): zygote and %d workers gone in %ld ms, %d processes reaped\n",
            pool_kind_name(kind), load_name[load], rep.nworkers, ms, reaped.n);
    cr_assert_geq(ms, 0, "descendants of the killed caller still alive after %d ms", death_bound_ms());
    cr_assert_neq(status_of(&reaped, rep.zygote), -1, "the zygote %d was not reaped by the subreaper",
                  (int)rep.zygote);
    /* A worker is reaped here, or by the zygote when the caller's exit closed
     * the zygote's socket before its death signal came (it then kills and
     * reaps its workers itself): either way it is gone. */
    for (int i = 0; i < rep.nworkers; i++)
        cr_assert(status_of(&reaped, rep.workers[i]) != -1 || process_gone(rep.workers[i]),
                  "worker %d survived", (int)rep.workers[i]);
}

Test(signals, caller_sigkilled_idle_fork_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_FORK, IDLE);
}

Test(signals, caller_sigkilled_busy_fork_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_FORK, BUSY);
}

Test(signals, caller_sigkilled_in_map_fork_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_FORK, MAPPING);
}

Test(signals, caller_sigkilled_busy_exec_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_EXEC, BUSY);
}

Test(signals, caller_sigkilled_in_map_exec_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_EXEC, MAPPING);
}

/*
 * The running tasks have no parent-death signal any more: the zygote must
 * notice the caller's death and kill them, not die first of its own signal.
 * Until the zygote watched the caller itself, the busy workers outlived it
 * (7 runs in 10).
 */
Test(signals, caller_sigkilled_tasks_without_pdeathsig_fork_pool, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_FORK, BUSY_PRCTL);
}

Test(signals, caller_sigkilled_tasks_without_pdeathsig_exec_pool, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_EXEC, BUSY_PRCTL);
}

Test(signals, caller_sigkilled_tasks_dropped_root_fork_pool, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    caller_killed(POOL_FORK, BUSY_SETUID);
}

/* ---- Ctrl-C ---------------------------------------------------------------------- */

static void ctrl_c_during_map(enum pool_kind kind)
{
    struct report rep = { 0 };
    struct reaped reaped = { 0 };
    int fds[2], st = 0;
    bool reported;
    pid_t caller;
    long ms;

    skip_exec_under_valgrind(kind);
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    cr_assert_eq(pipe(fds), 0);
    caller = fork();
    cr_assert_geq(caller, 0);
    if (caller == 0) {
        setpgid(0, 0);    /* its own process group, as a shell gives a job */
        signal(SIGINT, SIG_DFL);
        close(fds[0]);
        doomed_caller(fds[1], kind, MAPPING, true);
    }
    setpgid(caller, caller);
    close(fds[1]);
    reported = read_full(fds[0], &rep, sizeof rep);
    close(fds[0]);
    if (!reported) {
        kill(caller, SIGKILL);
        waitpid(caller, &st, 0);
        cr_assert_fail("the caller failed before it reported (status 0x%x)", st);
    }
    /* The map is running on both workers. */
    cr_assert(wait_at_least(&board->started, 2, 30000), "the map's tasks did not start");
    cr_assert_eq(getpgid(rep.zygote), caller, "the zygote is not in the caller's process group");
    cr_assert_eq(kill(-caller, SIGINT), 0);
    /* Bounded: a caller that survived SIGINT is killed, and the test fails. */
    uint64_t end = now_ms() + 10000;
    pid_t w;
    while ((w = waitpid(caller, &st, WNOHANG)) == 0 && now_ms() < end)
        sleep_ms(1);
    if (w == 0) {
        kill(caller, SIGKILL);
        waitpid(caller, &st, 0);
        kill_all(&rep);
        cr_assert_fail("the caller survived SIGINT");
    }
    ms = reap_all(&reaped, death_bound_ms());
    if (ms < 0)
        kill_all(&rep);
    fprintf(stderr, "Ctrl-C during cf_map (%s): caller ended by signal %d, zygote and %d workers gone "
            "in %ld ms\n", pool_kind_name(kind),
            WIFSIGNALED(st) ? WTERMSIG(st) : 0, rep.nworkers, ms);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "caller status 0x%x, not SIGINT", st);
    cr_assert_geq(ms, 0, "descendants of the interrupted caller still alive after %d ms", death_bound_ms());
    for (int i = 0; i < rep.nworkers; i++) {
        int ws = status_of(&reaped, rep.workers[i]);
        cr_assert(ws != -1 || process_gone(rep.workers[i]), "worker %d survived",
                  (int)rep.workers[i]);
        cr_assert(ws == -1 || !WIFSIGNALED(ws) || WTERMSIG(ws) != SIGINT,
                  "worker %d died of SIGINT: workers must ignore it (Ctrl-C is the caller's)",
                  (int)rep.workers[i]);
    }
    cr_assert_eq(kill(-caller, 0), -1, "processes remain in the caller's process group");
    cr_assert_eq(errno, ESRCH);
}

Test(signals, ctrl_c_during_map_fork_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    ctrl_c_during_map(POOL_FORK);
}

Test(signals, ctrl_c_during_map_exec_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    ctrl_c_during_map(POOL_EXEC);
}

/* ---- the zygote killed ------------------------------------------------------------ */

struct cbcount {
    int calls;
};

static void count_call(cf_future *f, void *ctx)
{
    (void)f;
    add_int(&((struct cbcount *)ctx)->calls, 1);
}

/* The zygote of the pool, once there is exactly one live one other than `old`. */
static pid_t wait_zygote_other_than(pid_t old)
{
    for (uint64_t end = now_ms() + 30000; now_ms() < end; sleep_ms(1)) {
        pid_t z = find_zygote(NULL, 0);
        if (z > 0 && z != old)
            return z;
    }
    return 0;
}

/*
 * Waits until the caller holds `fds` descriptors again: after a standby was
 * lost (its socket closed) or a zygote was (its socket, and the standby's
 * that took its place), until the pool holds the socket of a new standby. A
 * standby shows as a process before the pool has its socket; a zygote
 * killed in between takes it along (zygote_killed_while_making_a_standby_*).
 */
static void wait_standby_adopted(int fds, const char *when)
{
    int now = -1;
    for (uint64_t end = now_ms() + 30000; now_ms() < end; sleep_ms(1))
        if ((now = fd_count()) == fds)
            return;
    cr_assert_fail("%s: the pool took no new standby (%d descriptors, %d before)", when, now, fds);
}

/*
 * Kills the zygote while RUNNING tasks run and PENDING wait, twice over:
 * each time the running tasks end CF_ECRASHED (killed with their zygote),
 * the pending ones run on the new zygote's workers, and the pool goes on.
 */
static void zygote_killed(enum pool_kind kind)
{
    enum { RUNNING = 2, PENDING = 6, N = RUNNING + PENDING, ROUNDS = 2 };
    struct census before;
    cf_options o = { .workers = 2, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    char msg[256];
    pid_t zygote = 0;
    int rc;

    skip_exec_under_valgrind(kind);
    census_take(&before);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    int fds = fd_count();    /* the pool has its standby once created */
    for (int round = 0; round < ROUNDS; round++) {
        cf_future *fs[N];
        struct cbcount cb[N];
        memset(cb, 0, sizeof cb);
        store_int(&board->started, 0);
        store_int(&board->release, 0);
        zygote = wait_zygote_other_than(zygote);
        cr_assert_gt(zygote, 0, "round %d: no zygote", round);
        wait_standby_adopted(fds, "after the zygote died");
        for (int i = 0; i < N; i++) {
            struct barg a = { board, (uint64_t)(100 * round + i) };
            cr_assert_eq(cf_submit(ex, task_block, &a, sizeof a, sizeof a.i, &fs[i]), 0);
            cr_assert_eq(cf_future_add_done_callback(fs[i], count_call, &cb[i]), 0);
            if (i == RUNNING - 1)
                cr_assert(wait_at_least(&board->started, RUNNING, 30000), "tasks did not start");
        }
        cr_assert_eq(kill(zygote, SIGKILL), 0);

        /* The running tasks end first: their workers died with the zygote. */
        cr_assert_eq(cf_wait(fs, RUNNING, CF_ALL_COMPLETED, 30000), 0,
                     "round %d: running tasks did not end after the zygote died", round);
        for (int i = 0; i < RUNNING; i++) {
            uint64_t v;
            rc = cf_future_result(fs[i], &v, sizeof v, 0);
            cr_assert_eq(rc, CF_ECRASHED, "round %d: running task %d: %s", round, i, cf_strerror(rc));
            cr_assert_eq(cf_future_signal(fs[i]), SIGKILL, "round %d: running task %d: signal %d", round, i,
                         cf_future_signal(fs[i]));
        }
        /* The pending ones run on the replacement's workers. */
        store_int(&board->release, 1);
        cr_assert_eq(cf_wait(fs, N, CF_ALL_COMPLETED, 30000), 0, "round %d: pending tasks did not end", round);
        for (int i = RUNNING; i < N; i++) {
            uint64_t v = 0;
            rc = cf_future_result(fs[i], &v, sizeof v, 0);
            cr_assert_eq(rc, 0, "round %d: pending task %d: %s", round, i, cf_strerror(rc));
            cr_assert_eq(v, (uint64_t)(100 * round + i), "round %d: pending task %d: wrong result", round, i);
        }
        /* Later submits and maps work. */
        uint64_t x = 7 + (uint64_t)round, v = 0;
        cf_future *late;
        cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &late), 0);
        rc = cf_future_result(late, &v, sizeof v, 30000);
        cr_assert_eq(rc, 0, "round %d: submit after the zygote died: %s", round, cf_strerror(rc));
        cr_assert_eq(v, value_for(x));
        cf_future_free(late);
        uint64_t in[64], out[64];
        for (int i = 0; i < 64; i++)
            in[i] = (uint64_t)(1000 * round + i);
        cf_map_options mo = { .chunksize = 4 };
        rc = cf_map(ex, task_value, in, sizeof in[0], out, sizeof out[0], 64, &mo);
        cr_assert_eq(rc, 0, "round %d: map after the zygote died: %s", round, cf_strerror(rc));
        for (int i = 0; i < 64; i++)
            cr_assert_eq(out[i], value_for(in[i]), "round %d: map element %d", round, i);
        /* A future is done before its callbacks run (cfutures.h): a wait may
         * return while the thread that finished it has yet to call them. */
        for (int i = 0; i < N; i++) {
            cr_assert(wait_at_least(&cb[i].calls, 1, POLL_MAX_MS), "round %d: future %d: no callback call",
                      round, i);
            cr_assert_eq(load_int(&cb[i].calls), 1, "round %d: future %d: %d callback calls", round, i,
                         load_int(&cb[i].calls));
            cf_future_free(fs[i]);
        }
    }
    cr_assert_eq(cf_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

Test(signals, zygote_killed_twice_fork_pool_recovers, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    zygote_killed(POOL_FORK);
}

Test(signals, zygote_killed_twice_exec_pool_recovers, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    zygote_killed(POOL_EXEC);
}

/* ---- a fork pool's replacement zygote is still the caller at creation ------------ */

static int global_at_creation;

static int task_global(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as;
    if (rs != sizeof global_at_creation)
        return CODE_BADSIZE;
    memcpy(res, &global_at_creation, sizeof global_at_creation);
    return 0;
}

static int global_in_worker(cf_executor *ex)
{
    cf_future *f;
    int v = -1, rc;
    rc = cf_submit(ex, task_global, NULL, 0, sizeof v, &f);
    cr_assert_eq(rc, 0, "cf_submit: %s", cf_strerror(rc));
    rc = cf_future_result(f, &v, sizeof v, 30000);
    cr_assert_eq(rc, 0, "%s", cf_strerror(rc));
    cf_future_free(f);
    return v;
}

/*
 * The caller changes a global after creating the pool; a fork worker sees
 * it as it was at creation. So must the workers of a replacement zygote,
 * which is why it is not forked from the caller anew: after the zygote is
 * killed, after the standby that replaced it is killed, and after the
 * zygote is killed again, the workers still see the old value.
 */
Test(signals, zygote_killed_fork_replacement_sees_caller_at_creation, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    struct census before;
    cf_options o = { .workers = 1 };
    cf_executor *ex = NULL;
    char msg[256];

    census_take(&before);
    global_at_creation = 1;
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    global_at_creation = 2;
    cr_assert_eq(global_in_worker(ex), 1);

    pid_t zygote = find_zygote(NULL, 0), standby;
    int fds = fd_count();    /* the pool has its standby once created */
    cr_assert_gt(zygote, 0);
    cr_assert_eq(kill(zygote, SIGKILL), 0);
    cr_assert_eq(global_in_worker(ex), 1, "the replacement zygote's worker sees the caller as it is now");
    zygote = wait_zygote_other_than(zygote);
    cr_assert_gt(zygote, 0);
    wait_standby_adopted(fds, "after the zygote died");

    /* Now the standby, then the zygote: the zygote made the new standby. */
    for (uint64_t end = now_ms() + 30000; (standby = find_standby(NULL, 0)) <= 0; sleep_ms(1))
        cr_assert_lt(now_ms(), end, "no standby zygote");
    cr_assert_eq(kill(standby, SIGKILL), 0);
    cr_assert_eq(global_in_worker(ex), 1);
    pid_t again;
    for (uint64_t end = now_ms() + 30000;; sleep_ms(1)) {
        again = find_standby(NULL, 0);
        if (again > 0 && again != standby)
            break;
        cr_assert_lt(now_ms(), end, "the killed standby was not replaced");
    }
    wait_standby_adopted(fds, "after the standby died");
    cr_assert_eq(kill(zygote, SIGKILL), 0);
    cr_assert_eq(global_in_worker(ex), 1, "after the standby and the zygote were killed");
    cf_executor_free(ex);
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

/*
 * The standby killed, then the pool freed at once, over and over: the dead
 * standby, and the one the zygote may be making in its place as the pool
 * closes, are reaped (the census sees any child or zombie left).
 */
Test(signals, standby_killed_then_pool_freed_leaves_nothing, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    struct census before;
    char msg[256];
    int rounds = under_valgrind() ? 3 : 40;

    census_take(&before);
    for (int r = 0; r < rounds; r++) {
        enum pool_kind kind = r % 2 && !under_valgrind() ? POOL_EXEC : POOL_FORK;
        cf_executor *ex = NULL;
        cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 1 }), 0);
        pid_t standby = find_standby(NULL, 0);
        cr_assert_gt(standby, 0, "round %d: no standby", r);
        cr_assert_eq(kill(standby, SIGKILL), 0);
        cf_executor_free(ex);
        cr_assert(census_same(&before, msg, sizeof msg), "round %d: %s", r, msg);
    }
}

/*
 * The standby killed, then the zygote killed the moment a new standby shows,
 * over and over: the zygote often dies between making that standby (the
 * caller's child, as every standby is) and reporting it. The pool goes on on
 * a standby it knows or breaks (CF_EBROKEN), and once freed leaves no child
 * and no zombie: a standby never reported is killed and reaped as well.
 */
Test(signals, zygote_killed_while_making_a_standby_leaves_nothing, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    struct census before;
    char msg[256];
    int survived = 0, broke = 0;
    long r = 0;
    uint64_t t0 = now_ms();

    census_take(&before);
    for (; keep_looping(r, under_valgrind() ? 3 : 30, 300, t0); r++) {
        cf_options o = { .workers = 1 };
        cf_executor *ex = NULL;
        cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
        pid_t zygote = find_zygote(NULL, 0), standby = find_standby(NULL, 0), fresh;
        cr_assert(zygote > 0 && standby > 0, "round %ld: zygote %d, standby %d", r, (int)zygote, (int)standby);
        cr_assert_eq(kill(standby, SIGKILL), 0);
        for (uint64_t end = now_ms() + 30000;; ) {
            fresh = find_standby(&standby, 1);
            if (fresh > 0)
                break;
            cr_assert_lt(now_ms(), end, "round %ld: the killed standby was not replaced", r);
        }
        cr_assert_eq(kill(zygote, SIGKILL), 0);
        uint64_t x = (uint64_t)r, v = 0;
        cf_future *f;
        int rc = cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f);
        if (rc == 0) {
            rc = cf_future_result(f, &v, sizeof v, 30000);
            cf_future_free(f);
        }
        /* CF_ECRASHED: a worker of the dead zygote took the task before it died too. */
        cr_assert(rc == 0 || rc == CF_ECRASHED || rc == CF_EBROKEN, "round %ld: %s", r, cf_strerror(rc));
        cr_assert(rc != 0 || v == value_for(x), "round %ld: wrong result", r);
        rc == CF_EBROKEN ? broke++ : survived++;
        cf_executor_free(ex);
        cr_assert(census_same(&before, msg, sizeof msg), "round %ld: %s", r, msg);
    }
    fprintf(stderr, "zygote killed as its standby was made: %ld rounds, the pool went on in %d, broke in %d\n",
            r, survived, broke);
}

/* ---- a worker without parent-death signal, its zygote killed ---------------------- */

struct pid_arg {
    struct board *b;
    int          *pid;        /* cf_shared_alloc'd: the worker's pid */
};

static int task_block_prctl_pid(const void *arg, size_t as, void *res, size_t rs)
{
    struct pid_arg a;
    struct barg ba;
    (void)res; (void)rs;
    if (as != sizeof a)
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    store_int(a.pid, (int)getpid());
    prctl(PR_SET_PDEATHSIG, 0);
    ba = (struct barg){ a.b, 0 };
    return task_block(&ba, sizeof ba, NULL, 0);
}

/*
 * The first worker crashes, and its replacement starts while this process
 * can make no descriptor (RLIMIT_NOFILE below every free number), so the
 * replacement's pidfd is dropped on its way here; the limit comes back
 * after a while.
 */
static void replace_without_descriptors(cf_executor *ex)
{
    struct rlimit old, none;
    cf_future *f;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    none = old;
    none.rlim_cur = 3;
    cr_assert_eq(cf_submit(ex, task_segv, NULL, 0, 0, &f), 0);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
    int rc = cf_future_result(f, NULL, 0, 30000);
    sleep_ms(300);    /* the replacement started meanwhile, if it could */
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(rc, CF_ECRASHED, "%s", cf_strerror(rc));
    cf_future_free(f);
}

/*
 * A task cleared its worker's parent-death signal; the zygote is killed. The
 * worker must not run on as an orphan (it would write into a slot the pool
 * has reused): the task ends CF_ECRASHED only once its worker is dead. With
 * no_fds, the worker is one started while the caller could receive no
 * descriptor: a worker whose pidfd never came is ended and started again,
 * never kept (one once was, and outlived its zygote and the pool).
 */
static void zygote_killed_orphan(enum pool_kind kind, bool no_fds)
{
    cf_options o = { .workers = 1, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    cf_future *f;
    int *pid = cf_shared_alloc(sizeof *pid), rc;

    skip_exec_under_valgrind(kind);
    /* The pool kills a dead zygote's workers through their pidfds. */
    if (under_valgrind())
        cr_skip_test("valgrind 3.19 does not know pidfd_open: the zygote hands over no pidfd");
    cr_assert_not_null(pid);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    if (no_fds)
        replace_without_descriptors(ex);
    struct pid_arg a = { board, pid };
    cr_assert_eq(cf_submit(ex, task_block_prctl_pid, &a, sizeof a, 0, &f), 0);
    cr_assert(wait_at_least(&board->started, 1, 30000), "the task did not start");
    pid_t worker = (pid_t)load_int(pid), zygote = find_zygote(NULL, 0);
    cr_assert_gt(zygote, 0);
    cr_assert_eq(kill(zygote, SIGKILL), 0);
    rc = cf_future_result(f, NULL, 0, 30000);
    bool gone = process_gone(worker);
    if (!gone)
        kill(worker, SIGKILL);    /* not ours to leave running */
    cr_assert_eq(rc, CF_ECRASHED, "%s", cf_strerror(rc));
    cr_assert(gone, "the worker %d without parent-death signal outlived its zygote", (int)worker);
    cf_future_free(f);
    uint64_t x = 3, v = 0;
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f), 0);
    cr_assert_eq(cf_future_result(f, &v, sizeof v, 30000), 0);
    cr_assert_eq(v, value_for(x));
    cf_future_free(f);
    cf_executor_free(ex);
    cf_shared_free(pid, sizeof *pid);
}

Test(signals, zygote_killed_worker_without_pdeathsig_fork_pool, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    zygote_killed_orphan(POOL_FORK, false);
}

Test(signals, zygote_killed_worker_without_pdeathsig_exec_pool, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    zygote_killed_orphan(POOL_EXEC, false);
}

Test(signals, zygote_killed_worker_started_without_descriptors, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    zygote_killed_orphan(POOL_FORK, true);
}

/* ---- out of memory ------------------------------------------------------------------ */

static int oom_score_adj(pid_t pid)
{
    char path[64];
    int v = -2000;
    FILE *fp;
    snprintf(path, sizeof path, "/proc/%d/oom_score_adj", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return -2000;
    if (fscanf(fp, "%d", &v) != 1)
        v = -2000;
    fclose(fp);
    return v;
}

/*
 * Under memory pressure the kernel kills a worker, not the caller or the
 * zygote: workers carry the highest oom_score_adj (raising it needs no
 * privilege), and the task it ran fails CF_ECRASHED, as any worker's death.
 */
static void workers_first_oom_victims(enum pool_kind kind)
{
    cf_options o = { .workers = 2, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    pid_t kids[8];

    skip_exec_under_valgrind(kind);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    pid_t zygote = find_zygote(NULL, 0);
    cr_assert_gt(zygote, 0);
    int n = proc_children(zygote, kids, 8, NULL);
    cr_assert_eq(n, 2);
    for (int i = 0; i < n; i++)
        cr_assert_eq(oom_score_adj(kids[i]), 1000, "worker %d: oom_score_adj %d", (int)kids[i],
                     oom_score_adj(kids[i]));
    cr_assert_lt(oom_score_adj(zygote), 1000, "the zygote is as likely a victim as its workers");
    cr_assert_lt(oom_score_adj(getpid()), 1000);
    cf_executor_free(ex);
}

Test(signals, workers_are_first_oom_victims_fork_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    workers_first_oom_victims(POOL_FORK);
}

Test(signals, workers_are_first_oom_victims_exec_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    workers_first_oom_victims(POOL_EXEC);
}

/* ---- a storm of signals while the caller waits ------------------------------------ */

static int alarms;

static void on_alarm(int sig)
{
    (void)sig;
    add_int(&alarms, 1);
}

static void signal_storm(bool process)
{
    enum { N = 2000, M = 20000 };
    struct sigaction sa = { .sa_handler = on_alarm };    /* no SA_RESTART: calls see EINTR */
    struct itimerval every = { { 0, 200 }, { 0, 200 } }, off = { { 0, 0 }, { 0, 0 } };
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    uint64_t *in = malloc(M * sizeof *in), *out = malloc(M * sizeof *out);
    int rc, n = under_valgrind() ? N / 10 : N;

    cr_assert(in != NULL && out != NULL);
    rc = process ? cf_process_pool_new(&ex, &o) : cf_thread_pool_new(&ex, &o);
    cr_assert_eq(rc, 0);
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
    store_int(&alarms, 0);
    cr_assert_eq(setitimer(ITIMER_REAL, &every, NULL), 0);

    for (int i = 0; i < n; i++) {
        uint64_t x = (uint64_t)i, v = 0;
        cf_future *f;
        rc = cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f);
        cr_assert_eq(rc, 0, "submit %d: %s", i, cf_strerror(rc));
        /* Bounded waits that must not end early because of a signal. */
        if (i % 3 == 0)
            cr_assert_eq(cf_future_wait(f, 60000), 0, "wait %d ended early", i);
        if (i % 3 == 1) {
            cr_assert_eq(cf_wait(&f, 1, CF_ALL_COMPLETED, 60000), 0, "cf_wait %d ended early", i);
        }
        rc = cf_future_result(f, &v, sizeof v, i % 2 ? -1 : 60000);
        cr_assert_eq(rc, 0, "result %d: %s", i, cf_strerror(rc));
        cr_assert_eq(v, value_for(x), "result %d is wrong", i);
        cf_future_free(f);
    }
    for (int i = 0; i < M; i++)
        in[i] = (uint64_t)i;
    for (int round = 0; round < (under_valgrind() ? 1 : 5); round++) {
        cf_map_options mo = { .chunksize = (size_t)(1 + round * 50) };
        memset(out, 0, M * sizeof *out);
        rc = cf_map(ex, task_value, in, sizeof *in, out, sizeof *out, M, &mo);
        cr_assert_eq(rc, 0, "map round %d: %s", round, cf_strerror(rc));
        for (int i = 0; i < M; i++)
            cr_assert_eq(out[i], value_for((uint64_t)i), "map round %d, element %d", round, i);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    fprintf(stderr, "signal storm (%s pool): %d SIGALRMs while %d tasks and 5 maps of %d ran, all right\n",
            process ? "process" : "thread", load_int(&alarms), n, M);
    cr_assert_gt(load_int(&alarms), 0, "no signal arrived: the test proved nothing");
    cf_executor_free(ex);
    free(in);
    free(out);
}

Test(signals, signal_storm_while_waiting_thread_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    signal_storm(false);
}

Test(signals, signal_storm_while_waiting_process_pool, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    signal_storm(true);
}

/* ---- a caller that ignores SIGCHLD ------------------------------------------------ */

/*
 * A caller that ignores SIGCHLD (signal(SIGCHLD, SIG_IGN), a common daemon
 * idiom, or SA_NOCLDWAIT) still sees a worker die: the zygote, forked from
 * the caller, would otherwise inherit that disposition and have the kernel
 * reap its workers before it could report them.
 */
static void ignoring_sigchld(enum pool_kind kind)
{
    cf_options o = { .workers = 1, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    cf_future *f;
    uint64_t x = 5, v = 0;
    int rc;

    skip_exec_under_valgrind(kind);
    signal(SIGCHLD, SIG_IGN);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    cr_assert_eq(cf_submit(ex, task_segv, NULL, 0, 0, &f), 0);
    /* A bound, not a timing assertion: a crash is reported in milliseconds. */
    rc = cf_future_result(f, NULL, 0, 30000);
    cr_assert_eq(rc, CF_ECRASHED, "crashed task with SIGCHLD ignored: %s", cf_strerror(rc));
    cf_future_free(f);
    /* And the replacement runs the next task. */
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f), 0);
    rc = cf_future_result(f, &v, sizeof v, 30000);
    cr_assert_eq(rc, 0, "task after the crash: %s", cf_strerror(rc));
    cr_assert_eq(v, value_for(x));
    cf_future_free(f);
    cf_executor_free(ex);
}

Test(signals, caller_ignoring_sigchld_sees_crash_fork, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    ignoring_sigchld(POOL_FORK);
}

Test(signals, caller_ignoring_sigchld_sees_crash_exec, .init = setup, .fini = teardown,
     .timeout = REL_TIMEOUT)
{
    ignoring_sigchld(POOL_EXEC);
}

/* A SIGCHLD handler of the caller's own (not ignoring) must not disturb the pool. */
static int chld_seen;

static void on_chld(int sig)
{
    (void)sig;
    add_int(&chld_seen, 1);
}

Test(signals, caller_sigchld_handler_and_own_children, .init = setup, .fini = teardown, .timeout = REL_TIMEOUT)
{
    struct sigaction sa = { .sa_handler = on_chld, .sa_flags = SA_RESTART };
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *f;
    int rc, st;

    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &sa, NULL), 0);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    /* The caller's own child: its wait must find it, not a pool process. */
    pid_t own = fork();
    cr_assert_geq(own, 0);
    if (own == 0)
        _exit(42);
    cr_assert_eq(waitpid(own, &st, 0), own);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42);
    /* A crash, then work: the pool is not confused by the caller's handler. */
    cr_assert_eq(cf_submit(ex, task_segv, NULL, 0, 0, &f), 0);
    rc = cf_future_result(f, NULL, 0, 30000);
    cr_assert_eq(rc, CF_ECRASHED, "%s", cf_strerror(rc));
    cf_future_free(f);
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t v = 0;
        cr_assert_eq(cf_submit(ex, task_value, &i, sizeof i, sizeof v, &f), 0);
        cr_assert_eq(cf_future_result(f, &v, sizeof v, 30000), 0);
        cr_assert_eq(v, value_for(i));
        cf_future_free(f);
    }
    cf_executor_free(ex);
    cr_assert_gt(load_int(&chld_seen), 0, "the caller's handler never ran for its own child");
    signal(SIGCHLD, SIG_DFL);
}
