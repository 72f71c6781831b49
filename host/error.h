/* Internal error reporting: record a status with a formatted message and the source place. */
#ifndef B158_HOST_ERROR_H
#define B158_HOST_ERROR_H

#include "b158/b158.h"

/* Records the message as this thread's last error and returns status, so callers can write
 * `return B158_FAIL(B158_ERR_FORMAT, "tensor %s: ...", name);`. */
b158_status b158_fail_at(b158_status status, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define B158_FAIL(status, ...) b158_fail_at((status), __FILE__, __LINE__, __VA_ARGS__)

/* Clears the last error (used at the start of public entry points where helpful). */
void b158_clear_error(void);

/* Library logging through the callback set with b158_log_set. */
void b158_log(b158_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Propagate a failing status unchanged (the callee already recorded the message). */
#define B158_TRY(expr)                                                                             \
    do {                                                                                           \
        b158_status b158_try_st_ = (expr);                                                         \
        if (b158_try_st_ != B158_OK)                                                               \
            return b158_try_st_;                                                                   \
    } while (0)

#endif
