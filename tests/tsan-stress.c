/*
 * tsan-stress — several caller threads hammer a thread pool and a process
 * pool (fork, and exec when it can start) at once, while another thread
 * resizes every pool up and down: submit, result, wait,
 * as_completed, completion queues, cancel, done-callbacks (and the wait for
 * them, cf_future_wait_callbacks), map, futures
 * handed from one thread to another, and short-lived pools created, shut
 * down (cf_shutdown or cf_shutdown_now, tasks with time limits of their
 * own) and freed. Every
 * value is checked; the program exits 1 at the first wrong one, 0 when all
 * were right.
 *
 * It is a plain program, not a Criterion suite, because Criterion cannot
 * start under ThreadSanitizer: built with --enable-tsan it is the thread
 * check of the library (a race makes TSan report and exit non-zero). It
 * runs in every build as part of `make check`, and under valgrind.
 *
 * Size: CF_STRESS_ROUNDS rounds per thread (default 200; 4 under valgrind).
 */
#define CF_TEST_PLAIN 1    /* no Criterion here */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>

#define THREADS     4
#define BATCH       48
#define MAP_N       2000

static cf_executor *pools[3];
static enum pool_kind pool_kinds[3];
static int npools;
static int rounds;
static bool on_valgrind;
static int failures;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "tsan-stress: FAIL %s:%d: ", __FILE__, __LINE__);     \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            add_int(&failures, 1);                                                \
            return false;                                                         \
        }                                                                         \
    } while (0)

/* ---- tasks ------------------------------------------------------------------ */

/* Sleeps a little, then answers like task_value: something to cancel while it waits or runs. */
static int task_slow_value(const void *arg, size_t as, void *res, size_t rs)
{
    sleep_ms(2);
    return task_value(arg, as, res, rs);
}

/* Returns its argument as a task code (1..100): for CF_FIRST_EXCEPTION. */
static int task_code(const void *arg, size_t as, void *res, size_t rs)
{
    int c;
    (void)res;
    if (as != sizeof c || rs != 0)
        return CODE_BADSIZE;
    memcpy(&c, arg, sizeof c);
    return c;
}

/* ---- done-callbacks ------------------------------------------------------------ */

struct cbrec {
    int calls;
    int code;
};

static void on_done(cf_future *f, void *ctx)
{
    struct cbrec *r = ctx;
    uint64_t v;
    r->code = cf_future_result(f, &v, sizeof v, 0);
    add_int(&r->calls, 1);
}

/* ---- one thread's work on one pool ---------------------------------------------------- */

static bool batch_as_completed(cf_executor *ex, uint64_t base)
{
    cf_future *fs[BATCH];
    struct cbrec recs[BATCH];
    bool seen[BATCH] = { false };
    memset(recs, 0, sizeof recs);

    for (int i = 0; i < BATCH; i++) {
        uint64_t x = base + (uint64_t)i;
        int rc = cf_submit(ex, task_value, &x, sizeof x, sizeof x, &fs[i]);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
        rc = cf_future_add_done_callback(fs[i], on_done, &recs[i]);
        CHECK(rc == 0, "add_done_callback: %s", cf_strerror(rc));
    }
    for (int k = 0; k < BATCH; k++) {
        int i = cf_as_completed(fs, BATCH, seen, -1);
        CHECK(i >= 0 && i < BATCH, "as_completed returned %d", i);
        uint64_t v = 0;
        int rc = cf_future_result(fs[i], &v, sizeof v, 0);
        CHECK(rc == 0 && v == value_for(base + (uint64_t)i), "task %d: %s, value %s", i,
              cf_strerror(rc), v == value_for(base + (uint64_t)i) ? "right" : "wrong");
    }
    CHECK(cf_as_completed(fs, BATCH, seen, 0) == CF_EINVAL, "as_completed after all returned");
    /* A callback runs after its future is marked done: cf_future_wait_callbacks
     * returns once it has returned, and what it wrote (recs, on this stack,
     * code with a plain store) is then seen here. */
    for (int i = 0; i < BATCH; i++) {
        int rc = cf_future_wait_callbacks(fs[i], 30000);
        CHECK(rc == 0, "callback %d: wait_callbacks: %s", i, cf_strerror(rc));
        CHECK(load_int(&recs[i].calls) == 1 && recs[i].code == 0, "callback %d: %d calls, code %d",
              i, load_int(&recs[i].calls), recs[i].code);
        cf_future_free(fs[i]);
    }
    return true;
}

/* Completion queue: this thread adds while another takes, then a queue is
 * freed with its futures still running (their callbacks find it closed). */
struct taker {
    cf_queue *q;
    int       taken;
    uint64_t  sum;
    int       bad;
};

static void *taker_main(void *arg)
{
    struct taker *t = arg;
    uint64_t start = now_ms();
    while (t->taken < BATCH && now_ms() - start < 60000) {
        cf_future *f = NULL;
        uint64_t v = 0;
        int rc = cf_queue_next(t->q, 20, &f);
        if (rc == CF_EEMPTY || rc == CF_ETIMEDOUT) {
            sched_yield();    /* caught up with the adder (EEMPTY), who adds within microseconds */
            continue;
        }
        if (rc != 0 || cf_future_result(f, &v, sizeof v, 0) != 0) {
            t->bad++;
            return NULL;
        }
        t->sum += v;
        t->taken++;
        cf_future_free(f);
    }
    return NULL;
}

static bool queue_drain(cf_executor *ex, uint64_t base)
{
    struct taker t = { 0 };
    uint64_t want = 0;
    pthread_t th;
    CHECK(cf_queue_new(&t.q) == 0, "cf_queue_new");
    CHECK(pthread_create(&th, NULL, taker_main, &t) == 0, "pthread_create");
    for (int i = 0; i < BATCH; i++) {
        uint64_t x = base + (uint64_t)i;
        cf_future *f = NULL;
        int rc = cf_submit(ex, i % 8 == 0 ? task_slow_value : task_value, &x, sizeof x, sizeof x, &f);
        if (rc == 0 && (rc = cf_queue_add(t.q, f)) != 0)
            fprintf(stderr, "tsan-stress: cf_queue_add: %s\n", cf_strerror(rc));
        cf_future_free(f);
        if (rc != 0)
            break;
        want += value_for(x);
    }
    pthread_join(th, NULL);
    CHECK(t.bad == 0 && t.taken == BATCH && t.sum == want, "queue: %d taken, %d bad, sum %s",
          t.taken, t.bad, t.sum == want ? "right" : "wrong");
    cf_future *f = NULL;
    CHECK(cf_queue_next(t.q, 0, &f) == CF_EEMPTY, "queue not empty after the drain");
    for (int i = 0; i < 4; i++) {
        uint64_t x = base + 100 + (uint64_t)i;
        int rc = cf_submit(ex, task_slow_value, &x, sizeof x, sizeof x, &f);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
        rc = cf_queue_add(t.q, f);
        cf_future_free(f);
        CHECK(rc == 0, "cf_queue_add: %s", cf_strerror(rc));
    }
    cf_queue_free(t.q);
    return true;
}

static bool waits(cf_executor *ex, uint64_t base)
{
    enum { N = 16 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        uint64_t x = base + (uint64_t)i;
        int rc = cf_submit(ex, task_value, &x, sizeof x, sizeof x, &fs[i]);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
    }
    int rc = cf_wait(fs, N, CF_FIRST_COMPLETED, -1);
    CHECK(rc == 0, "wait first completed: %s", cf_strerror(rc));
    bool any = false;
    for (int i = 0; i < N; i++)
        any = any || cf_future_done(fs[i]);
    CHECK(any, "CF_FIRST_COMPLETED returned with no future done");
    rc = cf_wait(fs, N, CF_ALL_COMPLETED, -1);
    CHECK(rc == 0, "wait all: %s", cf_strerror(rc));
    for (int i = 0; i < N; i++) {
        uint64_t v = 0;
        CHECK(cf_future_done(fs[i]) && !cf_future_running(fs[i]), "not done after CF_ALL_COMPLETED");
        CHECK(cf_future_result(fs[i], &v, sizeof v, 0) == 0 && v == value_for(base + (uint64_t)i),
              "wrong result after cf_wait");
        cf_future_free(fs[i]);
    }

    /* CF_FIRST_EXCEPTION: one task fails with its own code. */
    cf_future *gs[4];
    for (int i = 0; i < 4; i++) {
        int c = i == 2 ? 42 : 0;
        rc = cf_submit(ex, task_code, &c, sizeof c, 0, &gs[i]);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
    }
    rc = cf_wait(gs, 4, CF_FIRST_EXCEPTION, -1);
    CHECK(rc == 0, "wait first exception: %s", cf_strerror(rc));
    CHECK(cf_future_result(gs[2], NULL, 0, -1) == 42, "a task's own code was lost");
    for (int i = 0; i < 4; i++) {
        CHECK(cf_future_result(gs[i], NULL, 0, -1) == (i == 2 ? 42 : 0), "task code %d", i);
        cf_future_free(gs[i]);
    }
    return true;
}

/* Cancels slow tasks at once: cancelled (CF_ECANCELED), or too late (then the right value). */
static bool cancels(cf_executor *ex, uint64_t base, int *cancelled)
{
    enum { N = 8 };
    cf_future *fs[N];
    int crc[N];
    for (int i = 0; i < N; i++) {
        uint64_t x = base + (uint64_t)i;
        int rc = cf_submit(ex, task_slow_value, &x, sizeof x, sizeof x, &fs[i]);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
    }
    for (int i = N - 1; i >= 0; i--)
        crc[i] = cf_future_cancel(fs[i]);
    for (int i = 0; i < N; i++) {
        uint64_t v = 0;
        int rc = cf_future_result(fs[i], &v, sizeof v, -1);
        if (crc[i] == 0) {
            CHECK(rc == CF_ECANCELED && cf_future_cancelled(fs[i]), "cancel said 0, result %s",
                  cf_strerror(rc));
            (*cancelled)++;
        } else {
            CHECK(crc[i] == CF_EBUSY, "cancel returned %s", cf_strerror(crc[i]));
            CHECK(rc == 0 && v == value_for(base + (uint64_t)i), "not cancelled, but result %s",
                  cf_strerror(rc));
        }
        cf_future_free(fs[i]);
    }
    return true;
}

static bool map_check(cf_executor *ex, uint64_t base)
{
    static _Thread_local uint64_t in[MAP_N], out[MAP_N];
    static _Thread_local int status[MAP_N];
    for (int i = 0; i < MAP_N; i++) {
        in[i] = base + (uint64_t)i;
        out[i] = 0;
        status[i] = -1;
    }
    cf_map_options mo = { .chunksize = (size_t)(base % 3 == 0 ? 0 : 1 + base % 97), .status = status };
    int rc = cf_map(ex, task_value, in, sizeof in[0], out, sizeof out[0], MAP_N, &mo);
    CHECK(rc == 0, "map: %s", cf_strerror(rc));
    for (int i = 0; i < MAP_N; i++)
        CHECK(status[i] == 0 && out[i] == value_for(base + (uint64_t)i), "map element %d", i);
    return true;
}

/*
 * A submitted map with an element callback, cancelled at once in odd
 * rounds: every element either ran (its output right, reported once, counted
 * in the progress) or ends CF_ECANCELED, unreported.
 */
struct map_seen {
    int calls[MAP_N];
    int total;
};

static void map_on_element(size_t i, int status, void *ctx)
{
    struct map_seen *s = ctx;
    if (i < MAP_N && status == 0)
        add_int(&s->calls[i], 1);
    add_int(&s->total, 1);
}

static bool map_future_check(cf_executor *ex, uint64_t base, bool cancel)
{
    static _Thread_local uint64_t in[MAP_N], out[MAP_N];
    static _Thread_local int status[MAP_N];
    static _Thread_local struct map_seen seen;
    memset(&seen, 0, sizeof seen);
    for (int i = 0; i < MAP_N; i++) {
        in[i] = base + (uint64_t)i;
        out[i] = 0;
        status[i] = -1;
    }
    cf_map_options mo = { .chunksize = (size_t)(1 + base % 13), .status = status,
                          .on_element = map_on_element, .ctx = &seen };
    cf_future *f = NULL;
    int rc = cf_map_submit(ex, task_value, in, sizeof in[0], out, sizeof out[0], MAP_N, &mo, &f);
    CHECK(rc == 0, "map submit: %s", cf_strerror(rc));
    if (cancel) {
        rc = cf_future_cancel(f);
        CHECK(rc == 0 || rc == CF_EBUSY, "map cancel: %s", cf_strerror(rc));
        CHECK(cf_future_done(f), "a map not done after its cancel returned");
    }
    rc = cf_future_result(f, NULL, 0, -1);
    CHECK(rc == 0 || (cancel && rc == CF_ECANCELED), "map future: %s", cf_strerror(rc));
    size_t done = 0, total = 0, ran = 0;
    CHECK(cf_future_progress(f, &done, &total) == 0 && total == MAP_N, "map progress");
    for (int i = 0; i < MAP_N; i++) {
        if (status[i] == 0) {
            ran++;
            CHECK(out[i] == value_for(base + (uint64_t)i) && load_int(&seen.calls[i]) == 1,
                  "map future element %d", i);
        } else {
            CHECK(rc == CF_ECANCELED && status[i] == CF_ECANCELED && load_int(&seen.calls[i]) == 0,
                  "map future element %d: %d", i, status[i]);
        }
    }
    CHECK(ran == done && load_int(&seen.total) == (int)done, "map progress %zu, %zu ran, %d reported",
          done, ran, load_int(&seen.total));
    cf_future_free(f);
    return true;
}

/* ---- futures handed from one thread to another ---------------------------------------- */

#define HANDOFF 64

struct handoff {
    cf_future *fs[HANDOFF];
    int        ready[HANDOFF];
    uint64_t   base;
    int        ok;
};

static void *consumer_main(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < HANDOFF; i++) {
        uint64_t v = 0;
        if (!wait_at_least(&h->ready[i], 1, 60000))
            break;
        cf_future *f = __atomic_load_n(&h->fs[i], __ATOMIC_ACQUIRE);
        if (cf_future_result(f, &v, sizeof v, -1) == 0 && v == value_for(h->base + (uint64_t)i))
            h->ok++;
        cf_future_free(f);
    }
    return NULL;
}

static bool handoff(cf_executor *ex, uint64_t base)
{
    struct handoff h = { .base = base };
    pthread_t th;
    CHECK(pthread_create(&th, NULL, consumer_main, &h) == 0, "pthread_create");
    for (int i = 0; i < HANDOFF; i++) {
        uint64_t x = base + (uint64_t)i;
        cf_future *f = NULL;
        int rc = cf_submit(ex, task_value, &x, sizeof x, sizeof x, &f);
        if (rc != 0) {
            fprintf(stderr, "tsan-stress: submit for hand-off: %s\n", cf_strerror(rc));
            break;
        }
        __atomic_store_n(&h.fs[i], f, __ATOMIC_RELEASE);
        store_int(&h.ready[i], 1);
    }
    pthread_join(th, NULL);
    CHECK(h.ok == HANDOFF, "hand-off: %d of %d futures right in the other thread", h.ok, HANDOFF);
    return true;
}

/* ---- short-lived pools ------------------------------------------------------------------ */

/*
 * A pool created, fed and shut down with work pending: by cf_shutdown
 * (cancelling what did not start), or by cf_shutdown_now (`now`, which on a
 * process pool also stops what runs); on a process pool the odd tasks carry
 * a time limit of their own, as short as the task (cf_submit_with).
 */
static bool short_lived(bool process, bool now, uint64_t base)
{
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *fs[6];
    int rc = process ? cf_process_pool_new(&ex, &o) : cf_thread_pool_new(&ex, &o);
    CHECK(rc == 0, "%s pool: %s", process ? "process" : "thread", cf_strerror(rc));
    for (int i = 0; i < 6; i++) {
        uint64_t x = base + (uint64_t)i;
        cf_submit_options so = {.timeout_ms = process && i % 2 ? 2 : 0};
        rc = cf_submit_with(ex, task_slow_value, &x, sizeof x, sizeof x, &so, &fs[i]);
        CHECK(rc == 0, "submit: %s", cf_strerror(rc));
    }
    /* Shut down from this thread with work pending. */
    CHECK((now ? cf_shutdown_now(ex) : cf_shutdown(ex, false, true)) == 0, "shutdown");
    uint64_t y = 0;
    cf_future *late = (cf_future *)untouched();
    CHECK(cf_submit(ex, task_value, &y, sizeof y, sizeof y, &late) == CF_ESHUTDOWN,
          "submit after shutdown");
    CHECK(late == (cf_future *)untouched(), "a failed submit wrote its out-parameter");
    for (int i = 0; i < 6; i++) {
        uint64_t v = 0;
        rc = cf_future_result(fs[i], &v, sizeof v, -1);
        CHECK(rc == CF_ECANCELED || (rc == CF_ETIMEDOUT && process && i % 2) ||
                  (rc == 0 && v == value_for(base + (uint64_t)i)),
              "task %d after %s: %s", i, now ? "cf_shutdown_now" : "cf_shutdown(cancel_pending)",
              cf_strerror(rc));
    }
    cf_executor_free(ex);
    for (int i = 0; i < 6; i++)
        cf_future_free(fs[i]);
    return true;
}

/* ---- the caller threads ---------------------------------------------------------------------- */

struct caller {
    int       id;
    int       cancelled;
    pthread_t th;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    for (int r = 0; r < rounds && load_int(&failures) == 0; r++) {
        uint64_t base = ((uint64_t)c->id << 40) | ((uint64_t)r << 20);
        for (int p = 0; p < npools; p++) {
            cf_executor *ex = pools[(p + c->id) % npools];
            if (!batch_as_completed(ex, base) || (r % 4 == 0 && !queue_drain(ex, base + 8000)) ||
                !waits(ex, base + 1000) ||
                !cancels(ex, base + 2000, &c->cancelled) || !map_check(ex, base + 3000) ||
                !map_future_check(ex, base + 4000, r % 2 == 1) ||
                !handoff(ex, base + 9000)) {
                fprintf(stderr, "tsan-stress: thread %d, round %d, pool %s failed\n", c->id, r,
                        pool_kind_name(pool_kinds[(p + c->id) % npools]));
                return NULL;
            }
        }
        /* A process pool created while the other threads allocate: not in an
         * ASan build, whose allocator is not fork-safe, nor under valgrind,
         * whose leak check in its workers would see other threads' blocks
         * as lost (see tests/helpers.h). */
        bool process = r % 8 == c->id % 8 && !UNDER_ASAN && !on_valgrind;
        if (r % 4 == c->id % 4 && !short_lived(process, (r / 8) % 2 == 1, base + 5000))
            return NULL;
    }
    return NULL;
}

/* Resizes every shared pool up and down while the callers hammer them. */
static int resizer_stop;

static void *resizer_main(void *arg)
{
    static const unsigned sizes[] = {1, 4, 2, 3};
    int *resizes = arg;
    for (unsigned i = 0; !load_int(&resizer_stop); i++) {
        for (int p = 0; p < npools; p++) {
            int rc = cf_executor_resize(pools[p], sizes[i % 4]);
            if (rc != 0) {
                fprintf(stderr, "tsan-stress: resize of the %s pool to %u: %s\n",
                        pool_kind_name(pool_kinds[p]), sizes[i % 4], cf_strerror(rc));
                add_int(&failures, 1);
            }
        }
        add_int(resizes, 1);
        sleep_ms(100);    /* each shrink and growth of a process pool ends and starts processes */
    }
    return NULL;
}

int main(void)
{
    cf_options o = { .workers = 3 };
    int rc;

    on_valgrind = under_valgrind();
    rounds = (int)env_long("CF_STRESS_ROUNDS", on_valgrind ? 4 : 200);
    /* Every kind of pool; an exec pool only where it can start (not under valgrind). */
    for (enum pool_kind kind = POOL_THREAD; kind <= POOL_EXEC; kind++) {
        if (kind == POOL_EXEC && on_valgrind)
            continue;
        rc = pool_kind_new(kind, &pools[npools], &o);
        if (rc == 0) {
            pool_kinds[npools++] = kind;
        } else if (kind == POOL_EXEC) {
            fprintf(stderr, "tsan-stress: exec pool did not start here (%s): running without it\n",
                    cf_strerror(rc));
        } else {
            fprintf(stderr, "tsan-stress: %s pool: %s\n", pool_kind_name(kind), cf_strerror(rc));
            return 1;
        }
    }

    uint64_t t0 = now_ms();
    struct caller callers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        callers[t] = (struct caller){ .id = t };
        if (pthread_create(&callers[t].th, NULL, caller_main, &callers[t]) != 0) {
            fprintf(stderr, "tsan-stress: pthread_create failed\n");
            return 1;
        }
    }
    int resizes = 0;
    pthread_t resizer;
    if (pthread_create(&resizer, NULL, resizer_main, &resizes) != 0) {
        fprintf(stderr, "tsan-stress: pthread_create failed\n");
        return 1;
    }
    int cancelled = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(callers[t].th, NULL);
        cancelled += callers[t].cancelled;
    }
    store_int(&resizer_stop, 1);
    pthread_join(resizer, NULL);
    /* Shut the shared pools down while nothing else runs, then free them,
     * oldest first (which hung before commit 41947f9). */
    for (int p = 0; p < npools; p++) {
        if (cf_shutdown(pools[p], true, false) != 0) {
            fprintf(stderr, "tsan-stress: shutdown of the %s pool failed\n", pool_kind_name(pool_kinds[p]));
            add_int(&failures, 1);
        }
        cf_executor_free(pools[p]);
    }
    printf("tsan-stress: %d threads x %d rounds on %d pools (%s), %d resizes of each: %d cancelled, "
           "%d failures, %llu ms\n",
           THREADS, rounds, npools, npools > 2 ? "thread, fork and exec" : "thread and fork",
           load_int(&resizes), cancelled, load_int(&failures), (unsigned long long)(now_ms() - t0));
    return load_int(&failures) == 0 ? 0 : 1;
}
