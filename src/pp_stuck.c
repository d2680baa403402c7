/*
 * pp_stuck.c — telling a worker that waits for ever on a lock from one that
 * is only slow.
 *
 * A fork worker is a copy of the caller at the pool's creation. A lock that
 * another thread of the caller held at that moment (a logger's mutex, a
 * FILE's lock in the middle of an fprintf) is held in every worker by a
 * thread that does not exist there: a task that takes it waits for ever,
 * and so does the task of every replacement, which is a copy of the same
 * moment. A task that locks a mutex it already holds waits for ever too.
 *
 * Such a wait can be told apart from outside, with certainty, from what
 * the kernel shows of the worker: its one thread (a task that started
 * threads is never judged) sleeps in futex() on a process-private word
 * (FUTEX_PRIVATE_FLAG: glibc's mutexes, condition variables and stdio
 * locks), with no timeout. Only a thread of the same process could wake
 * that word, and there is none; a shared word (a process-shared mutex in
 * cf_shared_alloc memory, the ring's own bell) can be woken by another
 * process and is never judged, nor is a wait with a timeout. The manager
 * asks only about a worker whose task has run for a while, and calls it
 * stuck when it sees the same wait at two looks in a row (pp_manager.c):
 * a signal handler that jumps out of a wait shows itself in between.
 *
 * What it reads: /proc/<pid>/stat (the thread count) and
 * /proc/<pid>/syscall (the system call a blocked thread is in, and its
 * arguments). The worker is this process's grandchild, which the kernel
 * lets it read under every ptrace policy (Yama's included); where it
 * cannot be read (no /proc, a worker that made itself undumpable), nothing
 * is judged and the wait goes on, as task_timeout_ms allows.
 */
#include "pp_internal.h"

#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>

/* Reads /proc/<pid>/<name> (pid 0: self) into buf, NUL-terminated; false if it cannot. */
static bool read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    else
        snprintf(path, sizeof path, "/proc/self/%s", name);
    return cf__pp_read_proc(path, buf, size) > 0;
}

long cf__pp_thread_count(pid_t pid)
{
    char buf[1024];
    if (!read_proc(pid, "stat", buf, sizeof buf))
        return -1;
    /* The command name, in parentheses, may hold anything: fields start after the last ')'. */
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* Field 3 (state) follows ") "; num_threads is the 20th. */
    for (int field = 3; field <= 20; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return -1;
    }
    char *end;
    long n = strtol(p + 1, &end, 10);
    return end == p + 1 ? -1 : n;
}

bool cf__pp_waits_forever(pid_t pid, uint64_t *word)
{
#ifndef SYS_futex
    (void)pid, (void)word;
    return false;    /* a 32-bit system with futex_time64 only: nothing is judged */
#else
    if (cf__pp_thread_count(pid) != 1)
        return false;
    char buf[256];
    if (!read_proc(pid, "syscall", buf, sizeof buf))
        return false;
    long nr;
    unsigned long addr, op, val, timeout;
    if (sscanf(buf, "%ld 0x%lx 0x%lx 0x%lx 0x%lx", &nr, &addr, &op, &val, &timeout) != 5 || nr != SYS_futex)
        return false;
    (void)val;
    int cmd = (int)(op & FUTEX_CMD_MASK);
    bool waits = cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET || cmd == FUTEX_LOCK_PI;
    if (!waits || !(op & FUTEX_PRIVATE_FLAG) || timeout != 0)
        return false;
    *word = addr;
    return true;
#endif
}
