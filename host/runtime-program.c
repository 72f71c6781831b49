/* Kernel programs: the binary cache, builds with their logs, kernel sources (embedded or from
 * $B158_KERNEL_DIR), and the kernels the runtime creates on first use and keeps. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels-embedded.h"
#include "runtime.h"

static const struct {
    const char *name;
    const char *file;
} kernel_table[B158_KERNEL_COUNT] = {
#define B158_KENTRY(id, name, file) {name, file},
    B158_KERNEL_LIST(B158_KENTRY)
#undef B158_KENTRY
};

const char *b158_kernel_name(enum b158_kernel_id id)
{
    return id < B158_KERNEL_COUNT ? kernel_table[id].name : "?";
}

void b158_rt_programs_free(b158_runtime *rt)
{
    for (int i = 0; i < B158_KERNEL_COUNT; i++)
        if (rt->kernels[i].kernel)
            clReleaseKernel(rt->kernels[i].kernel);
    for (size_t i = 0; i < sizeof rt->programs / sizeof rt->programs[0]; i++)
        if (rt->programs[i])
            clReleaseProgram(rt->programs[i]);
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t program_key(const b158_runtime *rt, const char *source)
{
    const char *parts[] = {B158_VERSION_STRING, rt->options,   rt->prelude,     source,
                           rt->info.platform,   rt->info.name, rt->info.driver, rt->info.version};
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        h = fnv1a(h, parts[i], strlen(parts[i]) + 1);
    return h;
}

static int mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return (mkdir(tmp, 0755) == 0 || errno == EEXIST) ? 0 : -1;
}

static cl_program load_cached(b158_runtime *rt, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    cl_program prog = NULL;
    long size = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
    unsigned char *bin = (size > 0 && fseek(f, 0, SEEK_SET) == 0) ? malloc((size_t)size) : NULL;
    if (bin && fread(bin, 1, (size_t)size, f) == (size_t)size) {
        size_t len = (size_t)size;
        const unsigned char *bins[1] = {bin};
        cl_int status = CL_SUCCESS, err;
        prog = clCreateProgramWithBinary(rt->context, 1, &rt->device, &len, bins, &status, &err);
        if (prog && (err != CL_SUCCESS || status != CL_SUCCESS ||
                     clBuildProgram(prog, 1, &rt->device, rt->options, NULL, NULL) != CL_SUCCESS)) {
            clReleaseProgram(prog);
            prog = NULL;
        }
    }
    free(bin);
    fclose(f);
    if (!prog)
        b158_log(B158_LOG_DEBUG, "program cache entry %s unusable; building from source", path);
    return prog;
}

static void store_cached(b158_runtime *rt, cl_program prog, const char *path)
{
    size_t size = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
        size == 0 || mkdir_p(rt->cache_dir) != 0)
        return;
    unsigned char *bin = malloc(size);
    unsigned char *bins[1] = {bin};
    if (bin && clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS) {
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        if (f) {
            int ok = fwrite(bin, 1, size, f) == size;
            ok = (fclose(f) == 0) && ok;
            if (!ok || rename(tmp, path) != 0)
                remove(tmp);
        }
    }
    free(bin);
}

b158_status b158_rt_build(b158_runtime *rt, const char *label, const char *source, cl_program *out)
{
    *out = NULL;
    char path[1100] = "";
    if (rt->cache_dir[0]) {
        snprintf(path, sizeof path, "%s/%016llx.bin", rt->cache_dir,
                 (unsigned long long)program_key(rt, source));
        if ((*out = load_cached(rt, path)) != NULL)
            return B158_OK;
    }
    const char *srcs[2] = {rt->prelude, source};
    cl_int err;
    cl_program prog = clCreateProgramWithSource(rt->context, 2, srcs, NULL, &err);
    if (!prog)
        return B158_CL_FAIL(err, "clCreateProgramWithSource");
    err = clBuildProgram(prog, 1, &rt->device, rt->options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t len = 0;
        clGetProgramBuildInfo(prog, rt->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
        char *log = malloc(len + 1);
        if (log) {
            log[0] = '\0';
            clGetProgramBuildInfo(prog, rt->device, CL_PROGRAM_BUILD_LOG, len, log, NULL);
            log[len] = '\0';
        }
        b158_status st = B158_FAIL(B158_ERR_BUILD,
                                   "building kernel program %s failed (%s) on %s with options "
                                   "'%s':\n%s",
                                   label, b158_cl_error_name(err), rt->info.name, rt->options,
                                   log ? log : "(no build log)");
        free(log);
        clReleaseProgram(prog);
        return st;
    }
    if (path[0])
        store_cached(rt, prog, path);
    *out = prog;
    return B158_OK;
}

/* Source of a cl_kernels/ file: $B158_KERNEL_DIR/<file> when set (kernel development),
 * otherwise the copy embedded at build time. Caller frees *owned. */
static b158_status kernel_source(const char *file, const char **text, char **owned)
{
    *owned = NULL;
    const char *dir = getenv("B158_KERNEL_DIR");
    if (dir && *dir) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        FILE *f = fopen(path, "rb");
        if (!f)
            return B158_FAIL(B158_ERR_IO, "B158_KERNEL_DIR is set but %s cannot be opened: %s",
                             path, strerror(errno));
        long size = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
        char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
        if (!buf || fseek(f, 0, SEEK_SET) != 0 || fread(buf, 1, (size_t)size, f) != (size_t)size) {
            free(buf);
            fclose(f);
            return B158_FAIL(B158_ERR_IO, "cannot read kernel source %s", path);
        }
        fclose(f);
        buf[size] = '\0';
        *text = *owned = buf;
        return B158_OK;
    }
    for (const struct b158_embedded_source *s = b158_embedded_sources; s->name; s++) {
        if (strcmp(s->name, file) == 0) {
            *text = s->text;
            return B158_OK;
        }
    }
    return B158_FAIL(B158_ERR_UNSUPPORTED, "kernel source %s is not embedded in this build", file);
}

static b158_status program_for(b158_runtime *rt, const char *file, cl_program *out)
{
    size_t slots = sizeof rt->programs / sizeof rt->programs[0], i;
    for (i = 0; i < slots && rt->program_files[i]; i++) {
        if (strcmp(rt->program_files[i], file) == 0) {
            *out = rt->programs[i];
            return B158_OK;
        }
    }
    if (i == slots)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "too many kernel programs");
    /* common.cl holds helpers shared by every kernel file; a program of several files (names
     * separated by spaces) joins them in order after it */
    char names[128];
    if (snprintf(names, sizeof names, "common.cl %s", file) >= (int)sizeof names)
        return B158_FAIL(B158_ERR_INVALID_ARG, "kernel program name too long: %s", file);
    char *joined = NULL;
    size_t len = 0;
    b158_status st = B158_OK;
    for (char *save = NULL, *name = strtok_r(names, " ", &save); name && st == B158_OK;
         name = strtok_r(NULL, " ", &save)) {
        const char *text = NULL;
        char *owned = NULL, *grown = NULL;
        st = kernel_source(name, &text, &owned);
        const size_t n = st == B158_OK ? strlen(text) : 0;
        if (st == B158_OK && !(grown = realloc(joined, len + n + 2)))
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory joining kernel sources");
        if (grown) {
            joined = grown;
            memcpy(joined + len, text, n);
            len += n;
            joined[len++] = '\n';
            joined[len] = '\0';
        }
        free(owned);
    }
    if (st != B158_OK) {
        free(joined);
        return st;
    }
    st = b158_rt_build(rt, file, joined, &rt->programs[i]);
    free(joined);
    if (st != B158_OK)
        return st;
    rt->program_files[i] = file;
    *out = rt->programs[i];
    return B158_OK;
}

b158_status b158_rt_kernel_new(b158_runtime *rt, enum b158_kernel_id id, cl_kernel *out)
{
    cl_program prog = NULL;
    B158_TRY(program_for(rt, kernel_table[id].file, &prog));
    cl_int err;
    cl_kernel k = clCreateKernel(prog, kernel_table[id].name, &err);
    if (!k)
        return b158_fail_at(err == CL_OUT_OF_HOST_MEMORY ? B158_ERR_HOST_MEMORY : B158_ERR_OPENCL,
                            __FILE__, __LINE__, "clCreateKernel(%s) from %s returned %s",
                            kernel_table[id].name, kernel_table[id].file, b158_cl_error_name(err));
    *out = k;
    return B158_OK;
}

b158_status b158_rt_kernel(b158_runtime *rt, enum b158_kernel_id id, cl_kernel *out)
{
    if (rt->kernels[id].kernel) {
        *out = rt->kernels[id].kernel;
        return B158_OK;
    }
    cl_kernel k = NULL;
    B158_TRY(b158_rt_kernel_new(rt, id, &k));
    rt->kernels[id].kernel = k;
    *out = k;
    return B158_OK;
}
