/*
 * pp_map.c — cf_map on a process pool: the input streamed through the ring
 * in chunks, a bounded number in flight.
 *
 * One cf_map call publishes chunks (publish_chunk) while fewer than `depth`
 * are in flight, and collects them as they end (wait_any, collect_chunk):
 * it waits for whichever ends first, copies its outputs and codes out,
 * releases its slot, and publishes the next. Collecting the oldest first
 * would let one long chunk hold the map: the others would end behind it and
 * the workers that ran them wait for chunks not yet published. The code a
 * map returns is its lowest failing element's, whatever the order in which
 * chunks ended. It waits for room only when none of its chunks is in
 * flight; otherwise a chunk goes only if a slot and arena space are free
 * now, so a map never waits on slots only it can release. Arrays that
 * cf_shared_alloc made visible to the workers are used in place, without
 * copies.
 *
 * The chunk's block, and where its regions are, live in private memory
 * (pchunk); from its slot only outcomes are read, and checked: progress and
 * fail_index against the chunk's size. A chunk is released by the cf_map
 * call that owns it, never by reap_done, and ends either by its worker or
 * by the pool (its worker died, or the pool broke: settle_for_pool).
 *
 * Locking: pp->mu is held only to publish, to settle a chunk the pool must
 * end, to read why the pool failed one, and to release; never while a chunk
 * is waited for or copied out.
 */
#include "pp_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#define CHUNK_BYTES_MAX ((size_t)1 << 20)       /* copied bytes per map chunk at most */
#define SMALL_MAP_BYTES ((size_t)256 << 10)     /* a map this small is published all at once */

/* ---- cf_map ------------------------------------------------------------ */

/*
 * A chunk's block in the arena: its inputs, its outputs and its codes, each
 * region that is not the caller's own shared array followed by a guard and
 * starting on a cache line. An element that writes past its own output into
 * the next element's is writing into the map's own output array, as it
 * would in a serial loop, and is not told apart; one that writes past the
 * chunk's region (up to CF__GUARD bytes) fails the chunk with CF_EOVERRUN.
 * cf_shared_alloc arrays are the caller's memory, used in place, unguarded.
 */
typedef struct pchunk {
    uint64_t pos;
    size_t   lo, count;
    char    *in, *out;       /* where the worker reads and writes */
    int32_t *status;         /* per-element codes in the arena, or NULL */
} pchunk;

typedef struct pmap {
    uint64_t    fn;
    void       *user_fn;       /* the caller's function: the trace, quick_fn */
    uint32_t    kind;          /* CF__KIND_CHUNK (fn per element) or CF__KIND_CHUNK_FN */
    const char *in;
    char       *out;
    size_t      in_size, out_size, n, chunk;
    int        *status;
    cf__map    *ctl;
    bool        codes;         /* per-element codes come back: status or on_element */
    bool        in_shared, out_shared;
    size_t      first_index;
    int         first_code;
    bool        guide;         /* automatic chunks: shrink them (cf__map_take) */
    bool        ran_long;      /* a chunk ran long enough to shrink them */
} pmap;

/*
 * Automatic chunks shrink (cf__map_take) only once a chunk has run this
 * long: a chunk's hand-off costs a few microseconds here, which for a map
 * of tiny elements is most of its time, and more chunks would cost more
 * than the balance they buy.
 */
#define GUIDE_AFTER_NS 200000u

/* Bytes per element copied through the arena: what bounds a chunk's size. */
static size_t elem_bytes(const pmap *m)
{
    return (m->in_shared ? 0 : align16(m->in_size)) + (m->out_shared ? 0 : align16(m->out_size)) +
           (m->codes ? sizeof(int32_t) : 0);
}

static size_t chunk_bytes(const pmap *m, size_t count)
{
    size_t in = m->in_shared ? 0 : align64(count * m->in_size + CF__GUARD);
    size_t out = m->out_shared ? 0 : align64(count * m->out_size + CF__GUARD);
    return in + out + (m->codes ? align64(count * sizeof(int32_t) + CF__GUARD) : 0);
}

/* Carves the next region of a chunk's block, with its guard; returns its start. */
static char *carve(char **cursor, size_t size, cf__slot *s, int *g)
{
    char *start = *cursor;
    arm_guard(start + size, CF__GUARD_CHECK);
    s->guard[(*g)++] = (cf__guard){.at = (uint64_t)(uintptr_t)(start + size), .len = CF__GUARD_CHECK};
    *cursor = start + align64(size + CF__GUARD);
    return start;
}

/*
 * Publishes elements [lo, lo+count) as one chunk. With `block` false it
 * returns 1 instead of waiting when no slot or arena space is free, so that a
 * cf_map call never waits on slots only it can release.
 */
static int publish_chunk(ppool *pp, pmap *m, pchunk *c, size_t lo, size_t count, bool block)
{
    cf_future *list = NULL;
    owner *o;
    size_t bytes = chunk_bytes(m, count);
    int rc = 0;

    pthread_mutex_lock(&pp->mu);
    if (pp->stopping || pp->drop_maps || cf__map_cancelled(m->ctl)) {
        rc = CF_ECANCELED;    /* cf_shutdown_now or _cancel, cf_future_cancel: the rest never runs */
        goto out;
    }
    if ((rc = cf__pp_reserve(pp, bytes, true, block, &o, &list)) != 0)
        goto out;
    o->chunk = true;
    o->map = m->ctl;
    cf__slot *s = slot_at(pp, pp->tail);
    cf__pp_prepare(s, m->kind, m->fn);
    char *cursor = pp->arena_base + o->block;
    int g = 0;
    c->pos = pp->tail;
    c->lo = lo;
    c->count = count;
    if (m->in_shared) {
        c->in = (char *)m->in + lo * m->in_size;
    } else {
        c->in = carve(&cursor, count * m->in_size, s, &g);
        memcpy(c->in, m->in + lo * m->in_size, count * m->in_size);
    }
    c->out = m->out_shared ? m->out + lo * m->out_size : carve(&cursor, count * m->out_size, s, &g);
    c->status = m->codes ? (int32_t *)carve(&cursor, count * sizeof(int32_t), s, &g) : NULL;

    s->first = lo;
    s->arg = (uint64_t)(uintptr_t)c->in;
    s->arg_size = m->in_size;
    s->res = (uint64_t)(uintptr_t)c->out;
    s->res_size = m->out_size;
    s->count = count;
    s->status = (uint64_t)(uintptr_t)c->status;
    cf__pp_publish(pp);
out:
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
    return rc;
}

/* futex_waitv is missing (ENOSYS, or refused): wait_any naps on one chunk instead. */
static _Atomic bool no_wait_any;

#define ANY_NAP_NS 1000000u    /* the nap, which bounds how late another chunk's end is seen */

/*
 * Under mu: the pool's own endings of the chunks in fly[]. Besides its
 * worker, the pool ends a chunk when it breaks (every READY slot is failed
 * then), or when the chunk's word turns out written over (the pool breaks).
 */
static void settle_for_pool(ppool *pp, const pchunk *fly, size_t count, cf_future **list)
{
    for (size_t i = 0; i < count; i++) {
        uint64_t pos = fly[i].pos;
        unsigned state = slot_state(pp, pos, atomic_load_explicit(&slot_at(pp, pos)->word, memory_order_acquire));
        if (state == SLOT_CORRUPT && !pp->corrupt)
            cf__pp_ring_corrupt(pp, list);
        else if (!ended(state) && (pp->broken || state == SLOT_CORRUPT))
            cf__pp_fail_slot(pp, pos, CF_EBROKEN, 0);
    }
}

/*
 * Waits until one of the `count` chunks in fly[] has ended; returns its
 * index there. Spins first, then sleeps on all their slot words at once
 * (at most CF__WAIT_ANY_MAX of them, which is enough: any one ending will
 * do), so that whichever ends first wakes it; on one word alone with a
 * plain futex wait. The pool's own endings (settle_for_pool) are looked at
 * again at least every SLOT_NAP_NS, in case it was woken before.
 */
static size_t wait_any(ppool *pp, const pchunk *fly, size_t count)
{
    void *addrs[CF__WAIT_ANY_MAX];
    uint32_t vals[CF__WAIT_ANY_MAX];
    size_t nwait = count < CF__WAIT_ANY_MAX ? count : CF__WAIT_ANY_MAX;
    cf__spinner spin;
    cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
    bool spinning = true;
    for (;;) {
        bool corrupt = false;
        for (size_t i = 0; i < count; i++) {
            uint64_t pos = fly[i].pos;
            unsigned state = slot_state(pp, pos, atomic_load_explicit(&slot_at(pp, pos)->word,
                                                                      memory_order_acquire));
            if (ended(state))
                return i;
            corrupt = corrupt || state == SLOT_CORRUPT;
        }
        if (!corrupt && spinning && (spinning = cf__spin(&spin)))
            continue;
        cf_future *list = NULL;
        pthread_mutex_lock(&pp->mu);
        settle_for_pool(pp, fly, count, &list);
        pthread_mutex_unlock(&pp->mu);
        cf__future_fire(list);
        unsigned n = 0;
        bool look_again = false;
        for (size_t i = 0; i < nwait && !look_again; i++) {
            cf__slot *s = slot_at(pp, fly[i].pos);
            uint64_t word = cf__slot_flag(s, CF__SLOT_WAITER);
            unsigned state = slot_state(pp, fly[i].pos, word);
            look_again = state != CF__SLOT_READY && state != CF__SLOT_RUNNING;
            addrs[n] = cf__low32(&s->word);
            vals[n++] = (uint32_t)word;
        }
        if (look_again)
            continue;
        uint64_t deadline = cf__now_ns() + SLOT_NAP_NS;
        if (n == 1) {
            cf__futex_wait(addrs[0], vals[0], true, deadline);
            continue;
        }
        int r = atomic_load_explicit(&no_wait_any, memory_order_relaxed)
                    ? ENOSYS
                    : cf__futex_wait_any(addrs, vals, n, true, deadline);
        if (r != 0 && r != ETIMEDOUT) {
            atomic_store_explicit(&no_wait_any, true, memory_order_relaxed);
            cf__futex_wait(addrs[0], vals[0], true, cf__now_ns() + ANY_NAP_NS);
        }
    }
}

/*
 * Copies an ended chunk's outputs and codes out, releases its slot.
 * Why the pool failed it, if it did, is read under mu: a pool that breaks
 * may fail a chunk whose worker has just finished it.
 */
static void collect_chunk(ppool *pp, pmap *m, const pchunk *c)
{
    cf__slot *s = slot_at(pp, c->pos);
    pthread_mutex_lock(&pp->mu);
    owner o = pp->own[c->pos & pp->mask];
    pthread_mutex_unlock(&pp->mu);
    size_t done = c->count;
    int code = 0;                      /* of the elements that did not finish */
    if (o.failed) {
        uint64_t progress = atomic_load(&s->progress);
        done = progress < c->count ? (size_t)progress : c->count;
        code = o.fail_code;
    } else if (s->overrun != 0) {
        done = 0;
        code = CF_EOVERRUN;
    }
    /* The worker's word for its chunk's first failure, read when no codes come back. */
    uint64_t fail_index = *(volatile uint64_t *)&s->fail_index;
    int fail_code = *(volatile int32_t *)&s->fail_code;
    /* The worker's times: a forged pair only changes later chunks' sizes, within bounds. */
    uint64_t t0 = s->start_ns, t1 = s->end_ns;
    if (t1 > t0 && t1 - t0 >= GUIDE_AFTER_NS)
        m->guide = m->ran_long = true;
    if (!m->out_shared)
        memcpy(m->out + c->lo * m->out_size, c->out, done * m->out_size);
    /* Elements the pool never let run (cancelled, broken) are not reported. */
    size_t reported = code == CF_ECANCELED || code == CF_EBROKEN ? done : c->count;
    if (reported < c->count && code == CF_ECANCELED)
        atomic_store(&m->ctl->cut, true);
    /*
     * The codes, when they come back, are read once each from the arena (a
     * task could change one between two reads): the status array, the
     * element callback and the map's answer all go by that reading.
     */
    size_t first = SIZE_MAX;    /* this chunk's lowest failing element */
    int first_code = 0;
    for (size_t i = 0; m->codes && i < c->count; i++) {
        int v = i < done ? *(volatile int32_t *)&c->status[i] : code;
        if (m->status != NULL)
            m->status[c->lo + i] = v;
        if (v != 0 && first == SIZE_MAX) {
            first = c->lo + i;
            first_code = v;
        }
        if (m->ctl->on_element != NULL && i < reported)
            m->ctl->on_element(c->lo + i, v, m->ctl->ctx);
    }
    cf__map_count(m->ctl, reported);
    if (!m->codes) {
        /* Only the worker's word: a failure is an index among the elements
         * done with a code that is one (an index with code 0 fails nothing). */
        if (fail_index < done && fail_code != 0) {
            first = c->lo + (size_t)fail_index;
            first_code = fail_code;
        } else if (done < c->count) {
            /* A worker that died after its last element failed nothing. */
            first = c->lo + done;
            first_code = code;
        }
    }
    if (first < m->first_index) {
        m->first_index = first;
        m->first_code = first_code;
    }
    if (CF__TRACING(&pp->base)) {
        uint64_t word = atomic_load(&s->word);
        int wid = slot_state(pp, c->pos, word) != SLOT_CORRUPT ? (int)CF__W_WID(word) : -1;
        cf__trace_chunk(pp->base.trace, m->user_fn, wid, s->start_ns, s->end_ns, c->lo,
                        c->count, o.failed || s->overrun ? code : s->code, o.fail_sig);
    }
    pthread_mutex_lock(&pp->mu);
    cf__pp_free_slot(pp, c->pos);
    pthread_mutex_unlock(&pp->mu);
}

/* The size of m's next chunk, `rem` elements being left. */
static size_t next_chunk(const pmap *m, size_t rem)
{
    return m->guide ? cf__map_take(m->ctl, rem, m->chunk) : rem < m->chunk ? rem : m->chunk;
}

/*
 * After a map of automatic chunks: its function is quick_fn if every chunk
 * of it ran short and nothing failed (a chunk that failed has no times to
 * go by), and is not if one ran long. The times are the workers' and
 * untrusted: a forged pair only changes the next map's chunk sizes.
 */
static void learn_quick(ppool *pp, const pmap *m, bool clean)
{
    void *fn = m->user_fn;
    if (m->ran_long)
        atomic_compare_exchange_strong(&pp->quick_fn, &fn, NULL);
    else if (clean)
        atomic_store_explicit(&pp->quick_fn, fn, memory_order_relaxed);
}

/* How many chunks m makes of its n elements, counted up to limit + 1 at most. */
static size_t count_chunks(const pmap *m, size_t n, size_t limit)
{
    size_t count = 0;
    for (size_t next = 0; next < n && count <= limit; count++)
        next += next_chunk(m, n - next);
    return count;
}

int cf__pp_map(cf_executor *ex, cf__map *ctl, cf_fn *fn, cf_chunk_fn *cfn, const char *in,
               size_t in_size, char *out, size_t out_size, size_t n, size_t chunk, int *status)
{
    ppool *pp = pp_of(ex);
    uint64_t ref;
    int err = cf__pp_fn_ref(pp, fn != NULL ? (void *)fn : (void *)cfn, &ref);
    if (err != 0)
        return err;
    pmap m = {
        .fn = ref, .kind = fn != NULL ? CF__KIND_CHUNK : CF__KIND_CHUNK_FN,
        .user_fn = fn != NULL ? (void *)fn : (void *)cfn,
        .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n,
        .status = status, .ctl = ctl, .codes = status != NULL || ctl->on_element != NULL,
        .first_index = SIZE_MAX,
        .in_shared = in_size == 0 || cf__shared_contains(in, n * in_size, pp->epoch),
        .out_shared = out_size == 0 || cf__shared_contains(out, n * out_size, pp->epoch),
    };
    size_t per = elem_bytes(&m);
    if (per > 0 && chunk > CHUNK_BYTES_MAX / per)
        chunk = CHUNK_BYTES_MAX / per > 0 ? CHUNK_BYTES_MAX / per : 1;
    m.chunk = chunk;
    if (chunk_bytes(&m, 1) > pp->arena.size)
        return CF_E2BIG;

    /* Enough chunks in flight to keep every worker fed while one is copied;
     * a small map's all at once if they are few (guided chunking makes
     * about 8 per worker), so that a caller with no core to spare can hand
     * its core over once and find every chunk done when it is back (below).
     * Those are guided from the first: once published, a chunk's size is
     * set, and heavy elements at the end need the small last chunks. Not
     * when this function's last map here ran every chunk short (quick_fn):
     * then more chunks would cost more than the balance they buy. */
    size_t depth = 2 * (size_t)ex->workers + 2, all = 8 * (size_t)ex->workers + 2;
    if (per == 0 || n <= SMALL_MAP_BYTES / per) {
        void *quick = atomic_load_explicit(&pp->quick_fn, memory_order_relaxed);
        m.guide = ctl->min_chunk != 0 && quick != m.user_fn;
        if (count_chunks(&m, n, all) <= all)
            depth = all;
        else
            m.guide = false;
    }
    size_t bytes = chunk_bytes(&m, chunk);
    if (bytes > 0 && depth > pp->arena.size / 2 / bytes)
        depth = pp->arena.size / 2 / bytes > 0 ? pp->arena.size / 2 / bytes : 1;
    if (depth > NSLOTS / 2)
        depth = NSLOTS / 2;
    pchunk *fly = malloc(depth * sizeof *fly);    /* the chunks in flight, in no order */
    if (fly == NULL)
        return CF_ENOMEM;

    /* A broken pool refuses the map, as cf_submit is refused. */
    pthread_mutex_lock(&pp->mu);
    int refused = atomic_load(&ex->shut) ? CF_ESHUTDOWN : pp->broken ? CF_EBROKEN : 0;
    if (refused == 0)
        pp->active_maps++;
    pthread_mutex_unlock(&pp->mu);
    if (refused != 0) {
        free(fly);
        if (refused == CF_EBROKEN)
            cf__map_refused_broken(ctl, status, n);
        return refused;
    }
    cf__map_admit(ctl);

    size_t next = 0, count = 0;
    int rc = 0;
    bool handed = false;
    while (next < n || count > 0) {
        while (rc == 0 && next < n && count < depth) {
            size_t take = next_chunk(&m, n - next);
            int r = publish_chunk(pp, &m, &fly[count], next, take, count == 0);
            if (r == 1)
                break;
            if (r != 0) {
                rc = r;
                break;
            }
            next += take;
            count++;
        }
        if (count == 0)
            break;
        if (!handed && cf__no_core_to_spare(ex)) {
            /* No core to spare: the one this caller would spin on is a
             * worker's, which would run only once the caller's wait ends.
             * Yield it once; each worker yields once when it finds no more
             * work after a bump of `handed` (worker.c). */
            handed = true;
            atomic_fetch_add_explicit(&pp->h->handed, 1, memory_order_relaxed);
            sched_yield();
        }
        size_t i = wait_any(pp, fly, count);
        collect_chunk(pp, &m, &fly[i]);
        fly[i] = fly[--count];
    }
    free(fly);

    pthread_mutex_lock(&pp->mu);
    pp->active_maps--;
    bool last = pp->active_maps == 0 && atomic_load(&ex->shut);
    pthread_mutex_unlock(&pp->mu);
    if (last)
        notify_manager(pp);
    if (ctl->min_chunk != 0)
        learn_quick(pp, &m, rc == 0 && m.first_index == SIZE_MAX);
    if (rc == CF_ECANCELED && next < n)
        atomic_store(&ctl->cut, true);
    if (rc != 0) {
        /* Elements never published end with the reason (a broken pool, a cancel). */
        for (size_t i = next; status != NULL && i < n; i++)
            status[i] = rc;
        if (m.first_index == SIZE_MAX) {
            m.first_index = next;
            m.first_code = rc;
        }
    }
    return m.first_index == SIZE_MAX ? 0 : m.first_code;
}
