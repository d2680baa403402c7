/*
 * envprobe — a program linked with cfutures (statically, so that a
 * set-user-ID copy of it finds the library without LD_LIBRARY_PATH) that
 * says whether its main ran. tests/test-isolation runs it with a stray
 * CFUTURES_WORKER, and as a set-user-ID copy, to see what the library's
 * constructor does before main.
 *
 *   envprobe            prints "envprobe: main ran, secure=N"
 *   envprobe fork|exec  also runs one task on a pool of that kind and prints
 *                       "envprobe: KIND pool: rc=N result=N"
 */
#include <cfutures.h>

#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>

static int task_answer(const void *arg, size_t as, void *res, size_t rs)
{
    int v = 42;
    (void)arg;
    (void)as;
    if (rs != sizeof v)
        return 1;
    memcpy(res, &v, sizeof v);
    return 0;
}

int main(int argc, char **argv)
{
    printf("envprobe: main ran, secure=%lu\n", getauxval(AT_SECURE));
    fflush(stdout);
    if (argc < 2)
        return 0;
    cf_options o = { .workers = 1, .start = strcmp(argv[1], "exec") == 0 ? CF_START_EXEC : CF_START_FORK };
    cf_executor *ex = NULL;
    int result = 0, rc = cf_process_pool_new(&ex, &o);
    if (rc == 0) {
        cf_future *f;
        rc = cf_submit(ex, task_answer, NULL, 0, sizeof result, &f);
        if (rc == 0) {
            rc = cf_future_result(f, &result, sizeof result, -1);
            cf_future_free(f);
        }
        cf_executor_free(ex);
    }
    printf("envprobe: %s pool: rc=%d result=%d\n", argv[1], rc, result);
    return 0;
}
