/* Shared by the libFuzzer targets: the entry points, a silent log and hard failure on a broken
 * invariant (a fuzz target may abort; the library never does). */
#ifndef B158_FUZZ_COMMON_H
#define B158_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "b158/b158.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Warnings about hostile files are expected by the thousand; errors are return values. */
static void fuzz_quiet_log(b158_log_level level, const char *message, void *user)
{
    (void)level, (void)message, (void)user;
}

static inline void fuzz_quiet(void)
{
    b158_log_set(fuzz_quiet_log, NULL);
}

/* Stops the run with a crash report: libFuzzer saves the input as a crash artifact. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s (last error: %s)\n", __FILE__, __LINE__,  \
                    #cond, b158_last_error());                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
