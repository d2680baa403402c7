/*
 * fmem.c — where a future's memory comes from, and where it goes.
 *
 * All of one executor's futures have one size (cf_future and its backend's
 * part). Its core cuts them from chunks of CHUNK bytes (2 MiB) that it maps
 * itself, aligned to CHUNK so that a future finds its chunk's header by
 * masking its address, and has the kernel fill the pages ahead of the cut
 * (MADV_POPULATE_WRITE: one system call for many pages, where a first touch
 * costs a fault each, 8 to 16 us on a virtual machine; a stream of 10^6
 * futures is about 50,000 pages). The first chunk is small pages
 * (MADV_NOHUGEPAGE), filled a run at a time, so that an executor that makes
 * a few futures commits a few pages. Every later one is asked for as one
 * huge page (MADV_HUGEPAGE) and filled whole: on a virtual machine that
 * maps guest memory on first use, a small page filled ahead still costs 6
 * to 8 us at its first touch (2 MiB of them: about 3.5 ms), a huge page
 * about 0.1 ms to fill and 15 us for the first touches of all 2 MiB.
 * Without transparent huge pages the advice does nothing and the chunk is
 * 512 small pages; a kernel without MADV_POPULATE_WRITE (before Linux 5.14)
 * refuses it, and the pages fault in as they are touched.
 *
 * A freed future goes on the core's spare list and serves the executor's
 * next future: a second stream of 10^6 futures touches no new page. The
 * list never holds more than the executor had futures at once. When the
 * executor is released (cf__fmem_close) the spares are dropped, each
 * chunk in which no future is alive is unmapped, and the others are
 * unmapped as their last future is freed: a future may outlive its
 * executor, and holds a reference on the core, so the core, and this
 * memory, outlive every future.
 *
 * The tools still see each future as a block of its own. Built with
 * AddressSanitizer, every future is its own malloc (leaks and uses after
 * free are the sanitizer's, and a spare is poisoned until it serves
 * again); under valgrind (when built with its headers) a cut or a spare
 * taken is announced as allocated and a future freed as freed, so that
 * memcheck reports a future never freed, or used once freed, as it would
 * a malloc'd one.
 *
 * Every field of cf__fmem is under its mutex, a leaf lock: cf__fmem_take
 * is called by the submitting thread, cf__fmem_put by whichever thread
 * drops a future's last reference.
 */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#  define MADV_POPULATE_WRITE 23    /* Linux 5.14 */
#endif

#if defined(__SANITIZE_ADDRESS__)
#  define CF__ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define CF__ASAN 1
#  endif
#endif
#ifdef CF__ASAN
#  include <sanitizer/asan_interface.h>
#  define HEAP_FUTURES      true
#  define SPARE_POISON(f, n)   ASAN_POISON_MEMORY_REGION((f), (n))
#  define SPARE_UNPOISON(f, n) ASAN_UNPOISON_MEMORY_REGION((f), (n))
#else
#  define HEAP_FUTURES      false
#  define SPARE_POISON(f, n)   ((void)(f), (void)(n))
#  define SPARE_UNPOISON(f, n) ((void)(f), (void)(n))
#endif

#if !defined(CF__ASAN) && defined(__has_include)
#  if __has_include(<valgrind/memcheck.h>)
#    include <valgrind/memcheck.h>
#    define CF__VALGRIND 1
#  endif
#endif
#ifdef CF__VALGRIND
/* A future handed out, or given back: a block of memcheck's own. */
#  define VG_ALLOCATED(f, n) VALGRIND_MALLOCLIKE_BLOCK((f), (n), 0, 0)
#  define VG_FREED(f)        VALGRIND_FREELIKE_BLOCK((f), 0)
/* The spare list's link, read or written in a future memcheck sees freed. */
#  define VG_LINK_OPEN(f)    VALGRIND_MAKE_MEM_DEFINED(&(f)->next_done, sizeof (f)->next_done)
#  define VG_LINK_SHUT(f)    VALGRIND_MAKE_MEM_NOACCESS(&(f)->next_done, sizeof (f)->next_done)
#else
#  define VG_ALLOCATED(f, n) ((void)(f), (void)(n))
#  define VG_FREED(f)        ((void)(f))
#  define VG_LINK_OPEN(f)    ((void)(f))
#  define VG_LINK_SHUT(f)    ((void)(f))
#endif

#define CHUNK      ((size_t)2 << 20)      /* a huge page, where they are 2 MiB */
#define CHUNK_HEAD ((size_t)64)           /* the header's line; futures follow */
#define FILL_MIN   ((size_t)16 << 10)     /* the first run a chunk fills */
#define FILL_MAX   ((size_t)256 << 10)    /* runs double up to this */

typedef struct cf__chunk {
    struct cf__chunk *prev, *next;    /* the core's chunks */
    size_t            live;           /* futures cut from it and not given back
                                         since the close (spares count until it) */
} cf__chunk;

static cf__chunk *chunk_of(const cf_future *f)
{
    return (cf__chunk *)((uintptr_t)f & ~(uintptr_t)(CHUNK - 1));
}

static size_t future_bytes(const cf__core *c)
{
    size_t n = sizeof(cf_future) + c->ops->future_size;
    return (n + 15) & ~(size_t)15;    /* the next one 16-byte aligned, as malloc's */
}

void cf__fmem_init(cf__core *c)
{
    cf__fmem *m = &c->mem;
    pthread_mutex_init(&m->mu, NULL);
    m->open = true;
}

static void link_chunk(cf__fmem *m, cf__chunk *k)
{
    k->prev = NULL;
    k->next = m->chunks;
    if (m->chunks != NULL)
        m->chunks->prev = k;
    m->chunks = k;
}

static void unlink_chunk(cf__fmem *m, cf__chunk *k)
{
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        m->chunks = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
}

/* A new chunk to cut from, aligned to CHUNK; false if none could be mapped. */
static bool new_chunk(cf__fmem *m)
{
    char *p = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    char *base = (char *)(((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1));
    if (base > p)
        munmap(p, (size_t)(base - p));
    munmap(base + CHUNK, (size_t)(p + CHUNK - base));
    char *filled;
    if (m->chunks == NULL) {
        /* Small pages even where every mapping gets huge ones (THP "always"). */
#ifdef MADV_NOHUGEPAGE
        madvise(base, CHUNK, MADV_NOHUGEPAGE);
#endif
        long page = sysconf(_SC_PAGESIZE);    /* the header's, written below */
        filled = base + (page > 0 && (size_t)page < CHUNK ? (size_t)page : CHUNK);
    } else {
        /* Not the first: a stream. One huge page, filled before the header
         * is written (a page touched first would keep it from being one). */
#ifdef MADV_HUGEPAGE
        madvise(base, CHUNK, MADV_HUGEPAGE);
#endif
        if (!m->no_populate && madvise(base, CHUNK, MADV_POPULATE_WRITE) != 0)
            m->no_populate = true;
        filled = base + CHUNK;
    }
    cf__chunk *k = (cf__chunk *)(void *)base;
    k->live = 0;
    link_chunk(m, k);
    m->cut = base + CHUNK_HEAD;
    m->end = base + CHUNK;
    m->filled = filled;
    return true;
}

/* Has the kernel fill the next run of the chunk's pages, up to past `need`. */
static void fill(cf__fmem *m, const char *need)
{
    size_t run = (size_t)(m->filled - (m->end - CHUNK));    /* filled so far */
    run = run < FILL_MIN ? FILL_MIN : run > FILL_MAX ? FILL_MAX : run;
    char *to = m->filled + run;
    while (to < need)
        to += run;
    if (to > m->end)
        to = m->end;
    /* A refusal (an older kernel, or no memory to fill now) is no error:
     * the pages then fault in as the futures are written. */
    if (!m->no_populate && madvise(m->filled, (size_t)(to - m->filled), MADV_POPULATE_WRITE) != 0)
        m->no_populate = true;
    m->filled = to;
}

/* A new future's memory from the current chunk; under mu. */
static cf_future *cut(cf__core *c)
{
    cf__fmem *m = &c->mem;
    size_t n = future_bytes(c);
    if ((m->cut == NULL || (size_t)(m->end - m->cut) < n) && !new_chunk(m))
        return NULL;
    if (m->cut + n > m->filled)
        fill(m, m->cut + n);
    cf_future *f = (cf_future *)(void *)m->cut;
    m->cut += n;
    chunk_of(f)->live++;
    return f;
}

cf_future *cf__fmem_take(cf__core *c)
{
    cf__fmem *m = &c->mem;
    size_t n = future_bytes(c);
    pthread_mutex_lock(&m->mu);
    cf_future *f = m->spare;
    if (f != NULL) {
        SPARE_UNPOISON(f, n);
        VG_LINK_OPEN(f);
        m->spare = f->next_done;
    } else if (!HEAP_FUTURES) {
        f = cut(c);
    }
    pthread_mutex_unlock(&m->mu);
    if (f == NULL && HEAP_FUTURES)
        f = malloc(n);
    if (f != NULL)
        VG_ALLOCATED(f, n);
    return f;
}

void cf__fmem_put(cf__core *c, cf_future *f)
{
    cf__fmem *m = &c->mem;
    VG_FREED(f);
    pthread_mutex_lock(&m->mu);
    if (m->open) {
        VG_LINK_OPEN(f);
        f->next_done = m->spare;
        VG_LINK_SHUT(f);
        m->spare = f;
        SPARE_POISON(f, future_bytes(c));
        pthread_mutex_unlock(&m->mu);
        return;
    }
    cf__chunk *k = NULL;
    if (!HEAP_FUTURES && --chunk_of(f)->live == 0) {
        k = chunk_of(f);
        unlink_chunk(m, k);
    }
    pthread_mutex_unlock(&m->mu);
    if (HEAP_FUTURES)
        free(f);
    else if (k != NULL)
        munmap(k, CHUNK);
}

void cf__fmem_close(cf__core *c)
{
    cf__fmem *m = &c->mem;
    size_t n = future_bytes(c);
    cf__chunk *empty = NULL;
    pthread_mutex_lock(&m->mu);
    cf_future *f = m->spare;
    m->spare = NULL;
    m->open = false;
    m->cut = m->end = m->filled = NULL;
    while (f != NULL) {
        SPARE_UNPOISON(f, n);
        VG_LINK_OPEN(f);
        cf_future *next = f->next_done;
        if (HEAP_FUTURES)
            free(f);
        else
            chunk_of(f)->live--;
        f = next;
    }
    for (cf__chunk *k = m->chunks, *next; k != NULL; k = next) {
        next = k->next;
        if (k->live == 0) {
            unlink_chunk(m, k);
            k->next = empty;
            empty = k;
        }
    }
    pthread_mutex_unlock(&m->mu);
    while (empty != NULL) {
        cf__chunk *next = empty->next;
        munmap(empty, CHUNK);
        empty = next;
    }
}

void cf__fmem_fini(cf__core *c)
{
    cf__fmem *m = &c->mem;
    /* Every future is gone (each held a reference on c): so is every
     * chunk, unless the executor was never closed (a failed creation). */
    while (m->chunks != NULL) {
        cf__chunk *k = m->chunks;
        m->chunks = k->next;
        munmap(k, CHUNK);
    }
    pthread_mutex_destroy(&m->mu);
}
