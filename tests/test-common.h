/* Shared test harness: suite selection, loud skips, random inputs and error measures. */
#ifndef B158_TEST_COMMON_H
#define B158_TEST_COMMON_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

#define B158_TEST_SKIP_CODE 77

/* Runs the suites added by add_suites: all of them, or only the one named in argv[1].
 * Returns the number of failed assertions, or 77 when the selected tests were skipped. */
int b158_test_main(int argc, char **argv, void (*add_suites)(void));

/* Adds a suite with its tests; tests is a NULL-terminated {name, fn} list. */
typedef struct {
    const char *name;
    void (*fn)(void);
} b158_test_case;
void b158_test_suite(const char *name, const b158_test_case *tests);

/* Marks the running test as skipped with a reason printed to stderr. Under B158_REQUIRE_DEVICE=1
 * (CI) a skip for a missing OpenCL device counts as a failure instead. */
void b158_test_skip(const char *reason);
/* The same for a device feature: a failure when the variable require_env is "1" (CI sets
 * B158_REQUIRE_FP16=1 where it runs on a device with cl_khr_fp16), else a skip. */
void b158_test_skip_unless(const char *require_env, const char *reason);

/* A runtime on the default (or $B158_DEVICE) device with the given kernel variant, or NULL after
 * calling b158_test_skip when no OpenCL platform is present. Cached per variant; freed at exit. */
b158_runtime *b158_test_runtime(b158_variant variant);

/* Deterministic per-run random numbers (seed from $B158_TEST_SEED or the clock, printed). */
uint32_t b158_test_rand(void);
float b158_test_uniform(float lo, float hi);
int b158_test_randint(int lo, int hi); /* inclusive */

/* max|a-b| / max(max|b|, tiny): the normalized error used for float comparisons. */
double b158_test_nerr(const float *a, const float *b, size_t n);

/* Paths of test inputs, each in one of four rotating static buffers. A missing input is a test
 * failure, never a skip. b158_test_fetched: files that tools/fetch-test-data.sh fetches into the
 * build folder (ctest's "test-data" fixture runs it; $B158_TEST_DATA_DIR overrides the folder).
 * b158_test_source: files of the repository ($B158_SOURCE_DIR overrides its root). */
const char *b158_test_fetched(const char *rel);
const char *b158_test_source(const char *rel);

/* The whole file, NUL-terminated, in a malloc'd buffer (its size without the NUL in *len), or
 * NULL after recording a failure that names the file. */
char *b158_test_read_file(const char *path, size_t *len);

/* Index of the largest of x[0..n-1] (the first one on ties). */
int b158_test_argmax(const float *x, int n);

#define B158_POISON_BYTE 0x7f /* 0x7f7f7f7f as float is 3.39e38: caught by any comparison */

#endif
