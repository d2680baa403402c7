/*
 * ring.h — the process pool's shared region: the one layout that the caller
 * (process_pool.c and the pp_*.c files), the zygote (launcher.c) and the
 * workers (worker.c, exec.c) agree on, and the few named steps by which its
 * words change.
 *
 * A fork worker shares the caller's image, so it cannot disagree with it.
 * An exec worker loads the library anew, from disk, and the library there
 * may have been replaced since the caller started: so the header begins
 * with a magic number and a layout version, at offsets no version may move,
 * and an exec worker checks both before it reads anything else in the
 * region (exec.c). CF__RING_VERSION changes with any change below that a
 * worker of another build would read differently.
 *
 * Never installed; internal.h comes first.
 */
#ifndef CF_RING_H
#define CF_RING_H

#include "internal.h"

#define CF__RING_MAGIC   0x67726663u  /* "cfrg" in memory, on a little-endian machine */
#define CF__RING_VERSION 10u
/* Exit status of an exec worker whose library lays the region out otherwise. */
#define CF__EXIT_LAYOUT  115

/*
 * One region, mapped before the workers fork, in this order:
 *
 *   header        CF__HDR_BYTES: magic and version, cursors, masks, flags
 *                 (struct cf__shm_hdr)
 *   control       the ring of K slots (cf__slot): control words and task
 *                 descriptors only, never task data
 *   worker records one cf__wrec per worker id the library allows
 *                 (CF__MAX_WORKERS), whatever the pool's size: a pool
 *                 that grows needs no new layout, and the pages of the
 *                 records no worker uses are never touched
 *   texts         K error texts of CF_ERROR_TEXT_MAX bytes, one per slot:
 *                 what cf_task_error wrote in the slot's task (a task that
 *                 runs clears its first byte). Data, not control: the
 *                 caller reads one only for a task that ended with a code
 *                 of its own, copies at most CF_ERROR_TEXT_MAX bytes, each
 *                 once, forces the NUL, and lets it size or decide nothing
 *                 else (cf__error_text_copy). Before the data buffers, so a
 *                 task's overrun moves away from them too
 *   inline data   K buffers of CF__SLOT_INLINE bytes, each followed by a
 *                 guard of CF__GUARD bytes
 *   arena         arguments, results and map chunks that do not fit inline,
 *                 each region followed by a guard of CF__GUARD bytes
 *
 * Control lives before data, so a task that writes past its buffers moves
 * away from every control word, and every data buffer is followed by
 * CF__GUARD bytes that belong to no one: a write up to CF__GUARD bytes past
 * any buffer lands there and nowhere else. That distance is the protection.
 *
 * Detection: the first CF__GUARD_CHECK bytes of each guard (and the few
 * bytes between an inline result and its guard) must still hold
 * CF__GUARD_BYTE when the task returns (not zero: the byte a task most often
 * writes one too many of is a string's terminating zero). The worker checks
 * them, and if the task wrote there it reports CF_EOVERRUN and fills them
 * again. A write that runs on from the end of a buffer (a terminator, a
 * memset or a loop one element too far) always starts there; bytes written
 * only further into the guard do no harm and go unreported. Checking the
 * whole guard instead (CF__GUARD_CHECK = CF__GUARD) reads 4 KiB per task:
 * with the ring full, 4 MiB of guards cycle through the workers' caches,
 * which doubled a streamed task's cost in the workers. The caller arms
 * every checked run before it publishes: an inline buffer's at its first use
 * (then the worker repairs it, or the caller if the worker died mid-task),
 * an arena region's at each publish.
 *
 * No lock lives in the region: every hand-off is a compare-and-swap on a
 * slot's word, so a worker that dies anywhere leaves nothing held. A worker
 * runs user code with the region mapped writable, so the caller reads back
 * only outcome fields, and checks each before use (cf__slot_check() through
 * the pool's slot_state(), and friends); pointers and sizes it wrote, it keeps a private copy of.
 *
 * A slot's 64-bit word: bits 0-7 state, 8-15 flags, 16-31 the claiming
 * worker, 32-63 the low bits of its ring position. Its low 32 bits double as
 * a futex. Slot i serves ring positions i, i+K, i+2K…; the position in the
 * word tells a worker holding a stale ring index that it has moved on.
 */
enum {
    CF__SLOT_FREE = 0,       /* parent owns it */
    CF__SLOT_READY,          /* published, waiting for a worker */
    CF__SLOT_RUNNING,        /* claimed by the worker in the wid bits */
    CF__SLOT_DONE,           /* finished (or failed: see code) */
    CF__SLOT_CANCELLED,      /* withdrawn by the parent before any worker took it */
};
#define CF__SLOT_WAITER   0x100u     /* a parent thread sleeps on the word */
#define CF__SLOT_NOTIFY   0x200u     /* wake the manager when it is done */
#define CF__SLOT_FLAGS    (CF__SLOT_WAITER | CF__SLOT_NOTIFY)
#define CF__W_STATE(w)    ((unsigned)((w) & 0xffu))
#define CF__W_FLAGS(w)    ((unsigned)((w) & 0xff00u))
#define CF__W_WID(w)      ((unsigned)(((w) >> 16) & 0xffffu))
#define CF__W_POS(w)      ((uint32_t)((w) >> 32))
#define CF__W_MAKE(pos, wid, flags, state) \
    (((uint64_t)(uint32_t)(pos) << 32) | ((uint64_t)(wid) << 16) | (uint64_t)(flags) | (uint64_t)(state))
#define CF__SLOT_CORRUPT  0xffu      /* cf__slot_check: the word cannot be the slot's */

enum { CF__KIND_TASK = 0, CF__KIND_CHUNK = 1, CF__KIND_CHUNK_FN = 2 };

#define CF__NSLOTS      1024u        /* ring size K, a power of two */
#define CF__SLOT_INLINE 128u         /* argument + result bytes carried without the arena */
#define CF__GUARD       4096u        /* guard bytes after every data buffer */
#define CF__GUARD_CHECK 64u          /* guard bytes armed and checked after each task */
#define CF__GUARD_BYTE  0xa5u        /* what every checked guard byte holds */
#define CF__INLINE_STRIDE (CF__SLOT_INLINE + CF__GUARD)
#define CF__HDR_BYTES   4096u
#define CF__GUARDS      3            /* a map chunk: input, output, codes */

/* Bytes [at, at+len) that must still hold CF__GUARD_BYTE when the task returns. */
typedef struct cf__guard {
    uint64_t at, len;
} cf__guard;

typedef struct cf__slot {
    _Alignas(CF__CACHELINE) _Atomic uint64_t word;
    /* Written by the caller before it publishes; read by the worker. */
    uint32_t kind;
    uint32_t pad_;
    uint64_t fn;                 /* the function's address in the worker */
    uint64_t arg, arg_size;      /* chunk: input base and element size */
    uint64_t res, res_size;      /* chunk: output base and element size */
    uint64_t count;              /* chunk: elements */
    uint64_t first;              /* chunk: the map's index of its first element */
    uint64_t status;             /* chunk: int32 code per element, or 0 */
    cf__guard guard[CF__GUARDS];  /* len 0: none */
    /* Written by the worker: the outcome, untrusted by the caller. */
    int32_t  code;               /* the task's code; for a chunk, its first failure's */
    int32_t  overrun;            /* a guard was found written */
    _Atomic uint64_t progress;   /* chunk: elements finished */
    uint64_t fail_index;         /* chunk: first failing element, or UINT64_MAX */
    int32_t  fail_code;          /* chunk: that element's code */
    int32_t  pad2_;
    uint64_t start_ns, end_ns;
    uint64_t res_len;            /* task: result bytes produced (cf_task_set_result_size),
                                    res_size unless the task said less; the caller
                                    copies no more than its own copy of res_size */
} cf__slot;

enum { CF__WREC_STARTING = 0, CF__WREC_READY, CF__WREC_FAILED };

typedef struct cf__wrec {
    _Alignas(CF__CACHELINE) _Atomic uint32_t state;
    int32_t  init_code;
    _Atomic uint64_t cur;        /* ring position + 1 of the task it runs, 0 when idle */
    _Atomic uint64_t start_ns;   /* when that task (or chunk element) started */
} cf__wrec;

#define CF__MASK_WORDS (CF__MAX_WORKERS / 64)

/* The words of a worker mask that hold the ids below n. */
static inline unsigned cf__mask_words(unsigned n)
{
    return (n + 63) / 64;
}

/* Worker wid's bit in mask, and its word. */
static inline uint64_t cf__mask_bit(unsigned wid)
{
    return (uint64_t)1 << (wid % 64);
}

static inline void cf__mask_set(_Atomic uint64_t *mask, unsigned wid)
{
    atomic_fetch_or(&mask[wid / 64], cf__mask_bit(wid));
}

/* Clears wid's bit; true if it was set. */
static inline bool cf__mask_clear(_Atomic uint64_t *mask, unsigned wid)
{
    return (atomic_fetch_and(&mask[wid / 64], ~cf__mask_bit(wid)) & cf__mask_bit(wid)) != 0;
}
#define CF__MAX_MODS   256u          /* loaded objects a function pointer may live in */

struct cf__shm_hdr {
    /* First, at offsets no layout version moves; written once, before any worker starts. */
    uint32_t magic;                /* CF__RING_MAGIC */
    uint32_t version;              /* CF__RING_VERSION */
    _Alignas(CF__CACHELINE) _Atomic uint64_t head;   /* next position to claim (a hint) */
    _Alignas(CF__CACHELINE) _Atomic uint64_t tail;   /* next position to publish */
    _Atomic uint32_t bell;         /* futex idle workers sleep on (cf__idle_*); in the
                                      tail's line, which a publisher holds already */
    _Atomic uint32_t handed;       /* bumped by a map's caller that yields its core to the
                                      workers (pp_map.c); read by a worker that runs dry */
    _Alignas(CF__CACHELINE) _Atomic uint64_t spinning[CF__MASK_WORDS];
    _Alignas(CF__CACHELINE) _Atomic uint64_t sleeping[CF__MASK_WORDS];
    _Alignas(CF__CACHELINE) _Atomic uint64_t live[CF__MASK_WORDS];   /* workers in their loop:
                                      set as one starts taking tasks, cleared as it
                                      leaves (or by the pool when it dies) */
    _Alignas(CF__CACHELINE) _Atomic uint32_t dozes;        /* bumped by every worker that goes to sleep (cf__idle_doze) */
    _Atomic uint32_t wakes;        /* and by every one that is up again (cf__idle_wake_done) */
    _Alignas(CF__CACHELINE) _Atomic uint32_t mgr_sleeping;
    _Atomic uint32_t exit;         /* workers leave once the ring is empty */
    _Atomic uint32_t notify_all;   /* wake the manager on every completion */
    _Atomic uint32_t ready;        /* futex: workers that finished their initializer */
    uint32_t nslots;               /* K (CF__NSLOTS) */
    uint32_t nwrecs;               /* worker records: CF__MAX_WORKERS, whatever the size */
    uint32_t timed;                /* task_timeout_ms is set: stamp each element */
    uint32_t max_tasks;            /* max_tasks_per_worker: leave after that many; 0: never */
    uint32_t spin_max;             /* idle workers that spin at once (the CPUs of the caller's
                                      affinity mask); the others sleep at once */
    _Atomic uint32_t target;       /* workers the pool runs: ids below it; a worker at
                                      or above it leaves after its task */
    _Atomic uint32_t mask_words;   /* words of spinning and sleeping in use (ids below
                                      64 * mask_words; grows only): what a scan reads */
    cf__slot *slots;               /* the caller's and the zygote's view; workers use */
    cf__wrec *wrecs;               /* cf__slots_of and cf__wrecs_of, not these */
    uint64_t max_rss_kb;           /* max_worker_rss_kb: leave after a task that ends with
                                      the worker's resident size above it; 0: no limit */
    uint64_t size;                 /* of the whole region */
    uint64_t boot;                 /* exec start method: address of its cf__exec_boot */
    _Atomic uint64_t mods_found[CF__MAX_MODS / 64];   /* exec: objects the workers have */
};

_Static_assert(sizeof(cf__shm_hdr) <= CF__HDR_BYTES, "the header outgrew its page");

/* Where the control ring and the worker records are: fixed offsets from the
 * region's start, never pointers read from it. */
static inline cf__slot *cf__slots_of(cf__shm_hdr *h)
{
    return (cf__slot *)((char *)h + CF__HDR_BYTES);
}

static inline cf__wrec *cf__wrecs_of(cf__shm_hdr *h)
{
    return (cf__wrec *)(cf__slots_of(h) + CF__NSLOTS);
}

/* The error text of the slot that serves ring position pos. */
static inline char *cf__text_of(cf__shm_hdr *h, uint64_t pos)
{
    return (char *)(cf__wrecs_of(h) + CF__MAX_WORKERS) + (pos & (CF__NSLOTS - 1)) * CF_ERROR_TEXT_MAX;
}
#define CF__TEXT_BYTES ((size_t)CF__NSLOTS * CF_ERROR_TEXT_MAX)

/*
 * A slot's life: FREE -> READY (cf__slot_publish) -> RUNNING (cf__slot_claim)
 * -> DONE (cf__slot_finish) -> FREE (cf__slot_release), or READY ->
 * CANCELLED (cf__slot_cancel) -> FREE; the pool may also end a slot itself,
 * whatever it holds (cf__slot_fail). Flags are only ever added (cf__slot_flag)
 * until the slot is released. Every state word changes through one of these.
 */

/*
 * Caller: the state of the slot at pos from a word a worker may have written
 * anything into. The state, if the word is one the protocol can produce for
 * a busy slot at pos (its position, known flags, a worker id below nworkers,
 * a state other than FREE), else CF__SLOT_CORRUPT. A word that passes may
 * still be a forgery, but every field of it is then safe to use.
 */
static inline unsigned cf__slot_check(uint64_t word, uint64_t pos, unsigned nworkers)
{
    unsigned state = CF__W_STATE(word);
    if (CF__W_POS(word) != (uint32_t)pos || (CF__W_FLAGS(word) & ~CF__SLOT_FLAGS) != 0 ||
        CF__W_WID(word) >= nworkers || state == CF__SLOT_FREE || state > CF__SLOT_CANCELLED)
        return CF__SLOT_CORRUPT;
    return state;
}

/* The word with another state; position, worker and flags kept. */
static inline uint64_t cf__slot_with_state(uint64_t word, unsigned state)
{
    return CF__W_MAKE(CF__W_POS(word), CF__W_WID(word), CF__W_FLAGS(word), state);
}

/* Caller: FREE -> READY at pos. Release: a worker that sees READY sees the
 * descriptor and the argument bytes written before. */
static inline void cf__slot_publish(cf__slot *s, uint64_t pos)
{
    atomic_store_explicit(&s->word, CF__W_MAKE(pos, 0, 0, CF__SLOT_READY), memory_order_release);
}

/*
 * READY -> RUNNING by worker wid, flags kept: a worker takes the slot, or
 * the pool does in a worker's stead so that none will. False if the word
 * was no longer *word (a flag changed, another worker won), which then holds
 * the word now; on success *word is the new word.
 */
static inline bool cf__slot_claim(cf__slot *s, uint64_t *word, unsigned wid)
{
    uint64_t claimed = CF__W_MAKE(CF__W_POS(*word), wid, CF__W_FLAGS(*word), CF__SLOT_RUNNING);
    if (!atomic_compare_exchange_strong(&s->word, word, claimed))
        return false;
    *word = claimed;
    return true;
}

/* Caller: READY -> CANCELLED, before any worker claims it. As cf__slot_claim. */
static inline bool cf__slot_cancel(cf__slot *s, uint64_t *word)
{
    uint64_t cancelled = cf__slot_with_state(*word, CF__SLOT_CANCELLED);
    if (!atomic_compare_exchange_strong(&s->word, word, cancelled))
        return false;
    *word = cancelled;
    return true;
}

/*
 * Worker: RUNNING -> DONE, keeping the flags a caller thread may be setting
 * meanwhile (hence the loop). Returns the word it replaced: its flags say
 * whom to wake. Seq_cst: the outcome fields are visible before DONE.
 */
static inline uint64_t cf__slot_finish(cf__slot *s)
{
    uint64_t word = atomic_load(&s->word);
    while (!atomic_compare_exchange_weak(&s->word, &word, cf__slot_with_state(word, CF__SLOT_DONE)))
        ;
    return word;
}

/*
 * Caller: whatever the word holds -> a well-formed DONE for pos, with the
 * worker id if cf__slot_check vouches for it (else 0) and the known flags.
 */
static inline void cf__slot_fail(cf__slot *s, uint64_t pos, unsigned nworkers)
{
    uint64_t word = atomic_load(&s->word), done;
    do {
        unsigned wid = cf__slot_check(word, pos, nworkers) != CF__SLOT_CORRUPT ? CF__W_WID(word) : 0;
        done = CF__W_MAKE(pos, wid, CF__W_FLAGS(word) & CF__SLOT_FLAGS, CF__SLOT_DONE);
    } while (!atomic_compare_exchange_weak(&s->word, &word, done));
}

/* Caller: any -> FREE at pos, once the outcome is copied out. Returns the
 * word it replaced (WAITER: a thread sleeps on it). */
static inline uint64_t cf__slot_release(cf__slot *s, uint64_t pos)
{
    return atomic_exchange(&s->word, CF__W_MAKE(pos, 0, 0, CF__SLOT_FREE));
}

/* Caller: adds flag (WAITER, NOTIFY) to the word; returns the word with it. */
static inline uint64_t cf__slot_flag(cf__slot *s, unsigned flag)
{
    return atomic_fetch_or(&s->word, flag) | flag;
}

/*
 * Caller, blocked on a busy slot (the ring's tail, or the oldest slot that
 * holds arena memory): sets WAITER, so that whoever ends or frees the slot
 * wakes it, and sleeps until the word changes or the deadline passes (0 or
 * ETIMEDOUT). A slot the sleeper's own side frees once it has ended (a
 * task's: the pool's reap, run by the sleeper when it wakes) is not slept on
 * if it has ended already: its worker may have finished it after the
 * sleeper last looked and before WAITER was set, waking nobody. A chunk's
 * slot is freed by its cf_map call, whose release sees WAITER and wakes.
 */
static inline int cf__slot_nap(cf__slot *s, bool freed_by_sleeper, uint64_t deadline)
{
    uint64_t word = cf__slot_flag(s, CF__SLOT_WAITER);
    unsigned state = CF__W_STATE(word);
    if (freed_by_sleeper && (state == CF__SLOT_DONE || state == CF__SLOT_CANCELLED))
        return 0;
    return cf__futex_wait(cf__low32(&s->word), (uint32_t)word, true, deadline);
}

/*
 * The idle protocol, between workers that run out of work and whoever gives
 * them some (the caller's publish, a worker passing on, the pool's close).
 *
 * An idle worker sleeps on the bell, not on the tail: every wake-up first
 * rings it (bell + 1), so a worker that took its snapshot before a ring
 * finds the word changed and does not sleep. Whatever the waker stored
 * before ringing (the tail, the exit flag) is then seen by any worker whose
 * snapshot is the new bell value: nothing that calls for a worker can fall
 * between a worker's last look and its sleep.
 *
 * A publisher wakes only when some worker sleeps and more tasks are in
 * flight (published, not yet collected) than workers are awake (live, not
 * sleeping): an awake worker either runs one of those tasks or will look at
 * the ring before it sleeps. Dekker's pattern with the masks: the worker
 * sets its sleeping bit before it takes its snapshot and looks at the tail;
 * the publisher stores the tail before it reads the bits. Either the worker
 * sees the new tail or the publisher sees a sleeper and rings. The live and
 * sleeping masks change only as workers start, leave, doze and wake: on a
 * busy pool the publisher finds them in its own cache, where head and the
 * spinning mask, written at every take, would cost it (and then the worker
 * that writes them next) a transfer of their line per task. A worker clears
 * its live bit before it leaves and then looks at the ring, ringing for
 * what waits; the pool clears the bit of a worker that died and rings. A
 * sleeper's bit stays set until it
 * runs again; so that the publishes in between do not ring for it too, a
 * waker skips a ring while as many of its rings are on their way as
 * workers sleep and no worker went to sleep since (cf__idle_ring_for). The
 * count of sleeps, dozes, is bumped between the bit and the snapshot: a
 * worker whose bump a waker missed sees that waker's tail, as above.
 *
 * These few functions are the whole protocol, shared by worker.c, the
 * pool's publish and close, and the white-box tests tests/test-idle.c and
 * tests/test-ring.c.
 */
static inline bool cf__idle_work_or_exit(cf__shm_hdr *h)
{
    return atomic_load(&h->head) < atomic_load(&h->tail) || atomic_load(&h->exit);
}

/* Worker: announces that it is about to sleep; returns its bell snapshot. */
static inline uint32_t cf__idle_doze(cf__shm_hdr *h, unsigned wid)
{
    cf__mask_set(h->sleeping, wid);
    atomic_fetch_add(&h->dozes, 1);
    cf__mask_clear(h->spinning, wid);
    /* seq_cst: the bit is visible before the snapshot, the snapshot is
     * taken before the tail and exit are looked at. */
    return atomic_load(&h->bell);
}

/* Worker: sleeps unless the bell rang since the snapshot (or the deadline
 * passes). 0, or ETIMEDOUT. */
static inline int cf__idle_sleep(cf__shm_hdr *h, uint32_t snapshot, uint64_t deadline)
{
    return cf__futex_wait(&h->bell, snapshot, true, deadline);
}

static inline void cf__idle_wake_done(cf__shm_hdr *h, unsigned wid)
{
    cf__mask_clear(h->sleeping, wid);
    atomic_fetch_add(&h->wakes, 1);
}

/* Any waker: rings the bell (after whatever it stored), then wakes n. */
static inline void cf__idle_ring(cf__shm_hdr *h, int n)
{
    atomic_fetch_add(&h->bell, 1);
    cf__futex_wake(&h->bell, n, true);
}

/*
 * Publisher, once it has stored the tail: should it ring for a sleeper?
 * Yes if some worker sleeps (*sleepers of them) and more tasks are in
 * flight (`inflight`: published and not yet freed) than workers are awake
 * (live, not sleeping). Reads the live and sleeping masks only, over
 * their first `words` words; on a busy pool, where nobody sleeps, only
 * the sleeping words, and counts nothing (this runs at every publish).
 */
static inline bool cf__idle_ring_wanted(cf__shm_hdr *h, unsigned words, uint64_t inflight,
                                        unsigned *sleepers)
{
    uint64_t zz[CF__MASK_WORDS], any = 0;
    words = words < CF__MASK_WORDS ? words : CF__MASK_WORDS;
    for (unsigned i = 0; i < words; i++)
        any |= zz[i] = atomic_load(&h->sleeping[i]);
    *sleepers = 0;
    if (any == 0)
        return false;
    unsigned awake = 0, asleep = 0;
    for (unsigned i = 0; i < words; i++) {
        asleep += (unsigned)__builtin_popcountll(zz[i]);
        awake += (unsigned)__builtin_popcountll(atomic_load(&h->live[i]) & ~zz[i]);
    }
    *sleepers = asleep;
    return inflight > awake;
}

/* A ring not answered this long (the woken worker not yet on a core) may be repeated. */
#define CF__RING_AGAIN_NS 200000u

/* What one waker (the pool's publisher, or a worker) remembers of its rings. */
typedef struct cf__ringer {
    uint32_t dozes, wakes;         /* h->dozes and h->wakes when `rings` began */
    uint32_t rings;                /* rings since, */
    uint64_t at_ns;                /* and when the last of them was */
} cf__ringer;

/*
 * Any waker that saw `sleepers` sleeping workers and work for them: rings
 * for one, unless as many rings as there are sleepers are still on their
 * way (rung, and no worker up since to answer them), no worker went to
 * sleep since and the last ring is less than CF__RING_AGAIN_NS old. A
 * sleeper's bit stays set until it runs again: without this, every publish
 * (or take) in between would make a futex call that wakes nobody. The
 * counts are the workers' to write: wrong ones only make a ring come early
 * or up to CF__RING_AGAIN_NS late.
 */
static inline void cf__idle_ring_for(cf__shm_hdr *h, cf__ringer *r, unsigned sleepers)
{
    uint32_t dozes = atomic_load(&h->dozes), wakes = atomic_load(&h->wakes);
    uint64_t now = cf__now_ns();
    if (dozes != r->dozes || now - r->at_ns >= CF__RING_AGAIN_NS) {
        r->dozes = dozes;
        r->wakes = wakes;
        r->rings = 0;
    }
    uint32_t answered = wakes - r->wakes;
    uint32_t on_their_way = r->rings > answered ? r->rings - answered : 0;
    if (on_their_way >= sleepers)
        return;
    r->rings++;
    r->at_ns = now;
    cf__idle_ring(h, 1);
}

/* The pool is closing: every worker leaves once the ring is empty. */
static inline void cf__idle_close(cf__shm_hdr *h)
{
    atomic_store(&h->exit, 1);
    cf__idle_ring(h, INT_MAX);
}

#endif /* CF_RING_H */
