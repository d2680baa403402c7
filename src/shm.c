/*
 * shm.c — shared memory: cf_shared_alloc, pool regions, the arena allocator.
 *
 * All shared memory is a memfd mapped MAP_SHARED: it has no name in any file
 * system, so nothing can be left behind in /dev/shm and no other user can
 * open it; its descriptor is close-on-exec, handed on only to the pool's own
 * exec workers, and it disappears when the last process that maps it exits.
 *
 * cf_shared_alloc regions are recorded in a small registry, stamped with an
 * epoch from a counter that pool creation also advances, so that cf_map can
 * tell whether a caller's buffer is already visible, at the same address, in
 * the workers of a given pool (and then skip copying it). The registry has
 * its own mutex, taken for a few instructions only.
 *
 * The arena allocator hands out offsets inside a pool's shared data region.
 * Only the parent allocates, under the pool's lock, so its bookkeeping lives
 * in private memory where no worker can corrupt it.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Where shared mappings go: far from where the kernel puts libraries and
 * heaps, so that a freshly executed worker, whose layout is randomised anew,
 * finds the same addresses free. Only a hint: the kernel may choose another
 * place, and an exec worker then reports that it cannot map the region.
 */
#define HINT_BASE  ((uintptr_t)0x200000000000u)
#define HINT_ALIGN ((uintptr_t)1 << 30)

static _Atomic uintptr_t hint_cursor = HINT_BASE;

static void *next_hint(size_t size)
{
    uintptr_t span = ((uintptr_t)size + 2 * HINT_ALIGN - 1) & ~(HINT_ALIGN - 1);
    return (void *)atomic_fetch_add(&hint_cursor, span);
}

void *cf__shm_map(size_t size, int *fd)
{
    int mfd = memfd_create("cfutures", MFD_CLOEXEC);
    if (mfd < 0)
        return NULL;
    if (ftruncate(mfd, (off_t)size) != 0) {
        close(mfd);
        return NULL;
    }
    void *p = mmap(next_hint(size), size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (p == MAP_FAILED) {
        close(mfd);
        return NULL;
    }
    *fd = mfd;
    return p;
}

void cf__shm_unmap(void *p, size_t size, int fd)
{
    if (p != NULL)
        munmap(p, size);
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

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static region *regions;
static _Atomic uint64_t epoch_counter = 1;

uint64_t cf__shared_epoch(void)
{
    return atomic_fetch_add(&epoch_counter, 1);
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
    r->epoch = cf__shared_epoch();
    pthread_mutex_lock(&registry_mu);
    r->next = regions;
    regions = r;
    pthread_mutex_unlock(&registry_mu);
    return p;
}

CF_EXPORT void cf_shared_free(void *p, size_t size)
{
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
