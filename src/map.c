/*
 * map.c — maps as futures (cf_map_submit, cf_map_chunks_submit).
 *
 * A submitted map runs the backend's blocking map on a thread of its own,
 * the map's driver, which then finishes the map's future by the protocol of
 * internal.h. The backend already drives a cf_map from whatever thread
 * calls it, so a map as a future needs nothing new of it but the controls
 * every map has (cf__map: progress, element callback, cancel). The
 * submitting thread waits until the backend admitted the map (or refused
 * it: the error is then cf_map_submit's, and nothing remains), so a
 * shutdown that comes after cf_map_submit returned treats the map as the
 * accepted work it is.
 *
 * Threads. Each driver is started joinable with every signal blocked, and
 * listed in its executor (ex->drivers). A driver whose map's future has
 * fired sleeps until another map of the same executor is handed to it
 * (ex->idle_drivers), and ends once DRIVER_KEEP_NS pass without one, so
 * that a program that submits maps one after another starts a
 * thread once, not at every map, and one that stops submitting keeps no
 * thread for long. A driver that has ended is joined by the next
 * cf_map_submit or by cf_executor_free, which ends the idle ones and joins
 * them all. A driver whose map the backend refused ends at once and is
 * joined by its submitter, which frees the map. ex->maps_live counts the
 * maps whose future has not fired yet: the driver drops it as the last
 * thing it does with the map, and a waiting cf_shutdown or
 * cf_executor_free sleeps on it.
 *
 * Cancel. cf_future_cancel sets the map's `cancel` flag, asks the backend
 * to stop what it handed out (map_cancel), and waits for the future,
 * unless the calling thread works for that map (cf__map_here): then it
 * would wait for itself.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

_Thread_local const cf__map *cf__map_here;
/* The executor whose submitted map this thread drives, for its whole life. */
static _Thread_local cf_executor *driving;

struct cf__driver {
    pthread_t          thread;
    _Atomic bool       exited;
    struct cf__driver *next;       /* in ex->drivers */
    struct cf__driver *next_idle;  /* in ex->idle_drivers, under drivers_mu */
    bool               idle;       /* on ex->idle_drivers, under drivers_mu */
    struct submitted  *job;        /* the map handed to it, under drivers_mu */
    _Atomic uint32_t   bell;       /* bumped when a map or the end is handed over (a futex) */
};

/* How long a driver with no map waits for one before its thread ends. */
#define DRIVER_KEEP_NS 1000000000u

/* A submitted map: its controls first (cf_future.map points at them). */
typedef struct submitted {
    cf__map      ctl;
    cf_executor *ex;
    cf_future   *f;
    cf_fn       *fn;
    cf_chunk_fn *cfn;
    const char  *in;
    char        *out;
    size_t       in_size, out_size, chunk;
    int         *status;
    int          refused;          /* the backend's code when admitted == 2 */
    struct cf__driver *driver;
} submitted;

enum { NOT_YET = 0, ADMITTED = 1, REFUSED = 2 };

void cf__map_admit(cf__map *m)
{
    if (!m->submitted)
        return;
    atomic_store(&m->admitted, ADMITTED);
    cf__futex_wake(&m->admitted, 1, false);
}

/*
 * Runs the submitted map s and finishes its future; false if the backend
 * refused it (s is then the submitter's, and this thread ends).
 */
static bool drive(submitted *s)
{
    cf_executor *ex = s->ex;
    cf_future *f = s->f;

    driving = ex;
    cf__map_here = &s->ctl;
    f->info.start_ns = cf__stamp_ns();
    atomic_fetch_or(&f->state, CF__RUNNING);
    int rc = ex->ops->map(ex, &s->ctl, s->fn, s->cfn, s->in, s->in_size, s->out, s->out_size,
                          s->ctl.n, s->chunk, s->status);
    cf__map_here = NULL;
    if (atomic_load(&s->ctl.admitted) != ADMITTED) {
        /* Refused: the submitter joins this thread and frees everything. */
        s->refused = rc;
        atomic_store(&s->ctl.admitted, REFUSED);
        cf__futex_wake(&s->ctl.admitted, 1, false);
        return false;
    }
    f->info.end_ns = cf__stamp_ns();
    f->has_result = true;    /* of 0 bytes: the outputs are in the caller's array */
    bool cut = atomic_load(&s->ctl.cut);
    cf_future *fire = NULL;
    cf__future_finish(f, cut ? CF__CANCELLED : CF__FINISHED, cut ? CF_ECANCELED : rc, 0, &fire);
    cf__future_fire(fire);    /* from here on s may be gone with its future */
    atomic_fetch_sub(&ex->maps_live, 1);
    cf__futex_wake(&ex->maps_live, INT_MAX, false);
    return true;
}

/*
 * After its map: sleeps on d's bell until a map is handed to it, until
 * DRIVER_KEEP_NS have passed or the executor is being freed. It does not
 * spin: a map's workers and its caller may need every core meanwhile.
 * The next map, or NULL: the thread then ends, marked exited for reap().
 */
static submitted *next_job(cf_executor *ex, struct cf__driver *d)
{
    pthread_mutex_lock(&ex->drivers_mu);
    d->job = NULL;    /* that map may be gone */
    if (!ex->drivers_closing) {
        d->idle = true;
        d->next_idle = ex->idle_drivers;
        ex->idle_drivers = d;
    }
    pthread_mutex_unlock(&ex->drivers_mu);

    uint64_t deadline = cf__now_ns() + DRIVER_KEEP_NS;
    for (;;) {
        /* The bell first: a hand-over after this look bumps it past b. */
        uint32_t b = atomic_load(&d->bell);
        pthread_mutex_lock(&ex->drivers_mu);
        submitted *s = d->job;
        bool over = s == NULL && (!d->idle || cf__now_ns() >= deadline);
        if (over && d->idle) {
            struct cf__driver **link = &ex->idle_drivers;
            while (*link != d)    /* d is on the list while idle */
                link = &(*link)->next_idle;
            *link = d->next_idle;
            d->idle = false;
        }
        if (over)
            atomic_store(&d->exited, true);    /* under drivers_mu: reap joins it once it returns */
        pthread_mutex_unlock(&ex->drivers_mu);
        if (s != NULL || over)
            return s;
        cf__futex_wait(&d->bell, b, false, deadline);
    }
}

static void *driver_main(void *arg)
{
    struct cf__driver *d = arg;
    submitted *s = d->job;    /* set before the thread was started */
    cf_executor *ex = s->ex;
    while (s != NULL) {
        if (!drive(s))
            return NULL;    /* refused: its submitter joins this thread */
        s = next_job(ex, d);
    }
    return NULL;
}

/* Under drivers_mu: wakes d in next_job, to look at its job again. */
static void ring(struct cf__driver *d)
{
    atomic_fetch_add(&d->bell, 1);
    cf__futex_wake(&d->bell, 1, false);
}

/* Under drivers_mu: joins the drivers that have ended. */
static void reap(cf_executor *ex, bool all)
{
    struct cf__driver **link = &ex->drivers;
    while (*link != NULL) {
        struct cf__driver *d = *link;
        if (!all && !atomic_load(&d->exited)) {
            link = &d->next;
            continue;
        }
        *link = d->next;
        pthread_join(d->thread, NULL);
        free(d);
    }
}

void cf__maps_wait(cf_executor *ex, bool join)
{
    uint32_t mine = driving == ex ? 1 : 0;    /* a done-callback of a map of ex */
    for (;;) {
        uint32_t live = atomic_load(&ex->maps_live);
        if (live <= mine)
            break;
        cf__futex_wait(&ex->maps_live, live, false, UINT64_MAX);
    }
    if (!join)
        return;
    /* Every map has fired: its driver is idle, on its way there, or ended.
     * Idle ones are rung to end; joined outside drivers_mu, which a driver
     * takes on its way to idle (it sees drivers_closing there and ends). */
    pthread_mutex_lock(&ex->drivers_mu);
    ex->drivers_closing = true;
    for (struct cf__driver *d = ex->idle_drivers; d != NULL; d = d->next_idle) {
        d->idle = false;
        ring(d);
    }
    ex->idle_drivers = NULL;
    struct cf__driver *all = ex->drivers;
    ex->drivers = NULL;
    pthread_mutex_unlock(&ex->drivers_mu);
    while (all != NULL) {
        struct cf__driver *d = all;
        all = d->next;
        pthread_join(d->thread, NULL);
        free(d);
    }
}

/*
 * Hands s to an idle driver, or starts one for it with every signal
 * blocked; 0, CF_ENOMEM or CF_EAGAIN.
 */
static int start_driver(cf_executor *ex, submitted *s)
{
    pthread_mutex_lock(&ex->drivers_mu);
    reap(ex, false);
    struct cf__driver *d = ex->idle_drivers;
    if (d != NULL) {
        ex->idle_drivers = d->next_idle;
        d->idle = false;
        s->driver = d;
        d->job = s;
        ring(d);
        pthread_mutex_unlock(&ex->drivers_mu);
        return 0;
    }
    int err = ENOMEM;
    if ((d = calloc(1, sizeof *d)) != NULL) {
        s->driver = d;
        d->job = s;
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&d->thread, NULL, driver_main, d);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (err == 0) {
        d->next = ex->drivers;
        ex->drivers = d;
    }
    pthread_mutex_unlock(&ex->drivers_mu);
    if (err != 0) {
        free(d);
        return err == ENOMEM ? CF_ENOMEM : CF_EAGAIN;
    }
    return 0;
}

/* Unlinks and joins a driver whose map was refused. */
static void join_refused(cf_executor *ex, struct cf__driver *d)
{
    pthread_mutex_lock(&ex->drivers_mu);
    for (struct cf__driver **link = &ex->drivers; *link != NULL; link = &(*link)->next) {
        if (*link == d) {
            *link = d->next;
            break;
        }
    }
    pthread_mutex_unlock(&ex->drivers_mu);
    pthread_join(d->thread, NULL);
    free(d);
}

int cf__map_submit(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const void *in, size_t in_size,
                   void *out, size_t out_size, size_t n, size_t chunk, const cf__map *ctl,
                   const cf_map_options *opts, cf_future **future)
{
    cf_future *f = cf__future_new(ex, 0);
    submitted *s = malloc(sizeof *s);
    if (f == NULL || s == NULL) {
        free(s);
        if (f != NULL) {
            cf_future_free(f);
            cf_future_free(f);
        }
        return CF_ENOMEM;
    }
    /* Not started: nothing in ctl moves yet. */
    *s = (submitted){.ctl = *ctl, .ex = ex, .f = f, .fn = fn, .cfn = cfn, .in = in, .out = out,
                     .in_size = in_size, .out_size = out_size, .chunk = chunk,
                     .status = opts != NULL ? opts->status : NULL};
    s->ctl.submitted = true;
    f->map = &s->ctl;

    if (n == 0) {
        cf_future *fire = NULL;
        f->has_result = true;
        cf__future_finish(f, CF__FINISHED, 0, 0, &fire);
        cf__future_fire(fire);
        *future = f;
        return 0;
    }
    atomic_fetch_add(&ex->maps_live, 1);
    int rc = start_driver(ex, s);
    if (rc == 0) {
        /* An idle driver takes the map within microseconds: spin first. */
        cf__spinner spin;
        cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
        uint32_t a;
        while ((a = atomic_load(&s->ctl.admitted)) == NOT_YET)
            if (!cf__spin(&spin))
                cf__futex_wait(&s->ctl.admitted, a, false, UINT64_MAX);
        if (a == REFUSED) {
            join_refused(ex, s->driver);
            rc = s->refused;
        }
    }
    if (rc != 0) {
        atomic_fetch_sub(&ex->maps_live, 1);
        cf__futex_wake(&ex->maps_live, INT_MAX, false);
        cf_future_free(f);    /* never finished: both references are ours */
        cf_future_free(f);
        return rc;
    }
    *future = f;
    return 0;
}

void cf__map_future_cancel(cf_future *f, cf_executor *ex)
{
    atomic_store(&f->map->cancel, true);
    ex->ops->map_cancel(ex, f->map);
}
