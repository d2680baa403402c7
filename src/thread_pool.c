/*
 * thread_pool.c — the thread backend.
 *
 * Owns N pthreads, a FIFO of pending futures, and the list of cf_map calls in
 * progress. One mutex (tp->mu) guards the queue, the map list and the
 * lifecycle flags; a future's own lock may be taken under it, never the
 * reverse. A submit does not take it: it pushes the future onto an inbox
 * (a stack), which a worker that finds the queue empty moves to the queue's
 * end whole, under mu (take_inbox); so the submitter and the workers do not
 * meet on the mutex at every task. A worker with nothing to do spins a
 * little on tp->gen, which every new piece of work bumps, then sleeps on
 * tp->work; work is signalled only when no worker spins for it, and a
 * worker that takes a task while more wait wakes a sleeping peer, so a
 * burst still reaches every worker.
 *
 * A task's argument is copied to the heap at submit; the worker writes the
 * result straight into the future's buffer. cf_map needs no copy at all: the
 * caller blocks until every element is done, so workers read its input and
 * write its output in place, claiming chunks with one atomic add each, like
 * an OpenMP dynamic schedule.
 *
 * A thread can end inside user code (pthread_exit, or its cancellation if a
 * task enabled it): a cleanup handler around every call out (abandoned())
 * fails what the thread was running with CF_ECRASHED, as a process pool does
 * for a worker that dies, and starts a replacement in the same slot, which
 * runs the initializer again. Every thread is joined exactly once: the
 * replacement joins its predecessor, unless join_all is already joining that
 * slot (tp->joining), in which case join_all follows the slot to the
 * replacement. A slot whose replacement cannot start (no thread, or its
 * initializer failed) stays empty; when none is left the pool is broken:
 * pending work ends with CF_EBROKEN and new work is refused with it.
 * The pool runs a target count of slots (cf_executor_resize). Growing starts
 * a thread for each slot below it that has none (start_slot); a slot past
 * it loses its thread at the top of the thread's loop, after its task, and
 * a later thread of that slot joins it. The table of threads is sized for
 * CF__MAX_WORKERS slots.
 * Pool threads run with cancellation disabled, again after every task (a
 * task may enable it for itself), so a cancel request never acts while a
 * worker holds tp->mu.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/*
 * A map with automatic chunks is cut into as many ranges as the pool has
 * workers (at most TP_RANGES), and worker i claims from range i first, then
 * from the others (claim). Consecutive maps over the same arrays then give
 * each worker the same elements, whose lines stay in its cache, as a static
 * schedule does; and the workers' claims write one line each until they
 * take from each other's ranges. A map with a chunksize the caller chose
 * is one range: its chunks are exactly that size.
 */
#define TP_RANGES 16

typedef struct tmap {
    cf_fn          *fn;            /* per element, or */
    cf_chunk_fn    *cfn;           /* per chunk */
    const char     *in;
    char           *out;
    size_t          in_size, out_size, n, chunk;
    int            *status;
    cf__map        *ctl;           /* progress, element callback, cancel */
    bool            handed;        /* the caller gave up its core to the workers (tp_map) */
    struct tmap    *link;
    unsigned        nranges;       /* ranges[0, nranges) cover [0, n) in order */
    /* Claimed chunk by chunk, each range on a line of its own, away from
     * what each element reads above and from the end the caller watches
     * below (see claim). */
    struct trange {
        _Alignas(CF__CACHELINE) _Atomic size_t next;    /* first element not yet claimed */
        size_t end;
    } ranges[TP_RANGES];
    _Alignas(CF__CACHELINE) size_t done;    /* elements finished, under tp->mu */
    unsigned        active;        /* workers inside it, under tp->mu */
    size_t          fail_index;    /* lowest failing element, under tp->mu */
    int             fail_code;
    _Atomic bool    over;          /* every element done and no worker inside (map_over) */
} tmap;

typedef struct tpool {
    cf_executor     base;
    pthread_mutex_t mu;
    pthread_cond_t  work;          /* workers wait for tasks or maps */
    pthread_cond_t  progress;      /* map callers and creation wait here */
    cf_future      *head, *tail;   /* pending futures, under mu */
    /* Futures submitted since a worker last looked: a stack that submitters
     * push onto without mu, and that a holder of mu takes whole (take_inbox). */
    _Atomic(cf_future *) inbox;
    _Atomic bool    closed;        /* stopping or broken: submits are refused */
    tmap           *maps;          /* maps with unclaimed elements */
    _Atomic unsigned gen;          /* bumped whenever work arrives (by a submit without mu) */
    _Atomic unsigned spinners;     /* workers spinning on gen, changed under mu */
    _Atomic unsigned sleepers;     /* workers in pthread_cond_wait(work), changed under mu */
    _Atomic unsigned waking;       /* of them, signalled and not yet up (never more than
                                      sleepers), changed under mu */
    bool            stopping;      /* workers exit once the queue is empty */
    unsigned        started;       /* workers that ran their initializer */
    int             init_error;    /* first initializer failure */
    unsigned        live;          /* slots with a thread serving them, under mu */
    unsigned        target;        /* slots [0, target) are to be served, under mu */
    bool            serving[CF__MAX_WORKERS];    /* a thread serves the slot, under mu */
    bool            broken;        /* live fell to 0 after creation, under mu */
    int             joining;       /* the slot join_all is joining, or -1; under mu */
    pthread_mutex_t join_mu;
    bool            joined;
    pthread_t      *threads;       /* by slot, CF__MAX_WORKERS; a slot's thread changes under mu */
    unsigned        nthreads;      /* threads actually created */
} tpool;

/* Arguments of up to this many bytes are copied into the future itself. */
#define INLINE_ARG 16

/*
 * A task's state in its future (cf_future.part): what the worker calls, and
 * the queue link. A small argument's copy is kept here rather than in a
 * malloc of its own, which the worker freed: a free in another thread than
 * the malloc's took the allocator's lock against the submitter's next
 * malloc, at every task.
 */
typedef struct tfuture {
    cf_fn     *fn;
    size_t     arg_size;
    cf_future *next;               /* in tp's queue, or below it in the inbox */
    _Atomic bool taken;            /* a worker took it off the queue (tp_running) */
    union {                        /* the caller's argument, copied at submit: */
        _Alignas(16) unsigned char here[INLINE_ARG];    /* up to INLINE_ARG bytes */
        void *heap;                /* larger ones */
    } arg;
} tfuture;

/* The task's argument: NULL for none, else the copy (arg_size bytes, 16-byte aligned). */
static const void *arg_of(const tfuture *t)
{
    if (t->arg_size == 0)
        return NULL;
    return t->arg_size <= INLINE_ARG ? (const void *)t->arg.here : t->arg.heap;
}

/* The argument's copy goes (the task has run, or never will). */
static void drop_arg(tfuture *t)
{
    if (t->arg_size > INLINE_ARG) {
        free(t->arg.heap);
        t->arg.heap = NULL;
    }
}

typedef struct worker_arg {
    tpool    *tp;
    unsigned  id;
    bool      replacement;         /* started after creation, for a thread that ended */
    bool      join_first;          /* join predecessor before anything else */
    pthread_t predecessor;
} worker_arg;

/*
 * What a worker thread is running, for abandoned() if the thread ends in
 * the middle: a task, or chunk [lo, hi) of a map, at element `at` (or at
 * the one in *index, where run_elements' common case keeps it).
 */
typedef struct inflight {
    tpool     *tp;
    unsigned   id;
    cf_future *f;                  /* the task running, or NULL */
    tmap      *m;                  /* the map it works on, or NULL */
    size_t     lo, hi, at;
    size_t     did;                /* elements of m it has finished */
    size_t     first_fail;         /* its lowest failing element of m */
    int        fail_code;
    long      *index;              /* this thread's cf__task_index, found once: a TLS
                                      access from a shared library is a call, which
                                      per element would double the cost of a map of
                                      empty functions */
} inflight;

static tpool *tp_of(cf_executor *ex)
{
    return (tpool *)ex;
}

static tfuture *tf_of(cf_future *f)
{
    return CF__FUTURE_PART(f, tfuture);
}

/*
 * Elements [from, hi) of r's chunk never run, the map being cancelled:
 * they end CF_ECANCELED, unreported.
 */
static void skip_rest(inflight *r, size_t from)
{
    tmap *m = r->m;
    for (size_t i = from; m->status != NULL && i < r->hi; i++)
        m->status[i] = CF_ECANCELED;
    if (from < r->first_fail) {
        r->first_fail = from;
        r->fail_code = CF_ECANCELED;
    }
    atomic_store(&m->ctl->cut, true);
}

/*
 * Runs elements [r->lo, r->hi) of r->m, noting the first failure in r, and
 * reports them; returns how many ran (fewer once the map is cancelled).
 */
static size_t run_elements(inflight *r)
{
    const tmap *m = r->m;
    const size_t lo = r->lo, hi = r->hi;
    const char *in = m->in;
    char *out = m->out;
    const size_t isz = m->in_size, osz = m->out_size;
    int *status = m->status;
    cf__map *ctl = m->ctl;
    cf_element_fn *report = ctl->on_element;
    r->at = lo;
    if (cf__map_cancelled(ctl)) {
        skip_rest(r, lo);
        return 0;
    }
    if (m->cfn != NULL) {
        int rc = m->cfn(in + lo * isz, isz, out + lo * osz, osz, lo, hi - lo);
        if (rc != 0 && lo < r->first_fail) {
            r->first_fail = lo;
            r->fail_code = rc;
        }
        for (size_t i = lo; status != NULL && i < hi; i++)
            status[i] = rc;
        for (size_t i = lo; report != NULL && i < hi; i++)
            report(i, rc, ctl->ctx);
        return hi - lo;
    }
    cf_fn *fn = m->fn;
    long *index = r->index;
    if (status == NULL && report == NULL) {
        /* The common case, in the fewest live values: one call per element
         * is most of a map of small elements. The element running is the
         * one in *index (abandoned() reads it there). */
        const char *ip = in + lo * isz;
        char *op = out + lo * osz;
        for (size_t i = lo; i < hi; i++, ip += isz, op += osz) {
            if (cf__map_cancelled(ctl)) {
                *index = -1;
                skip_rest(r, i);
                return i - lo;
            }
            *index = (long)i;
            int rc = fn(ip, isz, op, osz);
            if (rc != 0 && i < r->first_fail) {
                r->first_fail = i;
                r->fail_code = rc;
            }
        }
        *index = -1;
        return hi - lo;
    }
    for (size_t i = lo; i < hi; i++) {
        if (cf__map_cancelled(ctl)) {
            *index = -1;
            skip_rest(r, i);
            return i - lo;
        }
        r->at = i;
        *index = (long)i;
        int rc = fn(in + i * isz, isz, out + i * osz, osz);
        if (rc != 0 && i < r->first_fail) {
            r->first_fail = i;
            r->fail_code = rc;
        }
        if (status != NULL)
            status[i] = rc;
        if (report != NULL) {
            *index = -1;
            report(i, rc, ctl->ctx);
        }
    }
    *index = -1;
    return hi - lo;
}

/* Under mu: tells m's caller, which looks at `over` before it sleeps, once m is complete. */
static void map_over(tpool *tp, tmap *m)
{
    if (m->active == 0 && m->done == m->n) {
        atomic_store_explicit(&m->over, true, memory_order_release);
        pthread_cond_broadcast(&tp->progress);
    }
}

/* Adds what r did of its map to the map, under mu; wakes the map's caller when it is complete. */
static void map_account(tpool *tp, inflight *r)
{
    tmap *m = r->m;
    m->done += r->did;
    if (r->first_fail < m->fail_index) {
        m->fail_index = r->first_fail;
        m->fail_code = r->fail_code;
    }
    m->active--;
    map_over(tp, m);
    r->m = NULL;
}

/* Elements of m not yet claimed in the ranges other than g. */
static size_t left_elsewhere(const tmap *m, const struct trange *g)
{
    size_t left = 0;
    for (const struct trange *o = m->ranges; o < m->ranges + m->nranges; o++) {
        size_t at = atomic_load_explicit(&o->next, memory_order_relaxed);
        left += o != g && at < o->end ? o->end - at : 0;
    }
    return left;
}

/*
 * Claims the next chunk of m, [*lo, *hi): from range home first, then from
 * the others in turn; false once every range is fully claimed. Fixed chunks
 * are taken by an add; automatic ones are guided by what is left of the
 * whole map (cf__map_take), so that the map ends in small chunks wherever
 * its heavy elements lie, as with one range.
 */
static bool claim(tmap *m, unsigned home, size_t *lo, size_t *hi)
{
    const cf__map *ctl = m->ctl;
    for (unsigned k = 0; k < m->nranges; k++) {
        struct trange *g = &m->ranges[(home + k) % m->nranges];
        size_t at, take;
        if (ctl->min_chunk == 0) {
            at = atomic_fetch_add_explicit(&g->next, m->chunk, memory_order_relaxed);
            take = m->chunk;
        } else {
            at = atomic_load_explicit(&g->next, memory_order_relaxed);
            do
                take = at < g->end ? cf__map_take(ctl, g->end - at + left_elsewhere(m, g), m->chunk) : 0;
            while (at < g->end && !atomic_compare_exchange_weak_explicit(&g->next, &at, at + take,
                                                                         memory_order_relaxed,
                                                                         memory_order_relaxed));
        }
        if (at < g->end) {
            *lo = at;
            *hi = take < g->end - at ? at + take : g->end;
            return true;
        }
    }
    return false;
}

static void run_map(tpool *tp, inflight *r)
{
    cf__map_here = r->m->ctl;
    r->did = 0;
    r->first_fail = SIZE_MAX;
    r->fail_code = 0;
    const unsigned home = r->id % r->m->nranges;
    for (;;) {
        size_t lo, hi;
        if (!claim(r->m, home, &lo, &hi))
            break;
        r->lo = lo;
        r->hi = hi;
        uint64_t t0 = CF__TRACING(&tp->base) ? cf__stamp_ns() : 0;
        size_t ran = run_elements(r);
        cf__map_count(r->m->ctl, ran);
        if (t0 != 0)
            cf__trace_chunk(tp->base.trace, r->m->fn ? (void *)r->m->fn : (void *)r->m->cfn,
                            (int)r->id, t0, cf__stamp_ns(), lo, r->hi - lo,
                            r->first_fail >= lo && r->first_fail < r->hi ? r->fail_code : 0, 0);
        r->did += r->hi - lo;
    }
    cf__map_here = NULL;
    bool give_back = r->m->handed;    /* r->m may end once accounted for */
    pthread_mutex_lock(&tp->mu);
    map_account(tp, r);
    pthread_mutex_unlock(&tp->mu);
    if (give_back)
        sched_yield();
}

/*
 * Phase one of finishing f (the protocol is in internal.h), by the thread
 * that took it off the pool's books: its argument copy goes with it.
 */
static void task_finish(cf_future *f, int state, int code, cf_future **fire)
{
    drop_arg(tf_of(f));
    cf__future_finish(f, state, code, 0, fire);
}

/*
 * Under mu: moves what was submitted since the last look from the inbox to
 * the end of the queue, oldest first. The inbox is a stack (newest on top),
 * taken whole, so no node is ever popped alone: no ABA.
 */
static void take_inbox(tpool *tp)
{
    cf_future *top = atomic_exchange(&tp->inbox, NULL);    /* seq_cst: see tp_submit */
    if (top == NULL)
        return;
    cf_future *newest = top, *oldest = NULL;
    while (top != NULL) {
        cf_future *below = tf_of(top)->next;
        tf_of(top)->next = oldest;
        oldest = top;
        top = below;
    }
    if (tp->tail != NULL)
        tf_of(tp->tail)->next = oldest;
    else
        tp->head = oldest;
    tp->tail = newest;
}

/*
 * Under mu: takes every pending task off the queue and finishes it, with
 * `text` as its error text if not NULL (none if memory is short).
 */
static void queue_finish(tpool *tp, int state, int code, const char *text, cf_future **fire)
{
    take_inbox(tp);
    while (tp->head != NULL) {
        cf_future *f = tp->head;
        tp->head = tf_of(f)->next;
        if (text != NULL)
            f->error_text = cf__error_text_new("%s", text);
        task_finish(f, state, code, fire);
    }
    tp->tail = NULL;
}

/*
 * Runs a task taken off the queue. Its caller may be spinning on the
 * future's first line (its state word) all along: that line is written
 * once, at the finish, and nothing before the task (its size, its running
 * mark) goes there, so that the line moves between the two threads once.
 */
static void run_task(inflight *r, cf_future *f)
{
    atomic_store_explicit(&tf_of(f)->taken, true, memory_order_relaxed);
    f->info.worker = (int)r->id;
    f->info.start_ns = cf__stamp_ns();
    r->f = f;
    tfuture *t = tf_of(f);
    char text[CF_ERROR_TEXT_MAX];
    text[0] = '\0';
    cf__task_text = text;
    /* The task writes straight into the future's buffer, its size here. */
    uint64_t len = f->result_size;
    cf__task_out = (cf__task_result){.cap = f->result_size, .len = &len};
    int rc = t->fn(arg_of(t), t->arg_size, f->result_size ? f->result : NULL, f->result_size);
    cf__task_text = NULL;
    cf__task_out.len = NULL;
    f->result_len = len;
    r->f = NULL;    /* from here on the task has its outcome, whatever its callbacks do */
    if (rc != 0 && text[0] != '\0')
        f->error_text = strdup(text);    /* none if memory is short */
    f->info.end_ns = cf__stamp_ns();
    f->has_result = true;
    cf_future *fire = NULL;
    task_finish(f, CF__FINISHED, rc, &fire);
    cf__future_fire(fire);
}

/*
 * Under mu, gen bumped: wakes a sleeping worker unless one spins for the
 * work, or every sleeper is already signalled and on its way (all: every
 * one). A sleeper stays counted until it holds mu again: without `waking`,
 * every submit and every take in between would signal again, and take mu
 * to do it, which is what the woken worker waits for.
 */
static void wake_sleepers(tpool *tp, bool all)
{
    unsigned sleepers = atomic_load(&tp->sleepers);
    if (sleepers == 0)
        return;    /* every worker spins on gen, or is busy and looks again after its work */
    if (all) {
        atomic_store(&tp->waking, sleepers);
        pthread_cond_broadcast(&tp->work);
    } else if (atomic_load(&tp->spinners) == 0 && atomic_load(&tp->waking) < sleepers) {
        atomic_fetch_add(&tp->waking, 1);
        pthread_cond_signal(&tp->work);
    }
}

/* Under mu: new work is there; wake a worker unless one spins for it (all: every worker). */
static void work_arrived(tpool *tp, bool all)
{
    atomic_fetch_add(&tp->gen, 1);
    wake_sleepers(tp, all);
}

/*
 * Under mu, with nothing to do: spins (without mu) until new work arrives or
 * the spin budget is spent, then sleeps unless work came meanwhile. gen is
 * the count read before the last look at the inbox (serve): a submit that
 * look missed bumped it after, which this wait sees.
 */
static void idle(tpool *tp, unsigned gen)
{
    cf__spinner spin;
    cf__spin_begin(&spin, CF__SPIN_IDLE_NS);
    atomic_fetch_add(&tp->spinners, 1);
    pthread_mutex_unlock(&tp->mu);
    while (atomic_load_explicit(&tp->gen, memory_order_acquire) == gen && cf__spin(&spin))
        ;
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_sub(&tp->spinners, 1);
    if (atomic_load_explicit(&tp->gen, memory_order_relaxed) != gen || tp->stopping)
        return;
    /*
     * A submitter pushes, bumps gen, then reads sleepers (tp_submit); this
     * thread counts itself a sleeper, then reads gen: one of the two sees
     * the other's write. A submitter that saw the count signals under mu,
     * which this thread holds until the wait releases it.
     */
    atomic_fetch_add(&tp->sleepers, 1);
    if (atomic_load(&tp->gen) == gen) {
        pthread_cond_wait(&tp->work, &tp->mu);
        /* Up, signalled or not (a wake-up without a signal leaves one counted
         * too few: at worst a signal more later). Every signal was sent with
         * fewer counted than sleepers, so none of those still blocked is
         * ever counted as on its way. */
        if (atomic_load(&tp->waking) > 0)
            atomic_fetch_sub(&tp->waking, 1);
    }
    atomic_fetch_sub(&tp->sleepers, 1);
}

static bool fully_claimed(const tmap *m)
{
    for (unsigned i = 0; i < m->nranges; i++)
        if (atomic_load_explicit(&m->ranges[i].next, memory_order_relaxed) < m->ranges[i].end)
            return false;
    return true;
}

/* Removes and returns the map at the front of the list once fully claimed. */
static tmap *map_with_work(tpool *tp)
{
    while (tp->maps != NULL && fully_claimed(tp->maps))
        tp->maps = tp->maps->link;
    return tp->maps;
}

/*
 * Under mu: the elements of m no thread claimed end with code, unrun
 * (CF_ECANCELED: cancelled, which ends a submitted map cancelled).
 */
static void drop_unclaimed(tpool *tp, tmap *m, int code)
{
    size_t first = SIZE_MAX, dropped = 0;
    for (unsigned r = 0; r < m->nranges; r++) {
        struct trange *g = &m->ranges[r];
        size_t lo = atomic_fetch_add_explicit(&g->next, m->n, memory_order_relaxed);
        if (lo >= g->end)
            continue;
        for (size_t i = lo; m->status != NULL && i < g->end; i++)
            m->status[i] = code;
        first = lo < first ? lo : first;
        dropped += g->end - lo;
    }
    if (dropped == 0)
        return;
    if (first < m->fail_index) {
        m->fail_index = first;
        m->fail_code = code;
    }
    if (code == CF_ECANCELED)
        atomic_store(&m->ctl->cut, true);
    m->done += dropped;
    map_over(tp, m);
}

/*
 * Under mu: the last serving thread is gone and none can take its place.
 * Fails the pending tasks and the unclaimed elements of every map with
 * CF_EBROKEN; the futures go on *fire, to be fired once mu is released.
 */
static void break_pool(tpool *tp, cf_future **fire)
{
    tp->broken = true;
    atomic_store(&tp->closed, true);
    queue_finish(tp, CF__FINISHED, CF_EBROKEN,
                 "the pool broke (no worker thread is left and none can be started: a thread could "
                 "not be created, or every replacement's initializer failed) before the task could end",
                 fire);
    for (tmap *m = tp->maps; m != NULL; m = m->link)
        drop_unclaimed(tp, m, CF_EBROKEN);
    tp->maps = NULL;
}

/* Under mu: slot id lost its thread for good. Futures to fire go on *fire. */
static void slot_lost(tpool *tp, unsigned id, cf_future **fire)
{
    tp->serving[id] = false;
    if (--tp->live == 0 && !tp->broken)
        break_pool(tp, fire);
}

static void *worker_main(void *p);

/*
 * Under mu: starts a thread for slot id. A slot that had one keeps it until
 * the new one joins it: the thread ending now (replace_me), or one that
 * ended (it left the pool, or its replacement could not start); unless
 * join_all is joining that slot, and will follow it to the new thread.
 * 0, CF_EAGAIN or CF_ENOMEM.
 */
static int start_slot(tpool *tp, unsigned id)
{
    worker_arg *wa = malloc(sizeof *wa);
    if (wa == NULL)
        return CF_ENOMEM;
    bool had = id < tp->nthreads;
    *wa = (worker_arg){.tp = tp, .id = id, .replacement = true, .join_first = had && tp->joining != (int)id};
    if (had)
        wa->predecessor = tp->threads[id];
    pthread_t t;
    int err = pthread_create(&t, NULL, worker_main, wa);
    if (err != 0) {
        free(wa);
        return err == EAGAIN ? CF_EAGAIN : CF_ENOMEM;
    }
    tp->threads[id] = t;
    if (!had)
        tp->nthreads = id + 1;    /* slots are filled in order */
    if (!tp->serving[id]) {
        tp->serving[id] = true;
        tp->live++;
    }
    return 0;
}

/*
 * Under mu, in a thread that is ending: starts a thread for its slot.
 * Futures to fire go on *fire (if the slot could not be filled and the
 * pool broke).
 */
static void replace_me(tpool *tp, unsigned id, cf_future **fire)
{
    if (start_slot(tp, id) != 0)
        slot_lost(tp, id, fire);    /* the slot keeps this thread, for join_all */
}

/*
 * Cleanup handler: the thread is ending inside user code. Whatever it ran
 * fails with CF_ECRASHED (signal 0): the task, or the elements of its map
 * chunk from the one running on; then the slot gets a new thread.
 */
static void abandoned(void *arg)
{
    inflight *r = arg;
    tpool *tp = r->tp;
    cf_future *fire = NULL;
    if (r->m != NULL) {
        /* Where run_elements' common case keeps the element it runs. */
        long ix = *r->index;
        if (ix >= 0 && (size_t)ix > r->at && (size_t)ix < r->hi)
            r->at = (size_t)ix;
        /* The chunk's elements from the one that ended the thread on: reported crashed. */
        cf__map *ctl = r->m->ctl;
        cf__map_here = NULL;
        for (size_t i = r->at; ctl->on_element != NULL && i < r->hi; i++)
            ctl->on_element(i, CF_ECRASHED, ctl->ctx);
        cf__map_count(ctl, r->hi - r->lo);
    }
    pthread_mutex_lock(&tp->mu);
    cf__task_text = NULL;
    cf__task_out.len = NULL;
    cf__task_index = -1;
    if (r->f != NULL) {
        r->f->info.end_ns = cf__stamp_ns();
        r->f->error_text = cf__error_text_new("task ended its worker thread (pthread_exit or cancellation)");
        task_finish(r->f, CF__FINISHED, CF_ECRASHED, &fire);
    }
    if (r->m != NULL) {
        for (size_t i = r->at; r->m->status != NULL && i < r->hi; i++)
            r->m->status[i] = CF_ECRASHED;
        if (r->at < r->first_fail) {
            r->first_fail = r->at;
            r->fail_code = CF_ECRASHED;
        }
        r->did += r->hi - r->lo;
        map_account(tp, r);
    }
    replace_me(tp, r->id, &fire);
    pthread_mutex_unlock(&tp->mu);
    cf__future_fire(fire);
}

/* Under mu: the initializer of slot wa's thread returned rc. Futures to fire go on *fire. */
static void initialized(tpool *tp, const worker_arg *wa, int rc, cf_future **fire)
{
    if (wa->replacement) {
        if (rc != 0)
            slot_lost(tp, wa->id, fire);
        return;
    }
    tp->started++;
    if (rc != 0 && tp->init_error == 0)
        tp->init_error = rc;
    pthread_cond_broadcast(&tp->progress);
}

/* Cleanup handler: the thread is ending inside the initializer. It stays in its slot for join_all. */
static void init_abandoned(void *arg)
{
    const worker_arg *wa = arg;
    cf_future *fire = NULL;
    pthread_mutex_lock(&wa->tp->mu);
    initialized(wa->tp, wa, CF_ECRASHED, &fire);
    pthread_mutex_unlock(&wa->tp->mu);
    cf__future_fire(fire);
}

/* Runs the initializer; a thread that ends inside it is accounted for by init_abandoned. */
static int run_initializer(worker_arg *wa)
{
    const cf_options *o = &wa->tp->base.opts;
    int rc;
    pthread_cleanup_push(init_abandoned, wa);
    rc = o->initializer(o->initargs, o->initargs_size);
    pthread_cleanup_pop(0);
    return rc;
}

/*
 * Under mu, in a worker that takes none of the work waiting (it leaves, or
 * took another task): if more waits, in the queue or still in the inbox,
 * passes the wake-up on. A submit that saw a spinner left its task to it
 * (tp_submit), and this thread may be that spinner: without this, the task
 * would wait with no one woken (seq_cst: the submit pushes, then reads
 * spinners; a spinner leaves their count, then reads the inbox here).
 */
static void pass_on(tpool *tp)
{
    if (tp->head != NULL || atomic_load(&tp->inbox) != NULL)
        work_arrived(tp, false);
}

/* The worker's loop: entered and left with mu held. Left on shutdown, or when the pool shrank past its slot. */
static void serve(inflight *r)
{
    tpool *tp = r->tp;
    for (;;) {
        if (r->id >= tp->target) {
            pass_on(tp);    /* it may have been the spinner a submit counted on */
            break;
        }
        tmap *m = map_with_work(tp);
        if (m != NULL) {
            m->active++;
            r->m = m;
            pthread_mutex_unlock(&tp->mu);
            run_map(tp, r);
            pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
            pthread_mutex_lock(&tp->mu);
            continue;
        }
        /* gen first: a submit pushes, then bumps (tp_submit), so one the
         * look at the inbox misses bumps gen past this reading. Read after
         * the look, it could be that bump's, and idle() would sleep with
         * the task left in the inbox. */
        unsigned gen = 0;
        if (tp->head == NULL) {
            gen = atomic_load(&tp->gen);
            take_inbox(tp);
        }
        cf_future *f = tp->head;
        if (f != NULL) {
            tp->head = tf_of(f)->next;
            if (tp->head == NULL)
                tp->tail = NULL;
            pass_on(tp);    /* it may have been the spinner, gone for the queue's task */
            pthread_mutex_unlock(&tp->mu);
            run_task(r, f);
            pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
            pthread_mutex_lock(&tp->mu);
            continue;
        }
        if (tp->stopping)
            break;
        idle(tp, gen);    /* the queue is empty: gen was read above */
    }
}

/* serve(), with abandoned() ready for a thread that ends inside user code. */
static void serve_guarded(inflight *r)
{
    pthread_cleanup_push(abandoned, r);
    serve(r);
    pthread_cleanup_pop(0);
}

static void *worker_main(void *p)
{
    worker_arg wa = *(worker_arg *)p;
    free(p);
    tpool *tp = wa.tp;
    if (wa.join_first)
        pthread_join(wa.predecessor, NULL);
    cf__worker_id = (int)wa.id;
    cf__worker_context = NULL;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);    /* see the DESIGN note */

    int rc = tp->base.opts.initializer != NULL ? run_initializer(&wa) : 0;
    cf_future *fire = NULL;
    pthread_mutex_lock(&tp->mu);
    initialized(tp, &wa, rc, &fire);
    if (rc == 0) {
        inflight r = {.tp = tp, .id = wa.id, .index = &cf__task_index};
        serve_guarded(&r);
        if (r.id >= tp->target)
            slot_lost(tp, r.id, &fire);    /* joined by join_all, or by a later thread of the slot */
    }
    pthread_mutex_unlock(&tp->mu);
    cf__future_fire(fire);
    return NULL;
}

/* Under mu: unlinks a pending future from the queue; false if a worker took it. */
static bool unqueue(tpool *tp, cf_future *f)
{
    cf_future *prev = NULL;
    for (cf_future *it = tp->head; it != NULL; prev = it, it = tf_of(it)->next) {
        if (it != f)
            continue;
        if (prev != NULL)
            tf_of(prev)->next = tf_of(it)->next;
        else
            tp->head = tf_of(it)->next;
        if (tp->tail == it)
            tp->tail = prev;
        return true;
    }
    return false;
}

/* A submit the pool refuses: why, and its argument's copy freed. */
static int refuse(tpool *tp, tfuture *t)
{
    pthread_mutex_lock(&tp->mu);
    int rc = tp->stopping ? CF_ESHUTDOWN : CF_EBROKEN;
    pthread_mutex_unlock(&tp->mu);
    drop_arg(t);
    return rc;
}

static int tp_submit(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size)
{
    tpool *tp = tp_of(ex);
    tfuture *t = tf_of(f);
    if (f->timeout_ms != 0)
        return CF_EINVAL;    /* a thread cannot be killed: no time limit */
    t->fn = fn;
    if (arg_size > INLINE_ARG) {
        if ((t->arg.heap = malloc(arg_size)) == NULL)
            return CF_ENOMEM;
        memcpy(t->arg.heap, arg, arg_size);
    } else if (arg_size > 0) {
        memcpy(t->arg.here, arg, arg_size);
    }
    t->arg_size = arg_size;
    if (atomic_load(&tp->closed))
        return refuse(tp, t);
    /* On the inbox, without mu: the workers take it from there. */
    cf_future *top = atomic_load_explicit(&tp->inbox, memory_order_relaxed);
    do
        t->next = top;
    while (!atomic_compare_exchange_weak(&tp->inbox, &top, f));
    atomic_fetch_add(&tp->gen, 1);
    /*
     * Closed since the look above: the workers may have taken their last
     * look at the inbox before the push (closed is set before it). Taken
     * back if it is still there, and refused; otherwise a worker took it,
     * or the pool failed it, and it ends like any other. Open: a worker's
     * look at the inbox once it sees the pool closed comes after the push.
     */
    if (atomic_load(&tp->closed)) {
        pthread_mutex_lock(&tp->mu);
        take_inbox(tp);
        bool back = unqueue(tp, f);
        pthread_mutex_unlock(&tp->mu);
        if (back)
            return refuse(tp, t);
    }
    /* A sleeper to wake, and no spinner that will see gen (see idle):
     * looked at without mu first, so that a busy pool's submit never takes it. */
    if (atomic_load(&tp->sleepers) > atomic_load(&tp->waking) && atomic_load(&tp->spinners) == 0) {
        pthread_mutex_lock(&tp->mu);
        wake_sleepers(tp, false);
        pthread_mutex_unlock(&tp->mu);
    }
    return 0;
}

static int tp_map(cf_executor *ex, cf__map *ctl, cf_fn *fn, cf_chunk_fn *cfn, const char *in,
                  size_t in_size, char *out, size_t out_size, size_t n, size_t chunk, int *status)
{
    tpool *tp = tp_of(ex);
    tmap m = {
        .fn = fn, .cfn = cfn, .in = in, .out = out, .in_size = in_size, .out_size = out_size,
        .n = n, .chunk = chunk, .status = status, .ctl = ctl, .fail_index = SIZE_MAX,
    };
    m.nranges = ctl->min_chunk == 0 ? 1 : ctl->workers < TP_RANGES ? ctl->workers : TP_RANGES;
    m.nranges = m.nranges == 0 || m.nranges > n ? 1 : m.nranges;
    /* Range i: [i n / R, (i + 1) n / R), the remainder spread over the first ones. */
    const size_t q = n / m.nranges, rem = n % m.nranges;
    for (unsigned i = 0; i < m.nranges; i++) {
        atomic_init(&m.ranges[i].next, i * q + (i < rem ? i : rem));
        m.ranges[i].end = (i + 1) * q + (i + 1 < rem ? i + 1 : rem);
    }
    atomic_init(&m.over, false);

    pthread_mutex_lock(&tp->mu);
    if (tp->stopping || tp->broken) {
        int rc = tp->stopping ? CF_ESHUTDOWN : CF_EBROKEN;
        pthread_mutex_unlock(&tp->mu);
        if (rc == CF_EBROKEN)
            cf__map_refused_broken(ctl, status, n);
        return rc;
    }
    tmap **tail = &tp->maps;
    while (*tail != NULL)
        tail = &(*tail)->link;
    *tail = &m;
    cf__map_admit(ctl);
    /* With no core to spare for the caller, the one it spins on is a
     * worker's: that worker would run only once the caller's wait ends. The
     * caller yields it once, and each worker yields once when its part is
     * done, so that the caller sees the end at once. */
    m.handed = cf__no_core_to_spare(ex);
    work_arrived(tp, true);
    /* A short map ends in microseconds, and a condition variable's wake-up
     * takes tens of them: the caller looks without mu for a while first. */
    pthread_mutex_unlock(&tp->mu);
    if (m.handed)
        sched_yield();
    cf__spinner spin;
    cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
    while (!atomic_load_explicit(&m.over, memory_order_acquire) && cf__spin(&spin))
        ;
    pthread_mutex_lock(&tp->mu);
    while (m.done < m.n || m.active > 0)
        pthread_cond_wait(&tp->progress, &tp->mu);
    /* Fully claimed maps leave the list lazily; make sure this one is gone. */
    for (tail = &tp->maps; *tail != NULL; tail = &(*tail)->link) {
        if (*tail == &m) {
            *tail = m.link;
            break;
        }
    }
    pthread_mutex_unlock(&tp->mu);
    return m.fail_index == SIZE_MAX ? 0 : m.fail_code;
}

/*
 * cf_future_cancel of a submitted map: its elements no thread claimed end
 * CF_ECANCELED now; the threads inside it stop at their next element.
 */
static void tp_map_cancel(cf_executor *ex, cf__map *ctl)
{
    tpool *tp = tp_of(ex);
    pthread_mutex_lock(&tp->mu);
    for (tmap *m = tp->maps; m != NULL; m = m->link) {
        if (m->ctl == ctl) {
            drop_unclaimed(tp, m, CF_ECANCELED);
            break;
        }
    }
    pthread_mutex_unlock(&tp->mu);
}

static int tp_cancel(cf_executor *ex, cf_future *f)
{
    tpool *tp = tp_of(ex);
    cf_future *fire = NULL;
    pthread_mutex_lock(&tp->mu);
    take_inbox(tp);
    if (cf__future_state(f) == CF__PENDING && unqueue(tp, f))
        task_finish(f, CF__CANCELLED, CF_ECANCELED, &fire);
    pthread_mutex_unlock(&tp->mu);
    if (fire == NULL)
        return CF_EBUSY;
    cf__future_fire(fire);
    return 0;
}

/* Taken off the queue by a worker (and not yet done: cf_future_running asks only then). */
static bool tp_running(cf_executor *ex, cf_future *f)
{
    (void)ex;
    return atomic_load_explicit(&tf_of(f)->taken, memory_order_relaxed);
}

/*
 * Joins every thread, following a slot whose thread ended in user code to
 * its replacement (which then does not join its predecessor: see replace_me).
 */
static void join_all(tpool *tp)
{
    pthread_mutex_lock(&tp->join_mu);
    for (unsigned i = 0; i < tp->nthreads && !tp->joined; i++) {
        pthread_mutex_lock(&tp->mu);
        tp->joining = (int)i;
        pthread_t t = tp->threads[i];
        for (;;) {
            pthread_mutex_unlock(&tp->mu);
            pthread_join(t, NULL);
            pthread_mutex_lock(&tp->mu);
            if (pthread_equal(t, tp->threads[i]))
                break;
            t = tp->threads[i];
        }
        tp->joining = -1;
        pthread_mutex_unlock(&tp->mu);
    }
    tp->joined = true;
    pthread_mutex_unlock(&tp->join_mu);
}

/*
 * Grows by starting a thread for every slot below the target that has
 * none; shrinks by letting the threads past it leave at the top of their
 * loop (serve), after their task: the broadcast reaches the idle ones.
 * A thread that cannot start leaves the target where the slots stop.
 */
static int tp_resize(cf_executor *ex, unsigned workers)
{
    tpool *tp = tp_of(ex);
    int rc = 0;
    pthread_mutex_lock(&tp->mu);
    if (tp->stopping || tp->broken) {
        rc = tp->stopping ? CF_ESHUTDOWN : CF_EBROKEN;
        pthread_mutex_unlock(&tp->mu);
        return rc;
    }
    unsigned target = workers;
    for (unsigned i = 0; i < workers && rc == 0; i++)
        if (!tp->serving[i] && (rc = start_slot(tp, i)) != 0)
            target = i > 0 ? i : 1;
    tp->target = target;
    atomic_store(&ex->workers, target);
    work_arrived(tp, true);
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

static int tp_shutdown(cf_executor *ex, bool wait, bool cancel_pending, bool stop_running)
{
    (void)stop_running;    /* a thread cannot be stopped: running tasks run to their end */
    tpool *tp = tp_of(ex);
    cf_future *cancelled = NULL;
    pthread_mutex_lock(&tp->mu);
    tp->stopping = true;
    atomic_store(&tp->closed, true);
    if (cancel_pending) {
        queue_finish(tp, CF__CANCELLED, CF_ECANCELED, NULL, &cancelled);
        for (tmap *m = tp->maps; m != NULL; m = m->link)
            drop_unclaimed(tp, m, CF_ECANCELED);    /* chunks a thread runs finish */
    }
    work_arrived(tp, true);
    pthread_mutex_unlock(&tp->mu);
    cf__future_fire(cancelled);
    if (wait)
        join_all(tp);
    return 0;
}

static void tp_destroy(cf_executor *ex)
{
    tpool *tp = tp_of(ex);
    join_all(tp);
    pthread_mutex_destroy(&tp->mu);
    pthread_mutex_destroy(&tp->join_mu);
    pthread_cond_destroy(&tp->work);
    pthread_cond_destroy(&tp->progress);
    free(tp->threads);
    cf__executor_release(&tp->base);
    free(tp);
}

static const cf__ops thread_ops = {
    .name = "thread",
    .submit = tp_submit,
    .map = tp_map,
    .map_cancel = tp_map_cancel,
    .cancel = tp_cancel,
    .wait = cf__future_wait_state,        /* finished and woken by its worker */
    .watch = cf__future_watch_none,       /* finished as soon as its task ends */
    .running = tp_running,
    .shutdown = tp_shutdown,
    .resize = tp_resize,
    .destroy = tp_destroy,
    .max_size = PTRDIFF_MAX,
    .future_size = sizeof(tfuture),
};

int cf__thread_pool_create(cf_executor **out, const cf_options *opts)
{
    if (opts != NULL && opts->task_timeout_ms != 0)
        return CF_EINVAL;    /* a thread cannot be killed */
    if (opts != NULL && opts->max_worker_rss_kb != 0)
        return CF_EINVAL;    /* a thread's memory is the process's: leaving frees none of it */
    tpool *tp = calloc(1, sizeof *tp);
    if (tp == NULL)
        return CF_ENOMEM;
    int rc = cf__executor_init(&tp->base, &thread_ops, opts);
    if (rc != 0) {
        cf__executor_release(&tp->base);
        free(tp);
        return rc;
    }
    /* mu is taken for every task by the worker that takes it, for a few
     * dozen instructions: a waiter spins a little before it sleeps (an
     * adaptive mutex), which on a busy pool saves futex calls. */
    pthread_mutexattr_t ma;
    if (pthread_mutexattr_init(&ma) != 0 || pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP) != 0 ||
        pthread_mutex_init(&tp->mu, &ma) != 0 || pthread_mutex_init(&tp->join_mu, NULL) != 0 ||
        pthread_cond_init(&tp->work, NULL) != 0 || pthread_cond_init(&tp->progress, NULL) != 0)
        abort();
    pthread_mutexattr_destroy(&ma);
    unsigned n = tp->base.workers;
    tp->joining = -1;
    tp->live = tp->target = n;
    /* Sized for the largest pool, like the process pool's tables: growing needs no new one. */
    if ((tp->threads = calloc(CF__MAX_WORKERS, sizeof *tp->threads)) == NULL) {
        rc = CF_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL) {
            rc = CF_ENOMEM;
            goto fail;
        }
        *wa = (worker_arg){.tp = tp, .id = i};
        int err = pthread_create(&tp->threads[i], NULL, worker_main, wa);
        if (err != 0) {
            free(wa);
            rc = err == EAGAIN ? CF_EAGAIN : CF_ENOMEM;
            goto fail;
        }
        tp->nthreads++;
        tp->serving[i] = true;
    }
    pthread_mutex_lock(&tp->mu);
    while (tp->started < n && tp->init_error == 0)
        pthread_cond_wait(&tp->progress, &tp->mu);
    rc = tp->init_error;
    pthread_mutex_unlock(&tp->mu);
    if (rc != 0)
        goto fail;
    *out = &tp->base;
    return 0;
fail:
    atomic_store(&tp->base.shut, true);
    tp_shutdown(&tp->base, true, true, false);
    tp_destroy(&tp->base);
    return rc;
}
