/*
 * queue.c — the completion queue: futures handed back in the order they
 * finish, each in O(1), whatever their number.
 *
 * A queue is a ring of done futures and a count of the futures added and not
 * yet returned (outstanding). cf_queue_add takes a reference on the future
 * and registers a done-callback (future.c); the callback, which runs in the
 * thread that finished the future (a worker thread, the process pool's
 * manager thread, a waiting caller) or at once in the adding thread if the
 * future is done already, pushes it on the ring. cf_queue_next pops the ring
 * and hands the queue's reference to the caller. The ring never grows in a
 * callback: cf_queue_add makes room first, for every outstanding future, so
 * a callback cannot fail.
 *
 * Membership: f->queue names the queue f waits in, set by a compare-exchange
 * from NULL at add (so a second add is refused in O(1)) and cleared when f
 * is returned or the queue lets it go. It is compared, never dereferenced.
 *
 * Lifetime: the queue's memory lives while its owner has not freed it or a
 * callback it registered has not run (pending). cf_queue_free marks it
 * closed and releases the futures in the ring; a callback that runs on a
 * closed queue releases its future, and the last one frees the queue. So a
 * callback never touches freed memory, and nothing leaks once every added
 * future is done.
 *
 * Waiting: a bounded spin on the ring's count, then a futex sleep on seq,
 * which a callback bumps (and wakes) only when a taker sleeps. The wake is
 * made under the lock: once a callback unlocks, the queue may be freed.
 *
 * Locks: q->mu is taken with no future's lock held and no future's lock is
 * taken under it; the callback runs with no library lock held (future.c).
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cf_queue {
    pthread_mutex_t  mu;
    pid_t            owner;        /* the process that created it */
    cf_future      **ring;         /* done futures, oldest at head; cap slots */
    size_t           cap;
    size_t           head;
    _Atomic size_t   ready;        /* futures in the ring; read unlocked by a spinning taker */
    size_t           outstanding;  /* added and not yet returned: ring and pending */
    size_t           pending;      /* callbacks registered and not yet run */
    unsigned         sleepers;     /* takers asleep on seq */
    bool             closed;       /* cf_queue_free was called */
    _Atomic uint32_t seq;          /* futex: bumped when a sleeper should look again */
};

static void destroy(cf_queue *q)
{
    pthread_mutex_destroy(&q->mu);
    free(q->ring);
    free(q);
}

/* Makes room in the ring for `need` futures; under q->mu. */
static int reserve(cf_queue *q, size_t need)
{
    if (need <= q->cap)
        return 0;
    size_t cap = q->cap ? q->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof *q->ring)
            return CF_ENOMEM;
        cap *= 2;
    }
    cf_future **ring = malloc(cap * sizeof *ring);
    if (ring == NULL)
        return CF_ENOMEM;
    size_t n = atomic_load_explicit(&q->ready, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        ring[i] = q->ring[(q->head + i) % q->cap];
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* Wakes every sleeping taker; under q->mu. */
static void wake_sleepers(cf_queue *q)
{
    if (q->sleepers > 0) {
        atomic_fetch_add_explicit(&q->seq, 1, memory_order_release);
        cf__futex_wake(&q->seq, INT_MAX, false);
    }
}

/* Lets f go from a queue that no longer has it: its membership, the
 * queue's reference. With no lock held. */
static void release(cf_future *f)
{
    atomic_store_explicit(&f->queue, NULL, memory_order_release);
    cf__future_unref(f);
}

/* The done-callback: f is done; queue it, or let it go if q was freed. */
static void on_done(cf_future *f, void *ctx)
{
    cf_queue *q = ctx;
    pthread_mutex_lock(&q->mu);
    q->pending--;
    if (q->closed) {
        bool last = q->pending == 0;
        pthread_mutex_unlock(&q->mu);
        /* The executor's reference (or the adder's) keeps f alive here. */
        release(f);
        if (last)
            destroy(q);
        return;
    }
    size_t n = atomic_load_explicit(&q->ready, memory_order_relaxed);
    q->ring[(q->head + n) % q->cap] = f;    /* room was made at add */
    /* Release: a spinning taker that sees the count takes the lock anyway. */
    atomic_store_explicit(&q->ready, n + 1, memory_order_release);
    wake_sleepers(q);
    pthread_mutex_unlock(&q->mu);
}

CF_EXPORT int cf_queue_new(cf_queue **out)
{
    CF__NOT_BEFORE_GUARD();
    if (out == NULL)
        return CF_EINVAL;
    cf_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return CF_ENOMEM;
    if (pthread_mutex_init(&q->mu, NULL) != 0) {
        free(q);
        return CF_ENOMEM;
    }
    q->owner = cf__self_pid();
    atomic_init(&q->ready, 0);
    atomic_init(&q->seq, 0);
    *out = q;
    return 0;
}

CF_EXPORT int cf_queue_add(cf_queue *q, cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    if (q == NULL || f == NULL)
        return CF_EINVAL;
    if (cf__foreign(q->owner) || cf__foreign(f->owner))
        return CF_EOWNER;
    cf_queue *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&f->queue, &none, q, memory_order_acq_rel,
                                                 memory_order_acquire))
        return CF_EINVAL;    /* in q (a second add) or in another queue */

    pthread_mutex_lock(&q->mu);
    int rc = reserve(q, q->outstanding + 1);
    if (rc == 0) {
        q->outstanding++;
        q->pending++;
    }
    pthread_mutex_unlock(&q->mu);
    if (rc != 0) {
        atomic_store_explicit(&f->queue, NULL, memory_order_release);
        return rc;
    }
    cf__future_ref(f);
    /* Runs on_done at once if f is done already. */
    rc = cf_future_add_done_callback(f, on_done, q);
    if (rc != 0) {
        pthread_mutex_lock(&q->mu);
        q->outstanding--;
        q->pending--;
        pthread_mutex_unlock(&q->mu);
        release(f);
    }
    return rc;
}

CF_EXPORT int cf_queue_next(cf_queue *q, int timeout_ms, cf_future **out)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (q == NULL || out == NULL || timeout_ms < -1)
        return CF_EINVAL;
    if (cf__foreign(q->owner))
        return CF_EOWNER;
    uint64_t deadline = 0;
    bool spun = timeout_ms == 0, expired = false;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        size_t n = atomic_load_explicit(&q->ready, memory_order_relaxed);
        if (n > 0) {
            cf_future *f = q->ring[q->head];
            q->head = (q->head + 1) % q->cap;
            atomic_store_explicit(&q->ready, n - 1, memory_order_relaxed);
            if (--q->outstanding == 0)
                wake_sleepers(q);    /* they answer CF_EEMPTY now */
            pthread_mutex_unlock(&q->mu);
            /* f was returned: it may be added again, here or elsewhere. */
            atomic_store_explicit(&f->queue, NULL, memory_order_release);
            *out = f;    /* with the queue's reference */
            return 0;
        }
        if (q->outstanding == 0) {
            pthread_mutex_unlock(&q->mu);
            return CF_EEMPTY;
        }
        if (expired || timeout_ms == 0) {
            pthread_mutex_unlock(&q->mu);
            return CF_ETIMEDOUT;
        }
        if (deadline == 0)
            deadline = cf__deadline(timeout_ms);
        if (!spun) {
            /* Futures often finish a moment apart: look again before sleeping. */
            pthread_mutex_unlock(&q->mu);
            cf__spinner spin;
            cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
            while (atomic_load_explicit(&q->ready, memory_order_acquire) == 0 && cf__spin(&spin))
                ;
            spun = true;
            pthread_mutex_lock(&q->mu);
            continue;
        }
        uint32_t seq = atomic_load_explicit(&q->seq, memory_order_acquire);
        q->sleepers++;
        pthread_mutex_unlock(&q->mu);
        int w = cf__futex_wait(&q->seq, seq, false, deadline);
        pthread_mutex_lock(&q->mu);
        q->sleepers--;
        expired = w == ETIMEDOUT;    /* one more look at the ring first */
    }
}

CF_EXPORT void cf_queue_free(cf_queue *q)
{
    CF__NOT_BEFORE_GUARD();
    /* In another process q is a copy: leave it as it is. */
    if (q == NULL || cf__foreign(q->owner))
        return;
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    cf_future **ring = q->ring;
    size_t head = q->head, cap = q->cap;
    size_t n = atomic_load_explicit(&q->ready, memory_order_relaxed);
    q->ring = NULL;
    q->cap = 0;
    atomic_store_explicit(&q->ready, 0, memory_order_relaxed);
    bool last = q->pending == 0;
    pthread_mutex_unlock(&q->mu);
    /* From here on, unless last, a callback may free q: it is not touched. */
    for (size_t i = 0; i < n; i++)
        release(ring[(head + i) % cap]);
    free(ring);
    if (last)
        destroy(q);
}
