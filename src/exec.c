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
 *
 * Unless the caller had called cf_main_guard (from its main thread) before
 * it created the pool: the boot record then says CF__BOOT_AT_GUARD, and the
 * constructor does all of the above but the last step. It returns into the
 * program, whose own constructors and main then run, and the worker loop
 * starts when main calls cf_main_guard. The region is mapped in the
 * constructor all the same, before the program can put anything at its
 * address. Until the guard (cf__awaiting_guard) the process is the
 * program's, so it is held on a short leash: it dies with its zygote (the
 * parent-death signal, set here rather than in the worker loop), its two
 * descriptors wait at high numbers, SIGINT is ignored as in any worker, and
 * its stdin is an empty pipe (launcher.c), so that a main that reads stdin
 * before the guard reads end of file instead of the caller's input or a
 * wait for ever. A cfutures call before the guard, a guard called from
 * another thread, or the end of main (an atexit handler) means the program
 * is running as if it were the caller, and a pool it creates would start
 * workers that do the same: the worker says so in one line on stderr and
 * exits with CF__EXIT_NO_GUARD, which the pool reports as a failed start.
 *
 * The constructor runs in every program linked with the library, so the
 * variable is not trusted: the value must parse, the process's parent must
 * be the zygote it names, descriptors 3, 4, 5 must be a memfd of the size
 * it gives, a pipe and an eventfd, and the header mapped from the memfd
 * must agree with all that (its magic number and layout version first,
 * then every address and count in it, each checked before use). A process that fails these checks was not started by a pool
 * (the variable leaked into its environment): it says so in one line on
 * stderr and exits with CF__EXIT_BOOT_FAILED, before main, and maps nothing
 * it was handed. Running main instead would be worse: a real worker that
 * cannot boot (its zygote just died, say) would run the program again.
 * A worker that passes them but cannot map the memory at the caller's
 * address exits silently with the same status: the pool reports CF_ENOMEM.
 * One whose library lays the region out in another version than the
 * caller's (the library was replaced on disk meanwhile) says so on stderr
 * and exits with CF__EXIT_LAYOUT.
 *
 * In a secure-execution program (set-user-ID, set-group-ID, or gaining
 * capabilities) the variable is never read (secure_getenv): whoever starts
 * such a program controls its environment and descriptors, and could
 * otherwise make it call an address of their choosing. Exec pools are
 * refused there (cf__exec_forbidden), since their workers could not tell
 * themselves from such a forgery.
 */
#include "ring.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

bool cf__exec_forbidden(void)
{
    return getauxval(AT_SECURE) != 0;
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

/* The descriptors an exec worker is handed (see launcher.c). */
enum { FD_MEMFD = 3, FD_DEATH = 4, FD_WAKE = 5, FD_SHARED = 6 };

static const char *worker_spec;    /* the variable's value, for messages */

static void await_guard(const cf__worker_boot *boot);

/* The process is no pool's worker: one line on stderr, and out before main. */
static __attribute__((noreturn)) void stray(const char *why)
{
    dprintf(STDERR_FILENO,
            "cfutures: stray CFUTURES_WORKER=\"%.40s\" (%s): not started by a cfutures pool, "
            "exiting with status %d; unset the variable\n", worker_spec, why, CF__EXIT_BOOT_FAILED);
    _exit(CF__EXIT_BOOT_FAILED);
}

/*
 * A pool's memory, laid out by another version of the library: the library
 * on disk changed since the caller loaded its own. One line on stderr, and
 * out before main, having used nothing in the region.
 */
static __attribute__((noreturn)) void other_layout(uint32_t version)
{
    dprintf(STDERR_FILENO,
            "cfutures: exec worker: the pool's shared memory has layout version %u, this library's "
            "is %u (was libcfutures replaced since the program started?); exiting with status %d\n",
            version, CF__RING_VERSION, CF__EXIT_LAYOUT);
    _exit(CF__EXIT_LAYOUT);
}

/* What /proc says descriptor fd is ("" if /proc cannot tell). */
static void fd_target(int fd, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* A memfd of cfutures, of exactly size bytes. */
static bool is_pool_memfd(int fd, uint64_t size)
{
    struct stat st;
    char target[64];
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0 || (uint64_t)st.st_size != size)
        return false;
    fd_target(fd, target, sizeof target);
    return target[0] == '\0' || strncmp(target, "/memfd:cfutures", 15) == 0;
}

static bool is_pipe(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

static bool is_eventfd(int fd)
{
    char target[64];
    if (fcntl(fd, F_GETFD) < 0)
        return false;
    fd_target(fd, target, sizeof target);
    return target[0] == '\0' || strcmp(target, "anon_inode:[eventfd]") == 0;
}

static bool map_at(uint64_t addr, uint64_t size, int fd)
{
    void *want = (void *)(uintptr_t)addr;
    void *p = mmap(want, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    return p == want;
}

/* [p, p + n) lies inside the region [lo, lo + size). */
static bool inside(uint64_t p, uint64_t n, uint64_t lo, uint64_t size)
{
    return p >= lo && p - lo <= size && n <= size - (p - lo);
}

/*
 * Checks, before anything in it is used, that the mapped header is a pool's
 * and that what the boot record points at lies inside the region.
 */
static bool header_sane(const cf__shm_hdr *h, unsigned wid, uint64_t addr, uint64_t size)
{
    if (h->size != size || h->nwrecs != CF__MAX_WORKERS || wid >= h->nwrecs ||
        h->nslots == 0 || (h->nslots & (h->nslots - 1)) != 0 ||
        !inside((uint64_t)(uintptr_t)h->slots, (uint64_t)h->nslots * sizeof(cf__slot), addr, size) ||
        !inside((uint64_t)(uintptr_t)h->wrecs, (uint64_t)h->nwrecs * sizeof(cf__wrec), addr, size) ||
        !inside(h->boot, sizeof(cf__exec_boot), addr, size))
        return false;
    const cf__exec_boot *b = (const cf__exec_boot *)(uintptr_t)h->boot;
    if (b->nmods > CF__MAX_MODS || (b->nshared > 0 &&
        !inside(b->shared, (uint64_t)b->nshared * sizeof(cf__shared_region), addr, size)))
        return false;
    if (b->initargs_size > 0 && !inside(b->initargs, b->initargs_size, addr, size))
        return false;
    /* The names, one after the other, each ending inside the region. */
    uint64_t name = b->names;
    for (uint32_t i = 0; i < b->nmods; i++) {
        if (!inside(name, 1, addr, size))
            return false;
        size_t room = (size_t)(addr + size - name);
        size_t len = strnlen((const char *)(uintptr_t)name, room);
        if (len == room)
            return false;
        name += len + 1;
    }
    const cf__shared_region *shared = (const cf__shared_region *)(uintptr_t)b->shared;
    for (uint32_t i = 0; i < b->nshared; i++)
        if (shared[i].fd != FD_SHARED + (int32_t)i || shared[i].size == 0 ||
            shared[i].addr + shared[i].size < shared[i].addr)
            return false;
    return true;
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
    int end = -1;
    worker_spec = spec;
    if (sscanf(spec, "%u:%ld:%lx:%lx%n", &wid, &parent, &addr, &size, &end) != 4 ||
        end < 0 || spec[end] != '\0' || wid >= CF__MAX_WORKERS || parent <= 1 || addr == 0 ||
        addr % (unsigned long)sysconf(_SC_PAGESIZE) != 0 || size < sizeof(cf__shm_hdr) || addr + size < addr)
        stray("malformed");
    if (getppid() != (pid_t)parent)
        stray("its parent is not the pool process it names, or no longer");
    if (!is_pool_memfd(FD_MEMFD, size) || !is_pipe(FD_DEATH) || !is_eventfd(FD_WAKE))
        stray("descriptors 3, 4 and 5 are not a pool's");
    unsetenv("CFUTURES_WORKER");
    if (!map_at(addr, size, FD_MEMFD))
        _exit(CF__EXIT_BOOT_FAILED);
    cf__shm_hdr *h = (cf__shm_hdr *)(uintptr_t)addr;
    /* Magic and version first: nothing else in the header is where this
     * library looks for it unless both match (ring.h). */
    if (h->magic != CF__RING_MAGIC) {
        munmap(h, size);
        stray("its shared memory is not a pool's");
    }
    if (h->version != CF__RING_VERSION) {
        uint32_t version = h->version;
        munmap(h, size);
        other_layout(version);
    }
    if (!header_sane(h, wid, addr, size)) {
        munmap(h, size);
        stray("its shared memory is not a pool's");
    }
    const cf__exec_boot *b = (const cf__exec_boot *)(uintptr_t)h->boot;
    const cf__shared_region *shared = (const cf__shared_region *)(uintptr_t)b->shared;
    for (uint32_t i = 0; i < b->nshared; i++)
        if (!is_pool_memfd(shared[i].fd, shared[i].size) || !map_at(shared[i].addr, shared[i].size, shared[i].fd))
            _exit(CF__EXIT_BOOT_FAILED);
    resolve_modules(h, b);
    /*
     * The memfds are mapped and no longer needed: closed, they leave the low
     * numbers to the tasks. The worker moves the other two out of their way.
     * posix_spawn's dup2 cleared close-on-exec: a program a task runs gets none of them.
     */
    close(FD_MEMFD);
    for (uint32_t i = 0; i < b->nshared; i++)
        close(shared[i].fd);
    fcntl(FD_DEATH, F_SETFD, FD_CLOEXEC);
    fcntl(FD_WAKE, F_SETFD, FD_CLOEXEC);

    static cf_options opts;
    opts.initializer = (cf_init_fn *)cf__fnref_decode(b->init_ref);
    if (b->init_ref != 0 && opts.initializer == NULL)
        _exit(CF__EXIT_BOOT_FAILED);
    opts.initargs = (const void *)(uintptr_t)b->initargs;
    opts.initargs_size = b->initargs_size;
    cf__worker_boot boot = {
        .h = h, .wid = wid, .opts = &opts, .death_fd = FD_DEATH, .efd = FD_WAKE,
        .parent = (pid_t)parent, .mask = b->mask,
    };
    if (b->flags & CF__BOOT_AT_GUARD)
        await_guard(&boot);
    else
        cf__worker_main(&boot);
}

/* ---- cf_main_guard -------------------------------------------------------- */

static _Atomic bool guarded;          /* the caller called cf_main_guard from main's thread */
_Atomic bool cf__awaiting_guard;      /* an exec worker waiting for the program's guard */
static cf__worker_boot deferred;      /* what that worker runs at the guard */

bool cf__main_guarded(void)
{
    return atomic_load(&guarded);
}

static bool on_main_thread(void)
{
    return (pid_t)syscall(SYS_gettid) == getpid();
}

/* The program went on before its guard as if it were the caller: one line, and out. */
static __attribute__((noreturn)) void refuse(const char *what)
{
    dprintf(STDERR_FILENO,
            "cfutures: exec worker: %s; this pool starts its workers at cf_main_guard(), which main must "
            "call first, from main's thread, every time; exiting with status %d\n", what, CF__EXIT_NO_GUARD);
    _exit(CF__EXIT_NO_GUARD);
}

void cf__before_guard(const char *fn)
{
    char what[96];
    snprintf(what, sizeof what, "%s() called before cf_main_guard()", fn);
    refuse(what);
}

/* Registered by a worker that awaits the guard: main ended without calling it. */
static void guard_never_called(void)
{
    if (atomic_load(&cf__awaiting_guard))
        refuse("main ended (returned or called exit) without calling cf_main_guard()");
}

/*
 * The constructor's end for a worker whose pool starts it at the guard:
 * everything is checked and mapped; the program runs until cf_main_guard.
 */
static void await_guard(const cf__worker_boot *boot)
{
    deferred = *boot;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != deferred.parent)
        _exit(CF__EXIT_BOOT_FAILED);    /* the zygote died before the signal was armed */
    deferred.death_fd = cf__fd_move_up(deferred.death_fd);
    deferred.efd = cf__fd_move_up(deferred.efd);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &ign, NULL);
    if (atexit(guard_never_called) != 0)
        _exit(CF__EXIT_BOOT_FAILED);
    atomic_store(&cf__awaiting_guard, true);
}

CF_EXPORT void cf_main_guard(void)
{
    bool main_thread = on_main_thread();
    if (atomic_load(&cf__awaiting_guard)) {
        if (!main_thread)
            refuse("cf_main_guard() called from a thread other than main's");
        atomic_store(&cf__awaiting_guard, false);
        atomic_store(&guarded, true);    /* the program's main did call it: pools a task makes */
        cf__worker_main(&deferred);
    }
    if (main_thread)
        atomic_store(&guarded, true);
}

__attribute__((constructor)) static void cf__exec_check(void)
{
    /* NULL in a secure-execution program, whatever the environment says. */
    const char *spec = secure_getenv("CFUTURES_WORKER");
    if (spec != NULL)
        exec_worker_entry(spec);
}
