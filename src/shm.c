/*
 * shm.c — shared memory: cf_shared_alloc, pool regions, the arena allocator.
 *
 * All shared memory is a memfd mapped MAP_SHARED: it has no name in any file
 * system, so nothing can be left behind in /dev/shm and no other user can
 * open it; its descriptor is close-on-exec, handed on only to the pool's own
 * exec workers, and it disappears when the last process that maps it exits.
 *
 * Placement. An exec worker maps the pool's region and the cf_shared_alloc
 * regions at the caller's addresses, so they go in a window of the address
 * space where a freshly executed program has nothing (far below its
 * libraries and stack, far above its executable's usual place). The window
 * is handed out by a first-fit allocator of address ranges (a cf__arena over
 * the window's offsets), and cf__shm_unmap gives a range back: any number of
 * allocations over a program's life fit, only the live ones take room. The
 * range's start is passed to mmap as a hint, never with MAP_FIXED, so a
 * mapping of someone else there is never replaced; when the kernel places
 * the region elsewhere (someone occupies the range, or a sanitizer moved the
 * hint: ThreadSanitizer keeps this part of the address space for itself,
 * and it kills a process that asks for it with MAP_FIXED_NOREPLACE), the
 * range is left aside and the next one tried. After SPAN_TRIES misses in a
 * row, or when it is full, the window is given up for a second one, low in
 * the address space (64 to 512 GiB: above any executable's heap, and memory
 * ThreadSanitizer leaves to the program). When both are given up the kernel
 * chooses, as it always may: it places the region just below the caller's
 * libraries, where a fresh program puts its own at a random distance, and an
 * exec worker whose libraries happen to lie there cannot map the region:
 * pool creation then fails with CF_ENOMEM.
 *
 * Registry. cf_shared_alloc regions are recorded with an epoch from a
 * counter that pool creation also advances, so that cf_map can tell whether
 * a caller's buffer is already visible, at the same address, in the workers
 * of a given pool (and then skip copying it). Epochs are taken only under
 * registry_mu, and a region takes its epoch in the same critical section
 * that inserts it: a pool that took epoch E and then lists the regions
 * older than E (under the lock) sees every one of them, so what
 * cf__shared_contains answers for E is exactly what the pool mapped.
 *
 * Locks: registry_mu (the registry and the epoch counter) and span_mu (the
 * window) are each held for a few instructions, never together, never
 * across a system call. Both are taken around fork() (pthread_atfork, set up
 * at the first use), so that a fork worker, whose zygote another thread may
 * have forked while one of them was held, can still call cf_shared_alloc.
 * The descriptor lock (launcher.c) is taken before them, by a pool that maps
 * its region while it holds it, and so at fork too: its handlers are
 * registered after these (cf__shm_setup first), and prepare handlers run
 * in the reverse order.
 *
 * The arena allocator hands out offsets inside a pool's shared data region.
 * Only the parent allocates, under the pool's lock, so its bookkeeping lives
 * in private memory where no worker can corrupt it.
 */
#include "internal.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * The windows, tried in this order. On x86-64 a fresh process has its
 * executable and heap near 85 TiB and its libraries and stack just under
 * 128 TiB; AddressSanitizer's shadow ends at 16 TiB (it covers the second
 * window, which such a program never needs); ThreadSanitizer takes 512 GiB
 * to 85 TiB (shadow and metadata) and leaves the program the space below
 * 512 GiB.
 */
typedef struct window {
    uintptr_t base;
    size_t    size;
    cf__arena free;        /* offsets from base, under span_mu */
    bool      ready;       /* free is set up */
    unsigned  misses;      /* in a row; SPAN_TRIES: the window is given up */
} window;

static window windows[] = {
    {.base = 0x200000000000u, .size = 0x200000000000u},    /* 32 TiB from 32 TiB */
    {.base = 0x1000000000u, .size = 0x7000000000u},        /* 448 GiB from 64 GiB */
};
enum { NWINDOWS = sizeof windows / sizeof windows[0] };

#define SPAN_ALIGN ((size_t)2 << 20)    /* 2 MiB: huge-page friendly */
#define SPAN_TRIES 16                   /* misses in a row before a window is given up */

/* A range of a window in use: [start, start + len), a region and its guard. */
typedef struct span {
    uintptr_t    start;
    size_t       len;
    window      *in;
    struct span *next;
} span;

static pthread_mutex_t span_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static span *spans;                     /* ranges handed out, under span_mu */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&registry_mu);
    pthread_mutex_lock(&span_mu);
}

static void atfork_release(void)
{
    pthread_mutex_unlock(&span_mu);
    pthread_mutex_unlock(&registry_mu);
}

static void setup_once(void)
{
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

void cf__shm_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, setup_once);
}

/* A region of size bytes takes this much of the window: itself, rounded, and an unmapped guard. */
static size_t span_len(size_t size)
{
    return ((size + SPAN_ALIGN - 1) & ~(SPAN_ALIGN - 1)) + SPAN_ALIGN;
}

/* Takes a free range of len bytes from the first window that has one; 0 when none has. */
static uintptr_t span_take(size_t len, span *rec)
{
    uintptr_t start = 0;
    pthread_mutex_lock(&span_mu);
    for (window *w = windows; w < windows + NWINDOWS && start == 0; w++) {
        if (!w->ready && cf__arena_init(&w->free, w->size) == 0)
            w->ready = true;
        size_t off = w->ready && w->misses < SPAN_TRIES ? cf__arena_alloc(&w->free, len) : SIZE_MAX;
        if (off != SIZE_MAX) {
            start = w->base + off;
            *rec = (span){.start = start, .len = len, .in = w, .next = spans};
            spans = rec;
        }
    }
    pthread_mutex_unlock(&span_mu);
    return start;
}

/*
 * Forgets the range that starts at start, and gives it back to its window
 * unless the region missed it (the kernel placed it elsewhere: the range is
 * then left aside for good, and the window counts the miss). Returns its
 * record, or NULL if the range was not handed out here (the kernel chose
 * that mapping's place).
 */
static span *span_drop(uintptr_t start, bool missed)
{
    span *found = NULL;
    pthread_mutex_lock(&span_mu);
    for (span **it = &spans; *it != NULL; it = &(*it)->next) {
        if ((*it)->start == start) {
            found = *it;
            *it = found->next;
            break;
        }
    }
    if (found != NULL && missed)
        found->in->misses++;
    else if (found != NULL)
        cf__arena_free(&found->in->free, found->start - found->in->base, found->len);
    pthread_mutex_unlock(&span_mu);
    return found;
}

static void span_hit(const span *rec)
{
    pthread_mutex_lock(&span_mu);
    rec->in->misses = 0;
    pthread_mutex_unlock(&span_mu);
}

/* Maps mfd in a window; NULL when none can take it. */
static void *map_in_window(size_t size, int mfd)
{
    size_t len = span_len(size);
    if (len < size)
        return NULL;
    for (;;) {
        span *rec = malloc(sizeof *rec);
        uintptr_t want = rec != NULL ? span_take(len, rec) : 0;
        if (want == 0) {
            free(rec);
            return NULL;
        }
        void *p = mmap((void *)want, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        if (p == (void *)want) {
            span_hit(rec);
            return p;
        }
        if (p != MAP_FAILED)
            munmap(p, size);
        free(span_drop(want, true));
        if (p == MAP_FAILED)
            return NULL;    /* out of memory or of mappings: the kernel's own choice will say */
    }
}

void *cf__shm_map(size_t size, int *fd)
{
    cf__shm_setup();
    int mfd = memfd_create("cfutures", MFD_CLOEXEC);
    if (mfd < 0)
        return NULL;
    if (ftruncate(mfd, (off_t)size) != 0) {
        close(mfd);
        return NULL;
    }
    void *p = map_in_window(size, mfd);
    if (p == NULL)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (p == MAP_FAILED) {
        close(mfd);
        return NULL;
    }
    *fd = mfd;
    return p;
}

void cf__shm_unmap(void *p, size_t size, int fd)
{
    if (p != NULL) {
        munmap(p, size);
        /* Only once the mapping is gone may another take its range. */
        free(span_drop((uintptr_t)p, false));
    }
    if (fd >= 0)
        close(fd);
}

/* ---- cf_shared_alloc registry ------------------------------------------ */

typedef struct region {
    uintptr_t      start, end;
    uint64_t       epoch;
    int            fd;
    struct region *next;
} region;

static region  *regions;              /* under registry_mu */
static uint64_t epoch_counter = 1;    /* under registry_mu */

uint64_t cf__shared_epoch(void)
{
    pthread_mutex_lock(&registry_mu);
    uint64_t e = epoch_counter++;
    pthread_mutex_unlock(&registry_mu);
    return e;
}

bool cf__shared_contains(const void *p, size_t len, uint64_t epoch)
{
    uintptr_t a = (uintptr_t)p;
    bool found = false;
    pthread_mutex_lock(&registry_mu);
    for (region *r = regions; r != NULL; r = r->next) {
        if (a >= r->start && a < r->end && len <= r->end - a && r->epoch < epoch) {
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    return found;
}

CF_EXPORT void *cf_shared_alloc(size_t size)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (size == 0)
        return NULL;
    region *r = malloc(sizeof *r);
    if (r == NULL)
        return NULL;
    void *p = cf__shm_map(size, &r->fd);
    if (p == NULL) {
        free(r);
        return NULL;
    }
    r->start = (uintptr_t)p;
    r->end = r->start + size;
    pthread_mutex_lock(&registry_mu);
    r->epoch = epoch_counter++;    /* with the insertion: see the DESIGN note */
    r->next = regions;
    regions = r;
    pthread_mutex_unlock(&registry_mu);
    return p;
}

CF_EXPORT void cf_shared_free(void *p, size_t size)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (p == NULL)
        return;
    region *found = NULL;
    pthread_mutex_lock(&registry_mu);
    for (region **it = &regions; *it != NULL; it = &(*it)->next) {
        if ((*it)->start == (uintptr_t)p) {
            found = *it;
            *it = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    if (found == NULL)
        return;    /* not ours: never unmap what we did not map */
    cf__shm_unmap(p, found->end - found->start, found->fd);
    (void)size;
    free(found);
}

size_t cf__shared_list(cf__shared_region *out, size_t max, uint64_t epoch)
{
    size_t n = 0;
    pthread_mutex_lock(&registry_mu);
    for (region *r = regions; r != NULL; r = r->next) {
        if (r->epoch >= epoch)
            continue;
        if (n < max)
            out[n] = (cf__shared_region){r->start, r->end - r->start, r->fd};
        n++;
    }
    pthread_mutex_unlock(&registry_mu);
    return n;
}

/* ---- arena ------------------------------------------------------------- */

struct cf__arena_block {
    size_t           off, size;
    cf__arena_block *next;
};

static size_t round_up(size_t n)
{
    return (n + CF__ARENA_ALIGN - 1) & ~(size_t)(CF__ARENA_ALIGN - 1);
}

int cf__arena_init(cf__arena *a, size_t size)
{
    a->size = size & ~(size_t)(CF__ARENA_ALIGN - 1);
    a->in_use = 0;
    a->free = malloc(sizeof *a->free);
    if (a->free == NULL)
        return CF_ENOMEM;
    a->free->off = 0;
    a->free->size = a->size;
    a->free->next = NULL;
    return 0;
}

void cf__arena_fini(cf__arena *a)
{
    while (a->free != NULL) {
        cf__arena_block *b = a->free;
        a->free = b->next;
        free(b);
    }
}

size_t cf__arena_alloc(cf__arena *a, size_t size)
{
    size = round_up(size == 0 ? 1 : size);
    for (cf__arena_block **it = &a->free; *it != NULL; it = &(*it)->next) {
        cf__arena_block *b = *it;
        if (b->size < size)
            continue;
        size_t off = b->off;
        b->off += size;
        b->size -= size;
        if (b->size == 0) {
            *it = b->next;
            free(b);
        }
        a->in_use += size;
        return off;
    }
    return SIZE_MAX;
}

void cf__arena_free(cf__arena *a, size_t off, size_t size)
{
    size = round_up(size == 0 ? 1 : size);
    a->in_use -= size;
    cf__arena_block **it = &a->free, *prev = NULL;
    while (*it != NULL && (*it)->off < off) {
        prev = *it;
        it = &(*it)->next;
    }
    cf__arena_block *next = *it;
    if (prev != NULL && prev->off + prev->size == off) {
        prev->size += size;
        if (next != NULL && prev->off + prev->size == next->off) {
            prev->size += next->size;
            prev->next = next->next;
            free(next);
        }
        return;
    }
    if (next != NULL && off + size == next->off) {
        next->off = off;
        next->size += size;
        return;
    }
    cf__arena_block *b = malloc(sizeof *b);
    if (b == NULL)
        return;    /* the extent is lost to this pool, never corrupted */
    b->off = off;
    b->size = size;
    b->next = next;
    *it = b;
}
