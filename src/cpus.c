/*
 * cpus.c — how many CPUs this process may use: the default worker count.
 *
 * The online CPUs of the machine overstate it in two common cases: a CPU
 * affinity mask (taskset, a cpuset cgroup, a batch scheduler's binding) and
 * a CPU quota of the process's cgroup (a container given "2 CPUs" on a
 * 64-CPU host). A pool with more workers than that only time-slices them.
 * So the count is the number of CPUs in the affinity mask, lowered to the
 * quota (rounded up) of the process's cgroup or any ancestor of it, on
 * cgroup v2 (cpu.max) or v1 (cpu.cfs_quota_us / cpu.cfs_period_us), and
 * at least 1. Where a source cannot be read, it does not lower the count.
 *
 * The cgroup files are found the way the kernel lays them out: the
 * process's cgroup path (/proc/self/cgroup) is relative to its hierarchy's
 * root, which is mounted (/proc/self/mountinfo) at a mount point, with the
 * subtree at the mount's root field (in a container, often the cgroup
 * itself).
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* CPUs in this thread's affinity mask, or 0 if it cannot be read. */
static unsigned affinity_cpus(void)
{
    for (size_t n = 1024; n <= 1u << 20; n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (set == NULL)
            return 0;
        size_t size = CPU_ALLOC_SIZE(n);
        int rc = sched_getaffinity(0, size, set);
        unsigned count = rc == 0 ? (unsigned)CPU_COUNT_S(size, set) : 0;
        CPU_FREE(set);
        if (rc == 0 || errno != EINVAL)
            return count;
    }
    return 0;
}

/* The first line of a small file, without its newline; false if unreadable. */
static bool read_line(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    bool ok = f != NULL && fgets(buf, (int)size, f) != NULL;
    if (f != NULL)
        fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

/* Quota of the cgroup directory dir, in CPUs rounded up; 0 when none. */
static unsigned quota_at(const char *dir, bool v2)
{
    char path[2 * PATH_MAX + 32], line[128];
    long long quota = -1, period = 0;
    if (v2) {
        char max[32];
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (!read_line(path, line, sizeof line) || sscanf(line, "%31s %lld", max, &period) != 2 ||
            strcmp(max, "max") == 0)
            return 0;
        quota = strtoll(max, NULL, 10);
    } else {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        if (!read_line(path, line, sizeof line) || sscanf(line, "%lld", &quota) != 1)
            return 0;
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if (!read_line(path, line, sizeof line) || sscanf(line, "%lld", &period) != 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    long long cpus = (quota + period - 1) / period;
    return cpus > (long long)UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

/*
 * The process's cgroup path in the hierarchy that holds the cpu controller:
 * a v1 line "N:...,cpu,...:/path" if there is one (a hybrid layout keeps
 * the controller there), else the v2 line "0::/path". Sets *v2 to which.
 */
static bool cgroup_path(char *path, size_t size, bool *v2)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    char line[PATH_MAX + 64];
    bool v1_found = false, v2_found = false;
    while (f != NULL && !v1_found && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':'), *p = ctl != NULL ? strchr(ctl + 1, ':') : NULL;
        if (p == NULL)
            continue;
        *ctl++ = '\0';
        *p++ = '\0';
        if (strcmp(line, "0") == 0 && *ctl == '\0') {
            snprintf(path, size, "%s", p);
            v2_found = true;
            continue;
        }
        for (char *save = NULL, *c = strtok_r(ctl, ",", &save); c != NULL && !v1_found;
             c = strtok_r(NULL, ",", &save))
            v1_found = strcmp(c, "cpu") == 0;
        if (v1_found)
            snprintf(path, size, "%s", p);
    }
    if (f != NULL)
        fclose(f);
    *v2 = !v1_found;
    return v1_found || v2_found;
}

/* The mount point and root of the hierarchy (v2: cgroup2; v1: cgroup with cpu). */
static bool cgroup_mount(bool v2, char *mnt, size_t msize, char *root, size_t rsize)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4 * PATH_MAX];
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof line, f) != NULL) {
        /* id parent major:minor root mount-point options [optional...] - type source super-options */
        char r[PATH_MAX], m[PATH_MAX], type[32], super[512];
        char *dash = strstr(line, " - ");
        if (dash == NULL || sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2 ||
            sscanf(dash + 3, "%31s %*s %511s", type, super) != 2)
            continue;
        bool cpu = false;
        for (char *save = NULL, *c = strtok_r(super, ",", &save); c != NULL; c = strtok_r(NULL, ",", &save))
            cpu = cpu || strcmp(c, "cpu") == 0;
        if (v2 ? strcmp(type, "cgroup2") == 0 : strcmp(type, "cgroup") == 0 && cpu) {
            snprintf(mnt, msize, "%s", m);
            snprintf(root, rsize, "%s", r);
            found = true;
        }
    }
    if (f != NULL)
        fclose(f);
    return found;
}

/* The smallest quota on the way from the process's cgroup up to its mount; 0 when none. */
static unsigned quota_cpus(void)
{
    char cg[PATH_MAX], mnt[PATH_MAX], root[PATH_MAX], dir[2 * PATH_MAX];
    bool v2 = false;
    if (!cgroup_path(cg, sizeof cg, &v2) || !cgroup_mount(v2, mnt, sizeof mnt, root, sizeof root))
        return 0;
    /* The part of the path below the mounted subtree. */
    size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
    const char *rel = strncmp(cg, root, rl) == 0 && (cg[rl] == '/' || cg[rl] == '\0') ? cg + rl : "";
    snprintf(dir, sizeof dir, "%s%s", mnt, rel);
    size_t floor = strlen(mnt);
    unsigned best = 0;
    for (;;) {
        unsigned q = quota_at(dir, v2);
        if (q > 0 && (best == 0 || q < best))
            best = q;
        char *slash = strrchr(dir, '/');
        if (slash == NULL || (size_t)(slash - dir) < floor)
            break;
        *slash = '\0';
    }
    return best;
}

unsigned cf__allowed_cpus(void)
{
    unsigned cpus = affinity_cpus();
    if (cpus == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        cpus = online < 1 ? 1 : online > (long)UINT_MAX ? UINT_MAX : (unsigned)online;
    }
    return cpus;
}

unsigned cf__usable_cpus(void)
{
    unsigned cpus = cf__allowed_cpus();
    unsigned quota = quota_cpus();
    if (quota > 0 && quota < cpus)
        cpus = quota;
    return cpus;
}
