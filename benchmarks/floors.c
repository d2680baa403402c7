/*
 * floors.c — the raw cost of a hand-off between two processes, measured now.
 *
 * The latency section prints a pool's round trip as a multiple of these
 * floors: 8 bytes over a pair of pipes, a word in shared memory with futex
 * wait/wake (both always sleep, so each pays the kernel's wake-up of the
 * other process), and a word in shared memory that both sides spin on (no
 * kernel at all: a cache line moving between two cores and back).
 *
 * Where the two processes run changes a sleeping hand-off several times
 * over (on a virtual machine, waking an idle core costs far more than
 * switching on a busy one), so each floor pins them: both on one core, or
 * on two different cores. The caller's affinity is restored afterwards.
 * Each round trip is timed on its own and the median is reported, the same
 * statistic as the pools'. The partner process dies with its parent
 * (PR_SET_PDEATHSIG).
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define WARMUP 100u

/* ---- placing the two processes ---------------------------------------------- */

typedef struct placement {
    cpu_set_t saved;         /* the caller's affinity, restored by unplace */
    int       mine, partner; /* CPUs of the caller and of its partner */
} placement;

static void pin(int cpu)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
}

/* Pins the caller to its first allowed CPU; false if two cores were asked and are not there. */
static bool place(placement *p, bool two_cores)
{
    if (sched_getaffinity(0, sizeof p->saved, &p->saved) != 0)
        return false;
    p->mine = p->partner = -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &p->saved))
            continue;
        if (p->mine < 0)
            p->mine = cpu;
        else if (p->partner < 0)
            p->partner = cpu;
    }
    if (!two_cores)
        p->partner = p->mine;
    if (p->mine < 0 || p->partner < 0)
        return false;
    pin(p->mine);
    return true;
}

static void unplace(const placement *p)
{
    sched_setaffinity(0, sizeof p->saved, &p->saved);
}

static pid_t fork_partner(const placement *p)
{
    pid_t parent = getpid();
    /* Nothing buffered may be written twice, should the child flush it. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        pin(p->partner);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* ---- pipes ------------------------------------------------------------------------ */

static bool move8(int fd, uint64_t *v, bool out)
{
    ssize_t n = out ? write(fd, v, sizeof *v) : read(fd, v, sizeof *v);
    return n == (ssize_t)sizeof *v;
}

static void pipe_echo(int in, int out, unsigned rounds)
{
    uint64_t v;
    for (unsigned i = 0; i < rounds; i++)
        if (!move8(in, &v, false) || !move8(out, &v, true))
            _exit(1);
    _exit(0);
}

double pipe_round_trip_ns(unsigned reps, bool two_cores)
{
    placement pl;
    if (!place(&pl, two_cores))
        return NAN;
    int to[2], from[2];
    if (pipe(to) != 0 || pipe(from) != 0)
        die("pipe failed");
    pid_t pid = fork_partner(&pl);
    if (pid == 0) {
        close(to[1]);
        close(from[0]);
        pipe_echo(to[0], from[1], WARMUP + reps);
    }
    close(to[0]);
    close(from[1]);
    double *t = xmalloc(reps * sizeof *t);
    uint64_t v = 0;
    for (unsigned i = 0; i < WARMUP + reps; i++) {
        uint64_t t0 = now_ns();
        if (!move8(to[1], &v, true) || !move8(from[0], &v, false))
            die("pipe round trip failed");
        if (i >= WARMUP)
            t[i - WARMUP] = (double)(now_ns() - t0);
    }
    close(to[1]);
    close(from[0]);
    reap(pid);
    unplace(&pl);
    double m = median(t, reps);
    free(t);
    return m;
}

/* ---- a word in shared memory --------------------------------------------------------- */

static _Atomic uint32_t *shared_word(void)
{
    _Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED)
        die("mmap failed");
    atomic_store(word, 0);
    return word;
}

/* Waits until *word == want, sleeping on the futex (never spinning). */
static void await(_Atomic uint32_t *word, uint32_t want)
{
    uint32_t v;
    while ((v = atomic_load(word)) != want)
        syscall(SYS_futex, word, FUTEX_WAIT, v, NULL, NULL, 0);
}

static void post(_Atomic uint32_t *word, uint32_t val)
{
    atomic_store(word, val);
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Spins until *word == want; yields now and then, should both share a core. */
static void spin_until(_Atomic uint32_t *word, uint32_t want)
{
    for (unsigned n = 1; atomic_load_explicit(word, memory_order_acquire) != want; n++)
        if (n % 4096 == 0)
            sched_yield();
}

/* Round i: the caller posts 2i+1, the partner answers 2i+2. */
static void answer(_Atomic uint32_t *word, unsigned rounds, bool sleep)
{
    for (unsigned i = 0; i < rounds; i++) {
        if (sleep) {
            await(word, 2 * i + 1);
            post(word, 2 * i + 2);
        } else {
            spin_until(word, 2 * i + 1);
            atomic_store_explicit(word, 2 * i + 2, memory_order_release);
        }
    }
    _exit(0);
}

static double word_round_trip_ns(unsigned reps, bool sleep)
{
    placement pl;
    if (!place(&pl, true))
        return NAN;
    _Atomic uint32_t *word = shared_word();
    pid_t pid = fork_partner(&pl);
    if (pid == 0)
        answer(word, WARMUP + reps, sleep);
    double *t = xmalloc(reps * sizeof *t);
    for (unsigned i = 0; i < WARMUP + reps; i++) {
        uint64_t t0 = now_ns();
        if (sleep) {
            post(word, 2 * i + 1);
            await(word, 2 * i + 2);
        } else {
            atomic_store_explicit(word, 2 * i + 1, memory_order_release);
            spin_until(word, 2 * i + 2);
        }
        if (i >= WARMUP)
            t[i - WARMUP] = (double)(now_ns() - t0);
    }
    reap(pid);
    unplace(&pl);
    munmap((void *)word, 4096);
    double m = median(t, reps);
    free(t);
    return m;
}

double futex_round_trip_ns(unsigned reps)
{
    return word_round_trip_ns(reps, true);
}

double spin_round_trip_ns(unsigned reps)
{
    return word_round_trip_ns(reps, false);
}

/* ---- the smallest fork pool --------------------------------------------------- */

/* A worker of minimal_fork_pool_ns: echoes 8-byte tasks until its pipe closes. */
static __attribute__((noreturn)) void echo_worker(int in, int out)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    uint64_t v;
    while (move8(in, &v, false) && move8(out, &v, true))
        ;
    _exit(0);
}

/*
 * The least a pool of `workers` forked processes can cost: fork each with a
 * pipe pair, send one empty task (8 bytes) to the first and read its answer,
 * close the pipes (each worker then reads end-of-file and exits) and reap
 * them all. No shared memory, no crash handling, no standby: the floor a
 * real pool's create + first result + free is compared with.
 */
double minimal_fork_pool_ns(unsigned workers)
{
    int to[64], from[64];
    pid_t pid[64];
    if (workers == 0 || workers > 64)
        die("minimal fork pool: 1 to 64 workers");
    fflush(NULL);
    uint64_t t0 = now_ns();
    for (unsigned w = 0; w < workers; w++) {
        int a[2], b[2];
        if (pipe2(a, O_CLOEXEC) != 0 || pipe2(b, O_CLOEXEC) != 0)
            die("pipe failed");
        pid[w] = fork();
        if (pid[w] < 0)
            die("fork failed");
        if (pid[w] == 0) {
            for (unsigned j = 0; j < w; j++) {    /* the earlier workers' ends: their EOF is theirs */
                close(to[j]);
                close(from[j]);
            }
            close(a[1]);
            close(b[0]);
            echo_worker(a[0], b[1]);
        }
        close(a[0]);
        close(b[1]);
        to[w] = a[1];
        from[w] = b[0];
    }
    uint64_t v = 1;
    if (!move8(to[0], &v, true) || !move8(from[0], &v, false))
        die("minimal fork pool: no answer");
    for (unsigned w = 0; w < workers; w++) {
        close(to[w]);
        close(from[w]);
    }
    for (unsigned w = 0; w < workers; w++)
        reap(pid[w]);
    return (double)(now_ns() - t0);
}
