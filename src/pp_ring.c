/*
 * pp_ring.c — the process pool's side of the ring: what the caller does to
 * slots (publish, release, fail) and the one admission rule.
 *
 * Publishing. A slot is published at the ring's tail once its descriptor
 * and data are written (cf__slot_publish: a release store); a free worker
 * claims it with a compare-and-swap. The caller needs room first: the slot
 * at the tail free, and for data that does not fit inline an arena block
 * (cf__pp_reserve: both or neither), for which a blocked caller sleeps on the
 * oldest slot's word and looks again at least every SLOT_NAP_NS. A slot is
 * released as soon as its outcome is copied out, so held futures never pin
 * shared memory.
 *
 * Admission. One rule (admit) decides, under mu, whether anything may be
 * published: cf_submit, and both of cf_map's publishing paths, through
 * cf__pp_reserve. A broken pool publishes nothing, and every
 * slot it had published is failed in the same critical section that marks
 * it broken, so no slot can be left READY with no worker to take it.
 *
 * Trust. Workers run user code with the region writable, so nothing read
 * back from it is taken on trust. Where a buffer is, how large, and why the
 * pool failed a slot live in private memory (owner, pchunk); from shared
 * memory only outcomes are read, each checked: a slot's word through
 * slot_state() (cf__slot_check), progress and fail_index against the
 * chunk's size. A word that no protocol step could have written means a
 * worker wrote over the control data: the pool then breaks (ring_corrupt),
 * its workers are killed, and everything unfinished ends with CF_EBROKEN.
 *
 * Locking: everything here runs under pp->mu (pp_internal.h);
 * cf__pp_reserve drops and retakes it while it waits.
 */
#include "pp_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <sys/mman.h>

#define BIG_BLOCK       ((size_t)16 << 20)      /* freed blocks this large return their pages */

/* Gives the pages of a large block back to the system. */
static void drop_pages(ppool *pp, size_t off, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)pp->arena_base + off + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)pp->arena_base + off + size) & ~(uintptr_t)(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_REMOVE);
}

void cf__pp_free_slot(ppool *pp, uint64_t pos)
{
    owner *o = &pp->own[pos & pp->mask];
    if (o->ibuf > 0) {
        /* Its worker may have died mid-task, with the guard written: the
         * next task must find it armed. */
        if (o->failed)
            arm_guard(inline_buf(pp, o->ibuf - 1) + CF__SLOT_INLINE, CF__GUARD_CHECK);
        pp->ifree[pp->nifree++] = o->ibuf - 1;
    }
    if (o->block_size >= BIG_BLOCK)
        drop_pages(pp, o->block, o->block_size);
    if (o->block_size > 0)
        cf__arena_free(&pp->arena, o->block, o->block_size);
    if (o->timeout_ms > 0)
        pp->timed--;
    *o = (owner){0};
    pp->inflight--;
    while (pp->lo < pp->tail && !pp->own[pp->lo & pp->mask].busy)
        pp->lo++;
    cf__slot *s = slot_at(pp, pos);
    if (cf__slot_release(s, pos) & CF__SLOT_WAITER)
        cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
}

/* Why the pool ended a task, in words (its future's error text); NULL if none. */
static char *failure_text(const ppool *pp, const owner *o)
{
    switch (o->fail_code) {
    case CF_ECRASHED:
        if (o->fail_sig > 0)
            return cf__error_text_new("worker killed by signal %d (%s)", o->fail_sig,
                                      cf__signal_name(o->fail_sig));
        return cf__error_text_new("worker process exited while running the task");
    case CF_ETIMEDOUT: {
        int limit = o->timeout_ms > 0 ? o->timeout_ms : pp->base.opts.task_timeout_ms;
        return cf__error_text_new("task ran longer than its %d ms limit; its worker was killed", limit);
    }
    case CF_EDEADLK:
        return cf__error_text_new("task waited for ever on a lock (a process-private mutex or condition "
                                  "variable) that nothing in its worker can release; its worker was killed");
    case CF_EBROKEN:
        return cf__error_text_new("the pool broke (no worker can be started, or a worker wrote over its "
                                  "control data) before the task could end");
    default:
        return NULL;
    }
}

/*
 * Copies a finished task's outcome into its future and frees the slot. The
 * word was checked by slot_state. The result comes from where the pool put
 * it (owner.res), never from an address read back from the slot.
 */
void cf__pp_release_task(ppool *pp, uint64_t pos, uint64_t word, cf_future **list)
{
    cf__slot *s = slot_at(pp, pos);
    owner *o = &pp->own[pos & pp->mask];
    cf_future *f = o->f;
    if (f != NULL) {
        if (CF__W_STATE(word) == CF__SLOT_CANCELLED) {
            cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0, list);
        } else {
            int code = s->code, sig = 0;
            bool ran = true;
            uint64_t len = 0;
            if (o->failed) {
                code = o->fail_code;
                sig = o->fail_sig;
                ran = false;
                f->error_text = failure_text(pp, o);
            } else if (s->overrun != 0) {
                code = CF_EOVERRUN;
                ran = false;
                f->error_text = f->result_size > 0
                    ? cf__error_text_new("task wrote past the end of its %zu-byte result buffer", f->result_size)
                    : cf__error_text_new("task wrote past the end of its argument buffer");
            } else if ((len = *(volatile uint64_t *)&s->res_len) > f->result_size) {
                /* Never what cf_task_set_result_size lets through: the task
                 * wrote over its slot. Read once; sizes no copy. */
                code = CF_EOVERRUN;
                ran = false;
                f->error_text = cf__error_text_new("the worker reported a %" PRIu64 "-byte result for a "
                                                   "%zu-byte result buffer; nothing copied",
                                                   len, f->result_size);
            } else if (code != 0) {
                f->error_text = cf__error_text_copy(cf__text_of(pp->h, pos));
            }
            if (!o->unstarted) {    /* a task no worker took never ran anywhere */
                f->info.worker = (int)CF__W_WID(word);
                f->info.start_ns = s->start_ns;
                f->info.end_ns = s->end_ns;
            }
            if (ran) {
                f->result_len = len;
                if (len > 0)
                    memcpy(f->result, o->res, len);
            }
            f->has_result = ran;
            cf__future_finish(f, CF__FINISHED, code, sig, list);
        }
    }
    cf__pp_free_slot(pp, pos);
}

/*
 * Ends the busy slot at pos for the pool: its worker died, or none will ever
 * take it. The reason stays in private memory; the word becomes a well-formed
 * DONE whatever it held, and its sleepers are woken.
 */
void cf__pp_fail_slot(ppool *pp, uint64_t pos, int code, int sig)
{
    owner *o = &pp->own[pos & pp->mask];
    cf__slot *s = slot_at(pp, pos);
    o->failed = true;
    o->fail_code = code;
    o->fail_sig = sig;
    o->unstarted = o->unstarted || slot_state(pp, pos, atomic_load(&s->word)) == CF__SLOT_READY;
    s->end_ns = cf__stamp_ns();
    cf__slot_fail(s, pos, CF__MAX_WORKERS);
    cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
}

/* Releases every finished task slot. Chunks are left to their cf_map call. */
void cf__pp_reap_done(ppool *pp, cf_future **list)
{
    FOR_EACH_BUSY(pp, pos) {
        if (pp->own[pos & pp->mask].chunk)
            continue;
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT) {
            if (!pp->corrupt) {
                cf__pp_ring_corrupt(pp, list);    /* which reaps everything */
                return;
            }
            cf__pp_fail_slot(pp, pos, CF_EBROKEN, 0);    /* written over again since */
            word = atomic_load(&s->word);
            state = CF__SLOT_DONE;
        }
        if (ended(state))
            cf__pp_release_task(pp, pos, word, list);
    }
}

/*
 * Under mu: a worker wrote over the pool's control data: a slot's word or
 * the header holds what no step of the protocol writes. Nothing in the
 * region can be relied on any more, so the pool breaks at once: every slot
 * not yet ended is failed with CF_EBROKEN, admit() refuses all later work,
 * and the manager (the one thread that talks to the zygote) tells the zygote
 * to kill every worker and leave; it then sees it gone, as when it dies.
 */
void cf__pp_ring_corrupt(ppool *pp, cf_future **list)
{
    if (pp->corrupt)
        return;
    pp->corrupt = true;
    pp->broken = true;
    FOR_EACH_BUSY(pp, pos) {
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        if (!ended(slot_state(pp, pos, word)))
            cf__pp_fail_slot(pp, pos, CF_EBROKEN, 0);
    }
    cf__pp_reap_done(pp, list);
    notify_manager(pp);
}

/* ---- admission and room (drop and retake mu) ---------------------------- */

/*
 * Under mu: may work be published now? 0, CF_ESHUTDOWN or CF_EBROKEN. The
 * one rule of cf_submit and of both of cf_map's publishing paths; a chunk
 * belongs to a map admitted before any cf_shutdown, and may still go.
 */
static int admit(const ppool *pp, bool chunk)
{
    if (!chunk && atomic_load(&pp->base.shut))
        return CF_ESHUTDOWN;
    if (pp->broken)
        return CF_EBROKEN;
    return 0;
}

/* Drops mu and sleeps on the busy slot at pos until it ends or is freed. */
static void nap_on_slot(ppool *pp, uint64_t pos)
{
    bool task = !pp->own[pos & pp->mask].chunk;
    pthread_mutex_unlock(&pp->mu);
    cf__slot_nap(slot_at(pp, pos), task, cf__now_ns() + SLOT_NAP_NS);
    pthread_mutex_lock(&pp->mu);
}

/*
 * Makes the slot at the tail usable, waiting for it if `block`: 0, 1 (not
 * blocking and none free now), or admit()'s refusal.
 */
static int claim_tail(ppool *pp, bool chunk, bool block, cf_future **list)
{
    for (;;) {
        int rc = admit(pp, chunk);
        if (rc != 0)
            return rc;
        if (!pp->own[pp->tail & pp->mask].busy)
            return 0;
        cf__pp_reap_done(pp, list);
        if (!pp->own[pp->tail & pp->mask].busy)
            return 0;
        if (!block)
            return 1;
        nap_on_slot(pp, pp->tail);
    }
}

/* An arena block of size bytes, as claim_tail waits for a slot. */
static int alloc_block(ppool *pp, size_t size, bool chunk, bool block, size_t *off, cf_future **list)
{
    if (size > pp->arena.size)
        return CF_E2BIG;
    for (;;) {
        int rc = admit(pp, chunk);
        if (rc != 0)
            return rc;
        if ((*off = cf__arena_alloc(&pp->arena, size)) != SIZE_MAX)
            return 0;
        cf__pp_reap_done(pp, list);
        if ((*off = cf__arena_alloc(&pp->arena, size)) != SIZE_MAX)
            return 0;
        if (!block)
            return 1;
        if (pp->inflight == 0)
            return CF_ENOMEM;
        nap_on_slot(pp, pp->lo);
    }
}

int cf__pp_reserve(ppool *pp, size_t size, bool chunk, bool block, owner **out, cf_future **list)
{
    size_t at = 0;
    int rc = size > 0 ? alloc_block(pp, size, chunk, block, &at, list) : 0;
    if (rc == 0 && (rc = claim_tail(pp, chunk, block, list)) != 0 && size > 0)
        cf__arena_free(&pp->arena, at, size);
    if (rc != 0)
        return rc;
    /* Filled in place: a record built on the stack and copied here would be
     * read back 16 bytes at a time across the narrower stores that built it,
     * and such a load waits for every older store to reach the cache,
     * the slot's among them, whose lines the workers hold. */
    owner *o = &pp->own[pp->tail & pp->mask];
    *o = (owner){.block = at, .block_size = size};
    *out = o;
    return 0;
}

/*
 * Publishes the slot at the tail, and wakes a sleeping worker if more tasks
 * are in flight than workers are awake (ring.h, cf__idle_*).
 */
void cf__pp_publish(ppool *pp)
{
    uint64_t pos = pp->tail;
    owner *o = &pp->own[pos & pp->mask];
    o->busy = true;
    if (o->timeout_ms > 0) {
        if (pp->timed++ == 0 || o->timeout_ms < pp->timed_min_ms)
            pp->timed_min_ms = o->timeout_ms;
    }
    cf__slot_publish(slot_at(pp, pos), pos);
    pp->tail = pos + 1;
    pp->inflight++;
    /* A release store, then a fence for the masks below (ring.h, Dekker's
     * pattern): the store is visible as soon as its line arrives, where an
     * exchange (a seq_cst store) would wait first for every store before it,
     * the slot's among them, to reach the cache one after another.
     * ThreadSanitizer models no fence (gcc refuses one there): that build
     * makes the seq_cst store, the same order. */
#if defined(__SANITIZE_THREAD__)
    atomic_store(&pp->h->tail, pp->tail);
#else
    atomic_store_explicit(&pp->h->tail, pp->tail, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
#endif
    /* In flight counts every slot published and not yet freed: never fewer
     * than the tasks a worker still has to take or runs. */
    unsigned sleepers;
    if (cf__idle_ring_wanted(pp->h, cf__mask_words(pp->wused), pp->inflight, &sleepers))
        cf__idle_ring_for(pp->h, &pp->ringer, sleepers);
    /* Work in flight is looked after (pp_manager.c): a manager asleep with no deadline is told. */
    if (pp->mgr_idle) {
        pp->mgr_idle = false;
        notify_manager(pp);
    }
}

/*
 * How the workers will find a task, chunk or initializer function: its
 * address, or (object, offset) for exec workers.
 */
int cf__pp_fn_ref(const ppool *pp, void *code, uint64_t *ref)
{
    if (!pp->exec) {
        *ref = (uint64_t)(uintptr_t)code;
        return 0;
    }
    return cf__fnref_encode(&pp->mods, pp->h->mods_found, code, ref);
}

void cf__pp_prepare(cf__slot *s, uint32_t kind, uint64_t fn)
{
    s->kind = kind;
    s->fn = fn;
    s->code = 0;
    s->overrun = 0;
    s->start_ns = 0;
    s->end_ns = 0;
    s->res_len = 0;
    s->status = 0;
    s->count = 0;
    s->fail_index = UINT64_MAX;
    s->fail_code = 0;
    for (int i = 0; i < CF__GUARDS; i++)
        s->guard[i] = (cf__guard){0};
    atomic_store_explicit(&s->progress, 0, memory_order_relaxed);
}
