/*
 * The idle protocol of the process pool's workers (cf__idle_* in
 * src/ring.h), driven step by step in one thread: a white-box test,
 * built with src/sync.c and the private header, that plays a worker and its
 * wakers in a chosen interleaving on a header in ordinary memory.
 *
 * The race it pins down: a worker looks for work and for the exit flag,
 * finds neither, and goes to sleep; if the pool's close (or a publish) lands
 * between that look and the sleep, the worker must not sleep through it.
 * When it did, every pool free hit by the race waited for the worker's
 * periodic wake-up (500 ms). Here the worker's sleep is given a deadline:
 * woken by the protocol, cf__idle_sleep returns 0; asleep through the close,
 * it returns ETIMEDOUT. The test asserts on that return code, not on time.
 */
#include "../src/ring.h"

#include <criterion/criterion.h>
#include "timescale.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLEEP_LIMIT_NS 200000000u   /* how long a worker that missed its wake-up sleeps here */

/* size zeroed bytes on a cache line, as the region's header and slots are
 * (size is a multiple of the line: both types are aligned to it). */
static void *zeroed(size_t size)
{
    void *p = aligned_alloc(CF__CACHELINE, size);
    cr_assert_not_null(p);
    memset(p, 0, size);
    return p;
}

static cf__shm_hdr *hdr_new(void)
{
    return zeroed(sizeof(cf__shm_hdr));
}

Test(idle, close_between_look_and_sleep_is_not_missed, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();

    /* Worker 0 runs out of work: it announces its sleep and looks. */
    uint32_t snapshot = cf__idle_doze(h, 0);
    cr_assert(!cf__idle_work_or_exit(h), "an empty ring with no exit has work");

    /* The pool closes right then, before the worker is asleep. */
    cf__idle_close(h);

    /* The worker sleeps with what it saw before the close: it must not stay. */
    int rc = cf__idle_sleep(h, snapshot, cf__now_ns() + SLEEP_LIMIT_NS);
    cr_assert_eq(rc, 0, "a worker that looked just before the pool's close slept through it");
    cr_assert(cf__idle_work_or_exit(h), "after the close the worker sees no exit");
    cf__idle_wake_done(h, 0);
    free(h);
}

Test(idle, publish_between_look_and_sleep_is_not_missed, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();

    uint32_t snapshot = cf__idle_doze(h, 3);
    cr_assert(!cf__idle_work_or_exit(h));
    cr_assert_eq(atomic_load(&h->sleeping[0]), (uint64_t)1 << 3, "the sleeping bit is not set");

    /* A publish: the tail first, then (a sleeper, no spinner) the ring. */
    atomic_store(&h->tail, 1);
    cr_assert_neq(atomic_load(&h->sleeping[0]), 0);
    cf__idle_ring(h, 1);

    int rc = cf__idle_sleep(h, snapshot, cf__now_ns() + SLEEP_LIMIT_NS);
    cr_assert_eq(rc, 0, "a worker that looked just before a publish slept through it");
    cr_assert(cf__idle_work_or_exit(h));
    cf__idle_wake_done(h, 3);
    cr_assert_eq(atomic_load(&h->sleeping[0]), 0);
    free(h);
}

/*
 * A publisher rings only for more tasks in flight than awake workers (live,
 * not sleeping) can take: with one worker awake and one asleep, a round trip
 * of one task at a time never rings, nor reads the words that takes write.
 */
Test(idle, a_publish_rings_only_for_more_tasks_than_awake_workers, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();
    unsigned sleepers = 99;

    atomic_fetch_or(&h->live[0], (uint64_t)1 << 0);     /* workers 0 and 1 start */
    atomic_fetch_or(&h->live[0], (uint64_t)1 << 1);
    cr_assert(!cf__idle_ring_wanted(h, 1, 5, &sleepers), "rang with nobody asleep");
    cr_assert_eq(sleepers, 0);

    (void)cf__idle_doze(h, 1);                          /* worker 1 sleeps */
    cr_assert(!cf__idle_ring_wanted(h, 1, 1, &sleepers),
              "rang for one task with a worker awake to take it");
    cr_assert_eq(sleepers, 1);
    cr_assert(cf__idle_ring_wanted(h, 1, 2, &sleepers), "two tasks, one worker awake: no ring");

    /* Worker 0 leaves the pool (or dies): nobody is awake for one task. */
    atomic_fetch_and(&h->live[0], ~((uint64_t)1 << 0));
    cr_assert(cf__idle_ring_wanted(h, 1, 1, &sleepers), "no worker awake and no ring");

    cf__idle_wake_done(h, 1);
    cr_assert(!cf__idle_ring_wanted(h, 1, 1, &sleepers), "rang with nobody asleep");

    /* Ids past the first word count too. */
    (void)cf__idle_doze(h, 70);
    atomic_fetch_or(&h->live[1], (uint64_t)1 << (70 - 64));
    cr_assert(cf__idle_ring_wanted(h, 2, 2, &sleepers), "two tasks, one worker awake: no ring");
    cr_assert_eq(sleepers, 2 - 1);
    free(h);
}

/* The other side of the pattern: with nothing rung, a worker does sleep (so
 * the two tests above show the ring, not a sleep that never happens). */
/*
 * A sleeper's bit stays set until it runs again, so every publish meanwhile
 * sees it. One ring per sleeper is enough (the woken worker passes a
 * wake-up on if more work waits): a futex call at every publish would wake
 * nobody. The bell counts the rings. Rings not answered for
 * CF__RING_AGAIN_NS may be repeated, one per sleeper again, which a loaded
 * machine can make happen between two publishes here (the test thread off
 * its core that long): rings come in bursts of at most one per sleeper,
 * each burst CF__RING_AGAIN_NS after the last ring of the one before.
 */
/* The rings of one waker as the test saw them: how many, in this burst, the last when. */
typedef struct ring_log {
    unsigned rings, burst;
    uint64_t last_ns;
} ring_log;

/*
 * cf__idle_ring_for(h, r, sleepers), and whether it rang. A ring that
 * comes CF__RING_AGAIN_NS after the one before begins a burst (the first
 * ring does too); a burst holds at most `due` rings.
 */
static bool ring_as_due(cf__shm_hdr *h, cf__ringer *r, unsigned sleepers, ring_log *log, unsigned due)
{
    uint32_t bell = atomic_load(&h->bell);
    cf__idle_ring_for(h, r, sleepers);
    if (atomic_load(&h->bell) == bell)
        return false;
    bool again = log->rings == 0 || r->at_ns - log->last_ns >= CF__RING_AGAIN_NS;
    log->burst = again ? 1 : log->burst + 1;
    log->rings++;
    cr_assert(log->burst <= due, "ring %u, with %u asleep, the %u-th of its burst, came %llu ns after the one before",
              log->rings, sleepers, log->burst, (unsigned long long)(r->at_ns - log->last_ns));
    log->last_ns = r->at_ns;
    return true;
}

Test(idle, a_sleeper_is_rung_once_not_at_every_publish, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();
    cf__ringer r = {0};

    uint32_t snapshot = cf__idle_doze(h, 0);
    ring_log one = {0};
    for (uint64_t t = 1; t <= 100; t++) {
        atomic_store(&h->tail, t);
        ring_as_due(h, &r, 1, &one, 1);
    }
    uint32_t rung = atomic_load(&h->bell);
    cr_assert_geq(rung, 1, "100 publishes rang no sleeper");
    cr_assert_eq(cf__idle_sleep(h, snapshot, cf__now_ns() + SLEEP_LIMIT_NS), 0, "the one ring did not reach it");
    cf__idle_wake_done(h, 0);

    /* It took the work, ran out again and dozes: the next publish rings again. */
    snapshot = cf__idle_doze(h, 0);
    atomic_store(&h->tail, 101);
    cf__idle_ring_for(h, &r, 1);
    cr_assert_eq(atomic_load(&h->bell), rung + 1, "a worker that went to sleep after the ring was not rung");
    cr_assert_eq(cf__idle_sleep(h, snapshot, cf__now_ns() + SLEEP_LIMIT_NS), 0);
    cf__idle_wake_done(h, 0);

    /* Two sleepers: one ring each, then none (a ring past those two only
     * CF__RING_AGAIN_NS after the one before it, as above). */
    cf__idle_doze(h, 1);
    cf__idle_doze(h, 2);
    ring_log two = {0};
    for (int i = 0; i < 10; i++)
        ring_as_due(h, &r, 2, &two, 2);
    cr_assert_geq(two.rings, 2, "two sleepers were rung %u times", two.rings);

    /* One of them is up (its bit cleared, not yet running): the other is still asleep and
     * rung already (again only CF__RING_AGAIN_NS after the last ring). Where a late call
     * above had the rings repeated, the count started again and the wake-up now looks like
     * the answer to the one ring counted: a ring then is the safe side, and not asserted. */
    cf__idle_wake_done(h, 1);
    uint32_t bell = atomic_load(&h->bell);
    cf__idle_ring_for(h, &r, 1);
    cr_assert(two.rings > 2 || atomic_load(&h->bell) == bell || r.at_ns - two.last_ns >= CF__RING_AGAIN_NS,
              "worker 2, rung already, was rung again %llu ns after the last ring",
              (unsigned long long)(r.at_ns - two.last_ns));

    /* A ring left unanswered that long may be repeated. */
    struct timespec pause = {0, 2 * (long)CF__RING_AGAIN_NS};
    nanosleep(&pause, NULL);
    bell = atomic_load(&h->bell);
    cf__idle_ring_for(h, &r, 1);
    cr_assert_eq(atomic_load(&h->bell), bell + 1, "no ring again after CF__RING_AGAIN_NS");
    free(h);
}

/*
 * Rings answered free their sleepers' count: four asleep, two rung and up
 * (running what they were rung for, their bits cleared), two more tasks: the
 * other two are rung too, although the pool rang twice for two sleepers
 * left. Counting rings against the sleepers left would strand those tasks
 * until a worker finished.
 */
Test(idle, rings_answered_let_the_rest_be_rung, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();
    cf__ringer r = {0};

    for (unsigned wid = 0; wid < 4; wid++)
        cf__idle_doze(h, wid);
    cf__idle_ring_for(h, &r, 4);
    cf__idle_ring_for(h, &r, 4);
    cr_assert_eq(atomic_load(&h->bell), 2);
    cf__idle_wake_done(h, 0);
    cf__idle_wake_done(h, 1);
    cf__idle_ring_for(h, &r, 2);
    cf__idle_ring_for(h, &r, 2);
    cr_assert_eq(atomic_load(&h->bell), 4, "two sleepers never rung were rung %u times, not 2",
                 (unsigned)atomic_load(&h->bell) - 2);
    /* A ring past them comes only CF__RING_AGAIN_NS after the last (as
     * above): on a loaded machine that much may pass between two calls. */
    uint64_t last = r.at_ns;
    cf__idle_ring_for(h, &r, 2);
    cr_assert(atomic_load(&h->bell) == 4 || r.at_ns - last >= CF__RING_AGAIN_NS,
              "a ring beyond the sleepers, %llu ns after the last ring",
              (unsigned long long)(r.at_ns - last));
    free(h);
}

Test(idle, nothing_rung_sleeps_until_the_deadline, .timeout = 30)
{
    cf__shm_hdr *h = hdr_new();
    uint32_t snapshot = cf__idle_doze(h, 0);
    cr_assert(!cf__idle_work_or_exit(h));
    uint64_t deadline = cf__now_ns() + 20000000u;
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)    /* a futex may wake spuriously */
        rc = cf__idle_sleep(h, snapshot, deadline);
    cr_assert_eq(rc, ETIMEDOUT, "a worker with nothing to wake it did not sleep: %d", rc);
    free(h);
}

/*
 * The caller's side of a full ring (cf__slot_nap): a submitter finds the
 * slot at the tail still running, reaps nothing, and goes to sleep on it.
 * If the worker finishes the task between that look and the WAITER flag,
 * its finish wakes nobody, and nobody else frees a task's slot: the caller
 * must not sleep on a slot that has ended. It did, until its periodic look
 * (100 ms) in every submit that hit the race: streams of more tasks than the
 * ring holds ran several times slower than on the thread pool.
 */
static cf__slot *slot_new(void)
{
    return zeroed(sizeof(cf__slot));
}

Test(slot_nap, task_ended_between_look_and_nap_is_not_slept_on, .timeout = 30)
{
    cf__slot *s = slot_new();
    uint64_t pos = 5000, word = CF__W_MAKE(pos, 0, 0, CF__SLOT_READY);
    cf__slot_publish(s, pos);
    cr_assert(cf__slot_claim(s, &word, 1), "the worker could not claim a READY slot");

    /* The caller looks: RUNNING, nothing to reap. The worker then finishes. */
    cr_assert_eq(CF__W_STATE(atomic_load(&s->word)), CF__SLOT_RUNNING);
    uint64_t before = cf__slot_finish(s);
    cr_assert_eq(CF__W_FLAGS(before) & CF__SLOT_WAITER, 0u, "nobody was flagged as waiting yet");

    int rc = cf__slot_nap(s, true, cf__now_ns() + SLEEP_LIMIT_NS);
    cr_assert_eq(rc, 0, "the caller slept on a task slot that had ended before it flagged WAITER");
    cr_assert_eq(CF__W_STATE(atomic_load(&s->word)), CF__SLOT_DONE);
    free(s);
}

/* A chunk's slot is freed by its cf_map call: ended is not enough, the
 * sleeper waits for the release (and the release wakes it, as WAITER says). */
Test(slot_nap, chunk_ended_is_slept_on_until_freed, .timeout = 30)
{
    cf__slot *s = slot_new();
    uint64_t pos = 77, word = CF__W_MAKE(pos, 0, 0, CF__SLOT_READY);
    cf__slot_publish(s, pos);
    cr_assert(cf__slot_claim(s, &word, 0));
    cf__slot_finish(s);

    uint64_t deadline = cf__now_ns() + 20000000u;
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)    /* a futex may wake spuriously */
        rc = cf__slot_nap(s, false, deadline);
    cr_assert_eq(rc, ETIMEDOUT, "a chunk's ended slot, never freed, was not slept on: %d", rc);

    uint64_t released = cf__slot_release(s, pos);
    cr_assert_neq(CF__W_FLAGS(released) & CF__SLOT_WAITER, 0u, "the release would wake no sleeper");
    free(s);
}

/* Counts the yields of src/sync.c, which is built into this program. */
static _Atomic unsigned yields;

int sched_yield(void)
{
    atomic_fetch_add(&yields, 1);
    return 0;
}

/* Counts this thread's clock readings, src/sync.c's among them, and reads the clock. */
static _Thread_local unsigned clock_reads;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    clock_reads++;
    return (int)syscall(SYS_clock_gettime, id, ts);
}

/*
 * The wait of an empty task's round trip ends within a few looks: a spinner
 * reads the clock first at its CF__SPIN_CLOCK_STEPS-th look, not when it
 * begins, so such a wait costs no clock reading (a fifth of the caller's
 * own work in a round trip, when it read one at the start). The budget then
 * counts from that first reading.
 */
Test(spin, a_wait_shorter_than_a_clock_step_never_reads_the_clock, .timeout = 30)
{
    cf__spinner spin;
    clock_reads = 0;
    cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
    for (unsigned i = 1; i < CF__SPIN_CLOCK_STEPS; i++)
        cr_assert(cf__spin(&spin), "a spin of %u looks ended before its budget", i);
    cr_assert_eq(clock_reads, 0u, "%u clock readings in a spin of %u looks", clock_reads,
                 CF__SPIN_CLOCK_STEPS - 1);
    cr_assert(cf__spin(&spin));
    cr_assert_eq(clock_reads, 1u, "the spin's first clock step read the clock %u times", clock_reads);
}

/*
 * A spinner yields the core once every CF__SPIN_PURE_NS, not at every look
 * past the first CF__SPIN_PURE_NS: on a busy pool those yields were most of
 * its system calls. Each yield sets the next one CF__SPIN_PURE_NS later, so
 * however slowly the machine runs, a whole budget holds budget / pure + 1
 * of them at most.
 */
Test(spin, yields_once_every_pure_spin_not_at_every_look, .timeout = 30)
{
    const uint64_t budget = 10 * (uint64_t)CF__SPIN_PURE_NS;
    unsigned yielded = 0;    /* spins that yielded: not all of them on a loaded machine */
    for (int i = 0; i < 20; i++) {
        cf__spinner spin;
        unsigned looks = 0;
        atomic_store(&yields, 0);
        cf__spin_begin(&spin, budget);
        while (cf__spin(&spin))
            looks++;
        unsigned n = atomic_load(&yields);
        cr_assert_leq(n, budget / CF__SPIN_PURE_NS + 1, "%u yields in %u looks, in a spin of %llu ns",
                      n, looks, (unsigned long long)budget);
        yielded += n > 0;
    }
    cr_assert_gt(yielded, 0u, "no spin longer than CF__SPIN_PURE_NS ever yielded");
}

/*
 * Time stamps (cf__stamp_ns): where the time-stamp counter is the kernel's
 * clock they are read from it along a line that sync.c redraws against
 * CLOCK_MONOTONIC every CF__STAMP_SPAN_NS. Each stamp must lie between
 * two readings of the clock taken around it, give or take STAMP_SLACK_NS
 * (the line's error: its rate measured wrong by 1 % would be 10 us off
 * within a span), and one thread's stamps must never go back, across
 * redraws by other threads and in a forked child. A loaded machine only
 * widens the readings' window. Where the counter is not the clock, the
 * stamps are the clock's own readings, and the same holds.
 */
#define STAMP_SLACK_NS 5000u
#define STAMP_RUN_NS   60000000u    /* many spans, past the first BASE_MIN_NS without a line */

/* One thread's run: the first stamp outside its window or below the one
 * before, for the test's own thread to assert on (an assertion in another
 * thread would end the process), and the furthest outside its window. */
typedef struct stamp_run {
    char failure[160];
    uint64_t worst;
} stamp_run;

static void *stamps_follow_the_clock(void *arg)
{
    stamp_run *run = arg;
    uint64_t last = 0, n = 0;
    uint64_t end = cf__now_ns() + STAMP_RUN_NS;
    for (uint64_t before = 0; before < end && run->failure[0] == '\0'; n++) {
        before = cf__now_ns();
        uint64_t s = cf__stamp_ns();
        uint64_t after = cf__now_ns();
        if (s + STAMP_SLACK_NS < before)
            snprintf(run->failure, sizeof run->failure, "stamp %llu: %llu ns before the clock read before it",
                     (unsigned long long)n, (unsigned long long)(before - s));
        else if (s > after + STAMP_SLACK_NS)
            snprintf(run->failure, sizeof run->failure, "stamp %llu: %llu ns after the clock read after it",
                     (unsigned long long)n, (unsigned long long)(s - after));
        else if (s < last)
            snprintf(run->failure, sizeof run->failure, "stamp %llu went back %llu ns",
                     (unsigned long long)n, (unsigned long long)(last - s));
        last = s;
        uint64_t off = s > after ? s - after : s < before ? before - s : 0;
        if (off > run->worst)
            run->worst = off;
    }
    return NULL;
}

Test(stamp, follows_the_clock_and_never_goes_back, .timeout = 60)
{
    pthread_t t[3];
    stamp_run runs[4] = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, stamps_follow_the_clock, &runs[i]), 0);
    stamps_follow_the_clock(&runs[3]);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        cr_assert(runs[i].failure[0] == '\0', "thread %d: %s", i, runs[i].failure);
    cr_log_info("furthest outside its window: %llu %llu %llu %llu ns", (unsigned long long)runs[0].worst,
                (unsigned long long)runs[1].worst, (unsigned long long)runs[2].worst,
                (unsigned long long)runs[3].worst);
#if defined(__x86_64__)
    char name[16] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f != NULL) {
        if (fgets(name, sizeof name, f) == NULL)
            name[0] = '\0';
        fclose(f);
    }
    cf__stamp_view line;
    while (!cf__stamp_look(&line))
        ;
    if (strcmp(name, "tsc\n") == 0)
        cr_assert_neq(line.span, 0u, "the counter is the kernel's clock, and no line was drawn to read it along");
#endif
}

Test(stamp, a_forked_child_follows_the_clock, .timeout = 60)
{
    stamp_run run = {0};
    stamps_follow_the_clock(&run);    /* a line drawn before the fork */
    cr_assert(run.failure[0] == '\0', "%s", run.failure);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        stamp_run child = {0};
        stamps_follow_the_clock(&child);
        if (child.failure[0] != '\0')
            fprintf(stderr, "child: %s\n", child.failure);
        _exit(child.failure[0] == '\0' ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's stamps strayed: status %#x",
              status);
}

/*
 * Two threads stamp one after the other in turn: each stamp follows the one
 * it answers, but for the counter's unordered read (src/internal.h), which
 * may be taken while the load that saw the other's stamp is on its way:
 * up to about one cache line's transfer before, never STAMP_ORDER_NS.
 */
#define STAMP_ORDER_NS 1000u

static _Atomic uint64_t baton;

typedef struct answers {
    uint64_t rounds;
    char failure[160];    /* the first answer too early, asserted on after the join */
} answers;

static void *answer_stamps(void *arg)
{
    answers *a = arg;
    for (uint64_t i = 1; i <= a->rounds; i++) {
        uint64_t got;
        while ((got = atomic_load(&baton)) == 0)
            cf__cpu_relax();
        uint64_t s = cf__stamp_ns();
        if (s + STAMP_ORDER_NS < got && a->failure[0] == '\0')
            snprintf(a->failure, sizeof a->failure, "round %llu: a stamp %llu ns before the one it answers",
                     (unsigned long long)i, (unsigned long long)(got - s));
        atomic_store(&baton, 0);
    }
    return NULL;
}

Test(stamp, a_threads_stamp_follows_the_stamp_it_saw, .timeout = 60)
{
    answers a = {.rounds = 200000u / (uint64_t)(test_time_scale() * test_time_scale())};
    pthread_t t;
    atomic_store(&baton, 0);
    cr_assert_eq(pthread_create(&t, NULL, answer_stamps, &a), 0);
    for (uint64_t i = 1; i <= a.rounds; i++) {
        atomic_store(&baton, cf__stamp_ns());
        while (atomic_load(&baton) != 0)
            cf__cpu_relax();
    }
    pthread_join(t, NULL);
    cr_assert(a.failure[0] == '\0', "%s", a.failure);
}
