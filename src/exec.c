/*
 * exec.c — the exec start method: function pointers across a fresh
 * execution of the program, and the worker's entry before main.
 *
 * An exec worker is /proc/self/exe started anew, with its own randomised
 * layout, so a function pointer of the caller means nothing there as it is.
 * The caller translates it to (loaded object, offset from the object's base),
 * the object being one of those loaded when the pool was created; the worker
 * finds the same objects by name and adds its own bases. A plain address,
 * whose top 16 bits are zero, passes through unchanged: that is what fork
 * workers get.
 *
 * The worker side runs in a library constructor, before the program's main:
 * it recognises the CFUTURES_WORKER variable set by the pool's zygote, maps
 * the pool's memfd (descriptor 3) and the caller's cf_shared_alloc regions at
 * the caller's addresses, and enters the worker loop. It never returns into
 * the program.
 */
#include "internal.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REF_SHIFT 48
#define REF_MASK  (((uint64_t)1 << REF_SHIFT) - 1)

/* ---- the caller's side ------------------------------------------------- */

static int add_module(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    cf__modtab *t = data;
    if (t->n >= CF__MAX_MODS)
        return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        lo = start < lo ? start : lo;
        hi = start + ph->p_memsz > hi ? start + ph->p_memsz : hi;
    }
    char *name = strdup(info->dlpi_name != NULL ? info->dlpi_name : "");
    if (name == NULL || lo >= hi) {
        free(name);
        return 0;
    }
    t->mods[t->n++] = (cf__module){.base = info->dlpi_addr, .lo = lo, .hi = hi, .name = name};
    return 0;
}

int cf__modtab_build(cf__modtab *t)
{
    t->n = 0;
    if ((t->mods = calloc(CF__MAX_MODS, sizeof *t->mods)) == NULL)
        return CF_ENOMEM;
    dl_iterate_phdr(add_module, t);
    return 0;
}

void cf__modtab_free(cf__modtab *t)
{
    for (unsigned i = 0; i < t->n; i++)
        free(t->mods[i].name);
    free(t->mods);
    t->mods = NULL;
    t->n = 0;
}

int cf__fnref_encode(const cf__modtab *t, const _Atomic uint64_t *found, void *fn, uint64_t *ref)
{
    uintptr_t a = (uintptr_t)fn;
    for (unsigned i = 0; i < t->n; i++) {
        const cf__module *m = &t->mods[i];
        if (a < m->lo || a >= m->hi)
            continue;
        if (found != NULL && !(atomic_load(&found[i / 64]) & ((uint64_t)1 << (i % 64))))
            return CF_EINVAL;
        *ref = ((uint64_t)(i + 1) << REF_SHIFT) | ((a - m->base) & REF_MASK);
        return 0;
    }
    return CF_EINVAL;
}

/* ---- the worker's side ------------------------------------------------- */

static uintptr_t *worker_bases;   /* by object index */
static bool      *worker_have;    /* by object index: the worker has that object */

void *cf__fnref_decode(uint64_t ref)
{
    uint64_t obj = ref >> REF_SHIFT;
    if (obj == 0)
        return (void *)(uintptr_t)ref;
    if (worker_have == NULL || obj > CF__MAX_MODS || !worker_have[obj - 1])
        return NULL;
    return (void *)(worker_bases[obj - 1] + (ref & REF_MASK));
}

typedef struct find_ctx {
    const char *name;
    uintptr_t   base;
    bool        found;
} find_ctx;

static int find_module(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    find_ctx *c = data;
    if (strcmp(info->dlpi_name != NULL ? info->dlpi_name : "", c->name) != 0)
        return 0;
    c->base = info->dlpi_addr;
    c->found = true;
    return 1;
}

static bool map_at(uint64_t addr, uint64_t size, int fd)
{
    void *want = (void *)(uintptr_t)addr;
    void *p = mmap(want, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    return p == want;
}

static void resolve_modules(cf__shm_hdr *h, const cf__exec_boot *b)
{
    worker_bases = calloc(CF__MAX_MODS, sizeof *worker_bases);
    worker_have = calloc(CF__MAX_MODS, sizeof *worker_have);
    if (worker_bases == NULL || worker_have == NULL)
        _exit(CF__EXIT_BOOT_FAILED);
    const char *name = (const char *)(uintptr_t)b->names;
    for (uint32_t i = 0; i < b->nmods && i < CF__MAX_MODS; i++) {
        find_ctx c = {.name = name};
        dl_iterate_phdr(find_module, &c);
        if (c.found) {
            worker_bases[i] = c.base;
            worker_have[i] = true;
            atomic_fetch_or(&h->mods_found[i / 64], (uint64_t)1 << (i % 64));
        }
        name += strlen(name) + 1;
    }
}

static void exec_worker_entry(const char *spec)
{
    unsigned wid;
    long parent;
    unsigned long addr, size;
    if (sscanf(spec, "%u:%ld:%lx:%lx", &wid, &parent, &addr, &size) != 4)
        _exit(CF__EXIT_BOOT_FAILED);
    unsetenv("CFUTURES_WORKER");
    if (!map_at(addr, size, 3))
        _exit(CF__EXIT_BOOT_FAILED);
    cf__shm_hdr *h = (cf__shm_hdr *)(uintptr_t)addr;
    const cf__exec_boot *b = (const cf__exec_boot *)(uintptr_t)h->boot;
    const cf__shared_region *shared = (const cf__shared_region *)(uintptr_t)b->shared;
    for (uint32_t i = 0; i < b->nshared; i++)
        if (!map_at(shared[i].addr, shared[i].size, shared[i].fd))
            _exit(CF__EXIT_BOOT_FAILED);
    resolve_modules(h, b);
    /* posix_spawn's dup2 cleared close-on-exec: a program a task runs gets none of them. */
    for (int fd = 3; fd <= 5; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    for (uint32_t i = 0; i < b->nshared; i++)
        fcntl(shared[i].fd, F_SETFD, FD_CLOEXEC);

    static cf_options opts;
    opts.initializer = (cf_init_fn *)cf__fnref_decode(b->init_ref);
    if (b->init_ref != 0 && opts.initializer == NULL)
        _exit(CF__EXIT_BOOT_FAILED);
    opts.initargs = (const void *)(uintptr_t)b->initargs;
    opts.initargs_size = b->initargs_size;
    cf__worker_boot boot = {
        .h = h, .wid = wid, .opts = &opts, .death_fd = 4, .efd = 5,
        .parent = (pid_t)parent, .mask = b->mask,
    };
    cf__worker_main(&boot);
}

__attribute__((constructor)) static void cf__exec_check(void)
{
    const char *spec = getenv("CFUTURES_WORKER");
    if (spec != NULL)
        exec_worker_entry(spec);
}
