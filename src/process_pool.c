/*
 * process_pool.c — the process backend, parent side: the pool's lifecycle
 * (create, shutdown, free), cf_submit, and the calls on one task's future
 * (wait, watch, running, cancel), behind the ops table.
 *
 * A process pool is one shared region (ring.h: header, control ring, worker
 * records, inline buffers, arena), worker processes that the pool's zygote
 * starts (launcher.c), and a manager thread in the caller. Its code is in
 * four files around one private struct (ppool, pp_internal.h):
 *
 *   process_pool.c  this file;
 *   pp_ring.c       the caller's side of the ring: publishing, releasing and
 *                   failing slots, the admission rule, room to publish, and
 *                   the trust rules for what workers write back;
 *   pp_map.c        cf_map: chunks streamed through the ring;
 *   pp_manager.c    the manager thread: its loop, the workers reconciled
 *                   towards the target, timeouts, the region's health, the
 *                   close;
 *   pp_zygote.c     the manager's side of the zygote protocol: requests,
 *                   births and deaths, the standby, the zygote's death.
 *
 * Data plane. cf_submit copies the argument into a data buffer (an inline
 * buffer, or an arena block for large ones), describes it in the slot at the
 * ring's tail and publishes it; a free worker claims it with a compare-and-
 * swap and writes the result into shared memory. The thread that waits on
 * the future spins on the slot's word, then sleeps on it as a futex, and
 * copies the result into the future itself (release_task), which frees the
 * slot. Every data buffer is followed by a guard (ring.h): a task that
 * writes up to CF__GUARD bytes past its buffers fails alone, with
 * CF_EOVERRUN.
 *
 * Creation maps the region and makes the pool's descriptors (its memfd,
 * eventfd and death pipe), each made and tracked as one step under the
 * descriptor lock (launcher.c), so that the zygote of another pool, forked
 * at any moment, closes it; for the exec start method it writes what a
 * worker reads at boot into the arena (write_exec_boot). The manager thread
 * then starts the zygote and the workers; creation returns once each worker
 * has run its initializer.
 *
 * Locking: pp->mu (pp_internal.h). The waits spin and sleep on a slot's
 * word without it, and take it only to release a slot.
 */
#include "pp_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#define ARENA_SIZE      ((size_t)1 << 30)       /* address space; pages are used on demand */

/* ---- backend operations ------------------------------------------------ */

/*
 * A task's data: its argument, then its result at the next 16-byte boundary,
 * then the guard. Inline, the pair sits at the end of its 128 bytes, so the
 * guard begins at most 15 bytes after the result (31 after an argument with
 * no result); those bytes are armed here and checked with the head of the
 * buffer's guard, which is armed at the buffer's first use and stays so. In
 * the arena the guard's head is armed here.
 */
/*
 * A zeroed table of the caller's, mapped rather than allocated: its pages
 * are faulted in only where it is used. The slot and worker tables are sized
 * for the largest ring and pool (tens of KiB each); a calloc would zero them
 * all at every pool's creation, each page a fault of its own when the heap
 * has to grow, where most pools use a few entries of the worker table.
 */
static void *table_new(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void table_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
}

/* Under mu, or before the manager starts: worker ids [from, to) come into use. */
static void workers_init(ppool *pp, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++) {
        pp->w[i].kill_pos = UINT64_MAX;
        pp->w[i].wait_pos = pp->w[i].look_pos = UINT64_MAX;
        pp->w[i].pidfd = -1;
    }
}

static int pp_submit(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size)
{
    ppool *pp = pp_of(ex);
    size_t res_off = align16(arg_size), need = res_off + f->result_size;
    bool inline_data = need <= CF__SLOT_INLINE;
    owner *o;
    cf_future *list = NULL;
    uint64_t ref;
    int rc = cf__pp_fn_ref(pp, (void *)fn, &ref);
    if (rc != 0)
        return rc;

    pthread_mutex_lock(&pp->mu);
    if ((rc = cf__pp_reserve(pp, inline_data ? 0 : need + CF__GUARD, false, true, &o, &list)) != 0)
        goto out;
    o->f = f;
    o->timeout_ms = f->timeout_ms;
    cf__slot *s = slot_at(pp, pp->tail);
    cf__pp_prepare(s, CF__KIND_TASK, ref);
    char *base = NULL, *limit = NULL;
    if (need == 0) {
        /* Nothing to carry, nothing to guard: the task gets NULL, as on a thread pool. */
    } else if (inline_data) {
        /* A free slot means a free buffer: there are as many, each held by one
         * slot. Buffers never used come off the stack in order 0, 1, 2… */
        uint32_t i = pp->ifree[--pp->nifree];
        if (i >= pp->iarmed) {
            arm_guard(inline_buf(pp, i) + CF__SLOT_INLINE, CF__GUARD_CHECK);
            pp->iarmed = i + 1;
        }
        o->ibuf = i + 1;
        base = inline_buf(pp, i) + ((CF__SLOT_INLINE - need) & ~(size_t)15);
        limit = inline_buf(pp, i) + CF__SLOT_INLINE;
    } else {
        base = pp->arena_base + o->block;
    }
    if (base != NULL) {
        o->res = f->result_size > 0 ? base + res_off : NULL;
        char *end = f->result_size > 0 ? o->res + f->result_size : base + arg_size;
        size_t check = limit != NULL ? (size_t)(limit - end) + CF__GUARD_CHECK : CF__GUARD_CHECK;
        arm_guard(end, limit != NULL ? (size_t)(limit - end) : CF__GUARD_CHECK);
        s->guard[0] = (cf__guard){.at = (uint64_t)(uintptr_t)end, .len = check};
    }
    s->arg = arg_size > 0 ? (uint64_t)(uintptr_t)base : 0;
    s->arg_size = arg_size;
    s->res = (uint64_t)(uintptr_t)o->res;
    s->res_size = f->result_size;
    if (arg_size > 0)
        memcpy(base, arg, arg_size);
    pf_of(f)->pos = pp->tail;
    cf__pp_publish(pp);
out:
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
    return rc;
}

/*
 * Under mu, for a thread that saw f's slot end, or saw its word make no
 * sense: releases the slot if it is still f's, and breaks the pool if its
 * word was written over. False if the slot is no longer f's (f is done).
 */
static bool settle(ppool *pp, cf_future *f, cf_future **list)
{
    uint64_t pos = pf_of(f)->pos;
    owner *o = &pp->own[pos & pp->mask];
    if (!o->busy || o->f != f)
        return false;
    uint64_t word = atomic_load_explicit(&slot_at(pp, pos)->word, memory_order_acquire);
    unsigned state = slot_state(pp, pos, word);
    if (state == SLOT_CORRUPT)
        cf__pp_ring_corrupt(pp, list);
    else if (ended(state))
        cf__pp_release_task(pp, pos, word, list);
    return true;
}

static bool pp_settle(ppool *pp, cf_future *f)
{
    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    bool ours = settle(pp, f, &list);
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
    return ours;
}

static int pp_wait(cf_executor *ex, cf_future *f, uint64_t deadline)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = pf_of(f)->pos;
    cf__slot *s = slot_at(pp, pos);
    cf__spinner spin;
    cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
    bool expired = false, spinning = true;

    for (;;) {
        if (cf__state_done(cf__future_state(f)))
            return 0;
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || ended(state)) {
            /* Released by another thread (which finishes f), ended, or destroyed. */
            if (!pp_settle(pp, f))
                return cf__future_wait_state(ex, f, deadline);
            continue;
        }
        if (expired)
            return CF_ETIMEDOUT;
        if (spinning && (spinning = cf__spin(&spin)))
            continue;
        word = cf__slot_flag(s, CF__SLOT_WAITER);
        state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || ended(state))
            continue;
        if (cf__futex_wait(cf__low32(&s->word), (uint32_t)word, true, deadline) == ETIMEDOUT)
            expired = true;
    }
}

static void pp_collect(cf_executor *ex)
{
    ppool *pp = pp_of(ex);
    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    cf__pp_reap_done(pp, &list);
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
}

static void pp_watch(cf_executor *ex, cf_future *f)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = pf_of(f)->pos;
    cf__slot *s = slot_at(pp, pos);
    uint64_t word = atomic_load(&s->word);
    while (CF__W_POS(word) == (uint32_t)pos && !(word & CF__SLOT_NOTIFY) &&
           !atomic_compare_exchange_weak(&s->word, &word, word | CF__SLOT_NOTIFY))
        ;
    /* Ended before the flag was seen (the worker did not call: we do), or
     * written over (the manager's sweep deals with it). */
    unsigned state = slot_state(pp, pos, word);
    if (ended(state) || state == SLOT_CORRUPT)
        notify_manager(pp);
}

/*
 * A worker took the task: its slot is RUNNING, or DONE and not yet collected
 * (the future is finished before the slot is freed, so a task stays running
 * until its future is done).
 */
static bool pp_running(cf_executor *ex, cf_future *f)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = pf_of(f)->pos;
    uint64_t word = atomic_load(&slot_at(pp, pos)->word);
    unsigned state = slot_state(pp, pos, word);
    return state == CF__SLOT_RUNNING || state == CF__SLOT_DONE;
}

/*
 * Under mu: cancels what runs in the slot at pos (word, checked by
 * slot_state, says RUNNING): a task's future is cancelled now, and the
 * manager stops the worker (slot_state vouched for its id); whatever the
 * task still writes is thrown away. A chunk ends when its worker is gone,
 * its elements CF_ECANCELED.
 */
static void stop_running(ppool *pp, uint64_t pos, uint64_t word, cf_future **list)
{
    owner *o = &pp->own[pos & pp->mask];
    pworker *w = &pp->w[CF__W_WID(word)];
    cf_future *f = o->f;
    if (f != NULL) {
        o->f = NULL;
        f->info.worker = (int)CF__W_WID(word);
        f->info.start_ns = slot_at(pp, pos)->start_ns;
        f->info.end_ns = cf__stamp_ns();
        cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0, list);
    }
    w->kill_pos = pos;
    w->kill_code = CF_ECANCELED;
    w->kill_pending = true;
}

static int pp_cancel(cf_executor *ex, cf_future *f)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = pf_of(f)->pos;
    cf__slot *s = slot_at(pp, pos);
    cf_future *list = NULL;
    bool kill = false;
    int rc = CF_EBUSY;

    pthread_mutex_lock(&pp->mu);
    owner *o = &pp->own[pos & pp->mask];
    uint64_t word = atomic_load(&s->word);
    while (o->busy && o->f == f) {
        unsigned state = slot_state(pp, pos, word);
        if (state == CF__SLOT_READY) {
            if (!cf__slot_cancel(s, &word))
                continue;    /* claimed meanwhile: look again */
            cf__pp_release_task(pp, pos, word, &list);
            rc = 0;
        } else if (state == CF__SLOT_RUNNING) {
            stop_running(pp, pos, word, &list);
            kill = true;
            rc = 0;
        } else if (state == SLOT_CORRUPT) {
            cf__pp_ring_corrupt(pp, &list);
        } else {
            cf__pp_release_task(pp, pos, word, &list);
        }
        break;
    }
    pthread_mutex_unlock(&pp->mu);
    if (kill)
        notify_manager(pp);
    cf__future_fire(list);
    return rc;
}

/* ---- lifecycle --------------------------------------------------------- */

/*
 * Under mu: the map chunk at pos ends CF_ECANCELED if no worker took it;
 * with running_too it is stopped if it runs. True when its worker is to be
 * killed (the manager must be told).
 */
static bool stop_chunk(ppool *pp, uint64_t pos, bool running_too, cf_future **list)
{
    cf__slot *s = slot_at(pp, pos);
    uint64_t word = atomic_load(&s->word);
    unsigned state = slot_state(pp, pos, word);
    if (state == CF__SLOT_READY) {
        if (cf__slot_claim(s, &word, CF__W_WID(word))) {
            cf__pp_fail_slot(pp, pos, CF_ECANCELED, 0);
            return false;
        }
        state = slot_state(pp, pos, word);    /* a worker took it meanwhile */
    }
    if (!running_too || state != CF__SLOT_RUNNING)
        return false;
    stop_running(pp, pos, word, list);
    return true;
}

/*
 * Under mu, for cf_shutdown_now: nothing more is published, chunks waiting
 * for a worker end CF_ECANCELED, and everything running is stopped.
 */
static void stop_all(ppool *pp, cf_future **list)
{
    pp->stopping = true;
    FOR_EACH_BUSY(pp, pos) {
        if (pp->own[pos & pp->mask].chunk) {
            stop_chunk(pp, pos, true, list);
            continue;
        }
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        if (slot_state(pp, pos, word) == CF__SLOT_RUNNING)
            stop_running(pp, pos, word, list);
    }
}

/*
 * cf_future_cancel of a submitted map: its chunks waiting for a worker end
 * CF_ECANCELED, those running are stopped (their workers killed); its
 * cf_map call, which publishes no more of it, collects them as usual.
 */
static void pp_map_cancel(cf_executor *ex, cf__map *ctl)
{
    ppool *pp = pp_of(ex);
    cf_future *list = NULL;
    bool kill = false;
    pthread_mutex_lock(&pp->mu);
    FOR_EACH_BUSY(pp, pos) {
        if (pp->own[pos & pp->mask].chunk && pp->own[pos & pp->mask].map == ctl)
            kill |= stop_chunk(pp, pos, true, &list);
    }
    pthread_mutex_unlock(&pp->mu);
    if (kill)
        notify_manager(pp);
    cf__future_fire(list);
}

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_pending, bool stop_running_too)
{
    ppool *pp = pp_of(ex);
    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    if (stop_running_too)
        stop_all(pp, &list);
    if (cancel_pending) {
        /* Tasks and map chunks no worker took; maps publish no more. */
        pp->drop_maps = true;
        FOR_EACH_BUSY(pp, pos) {
            if (pp->own[pos & pp->mask].chunk) {
                stop_chunk(pp, pos, false, &list);
                continue;
            }
            cf__slot *s = slot_at(pp, pos);
            uint64_t word = atomic_load(&s->word);
            if (slot_state(pp, pos, word) == CF__SLOT_READY && cf__slot_cancel(s, &word))
                cf__pp_release_task(pp, pos, word, &list);
        }
    }
    pp->notify_all = true;
    atomic_store(&pp->h->notify_all, 1);
    cf__pp_maybe_close(pp);    /* idle workers leave now, without a hop through the manager */
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
    notify_manager(pp);
    if (wait) {
        pthread_mutex_lock(&pp->mu);
        while (!pp->finished)
            pthread_cond_wait(&pp->changed, &pp->mu);
        pthread_mutex_unlock(&pp->mu);
    }
    return 0;
}

static void release_all(ppool *pp, bool manager)
{
    if (manager)
        pthread_join(pp->mgr, NULL);
    cf__pp_stop_zygote(pp);
    cf__fd_close(pp->efd);
    cf__fd_close(pp->death[0]);
    cf__fd_close(pp->death[1]);
    cf__fd_close(pp->map_fd);
    if (pp->h != NULL)
        cf__shm_unmap(pp->h, pp->map_size, -1);
    cf__arena_fini(&pp->arena);
    cf__modtab_free(&pp->mods);
    table_free(pp->own, NSLOTS * sizeof *pp->own);
    free(pp->ifree);
    table_free(pp->w, CF__MAX_WORKERS * sizeof *pp->w);
    pthread_mutex_destroy(&pp->mu);
    pthread_cond_destroy(&pp->changed);
    cf__executor_release(&pp->base);
    free(pp);
}

static void pp_destroy(cf_executor *ex)
{
    release_all(pp_of(ex), true);
}

/*
 * The manager reconciles the workers towards the new target (pp_manager.c):
 * it starts one for each new id at once. A worker whose id is past it
 * leaves after its task; the bell makes an idle one see it now.
 */
static int pp_resize(cf_executor *ex, unsigned workers)
{
    ppool *pp = pp_of(ex);
    pthread_mutex_lock(&pp->mu);
    int rc = pp->broken || pp->corrupt ? CF_EBROKEN : pp->exit_sent ? CF_ESHUTDOWN : 0;
    if (rc == 0) {
        pp->target = workers;
        if (workers > pp->wused) {
            workers_init(pp, pp->wused, workers);
            pp->wused = workers;
            /* Before the new workers start: they and their peers scan this far. */
            atomic_store(&pp->h->mask_words, cf__mask_words(workers));
        }
        atomic_store(&pp->h->target, workers);
        atomic_store(&ex->workers, workers);
    }
    pthread_mutex_unlock(&pp->mu);
    if (rc == 0) {
        cf__idle_ring(pp->h, INT_MAX);
        notify_manager(pp);
    }
    return rc;
}

static const cf__ops process_ops = {
    .name = "process",
    .submit = pp_submit,
    .map = cf__pp_map,
    .map_cancel = pp_map_cancel,
    .cancel = pp_cancel,
    .wait = pp_wait,
    .watch = pp_watch,
    .collect = pp_collect,
    .running = pp_running,
    .shutdown = pp_shutdown,
    .resize = pp_resize,
    .destroy = pp_destroy,
    .max_size = ARENA_SIZE / 2,
    .future_size = sizeof(pfuture),
};

static size_t round_page(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) & ~(page - 1);
}

static int map_region(ppool *pp)
{
    size_t control = round_page(CF__HDR_BYTES + NSLOTS * sizeof(cf__slot) + CF__MAX_WORKERS * sizeof(cf__wrec) +
                                CF__TEXT_BYTES);
    size_t inline_bytes = round_page((size_t)NSLOTS * CF__INLINE_STRIDE);
    pp->map_size = control + inline_bytes + ARENA_SIZE;
    char *base = cf__shm_map(pp->map_size, &pp->map_fd);
    if (base == NULL)
        return errno == ENOSYS ? CF_ENOSYS : CF_ENOMEM;
    pp->h = (cf__shm_hdr *)base;
    pp->slots = pp->h->slots = cf__slots_of(pp->h);
    pp->wrecs = pp->h->wrecs = cf__wrecs_of(pp->h);
    pp->h->magic = CF__RING_MAGIC;
    pp->h->version = CF__RING_VERSION;
    pp->h->size = pp->map_size;
    pp->inline_base = base + control;
    pp->arena_base = base + control + inline_bytes;
    pp->h->nslots = NSLOTS;
    pp->h->nwrecs = CF__MAX_WORKERS;
    atomic_store(&pp->h->target, pp->target);
    atomic_store(&pp->h->mask_words, cf__mask_words(pp->wused));
    pp->h->timed = pp->base.opts.task_timeout_ms > 0;
    pp->h->max_tasks = pp->base.opts.max_tasks_per_worker;
    pp->h->spin_max = pp->spin_max = pp->base.cpus;    /* an estimate does: no cgroup walk */
    pp->h->max_rss_kb = pp->base.opts.max_worker_rss_kb;
    pp->mask = NSLOTS - 1;
    /* Buffer 0 on top: a pool fed one task at a time reuses one warm buffer. */
    for (uint32_t i = 0; i < NSLOTS; i++)
        pp->ifree[i] = NSLOTS - 1 - i;
    pp->nifree = NSLOTS;
    /*
     * The slots and inline buffers stay untouched (zero) until first used:
     * nobody reads a slot past the tail, and writing all of them now would
     * fault in their pages, a quarter of the cost of a pool's creation. An
     * inline buffer's guard is armed at the buffer's first use.
     */
    return cf__arena_init(&pp->arena, ARENA_SIZE);
}

/* Copies bytes into a new arena block; its address, or 0. */
static uint64_t stash(ppool *pp, const void *bytes, size_t size)
{
    size_t off = cf__arena_alloc(&pp->arena, size);
    if (off == SIZE_MAX)
        return 0;
    memcpy(pp->arena_base + off, bytes, size);
    return (uint64_t)(uintptr_t)(pp->arena_base + off);
}

/* Exec start method: everything a worker needs at boot, in the arena. */
static int write_exec_boot(ppool *pp)
{
    int rc = cf__modtab_build(&pp->mods);
    if (rc != 0)
        return rc;
    pp->at_guard = cf__main_guarded();
    cf__exec_boot b = {.flags = pp->at_guard ? CF__BOOT_AT_GUARD : 0, .mask = pp->caller_mask, .nmods = pp->mods.n};
    if (pp->base.opts.initializer != NULL &&
        cf__fnref_encode(&pp->mods, NULL, (void *)pp->base.opts.initializer, &b.init_ref) != 0)
        return CF_EINVAL;
    if (pp->base.opts.initargs_size > 0 &&
        (b.initargs = stash(pp, pp->base.opts.initargs, pp->base.opts.initargs_size)) == 0)
        return CF_ENOMEM;
    b.initargs_size = pp->base.opts.initargs_size;

    size_t n = cf__shared_list(NULL, 0, pp->epoch);
    if (n > 0) {
        size_t off = cf__arena_alloc(&pp->arena, n * sizeof(cf__shared_region));
        if (off == SIZE_MAX)
            return CF_ENOMEM;
        cf__shared_region *regions = (cf__shared_region *)(pp->arena_base + off);
        /* Regions are only ever added with later epochs: the count holds. */
        b.nshared = (uint32_t)cf__shared_list(regions, n, pp->epoch);
        b.shared = (uint64_t)(uintptr_t)regions;
    }

    size_t names = 0;
    for (unsigned i = 0; i < pp->mods.n; i++)
        names += strlen(pp->mods.mods[i].name) + 1;
    size_t off = cf__arena_alloc(&pp->arena, names);
    if (off == SIZE_MAX)
        return CF_ENOMEM;
    char *p = pp->arena_base + off;
    b.names = (uint64_t)(uintptr_t)p;
    for (unsigned i = 0; i < pp->mods.n; i++)
        p = stpcpy(p, pp->mods.mods[i].name) + 1;
    if ((pp->h->boot = stash(pp, &b, sizeof b)) == 0)
        return CF_ENOMEM;
    pp->boot = pp->h->boot;
    return 0;
}

/*
 * Makes the pool's own descriptors (its memfd, eventfd and death pipe), each
 * tracked as one step with its creation, so that no zygote another thread
 * forks meanwhile keeps one of them. A descriptor that cannot be tracked is
 * closed at once.
 */
static int open_fds(ppool *pp)
{
    int rc;
    cf__fd_lock();
    if ((rc = map_region(pp)) == 0 && (rc = cf__fd_track(pp->map_fd)) != 0) {
        close(pp->map_fd);
        pp->map_fd = -1;
    }
    if (rc == 0) {
        pp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (pp->efd < 0 || pipe2(pp->death, O_CLOEXEC) != 0)
            rc = errno == EMFILE || errno == ENFILE ? CF_EAGAIN : CF_ENOMEM;
    }
    int *own[] = {&pp->efd, &pp->death[0], &pp->death[1]};
    for (unsigned i = 0; i < sizeof own / sizeof *own; i++) {
        if (*own[i] >= 0 && (rc != 0 || (rc = cf__fd_track(*own[i])) != 0)) {
            close(*own[i]);
            *own[i] = -1;
        }
    }
    cf__fd_unlock();
    return rc;
}

int cf__process_pool_create(cf_executor **out, const cf_options *opts)
{
    ppool *pp = calloc(1, sizeof *pp);
    if (pp == NULL)
        return CF_ENOMEM;
    pp->efd = pp->death[0] = pp->death[1] = pp->zsock = pp->ssock = pp->map_fd = -1;
    if (pthread_mutex_init(&pp->mu, NULL) != 0 || pthread_cond_init(&pp->changed, NULL) != 0)
        abort();
    int rc = cf__executor_init(&pp->base, &process_ops, opts);
    if (rc != 0)
        goto fail;
    pp->exec = pp->base.opts.start == CF_START_EXEC;
    pp->threaded = cf__pp_thread_count(0) > 1;
    if (pp->exec && cf__exec_forbidden()) {
        rc = CF_EINVAL;
        goto fail;
    }
    pp->own = table_new(NSLOTS * sizeof *pp->own);
    pp->ifree = calloc(NSLOTS, sizeof *pp->ifree);
    /* Sized for the largest pool: growing needs no new table (cf__pp_manager_main);
     * the ids ever wanted (wused) are initialized. */
    pp->w = table_new(CF__MAX_WORKERS * sizeof *pp->w);
    pp->target = pp->wused = pp->base.workers;
    if (pp->w != NULL)
        workers_init(pp, 0, pp->wused);
    if (pp->own == NULL || pp->ifree == NULL || pp->w == NULL) {
        rc = CF_ENOMEM;
        goto fail;
    }
    pp->epoch = cf__shared_epoch();
    if ((rc = open_fds(pp)) != 0)
        goto fail;
    pthread_sigmask(SIG_SETMASK, NULL, &pp->caller_mask);
    if (pp->exec && (rc = write_exec_boot(pp)) != 0)
        goto fail;

    /* The manager runs with every signal blocked; the workers get the mask
     * the caller has now. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    int err = pthread_create(&pp->mgr, NULL, cf__pp_manager_main, pp);
    pthread_sigmask(SIG_SETMASK, &pp->caller_mask, NULL);
    if (err != 0) {
        rc = CF_EAGAIN;
        goto fail;
    }
    pthread_mutex_lock(&pp->mu);
    while (!pp->created)
        pthread_cond_wait(&pp->changed, &pp->mu);
    rc = pp->create_error;
    pthread_mutex_unlock(&pp->mu);
    if (rc != 0) {
        release_all(pp, true);
        return rc;
    }
    *out = &pp->base;
    return 0;
fail:
    release_all(pp, false);
    return rc;
}
