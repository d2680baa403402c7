// test-guard-cxx.cc: cf_main_guard in a C++ program. A static std::vector,
// built by the program's constructors before main, is what exec tasks read:
// without the guard a worker would find it empty (never constructed). A
// plain test: exits 0 when every task read the table, 1 with a message when
// not.
#include <cfutures.h>

#include <cstdio>
#include <cstring>
#include <vector>

static std::vector<int> table = {10, 20, 30};

static int lookup(const void *arg, size_t as, void *res, size_t rs)
{
    int i, v = -1;
    if (as != sizeof i || rs != sizeof v)
        return 98;
    std::memcpy(&i, arg, sizeof i);
    if (i >= 0 && static_cast<size_t>(i) < table.size())
        v = table[static_cast<size_t>(i)];
    std::memcpy(res, &v, sizeof v);
    return 0;
}

int main()
{
    cf_main_guard();

    cf_options opts = {};
    opts.workers = 2;
    opts.start = CF_START_EXEC;
    cf_executor *ex;
    int rc = cf_process_pool_new(&ex, &opts);
    if (rc != 0) {
        std::fprintf(stderr, "test-guard-cxx: cf_process_pool_new: %s\n", cf_strerror(rc));
        return 1;
    }
    int in[12], out[12];
    for (int i = 0; i < 12; i++)
        in[i] = i % 3;
    rc = cf_map(ex, lookup, in, sizeof *in, out, sizeof *out, 12, nullptr);
    cf_executor_free(ex);
    if (rc != 0) {
        std::fprintf(stderr, "test-guard-cxx: cf_map: %s\n", cf_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 12; i++) {
        if (out[i] != table[static_cast<size_t>(in[i])]) {
            std::fprintf(stderr, "test-guard-cxx: element %d read %d, expected %d: the exec worker did not "
                         "see the static std::vector\n", i, out[i], table[static_cast<size_t>(in[i])]);
            return 1;
        }
    }
    std::printf("test-guard-cxx: 12 exec tasks read the static std::vector {10, 20, 30}\n");
    return 0;
}
