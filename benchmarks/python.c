/*
 * python.c — Python's concurrent.futures on the same workloads, for comparison.
 *
 * cfbench runs benchmarks/py_bench.py once, before its own sections, so the
 * two never compete for the cores, and keeps the flat JSON object it prints
 * ({"latency.process_us": 355.6, "python.version": "3.11.7", ...}). The
 * interpreter is $CFBENCH_PYTHON, else the python3 configure found, else
 * python3 on the PATH; the script is $CFBENCH_PY_SCRIPT, else the source
 * tree's, else py_bench.py beside the binary. Anything missing leaves the
 * Python rows out, with the reason kept for the sections' notes.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_FIGURES 128
#define KEY_LEN     64

typedef struct figure {
    char   key[KEY_LEN];
    double num;
    char   text[KEY_LEN];
    bool   is_text;
} figure;

static figure figures[MAX_FIGURES];
static size_t nfigures;
static bool ran;
static const char *missing = "Python comparison skipped (--no-python)";

/* ---- finding the interpreter and the script --------------------------------- */

static const char *interpreter(void)
{
    const char *env = getenv("CFBENCH_PYTHON");
    if (env != NULL && *env != '\0')
        return env;
#ifdef CFBENCH_PYTHON3
    if (access(CFBENCH_PYTHON3, X_OK) == 0)
        return CFBENCH_PYTHON3;
#endif
    return "python3";
}

static const char *script(void)
{
    static char beside[4096];
    const char *env = getenv("CFBENCH_PY_SCRIPT");
    if (env != NULL && *env != '\0')
        return env;
#ifdef CFBENCH_PY_SCRIPT
    if (access(CFBENCH_PY_SCRIPT, R_OK) == 0)
        return CFBENCH_PY_SCRIPT;
#endif
    ssize_t n = readlink("/proc/self/exe", beside, sizeof beside - 32);
    if (n > 0) {
        beside[n] = '\0';
        char *slash = strrchr(beside, '/');
        if (slash != NULL) {
            strcpy(slash + 1, "py_bench.py");
            if (access(beside, R_OK) == 0)
                return beside;
        }
    }
    return NULL;
}

/* ---- running it ---------------------------------------------------------------- */

/* Runs argv with its stdout into a new string (the caller frees); NULL on failure. */
static char *capture(char *const argv[], int *status, int *spawn_errno)
{
    int fds[2];
    if (pipe(fds) != 0)
        return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    pid_t pid;
    *spawn_errno = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (*spawn_errno != 0) {
        close(fds[0]);
        return NULL;
    }
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 == cap)
            if ((buf = realloc(buf, cap *= 2)) == NULL)
                die("out of memory");
        ssize_t n = read(fds[0], buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    return buf;
}

/* ---- reading its flat JSON object ---------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* Reads a JSON string without escapes beyond \" and \\; NULL if malformed. */
static const char *read_string(const char *p, char *out, size_t len)
{
    if (*p++ != '"')
        return NULL;
    size_t n = 0;
    for (; *p != '"'; p++) {
        if (*p == '\0')
            return NULL;
        if (*p == '\\' && p[1] != '\0')
            p++;
        if (n + 1 < len)
            out[n++] = *p;
    }
    out[n] = '\0';
    return p + 1;
}

static const char *read_value(const char *p, figure *f)
{
    if (*p == '"') {
        f->is_text = true;
        return read_string(p, f->text, sizeof f->text);
    }
    if (strncmp(p, "null", 4) == 0) {
        f->num = NAN;
        return p + 4;
    }
    char *end;
    f->num = strtod(p, &end);
    return end == p ? NULL : end;
}

static bool parse(const char *p)
{
    p = skip_ws(p);
    if (*p++ != '{')
        return false;
    for (p = skip_ws(p); *p != '}'; p = skip_ws(p)) {
        figure f = {0};
        if ((p = read_string(p, f.key, sizeof f.key)) == NULL)
            return false;
        p = skip_ws(p);
        if (*p++ != ':')
            return false;
        if ((p = read_value(skip_ws(p), &f)) == NULL)
            return false;
        if (nfigures < MAX_FIGURES)
            figures[nfigures++] = f;
        p = skip_ws(p);
        if (*p == ',')
            p++;
        else if (*p != '}')
            return false;
    }
    return true;
}

bool py_run(const bench_config *cfg, const char *sections, const char **why)
{
    static char reason[256];
    const char *py = script();
    if (py == NULL) {
        missing = *why = "py_bench.py not found (set CFBENCH_PY_SCRIPT)";
        return false;
    }
    char workers[16];
    snprintf(workers, sizeof workers, "%u", cfg->cores);
    char *argv[] = {(char *)interpreter(), (char *)py, "--workers", workers, "--sections",
                    (char *)sections, cfg->quick ? "--quick" : NULL, NULL};
    int status = 0, err = 0;
    char *out = capture(argv, &status, &err);
    if (out == NULL) {
        snprintf(reason, sizeof reason, "%s could not run (%s)", argv[0],
                 err != 0 ? strerror(err) : "no pipe");
        missing = *why = reason;
        return false;
    }
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && parse(out);
    free(out);
    if (!ok) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            snprintf(reason, sizeof reason, "%.100s printed no JSON object cfbench could read", py);
        else
            snprintf(reason, sizeof reason, "%.100s failed (exit status %d)", py,
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        missing = *why = reason;
        nfigures = 0;
        return false;
    }
    ran = true;
    missing = NULL;
    return true;
}

bool figures_run(char *const argv[], char *why, size_t len)
{
    int status = 0, err = 0;
    char *out = capture(argv, &status, &err);
    if (out == NULL) {
        snprintf(why, len, "%s could not run (%s)", argv[0], err != 0 ? strerror(err) : "no pipe");
        return false;
    }
    /* The object is the last line that opens one: mpirun may print before it. */
    const char *obj = out;
    for (const char *p = out; (p = strstr(p, "\n{")) != NULL; p++)
        obj = p + 1;
    size_t before = nfigures;
    bool exited = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool ok = exited && parse(obj);
    free(out);
    if (!ok) {
        nfigures = before;
        if (exited)
            snprintf(why, len, "%.100s printed no JSON object cfbench could read", argv[0]);
        else
            snprintf(why, len, "%.100s failed (exit status %d)", argv[0],
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    return ok;
}

static const figure *find(const char *key)
{
    for (size_t i = 0; i < nfigures; i++)
        if (strcmp(figures[i].key, key) == 0)
            return &figures[i];
    return NULL;
}

double py_num(const char *key)
{
    const figure *f = find(key);
    return f != NULL && !f->is_text ? f->num : NAN;
}

const char *py_text(const char *key)
{
    const figure *f = find(key);
    return f != NULL && f->is_text ? f->text : NULL;
}

bool py_ran(void)
{
    return ran;
}

const char *py_missing(void)
{
    return missing;
}

void py_skip(const char *why)
{
    missing = why;
}
