/* Helpers shared by the command-line programs (header-only: each .c file in tools/ is a program):
 * finding the default model, loading it on a device, timing and the memory summary. */
#ifndef B158_TOOLS_CLI_COMMON_H
#define B158_TOOLS_CLI_COMMON_H

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "b158/b158.h"
#include "b158/model.h"

#define B158_DEFAULT_MODEL "models/shakespeare-bitnet.gguf"

static inline double cli_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline int cli_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* The shipped model: next to the installed binary (<bin>/../models or <bin>/../../models for a
 * build tree), else in the source tree this binary was built from. */
static inline const char *cli_default_model(char *buf, size_t cap)
{
    char exe[3072];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            const char *ups[] = {"/../", "/../../", "/../share/b158-cl/"};
            for (size_t i = 0; i < sizeof ups / sizeof ups[0]; i++) {
                snprintf(buf, cap, "%.3000s%s%s", exe, ups[i], B158_DEFAULT_MODEL);
                if (cli_exists(buf))
                    return buf;
            }
        }
    }
#ifdef B158_SOURCE_DIR
    snprintf(buf, cap, "%s/%s", B158_SOURCE_DIR, B158_DEFAULT_MODEL);
    if (cli_exists(buf))
        return buf;
#endif
    return NULL;
}

static inline int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "error: %s wants an integer in [%ld, %ld], got '%s'\n", flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static inline int cli_parse_float(const char *flag, const char *v, float *out)
{
    char *end;
    float x = v ? strtof(v, &end) : 0.0f;
    if (!v || end == v || *end || x != x) {
        fprintf(stderr, "error: %s wants a number, got '%s'\n", flag, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* llama.cpp's escapes in a -p text (its tools' default): \n \t \r \\ \" \' become those characters,
 * in place; any other backslash stays. Returns the new length. */
static inline size_t cli_unescape(char *t, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char c = i + 1 < len && t[i] == '\\' ? t[i + 1] : 0;
        const char *from = "ntr\\\"'", *to = "\n\t\r\\\"'";
        const char *k = c ? strchr(from, c) : NULL;
        if (k) {
            t[o++] = to[k - from];
            i++;
        } else {
            t[o++] = t[i];
        }
    }
    t[o] = '\0';
    return o;
}

/* Reads a whole file (regular file, pipe, /dev/stdin) into a NUL-terminated buffer; *len gets
 * its size, which counts any NUL bytes inside. A file that cannot be opened or read, a directory
 * or more than max bytes (0 = no limit) print one error line naming the file and give NULL. */
static inline char *cli_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "error: %s is a directory, not a file\n", path);
        fclose(f);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    const char *why = buf ? NULL : "out of memory";
    while (!why) {
        if (n + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                why = "out of memory";
                break;
            }
            buf = b;
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (max && n > max)
            why = "too large";
        else if (ferror(f))
            why = strerror(errno);
        else if (feof(f))
            break;
    }
    fclose(f);
    if (why) {
        if (max && n > max)
            fprintf(stderr, "error: %s is larger than %zu MiB, the most this program reads\n", path,
                    max >> 20);
        else
            fprintf(stderr, "error: cannot read %s: %s\n", path, why);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Prints the device memory counters of a runtime: weights, KV cache, scratch, total. */
static inline void cli_print_memory(const b158_runtime *rt)
{
    const double mib = 1024.0 * 1024.0;
    fprintf(stderr,
            "device memory: weights %.1f MiB, kv cache %.1f MiB, scratch %.1f MiB, "
            "total %.1f MiB\n",
            b158_runtime_mem_bytes(rt, B158_MEM_WEIGHTS) / mib,
            b158_runtime_mem_bytes(rt, B158_MEM_KV_CACHE) / mib,
            b158_runtime_mem_bytes(rt, B158_MEM_SCRATCH) / mib,
            b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT) / mib);
}

#endif
