/*
 * Chaos: a long stream of tasks while a killer thread sends SIGKILL to
 * random workers every few milliseconds, some tasks crash by themselves
 * (raise(SIGSEGV)), some overrun task_timeout_ms, and a few are cancelled.
 *
 * The property: every future ends exactly once (a done-callback counts its
 * calls), with an outcome that fits its task (success with the right value,
 * CF_ECRASHED with a signal that fits, CF_ETIMEDOUT after at least the
 * timeout, CF_ECANCELED exactly when cancel said 0), none is lost, nothing
 * hangs, the pool still works afterwards, and once freed no descriptor,
 * thread, child process or zombie is left.
 *
 * Sizes: CF_SOAK_TASKS tasks (default 3000, a few seconds; `make soak` runs
 * 100000), fewer under valgrind; CF_SOAK_SECONDS, when set, stops each
 * stream's submitting after its share of that time (60 % fork, 20 % exec).
 * Each test prints its counts on stderr.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <pthread.h>

#define NWORKERS        3
/* task_timeout_ms of the chaos pools, and how long an overrunning task
 * sleeps. Under valgrind a crashing worker takes seconds to die (valgrind
 * reports and checks for leaks first), so both are longer there. */
#define TIMEOUT_MS      (under_valgrind() ? 15000 : 1000)
#define OVERRUN_MS      (under_valgrind() ? 20000 : 5000)
#define CODE_OVERRAN    77      /* an overrunning task that was not stopped */
#define CODE_SURVIVED   78      /* a crashing task that did not die */

enum kind { K_NORMAL, K_CRASH, K_OVERRUN };

static void setup(void)
{
    no_core_dumps();
}

/* ---- tasks ------------------------------------------------------------------ */

#define SPARE_SLOTS 64

/*
 * Shared by the test, its killer and the workers (cf_shared_alloc'd before
 * the pool, so that exec workers see it too, at the same address).
 */
struct board {
    int spare[SPARE_SLOTS];    /* pids the killer leaves alone */
    int wpid[NWORKERS];        /* by worker id: the pid that last ran a task there */
};

struct targ {
    uint64_t      i;
    uint32_t      kind;
    uint32_t      spin_us;     /* busy work, so that kills land mid-task */
    struct board *b;
};

/* Busy for us microseconds of CLOCK_MONOTONIC (the same on every build). */
static void spin_for(uint32_t us)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < (long)us);
}

static void show_self(struct board *b)
{
    int w = cf_worker_id();
    if (w >= 0 && w < NWORKERS)
        store_int(&b->wpid[w], (int)getpid());
}

static int task_chaos(const void *arg, size_t as, void *res, size_t rs)
{
    struct targ a;
    if (as != sizeof a || rs != sizeof(uint64_t))
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    if (a.kind != K_NORMAL)
        /* Spared by the killer: the crash, or task_timeout_ms, is what stops it.
         * Before show_self, so that the killer never finds the pid unspared. */
        store_int(&a.b->spare[a.i % SPARE_SLOTS], (int)getpid());
    show_self(a.b);
    if (a.kind == K_CRASH) {
        signal(SIGSEGV, SIG_DFL);    /* a sanitizer's handler would turn it into an exit */
        raise(SIGSEGV);
        return CODE_SURVIVED;
    }
    if (a.kind == K_OVERRUN) {
        sleep_ms(OVERRUN_MS);
        return CODE_OVERRAN;
    }
    spin_for(a.spin_us);
    uint64_t v = value_for(a.i);
    memcpy(res, &v, sizeof v);
    return 0;
}

/* ---- the killer ----------------------------------------------------------------- */

struct killer {
    pid_t         zygote;
    struct board *b;
    int           min_ms, max_ms;    /* pause between two kills */
    int           stop;
    int           kills;             /* SIGKILLs delivered (kill() returned 0) */
    pthread_t     th;
};

/*
 * SIGKILLs a random worker every few milliseconds: one of the zygote's
 * children found in /proc (busy, idle or still starting), or, every other
 * time (and always under valgrind, where a walk of /proc is slow), the one
 * that last ran a task for a random worker id.
 */
static void *killer_main(void *arg)
{
    struct killer *k = arg;
    uint64_t seed = (uint64_t)getpid() * 2654435761u + now_ms();
    bool scan_ok = !under_valgrind();
    for (unsigned round = 0; !load_int(&k->stop); round++) {
        int span = k->max_ms - k->min_ms + 1;
        pid_t victim = 0;
        sleep_ms(k->min_ms + (int)(rand_next(&seed) % (uint64_t)span));
        if (scan_ok && round % 2 == 0) {
            pid_t kids[64];
            int n = proc_children(k->zygote, kids, 64, NULL);
            if (n > 64)
                n = 64;
            if (n > 0)
                victim = kids[rand_next(&seed) % (uint64_t)n];
        } else {
            victim = (pid_t)load_int(&k->b->wpid[rand_next(&seed) % NWORKERS]);
        }
        if (victim <= 0)
            continue;
        bool spared = false;
        for (int j = 0; j < SPARE_SLOTS; j++)
            spared = spared || load_int(&k->b->spare[j]) == (int)victim;
        if (spared)
            continue;
        /* Still the zygote's, and not already dead. */
        if (kill_child(victim, k->zygote, SIGKILL) == 0)
            add_int(&k->kills, 1);
    }
    return NULL;
}

static void killer_start(struct killer *k, pid_t zygote, struct board *b, int min_ms, int max_ms)
{
    *k = (struct killer){ .zygote = zygote, .b = b, .min_ms = min_ms, .max_ms = max_ms };
    cr_assert_eq(pthread_create(&k->th, NULL, killer_main, k), 0);
}

static void killer_stop(struct killer *k)
{
    store_int(&k->stop, 1);
    pthread_join(k->th, NULL);
}

/* ---- bookkeeping ------------------------------------------------------------------ */

struct rec {
    int      calls;        /* done-callback calls */
    int      cb_code;      /* cf_future_result as the callback saw it */
    uint64_t cb_value;
    int      cancel_rc;    /* 1: not cancelled; else what cf_future_cancel returned */
    uint32_t kind;
};

static void on_done(cf_future *f, void *ctx)
{
    struct rec *r = ctx;
    uint64_t v = 0;
    r->cb_code = cf_future_result(f, &v, sizeof v, 0);
    r->cb_value = v;
    add_int(&r->calls, 1);
}

struct tally {
    long tasks, ok, crashed, self_crashed, killed, timed_out, cancelled;
    long lost, hung, wrong, twice;
};

/*
 * Judges one future, after the pool is freed (so no callback can still
 * come). Returns a description of what is wrong with it, or NULL.
 */
static const char *judge(cf_future *f, const struct rec *r, uint64_t i, struct tally *t)
{
    uint64_t v = 0;
    cf_task_info info;
    int calls = load_int(&r->calls);
    int code = cf_future_result(f, &v, sizeof v, 0);
    int sig = cf_future_signal(f);

    if (!cf_future_done(f)) {
        t->hung++;
        return "not done";
    }
    if (calls == 0) {
        t->lost++;
        return "its done-callback never ran";
    }
    if (calls > 1) {
        t->twice++;
        return "its done-callback ran more than once";
    }
    if (r->cb_code != code || (code == 0 && r->cb_value != v))
        return "the callback saw another outcome than the final one";
    if (r->cancel_rc == 0 && code != CF_ECANCELED)
        return "cf_future_cancel said 0 but the future did not end CF_ECANCELED";
    if (cf_future_info(f, &info) != 0)
        return "cf_future_info failed";

    switch (code) {
    case 0:
        if (r->kind != K_NORMAL)
            return "a crashing or overrunning task succeeded";
        if (v != value_for(i))
            return "wrong result";
        t->ok++;
        return NULL;
    case CF_ECRASHED:
        if (sig == SIGSEGV && r->kind != K_CRASH)
            return "SIGSEGV reported for a task that does not crash";
        if (sig != SIGSEGV && sig != SIGKILL)
            return "CF_ECRASHED with a signal neither SIGSEGV nor SIGKILL";
        t->crashed++;
        if (sig == SIGSEGV)
            t->self_crashed++;
        else
            t->killed++;
        return NULL;
    case CF_ETIMEDOUT:
        /* Not a timing assertion: a task killed by task_timeout_ms has run that long. */
        if (info.start_ns == 0 || info.end_ns < info.start_ns ||
            info.end_ns - info.start_ns < (uint64_t)TIMEOUT_MS * 1000000u)
            return "CF_ETIMEDOUT for a task that ran less than task_timeout_ms";
        t->timed_out++;
        return NULL;
    case CF_ECANCELED:
        if (r->cancel_rc != 0)
            return "CF_ECANCELED for a task nobody cancelled";
        t->cancelled++;
        return NULL;
    default:
        t->wrong++;
        return "an outcome outside {0, CF_ECRASHED, CF_ETIMEDOUT, CF_ECANCELED}";
    }
}

static long soak_tasks(long dflt)
{
    long n = env_long("CF_SOAK_TASKS", dflt);
    if (under_valgrind() && getenv("CF_SOAK_TASKS") == NULL)
        n = 200;
    return n;
}

/*
 * CF_SOAK_SECONDS (0: none) bounds how long a stream keeps submitting, so
 * that a soak of "as many tasks as fit" in a time budget stops early on a
 * slow machine; the counts printed say how many ran. share is the part of it
 * this stream may take, in percent.
 */
static uint64_t soak_deadline_ms(uint64_t t0, long share)
{
    long s = env_long("CF_SOAK_SECONDS", 0);
    return s > 0 ? t0 + (uint64_t)s * 10u * (uint64_t)share : UINT64_MAX;
}

/* Runs 200 plain tasks; all must succeed with the right value. */
static void assert_pool_works(cf_executor *ex)
{
    enum { N = 200 };
    cf_future *fs[N];
    for (uint64_t i = 0; i < N; i++) {
        int rc = cf_submit(ex, task_value, &i, sizeof i, sizeof(uint64_t), &fs[i]);
        cr_assert_eq(rc, 0, "the pool refused work after the chaos: %s", cf_strerror(rc));
    }
    for (uint64_t i = 0; i < N; i++) {
        uint64_t v = 0;
        int rc = cf_future_result(fs[i], &v, sizeof v, -1);
        cr_assert_eq(rc, 0, "task %d after the chaos: %s", (int)i, cf_strerror(rc));
        cr_assert_eq(v, value_for(i), "task %d after the chaos: wrong value", (int)i);
        cf_future_free(fs[i]);
    }
}

/*
 * The stream: n tasks, one in crash_every crashes, one in overrun_every
 * overruns, one in cancel_every is cancelled right after submit; the killer
 * strikes every kill_min..kill_max ms.
 */
static void chaos_stream(enum pool_kind kind, long n, long share, int kill_min, int kill_max)
{
    const long crash_every = 97, overrun_every = 1499, cancel_every = 211;
    struct census before;
    struct killer k;
    struct tally t = { .tasks = n };
    bool cut = false;    /* stopped by CF_SOAK_SECONDS before n tasks */
    cf_options opts = { .workers = NWORKERS, .start = pool_kind(kind)->start, .task_timeout_ms = TIMEOUT_MS };
    cf_executor *ex = NULL;
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    struct rec *recs = calloc((size_t)n, sizeof *recs);
    pid_t old_kids[64];
    int nold = proc_children(getpid(), old_kids, 64, NULL);
    struct board *b = cf_shared_alloc(sizeof *b);    /* before the pool */
    char msg[256];
    int rc;

    cr_assert(fs != NULL && recs != NULL && b != NULL);
    census_take(&before);
    rc = cf_process_pool_new(&ex, &opts);
    cr_assert_eq(rc, 0, "cf_process_pool_new: %s", cf_strerror(rc));
    pid_t zygote = find_zygote(old_kids, nold);
    cr_assert_gt(zygote, 0, "no zygote found among the children");
    killer_start(&k, zygote, b, kill_min, kill_max);

    uint64_t t0 = now_ms(), stop_ms = soak_deadline_ms(t0, share);
    for (long i = 0; i < n; i++) {
        if (i > 0 && i % 256 == 0 && now_ms() >= stop_ms) {
            n = t.tasks = i;    /* the time budget is spent: this many ran */
            cut = true;
            break;
        }
        struct targ a = {
            .i = (uint64_t)i, .kind = K_NORMAL, .spin_us = 200 + (uint32_t)(i % 7) * 200, .b = b,
        };
        if (i % crash_every == crash_every - 1)
            a.kind = K_CRASH;
        else if (i % overrun_every == overrun_every / 2)
            a.kind = K_OVERRUN;
        recs[i].kind = a.kind;
        recs[i].cancel_rc = 1;
        rc = cf_submit(ex, task_chaos, &a, sizeof a, sizeof(uint64_t), &fs[i]);
        cr_assert_eq(rc, 0, "submit %ld under chaos: %s", i, cf_strerror(rc));
        rc = cf_future_add_done_callback(fs[i], on_done, &recs[i]);
        cr_assert_eq(rc, 0, "add_done_callback %ld: %s", i, cf_strerror(rc));
        if (i % cancel_every == cancel_every - 2)
            recs[i].cancel_rc = cf_future_cancel(fs[i]);
    }
    /*
     * A bound on the whole stream, well above what it needs: a hang is
     * counted, not waited out. On a loaded machine (a sanitizer build beside
     * other builds) an exec worker can take longer to start than the killer
     * takes to strike again, and the stream all but stops with nothing wrong:
     * what is not done at the bound must then end once the killer stops,
     * within the same bound again, or it is hung.
     */
    int bound_ms = 120000 + (int)(n / 10);
    long late = 0;
    rc = cf_wait(fs, (size_t)n, CF_ALL_COMPLETED, bound_ms);
    killer_stop(&k);
    if (rc != 0) {
        for (long i = 0; i < n; i++)
            late += !cf_future_done(fs[i]);
        rc = cf_wait(fs, (size_t)n, CF_ALL_COMPLETED, bound_ms);
    }
    uint64_t elapsed = now_ms() - t0;
    if (rc != 0) {
        for (long i = 0; i < n; i++)
            t.hung += !cf_future_done(fs[i]);
        fprintf(stderr, "chaos: tasks %ld, kills sent %d, hung %ld after %d ms with the killer and %d "
                "without\n", n, load_int(&k.kills), t.hung, bound_ms, bound_ms);
        cr_assert_fail("%ld of %ld futures were not done %d ms after the killer stopped",
                       t.hung, n, bound_ms);
    }
    assert_pool_works(ex);
    cf_executor_free(ex);    /* joins the manager: no callback runs after this */

    const char *first_bad = NULL;
    long first_index = -1;
    for (long i = 0; i < n; i++) {
        const char *bad = judge(fs[i], &recs[i], (uint64_t)i, &t);
        if (bad != NULL && first_bad == NULL) {
            first_bad = bad;
            first_index = i;
        }
    }
    bool clean = census_same(&before, msg, sizeof msg);
    struct census after;
    census_take(&after);
    fprintf(stderr,
            "chaos %s: tasks %ld, kills sent %d, succeeded %ld, crashed %ld (self %ld, killed %ld), "
            "timed out %ld, cancelled %ld, lost %ld, hung %ld, wrong %ld, callback twice %ld, "
            "leaked fds %d, leaked processes %d, zombies %d, %llu ms (%ld ended after the killer stopped)%s\n",
            pool_kind_name(kind), t.tasks, load_int(&k.kills), t.ok,
            t.crashed, t.self_crashed, t.killed, t.timed_out, t.cancelled, t.lost, t.hung,
            t.wrong, t.twice, after.fds - before.fds, after.children - before.children,
            after.zombies, (unsigned long long)elapsed, late, cut ? " (cut by CF_SOAK_SECONDS)" : "");

    cr_assert_null(first_bad, "task %ld (kind %u): %s", first_index,
                   first_index >= 0 ? recs[first_index].kind : 0, first_bad);
    cr_assert_eq(t.ok + t.crashed + t.timed_out + t.cancelled, n);
    cr_assert(clean, "the freed pool left something behind: %s", msg);
    /* Every kind of ending must have happened, or the test proved little. */
    cr_assert_gt(t.self_crashed, 0, "no task crashed by itself");
    cr_assert_gt(load_int(&k.kills), 0, "the killer never struck");
    if (n >= overrun_every)
        cr_assert_gt(t.timed_out, 0, "no task was stopped by task_timeout_ms");

    for (long i = 0; i < n; i++)
        cf_future_free(fs[i]);
    free(fs);
    free(recs);
    cf_shared_free(b, sizeof *b);
}

Test(chaos, stream_fork_workers_killed_at_random, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    int slow = under_valgrind() ? 10 : 1;
    chaos_stream(POOL_FORK, soak_tasks(3000), 60, 2 * slow, 6 * slow);
}

Test(chaos, stream_exec_workers_killed_at_random, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    skip_exec_under_valgrind(POOL_EXEC);
    /* An exec worker takes longer to start: fewer tasks, fewer kills. */
    chaos_stream(POOL_EXEC, soak_tasks(3000) / 3, 20, 10, 30);
}

/* ---- cf_map under chaos ----------------------------------------------------------------- */

struct elem {
    uint64_t      i;
    struct board *b;
};

static int task_elem(const void *arg, size_t as, void *res, size_t rs)
{
    struct elem e;
    uint64_t v;
    volatile uint64_t x = 0;
    if (as != sizeof e || rs != sizeof v)
        return CODE_BADSIZE;
    memcpy(&e, arg, sizeof e);
    show_self(e.b);
    for (int k = 0; k < 300; k++)
        x += value_for((uint64_t)k);
    (void)x;
    v = value_for(e.i);
    memcpy(res, &v, sizeof v);
    return 0;
}

/*
 * Maps while workers are killed: every element is 0 with the right output,
 * or CF_ECRASHED (its chunk's worker died before it finished); cf_map returns
 * the first failing element's code, and the outputs of the elements that
 * finished in a killed chunk are kept. Stops once a kill has cut a map
 * short (after 3 rounds at least), else runs max_rounds, and more while no
 * kill has hit a map yet, for up to MAP_HIT_MS in all: kills land between
 * chunks, or on workers still starting, as often as in them when chunks
 * are short (an ASan build's exec workers once took 20 rounds unhit).
 */
#define MAP_HIT_MS 20000
struct map_tally {
    int  rounds;
    long ok, crashed, partial_chunks;
};

static void chaos_map_rounds(enum pool_kind kind, cf_fn *fn, size_t n, size_t chunksize, int max_rounds,
                             int kill_min, int kill_max, struct map_tally *t)
{
    struct census before;
    struct killer k;
    cf_options opts = { .workers = NWORKERS, .start = pool_kind(kind)->start };
    cf_executor *ex = NULL;
    struct elem *in = malloc(n * sizeof *in);
    uint64_t *out = calloc(n, sizeof *out);
    int *status = malloc(n * sizeof *status);
    struct board *b = cf_shared_alloc(sizeof *b);    /* before the pool */
    pid_t old_kids[64];
    int nold = proc_children(getpid(), old_kids, 64, NULL), rc;
    char msg[256];

    cr_assert(in != NULL && out != NULL && status != NULL && b != NULL);
    for (size_t i = 0; i < n; i++)
        in[i] = (struct elem){ i, b };
    census_take(&before);
    rc = cf_process_pool_new(&ex, &opts);
    cr_assert_eq(rc, 0, "cf_process_pool_new: %s", cf_strerror(rc));
    pid_t zygote = find_zygote(old_kids, nold);
    cr_assert_gt(zygote, 0);
    killer_start(&k, zygote, b, kill_min, kill_max);

    *t = (struct map_tally){ 0 };
    uint64_t start = now_ms();
    for (t->rounds = 1;; t->rounds++) {
        cf_map_options mo = { .chunksize = chunksize, .status = status };
        memset(out, 0, n * sizeof *out);
        for (size_t i = 0; i < n; i++)
            status[i] = 12345;
        rc = cf_map(ex, fn, in, sizeof *in, out, sizeof *out, n, &mo);
        int first = 0;
        for (size_t i = 0; i < n; i++) {
            if (status[i] == 0) {
                cr_assert_eq(out[i], value_for(i), "round %d: element %zu has status 0 and a wrong output",
                             t->rounds, i);
                t->ok++;
            } else {
                cr_assert_eq(status[i], CF_ECRASHED, "round %d: element %zu has status %d",
                             t->rounds, i, status[i]);
                t->crashed++;
            }
            if (first == 0)
                first = status[i];
        }
        cr_assert_eq(rc, first, "round %d: cf_map returned %d (%s), its first failing element %d%s",
                         t->rounds, rc, cf_strerror(rc), first,
                         first == 0 ? ": every element succeeded" : "");
        /* A chunk that failed after some of its elements had finished kept them. */
        for (size_t c = 0; chunksize > 1 && c + chunksize <= n; c += chunksize)
            if (status[c] == 0 && status[c + chunksize - 1] == CF_ECRASHED)
                t->partial_chunks++;
        if (rc != 0 && t->rounds >= 3)
            break;
        if (t->rounds >= max_rounds && (t->crashed > 0 || now_ms() - start >= MAP_HIT_MS))
            break;
    }
    killer_stop(&k);
    assert_pool_works(ex);
    cf_executor_free(ex);
    bool clean = census_same(&before, msg, sizeof msg);
    fprintf(stderr, "chaos map %s: %d maps of %zu elements (chunks of %zu), kills sent %d, elements ok %ld, "
            "crashed %ld, chunks cut short %ld, lost 0, hung 0\n",
            pool_kind_name(kind), t->rounds, n, chunksize, load_int(&k.kills), t->ok,
            t->crashed, t->partial_chunks);
    cr_assert(clean, "the freed pool left something behind: %s", msg);
    free(in);
    free(out);
    free(status);
    cf_shared_free(b, sizeof *b);
}

static void chaos_map(enum pool_kind kind, size_t n, size_t chunksize)
{
    struct map_tally t;
    bool vg = under_valgrind();
    chaos_map_rounds(kind, task_elem, n, chunksize, 20, vg ? 20 : 2, vg ? 60 : 6, &t);
    cr_assert_gt(t.crashed, 0, "no kill hit a map in %d rounds (%d s)", t.rounds, MAP_HIT_MS / 1000);
}

Test(chaos, map_fork_workers_killed_at_random, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    chaos_map(POOL_FORK, under_valgrind() ? 2000 : 100000, 64);
}

Test(chaos, map_exec_workers_killed_at_random, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    skip_exec_under_valgrind(POOL_EXEC);
    chaos_map(POOL_EXEC, 50000, 64);
}

