/* Shared test harness: suite selection, loud skips, random inputs and error measures. */
#include "test-common.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int skipped;
static uint64_t rng_state;
static b158_runtime *runtimes[3];

void b158_test_skip_unless(const char *require_env, const char *reason)
{
    const char *req = getenv(require_env);
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "\nFAIL (%s=1): %s\n", require_env, reason);
        CU_FAIL_FATAL("required resource missing");
        return;
    }
    fprintf(stderr, "\nSKIP: %s\n", reason);
    skipped++;
}

void b158_test_skip(const char *reason)
{
    b158_test_skip_unless("B158_REQUIRE_DEVICE", reason);
}

b158_runtime *b158_test_runtime(b158_variant variant)
{
    if (runtimes[variant])
        return runtimes[variant];
    b158_runtime_params p = b158_runtime_default_params();
    p.variant = variant;
    b158_status st = b158_runtime_create(&p, &runtimes[variant]);
    if (st == B158_ERR_NO_PLATFORM || st == B158_ERR_NO_DEVICE) {
        char msg[4200];
        snprintf(msg, sizeof msg, "no OpenCL device: %s", b158_last_error());
        b158_test_skip(msg);
        return NULL;
    }
    if (st != B158_OK) {
        fprintf(stderr, "\nruntime: %s\n", b158_last_error());
        CU_FAIL_FATAL("b158_runtime_create failed");
    }
    return runtimes[variant];
}

static void free_runtimes(void)
{
    for (int i = 0; i < 3; i++)
        b158_runtime_free(runtimes[i]);
}

uint32_t b158_test_rand(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

float b158_test_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(b158_test_rand() >> 8) / (float)(1u << 24);
}

int b158_test_randint(int lo, int hi)
{
    return lo + (int)(b158_test_rand() % (uint32_t)(hi - lo + 1));
}

double b158_test_nerr(const float *a, const float *b, size_t n)
{
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) /* NaN-propagating */
            maxdiff = d;
        if (fabs(b[i]) > maxref)
            maxref = fabs(b[i]);
    }
    return maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
}

/* Records a failure naming a missing input: the message says where it should have come from. */
static const char *input_path(const char *env, const char *fallback, const char *rel,
                              const char *origin)
{
    static char bufs[4][4096];
    static int next;
    char *buf = bufs[next++ % 4];
    const char *dir = getenv(env);
    snprintf(buf, sizeof bufs[0], "%s/%s", dir && *dir ? dir : fallback, rel);
    FILE *f = fopen(buf, "rb");
    if (f) {
        fclose(f);
    } else {
        fprintf(stderr, "\nmissing test input %s (%s)\n", buf, origin);
        CU_FAIL("missing test input");
    }
    return buf;
}

const char *b158_test_fetched(const char *rel)
{
    return input_path("B158_TEST_DATA_DIR", B158_TEST_DATA_DIR, rel,
                      "fetched by tools/fetch-test-data.sh, which ctest runs first");
}

const char *b158_test_source(const char *rel)
{
    return input_path("B158_SOURCE_DIR", B158_TEST_SOURCE_DIR, rel, "a file of the repository");
}

char *b158_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f)
        fclose(f);
    if (!buf) {
        fprintf(stderr, "\ncannot read %s\n", path);
        CU_FAIL("cannot read a test input");
        *len = 0;
        return NULL;
    }
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

int b158_test_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

void b158_test_suite(const char *name, const b158_test_case *tests)
{
    CU_pSuite s = CU_add_suite(name, NULL, NULL);
    for (; s && tests->name; tests++)
        CU_add_test(s, tests->name, tests->fn);
}

int b158_test_main(int argc, char **argv, void (*add_suites)(void))
{
    const char *seed = getenv("B158_TEST_SEED");
    rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    fprintf(stderr, "B158_TEST_SEED=%llu\n", (unsigned long long)rng_state);
    atexit(free_runtimes);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    add_suites();
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (argc > 1) {
        CU_pSuite s = CU_get_suite(argv[1]);
        if (!s) {
            fprintf(stderr, "no suite named '%s'\n", argv[1]);
            CU_cleanup_registry();
            return 1;
        }
        CU_basic_run_suite(s);
    } else {
        CU_basic_run_tests();
    }
    unsigned failures = CU_get_number_of_failures();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (failures)
        return failures > 125 ? 125 : (int)failures;
    if (skipped)
        return B158_TEST_SKIP_CODE;
    return run ? 0 : 1;
}
