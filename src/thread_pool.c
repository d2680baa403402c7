/*
 * thread_pool.c — the thread backend.
 *
 * Owns N pthreads, a FIFO of pending futures, and the list of cf_map calls in
 * progress. One mutex (tp->mu) guards the queue, the map list and the
 * lifecycle flags; a future's own lock may be taken under it, never the
 * reverse. A worker with nothing to do spins a little on tp->gen, which
 * every new piece of work bumps, then sleeps on tp->work; work is signalled
 * only when no worker spins for it, and a worker that takes a task while
 * more wait wakes a sleeping peer, so a burst still reaches every worker.
 *
 * A task's argument is copied to the heap at submit; the worker writes the
 * result straight into the future's buffer. cf_map needs no copy at all: the
 * caller blocks until every element is done, so workers read its input and
 * write its output in place, claiming chunks with one atomic add each, like
 * an OpenMP dynamic schedule.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct tmap {
    cf_fn          *fn;            /* per element, or */
    cf_chunk_fn    *cfn;           /* per chunk */
    const char     *in;
    char           *out;
    size_t          in_size, out_size, n, chunk;
    int            *status;
    _Atomic size_t  next;          /* first element not yet claimed */
    size_t          done;          /* elements finished, under tp->mu */
    unsigned        active;        /* workers inside it, under tp->mu */
    size_t          fail_index;    /* lowest failing element, under tp->mu */
    int             fail_code;
    struct tmap    *link;
} tmap;

typedef struct tpool {
    cf_executor     base;
    pthread_mutex_t mu;
    pthread_cond_t  work;          /* workers wait for tasks or maps */
    pthread_cond_t  progress;      /* map callers and creation wait here */
    cf_future      *head, *tail;   /* pending futures */
    tmap           *maps;          /* maps with unclaimed elements */
    _Atomic unsigned gen;          /* bumped (under mu) whenever work arrives */
    unsigned        spinners;      /* workers spinning on gen, under mu */
    unsigned        sleepers;      /* workers in pthread_cond_wait(work), under mu */
    bool            stopping;      /* workers exit once the queue is empty */
    unsigned        started;       /* workers that ran their initializer */
    int             init_error;    /* first initializer failure */
    pthread_mutex_t join_mu;
    bool            joined;
    pthread_t      *threads;
    unsigned        nthreads;      /* threads actually created */
} tpool;

typedef struct worker_arg {
    tpool   *tp;
    unsigned id;
} worker_arg;

static tpool *tp_of(cf_executor *ex)
{
    return (tpool *)ex;
}

/* Runs elements [lo, hi) of m; the first failure's index and code go to *fail. */
static void run_elements(const tmap *m, size_t lo, size_t hi, size_t *first_fail, int *fail_code)
{
    const char *in = m->in;
    char *out = m->out;
    const size_t isz = m->in_size, osz = m->out_size;
    int *status = m->status;
    if (m->cfn != NULL) {
        int rc = m->cfn(in + lo * isz, isz, out + lo * osz, osz, lo, hi - lo);
        if (rc != 0 && lo < *first_fail) {
            *first_fail = lo;
            *fail_code = rc;
        }
        for (size_t i = lo; status != NULL && i < hi; i++)
            status[i] = rc;
        return;
    }
    cf_fn *fn = m->fn;
    for (size_t i = lo; i < hi; i++) {
        int rc = fn(in + i * isz, isz, out + i * osz, osz);
        if (rc != 0 && i < *first_fail) {
            *first_fail = i;
            *fail_code = rc;
        }
        if (status != NULL)
            status[i] = rc;
    }
}

static void run_map(tpool *tp, tmap *m)
{
    const size_t n = m->n, chunk = m->chunk;
    size_t first_fail = SIZE_MAX, did = 0;
    int fail_code = 0;
    for (;;) {
        size_t lo = atomic_fetch_add_explicit(&m->next, chunk, memory_order_relaxed);
        if (lo >= n)
            break;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        run_elements(m, lo, hi, &first_fail, &fail_code);
        did += hi - lo;
    }
    pthread_mutex_lock(&tp->mu);
    m->done += did;
    if (first_fail < m->fail_index) {
        m->fail_index = first_fail;
        m->fail_code = fail_code;
    }
    if (--m->active == 0 && m->done == m->n)
        pthread_cond_broadcast(&tp->progress);
    pthread_mutex_unlock(&tp->mu);
}

static void run_task(cf_future *f, unsigned id)
{
    f->info.worker = (int)id;
    f->info.start_ns = cf__now_ns();
    int rc = f->u.t.fn(f->u.t.arg, f->u.t.arg_size, f->result_size ? f->result : NULL, f->result_size);
    f->info.end_ns = cf__now_ns();
    free(f->u.t.arg);
    f->u.t.arg = NULL;
    f->has_result = true;
    if (cf__future_finish(f, CF__FINISHED, rc, 0))
        cf__future_fire(f);
}

/* Under mu: new work is there; wake a worker unless one spins for it (all: every worker). */
static void work_arrived(tpool *tp, bool all)
{
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    if (all)
        pthread_cond_broadcast(&tp->work);
    else if (tp->spinners == 0 && tp->sleepers > 0)
        pthread_cond_signal(&tp->work);
}

/*
 * Under mu, with nothing to do: spins (without mu) until new work arrives or
 * the spin budget is spent, then sleeps unless work came meanwhile.
 */
static void idle(tpool *tp)
{
    unsigned gen = atomic_load_explicit(&tp->gen, memory_order_relaxed);
    uint64_t started = cf__now_ns();
    tp->spinners++;
    pthread_mutex_unlock(&tp->mu);
    while (atomic_load_explicit(&tp->gen, memory_order_acquire) == gen && cf__spin(started, CF__SPIN_IDLE_NS))
        ;
    pthread_mutex_lock(&tp->mu);
    tp->spinners--;
    if (atomic_load_explicit(&tp->gen, memory_order_relaxed) != gen || tp->stopping)
        return;
    tp->sleepers++;
    pthread_cond_wait(&tp->work, &tp->mu);
    tp->sleepers--;
}

/* Removes and returns the map at the front of the list once fully claimed. */
static tmap *map_with_work(tpool *tp)
{
    while (tp->maps != NULL &&
           atomic_load_explicit(&tp->maps->next, memory_order_relaxed) >= tp->maps->n)
        tp->maps = tp->maps->link;
    return tp->maps;
}

static void *worker_main(void *p)
{
    worker_arg wa = *(worker_arg *)p;
    free(p);
    tpool *tp = wa.tp;
    cf__worker_id = (int)wa.id;

    int rc = 0;
    if (tp->base.opts.initializer != NULL)
        rc = tp->base.opts.initializer(tp->base.opts.initargs, tp->base.opts.initargs_size);
    pthread_mutex_lock(&tp->mu);
    tp->started++;
    if (rc != 0 && tp->init_error == 0)
        tp->init_error = rc;
    pthread_cond_broadcast(&tp->progress);
    if (rc != 0) {
        pthread_mutex_unlock(&tp->mu);
        return NULL;
    }
    for (;;) {
        tmap *m = map_with_work(tp);
        if (m != NULL) {
            m->active++;
            pthread_mutex_unlock(&tp->mu);
            run_map(tp, m);
            pthread_mutex_lock(&tp->mu);
            continue;
        }
        cf_future *f = tp->head;
        if (f != NULL) {
            tp->head = f->u.t.next;
            if (tp->head == NULL)
                tp->tail = NULL;
            atomic_fetch_or(&f->state, CF__RUNNING);
            if (tp->head != NULL)    /* more waits: pass the wake-up on */
                work_arrived(tp, false);
            pthread_mutex_unlock(&tp->mu);
            run_task(f, wa.id);
            pthread_mutex_lock(&tp->mu);
            continue;
        }
        if (tp->stopping)
            break;
        idle(tp);
    }
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

static int tp_submit(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size)
{
    tpool *tp = tp_of(ex);
    f->u.t.fn = fn;
    f->u.t.arg_size = arg_size;
    f->u.t.arg = NULL;
    f->u.t.next = NULL;
    if (arg_size > 0) {
        if ((f->u.t.arg = malloc(arg_size)) == NULL)
            return CF_ENOMEM;
        memcpy(f->u.t.arg, arg, arg_size);
    }
    pthread_mutex_lock(&tp->mu);
    if (tp->stopping) {
        pthread_mutex_unlock(&tp->mu);
        free(f->u.t.arg);
        return CF_ESHUTDOWN;
    }
    if (tp->tail != NULL)
        tp->tail->u.t.next = f;
    else
        tp->head = f;
    tp->tail = f;
    work_arrived(tp, false);
    pthread_mutex_unlock(&tp->mu);
    return 0;
}

static int tp_map(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const char *in, size_t in_size,
                  char *out, size_t out_size, size_t n, size_t chunk, int *status)
{
    tpool *tp = tp_of(ex);
    tmap m = {
        .fn = fn, .cfn = cfn, .in = in, .out = out, .in_size = in_size, .out_size = out_size,
        .n = n, .chunk = chunk, .status = status, .fail_index = SIZE_MAX,
    };
    atomic_init(&m.next, 0);

    pthread_mutex_lock(&tp->mu);
    if (tp->stopping) {
        pthread_mutex_unlock(&tp->mu);
        return CF_ESHUTDOWN;
    }
    tmap **tail = &tp->maps;
    while (*tail != NULL)
        tail = &(*tail)->link;
    *tail = &m;
    work_arrived(tp, true);
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

/* Unlinks a pending future from the queue; false if a worker took it. */
static bool unqueue(tpool *tp, cf_future *f)
{
    cf_future *prev = NULL;
    for (cf_future *it = tp->head; it != NULL; prev = it, it = it->u.t.next) {
        if (it != f)
            continue;
        if (prev != NULL)
            prev->u.t.next = it->u.t.next;
        else
            tp->head = it->u.t.next;
        if (tp->tail == it)
            tp->tail = prev;
        return true;
    }
    return false;
}

static int tp_cancel(cf_executor *ex, cf_future *f)
{
    tpool *tp = tp_of(ex);
    pthread_mutex_lock(&tp->mu);
    bool queued = cf__future_state(f) == CF__PENDING && unqueue(tp, f);
    bool cancelled = queued && cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0);
    pthread_mutex_unlock(&tp->mu);
    if (!cancelled)
        return CF_EBUSY;
    free(f->u.t.arg);
    f->u.t.arg = NULL;
    cf__future_fire(f);
    return 0;
}

static void join_all(tpool *tp)
{
    pthread_mutex_lock(&tp->join_mu);
    if (!tp->joined) {
        for (unsigned i = 0; i < tp->nthreads; i++)
            pthread_join(tp->threads[i], NULL);
        tp->joined = true;
    }
    pthread_mutex_unlock(&tp->join_mu);
}

static int tp_shutdown(cf_executor *ex, bool wait, bool cancel_pending)
{
    tpool *tp = tp_of(ex);
    cf_future *cancelled = NULL;
    pthread_mutex_lock(&tp->mu);
    tp->stopping = true;
    if (cancel_pending) {
        while (tp->head != NULL) {
            cf_future *f = tp->head;
            tp->head = f->u.t.next;
            free(f->u.t.arg);
            f->u.t.arg = NULL;
            if (cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0)) {
                f->next_done = cancelled;
                cancelled = f;
            }
        }
        tp->tail = NULL;
    }
    work_arrived(tp, true);
    pthread_mutex_unlock(&tp->mu);
    cf__future_fire_list(cancelled);
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
    .cancel = tp_cancel,
    .wait = NULL,
    .watch = NULL,
    .running = NULL,
    .shutdown = tp_shutdown,
    .destroy = tp_destroy,
    .max_size = PTRDIFF_MAX,
};

int cf__thread_pool_create(cf_executor **out, const cf_options *opts)
{
    tpool *tp = calloc(1, sizeof *tp);
    if (tp == NULL)
        return CF_ENOMEM;
    int rc = cf__executor_init(&tp->base, &thread_ops, opts);
    if (rc != 0) {
        cf__executor_release(&tp->base);
        free(tp);
        return rc;
    }
    if (pthread_mutex_init(&tp->mu, NULL) != 0 || pthread_mutex_init(&tp->join_mu, NULL) != 0 ||
        pthread_cond_init(&tp->work, NULL) != 0 || pthread_cond_init(&tp->progress, NULL) != 0)
        abort();
    unsigned n = tp->base.workers;
    if ((tp->threads = calloc(n, sizeof *tp->threads)) == NULL) {
        rc = CF_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL) {
            rc = CF_ENOMEM;
            goto fail;
        }
        wa->tp = tp;
        wa->id = i;
        int err = pthread_create(&tp->threads[i], NULL, worker_main, wa);
        if (err != 0) {
            free(wa);
            rc = err == EAGAIN ? CF_EAGAIN : CF_ENOMEM;
            goto fail;
        }
        tp->nthreads++;
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
    tp_shutdown(&tp->base, true, true);
    tp_destroy(&tp->base);
    return rc;
}
