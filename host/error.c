/* Thread-local last-error message, status names and the logging callback. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[4096];

const char *b158_status_str(b158_status status)
{
    switch (status) {
    case B158_OK:
        return "B158_OK";
    case B158_ERR_INVALID_ARG:
        return "B158_ERR_INVALID_ARG";
    case B158_ERR_IO:
        return "B158_ERR_IO";
    case B158_ERR_FORMAT:
        return "B158_ERR_FORMAT";
    case B158_ERR_UNSUPPORTED:
        return "B158_ERR_UNSUPPORTED";
    case B158_ERR_NO_PLATFORM:
        return "B158_ERR_NO_PLATFORM";
    case B158_ERR_NO_DEVICE:
        return "B158_ERR_NO_DEVICE";
    case B158_ERR_OPENCL:
        return "B158_ERR_OPENCL";
    case B158_ERR_BUILD:
        return "B158_ERR_BUILD";
    case B158_ERR_DEVICE_MEMORY:
        return "B158_ERR_DEVICE_MEMORY";
    case B158_ERR_HOST_MEMORY:
        return "B158_ERR_HOST_MEMORY";
    case B158_ERR_CONTEXT_FULL:
        return "B158_ERR_CONTEXT_FULL";
    case B158_ERR_INTERRUPTED:
        return "B158_ERR_INTERRUPTED";
    }
    return "B158_ERR_UNKNOWN";
}

const char *b158_last_error(void)
{
    return last_error;
}

void b158_clear_error(void)
{
    last_error[0] = '\0';
}

b158_status b158_fail_at(b158_status status, const char *file, int line, const char *fmt, ...)
{
    char msg[sizeof last_error - 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    snprintf(last_error, sizeof last_error, "%s (%s, %s:%d)", msg, b158_status_str(status),
             base ? base + 1 : file, line);
    return status;
}

static void default_log(b158_log_level level, const char *message, void *user)
{
    (void)user;
    if (level <= B158_LOG_INFO)
        fprintf(stderr, "%s%s\n",
                level == B158_LOG_ERROR  ? "error: "
                : level == B158_LOG_WARN ? "warning: "
                                         : "",
                message);
}

static b158_log_fn log_fn = default_log;
static void *log_user;

void b158_log_set(b158_log_fn fn, void *user)
{
    log_fn = fn ? fn : default_log;
    log_user = fn ? user : NULL;
}

void b158_log(b158_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_user);
}
