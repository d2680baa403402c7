/*
 * Time bounds that scale: every Criterion suite includes this header, through
 * tests/helpers.h (tests/test-idle, which needs nothing else of it, directly).
 *
 * CF_TEST_TIMEOUT_SCALE, a whole number from 1 to 100 (1 when unset or out of
 * range), multiplies Criterion's .timeout of every test and suite, once,
 * before the first test starts, and whatever bound a suite passes through
 * test_time_scale(). tests/valgrind.sh sets it to 10: under valgrind a
 * process-pool test runs tens of times slower, and a slow machine more.
 */
#ifndef CF_TESTS_TIMESCALE_H
#define CF_TESTS_TIMESCALE_H

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdlib.h>

static inline int test_time_scale(void)
{
    static int cached; /* 0: not read yet; read without a lock, the same by every thread */
    int k = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (k == 0) {
        const char *s = getenv("CF_TEST_TIMEOUT_SCALE");
        k = s != NULL ? atoi(s) : 1;
        if (k < 1 || k > 100)
            k = 1;
        __atomic_store_n(&cached, k, __ATOMIC_RELAXED);
    }
    return k;
}

/*
 * Runs in Criterion's runner before it starts the first test, which reads
 * each test's timeout when it starts it. The suites' and tests' extra data
 * are distinct objects, so each is scaled once.
 */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    int k = test_time_scale();
    if (k == 1)
        return;
    FOREACH_SET(struct criterion_suite_set *suite, set->suites) {
        if (suite->suite.data != NULL && suite->suite.data->timeout > 0)
            suite->suite.data->timeout *= k;
        FOREACH_SET(struct criterion_test *test, suite->tests) {
            if (test->data != NULL && test->data->timeout > 0)
                test->data->timeout *= k;
        }
    }
}

#endif /* CF_TESTS_TIMESCALE_H */
