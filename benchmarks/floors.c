/*
 * floors.c — the raw cost of a hand-off between two processes, measured now.
 *
 * The latency section prints a pool's round trip as a multiple of these
 * floors: 8 bytes over a pair of pipes and a word in shared memory with
 * futex wait/wake (both always sleep, so each pays the kernel's wake-up of
 * another process), and a word in shared memory that both sides spin on
 * (no kernel at all: the cost of moving a cache line there and back, when
 * both processes have a core). Each round trip is timed on its own and the
 * median is reported, the same statistic as the pools'. The partner process
 * dies with its parent (PR_SET_PDEATHSIG).
 */
#include "bench.h"

#include <errno.h>
#include <linux/futex.h>
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

static pid_t fork_partner(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

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

double pipe_round_trip_ns(unsigned reps)
{
    int to[2], from[2];
    if (pipe(to) != 0 || pipe(from) != 0)
        die("pipe failed");
    pid_t pid = fork_partner();
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
    double m = median(t, reps);
    free(t);
    return m;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t val)
{
    syscall(SYS_futex, word, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Waits until *word == want, sleeping on the futex (never spinning). */
static void await(_Atomic uint32_t *word, uint32_t want)
{
    uint32_t v;
    while ((v = atomic_load(word)) != want)
        futex_wait(word, v);
}

static void post(_Atomic uint32_t *word, uint32_t val)
{
    atomic_store(word, val);
    futex_wake(word);
}

double futex_round_trip_ns(unsigned reps)
{
    _Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED)
        die("mmap failed");
    atomic_store(word, 0);
    pid_t pid = fork_partner();
    if (pid == 0) {
        for (unsigned i = 0; i < WARMUP + reps; i++) {
            await(word, 1);
            post(word, 2);
        }
        _exit(0);
    }
    double *t = xmalloc(reps * sizeof *t);
    for (unsigned i = 0; i < WARMUP + reps; i++) {
        uint64_t t0 = now_ns();
        post(word, 1);
        await(word, 2);
        if (i >= WARMUP)
            t[i - WARMUP] = (double)(now_ns() - t0);
        atomic_store(word, 0);
    }
    reap(pid);
    munmap((void *)word, 4096);
    double m = median(t, reps);
    free(t);
    return m;
}

/* Spins until *word == want; yields now and then, in case both processes share a core. */
static void spin_until(_Atomic uint32_t *word, uint32_t want)
{
    for (unsigned n = 1; atomic_load_explicit(word, memory_order_acquire) != want; n++)
        if (n % 4096 == 0)
            sched_yield();
}

double spin_round_trip_ns(unsigned reps)
{
    _Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED)
        die("mmap failed");
    atomic_store(word, 0);
    pid_t pid = fork_partner();
    if (pid == 0) {
        for (unsigned i = 0; i < WARMUP + reps; i++) {
            spin_until(word, 2 * i + 1);
            atomic_store_explicit(word, 2 * i + 2, memory_order_release);
        }
        _exit(0);
    }
    double *t = xmalloc(reps * sizeof *t);
    for (unsigned i = 0; i < WARMUP + reps; i++) {
        uint64_t t0 = now_ns();
        atomic_store_explicit(word, 2 * i + 1, memory_order_release);
        spin_until(word, 2 * i + 2);
        if (i >= WARMUP)
            t[i - WARMUP] = (double)(now_ns() - t0);
    }
    reap(pid);
    munmap((void *)word, 4096);
    double m = median(t, reps);
    free(t);
    return m;
}
