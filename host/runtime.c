/* OpenCL runtime: device discovery and choice, context/queue, program cache, kernels, launches. */
#include "runtime.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels-embedded.h"

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

const char *b158_mem_category_name(b158_mem_category category)
{
    switch (category) {
    case B158_MEM_WEIGHTS:
        return "weights";
    case B158_MEM_KV_CACHE:
        return "kv cache";
    case B158_MEM_SCRATCH:
        return "scratch";
    case B158_MEM_CATEGORY_COUNT:
        return "total";
    }
    return "?";
}

/* ---- device discovery ------------------------------------------------------------------- */

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

struct found_device {
    cl_platform_id platform;
    cl_device_id device;
};

static b158_status get_platforms(cl_platform_id *ids, cl_uint *n)
{
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, ids, n);
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (err == CL_SUCCESS && *n == 0))
        return B158_FAIL(B158_ERR_NO_PLATFORM,
                         "no OpenCL platform found: install an OpenCL driver (for the CPU: "
                         "apt-get install pocl-opencl-icd) and check /etc/OpenCL/vendors");
    if (err != CL_SUCCESS)
        return B158_CL_FAIL(err, "clGetPlatformIDs");
    if (*n > MAX_PLATFORMS)
        *n = MAX_PLATFORMS;
    return B158_OK;
}

static int has_extension(const char *exts, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = exts; (p = strstr(p, name)) != NULL; p += len)
        if ((p == exts || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
            return 1;
    return 0;
}

static void dev_str(cl_device_id d, cl_device_info what, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, cap, buf, NULL) != CL_SUCCESS)
        snprintf(buf, cap, "?");
    buf[cap - 1] = '\0';
}

static void fill_info(cl_platform_id p, cl_device_id d, int index, b158_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->index = index;
    if (clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof info->platform, info->platform, NULL))
        snprintf(info->platform, sizeof info->platform, "?");
    dev_str(d, CL_DEVICE_NAME, info->name, sizeof info->name);
    dev_str(d, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    dev_str(d, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
    dev_str(d, CL_DEVICE_VERSION, info->version, sizeof info->version);
    dev_str(d, CL_DEVICE_OPENCL_C_VERSION, info->c_version, sizeof info->c_version);
    cl_device_type type = 0;
    cl_uint cu = 0;
    cl_ulong gmem = 0, amax = 0, lmem = 0;
    size_t wg = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof amax, &amax, NULL);
    clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    info->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    info->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    info->compute_units = cu;
    info->global_mem = gmem;
    info->max_alloc = amax;
    info->local_mem = lmem;
    info->max_work_group = wg;

    size_t len = 0;
    if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, 0, NULL, &len) == CL_SUCCESS && len) {
        char *exts = malloc(len + 1);
        if (exts && clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, len, exts, NULL) == CL_SUCCESS) {
            exts[len] = '\0';
            info->has_fp16 = has_extension(exts, "cl_khr_fp16");
            info->has_subgroups = has_extension(exts, "cl_khr_subgroups") ||
                                  has_extension(exts, "cl_intel_subgroups");
            info->has_int_dot = has_extension(exts, "cl_khr_integer_dot_product");
        }
        free(exts);
    }
}

/* All devices of all platforms in a stable order: platform order, then device order. */
static b158_status enumerate(struct found_device *out, size_t *count)
{
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    B158_TRY(get_platforms(plats, &np));
    size_t n = 0;
    for (cl_uint i = 0; i < np && n < MAX_DEVICES; i++) {
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        cl_int err = clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd);
        if (err == CL_DEVICE_NOT_FOUND)
            continue;
        if (err != CL_SUCCESS)
            return B158_CL_FAIL(err, "clGetDeviceIDs");
        for (cl_uint j = 0; j < nd && j < MAX_DEVICES && n < MAX_DEVICES; j++)
            out[n++] = (struct found_device){plats[i], devs[j]};
    }
    *count = n;
    if (n == 0)
        return B158_FAIL(B158_ERR_NO_DEVICE,
                         "OpenCL platforms exist but none has a device: check the driver");
    return B158_OK;
}

b158_status b158_device_list(b158_device_info *out, size_t cap, size_t *count)
{
    if (!count)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_device_list: count is NULL");
    struct found_device devs[MAX_DEVICES];
    size_t n = 0;
    *count = 0;
    B158_TRY(enumerate(devs, &n));
    for (size_t i = 0; i < n && i < cap; i++)
        fill_info(devs[i].platform, devs[i].device, (int)i, &out[i]);
    *count = n;
    return B158_OK;
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

static b158_status no_device_error(const char *what, const struct found_device *devs, size_t n)
{
    char names[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof names - 1; i++) {
        b158_device_info info;
        fill_info(devs[i].platform, devs[i].device, (int)i, &info);
        int w =
            snprintf(names + used, sizeof names - used, "%s%zu: %s", i ? ", " : "", i, info.name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return B158_FAIL(B158_ERR_NO_DEVICE,
                     "no OpenCL device matches %s; found %zu device(s): %s. Choose one by index "
                     "or name substring (--device or B158_DEVICE); --list-devices shows them",
                     what, n, names);
}

static b158_status select_device(const char *sel, struct found_device *chosen, int *index)
{
    struct found_device devs[MAX_DEVICES];
    size_t n = 0;
    B158_TRY(enumerate(devs, &n));
    if (!sel || !*sel)
        sel = getenv("B158_DEVICE");
    if (sel && *sel) {
        char what[300];
        char *end = NULL;
        errno = 0;
        long idx = strtol(sel, &end, 10);
        if (end != sel && *end == '\0') {
            if (errno || idx < 0 || (size_t)idx >= n) {
                snprintf(what, sizeof what, "index %s", sel);
                return no_device_error(what, devs, n);
            }
            *chosen = devs[idx];
            *index = (int)idx;
            return B158_OK;
        }
        for (size_t i = 0; i < n; i++) {
            b158_device_info info;
            fill_info(devs[i].platform, devs[i].device, (int)i, &info);
            char full[300];
            snprintf(full, sizeof full, "%s %s", info.platform, info.name);
            if (contains_nocase(full, sel)) {
                *chosen = devs[i];
                *index = (int)i;
                return B158_OK;
            }
        }
        snprintf(what, sizeof what, "name '%.200s'", sel);
        return no_device_error(what, devs, n);
    }
    for (size_t i = 0; i < n; i++) {
        cl_device_type t = 0;
        clGetDeviceInfo(devs[i].device, CL_DEVICE_TYPE, sizeof t, &t, NULL);
        if (t & CL_DEVICE_TYPE_GPU) {
            *chosen = devs[i];
            *index = (int)i;
            return B158_OK;
        }
    }
    *chosen = devs[0];
    *index = 0;
    return B158_OK;
}

/* ---- runtime ---------------------------------------------------------------------------- */

b158_runtime_params b158_runtime_default_params(void)
{
    return (b158_runtime_params){NULL, B158_VARIANT_AUTO, 0, NULL};
}

static void choose_tuning(b158_runtime *rt)
{
    b158_tuning t;
    if (rt->variant == B158_VARIANT_GPU) {
        t = (b158_tuning){.gpu = 1,
                          .wg = 64,
                          .gemv_rows = 4,
                          .gemm_tn = 32,
                          .gemm_tm = 16,
                          .gemm_cpu_m = 4,
                          .head_dim_max = 256};
        if (rt->info.max_work_group < 64)
            t.wg = (int)rt->info.max_work_group;
    } else {
        t = (b158_tuning){.gpu = 0,
                          .wg = 1,
                          .gemv_rows = 1,
                          .gemm_tn = 32,
                          .gemm_tm = 16,
                          .gemm_cpu_m = 4,
                          .head_dim_max = 256};
    }
    rt->tune = t;
    snprintf(rt->prelude, sizeof rt->prelude,
             "/* b158-cl prelude: device features and tuning */\n"
             "#define B158_GPU %d\n#define B158_WG %d\n#define B158_GEMV_ROWS %d\n"
             "#define B158_GEMM_TN %d\n#define B158_GEMM_TM %d\n#define B158_GEMM_CPU_M %d\n"
             "#define B158_HEAD_DIM_MAX %d\n#define B158_HAS_FP16 %d\n#line 1\n",
             t.gpu, t.wg, t.gemv_rows, t.gemm_tn, t.gemm_tm, t.gemm_cpu_m, t.head_dim_max,
             rt->info.has_fp16);
}

static void choose_cache_dir(b158_runtime *rt, const char *param)
{
    const char *env;
    rt->cache_dir[0] = '\0';
    if (param) {
        snprintf(rt->cache_dir, sizeof rt->cache_dir, "%s", param);
    } else if ((env = getenv("B158_CACHE_DIR")) != NULL) {
        snprintf(rt->cache_dir, sizeof rt->cache_dir, "%s", env);
    } else if ((env = getenv("XDG_CACHE_HOME")) != NULL && *env) {
        snprintf(rt->cache_dir, sizeof rt->cache_dir, "%s/b158-cl", env);
    } else if ((env = getenv("HOME")) != NULL && *env) {
        snprintf(rt->cache_dir, sizeof rt->cache_dir, "%s/.cache/b158-cl", env);
    }
}

b158_status b158_runtime_create(const b158_runtime_params *params, b158_runtime **out)
{
    if (!out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_runtime_create: out is NULL");
    *out = NULL;
    b158_runtime_params p = params ? *params : b158_runtime_default_params();
    struct found_device fd;
    int index = 0;
    B158_TRY(select_device(p.device, &fd, &index));

    b158_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory creating the runtime");
    rt->platform = fd.platform;
    rt->device = fd.device;
    fill_info(fd.platform, fd.device, index, &rt->info);
    rt->variant = p.variant != B158_VARIANT_AUTO ? p.variant
                  : rt->info.is_gpu              ? B158_VARIANT_GPU
                                                 : B158_VARIANT_CPU;
    rt->profile = p.profile;
    choose_tuning(rt);
    choose_cache_dir(rt, p.cache_dir);

    cl_device_fp_config fp = 0;
    clGetDeviceInfo(rt->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    rt->correct_div = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    /* Correctly rounded division keeps the activation scale 127/absmax identical to the C
     * reference, which the bit-exact int8 quantization depends on. */
    snprintf(rt->options, sizeof rt->options, "-cl-std=CL1.2%s",
             rt->correct_div ? " -cl-fp32-correctly-rounded-divide-sqrt" : "");
    if (!rt->correct_div)
        b158_log(B158_LOG_WARN, "device lacks correctly rounded division: int8 activations may "
                                "differ from the CPU reference in rare ties");

    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)rt->platform, 0};
    rt->context = clCreateContext(props, 1, &rt->device, NULL, NULL, &err);
    if (!rt->context) {
        b158_status st = B158_CL_FAIL(err, "clCreateContext");
        b158_runtime_free(rt);
        return st;
    }
    rt->queue = clCreateCommandQueue(rt->context, rt->device,
                                     p.profile ? CL_QUEUE_PROFILING_ENABLE : 0, &err);
    if (!rt->queue) {
        b158_status st = B158_CL_FAIL(err, "clCreateCommandQueue");
        b158_runtime_free(rt);
        return st;
    }
    *out = rt;
    return B158_OK;
}

void b158_runtime_free(b158_runtime *rt)
{
    if (!rt)
        return;
    for (int i = 0; i < B158_RT_MAX_RELEASE && rt->release[i]; i++)
        rt->release[i]();
    for (int i = 0; i < B158_KERNEL_COUNT; i++)
        if (rt->kernels[i].kernel)
            clReleaseKernel(rt->kernels[i].kernel);
    for (size_t i = 0; i < sizeof rt->programs / sizeof rt->programs[0]; i++)
        if (rt->programs[i])
            clReleaseProgram(rt->programs[i]);
    if (rt->queue)
        clReleaseCommandQueue(rt->queue);
    if (rt->context)
        clReleaseContext(rt->context);
    free(rt);
}

const b158_device_info *b158_runtime_device(const b158_runtime *rt)
{
    return rt ? &rt->info : NULL;
}

b158_variant b158_runtime_variant(const b158_runtime *rt)
{
    return rt ? rt->variant : B158_VARIANT_AUTO;
}

uint64_t b158_runtime_mem_bytes(const b158_runtime *rt, b158_mem_category category)
{
    if (!rt)
        return 0;
    if (category >= B158_MEM_CATEGORY_COUNT)
        return rt->mem[0] + rt->mem[1] + rt->mem[2];
    return rt->mem[category];
}

uint64_t b158_runtime_mem_peak(const b158_runtime *rt)
{
    return rt ? rt->mem_peak : 0;
}

size_t b158_runtime_kernel_stats(const b158_runtime *rt, b158_kernel_stats *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; rt && i < B158_KERNEL_COUNT; i++) {
        const struct b158_kernel_slot *k = &rt->kernels[i];
        if (!k->launches)
            continue;
        if (n < cap)
            out[n] = (b158_kernel_stats){kernel_table[i].name, k->launches, k->total_ns};
        n++;
    }
    for (int i = 0; rt && i < B158_RT_MAX_ROUTINES && rt->routines[i].name; i++) {
        const struct b158_routine_slot *r = &rt->routines[i];
        if (!r->launches)
            continue;
        if (n < cap)
            out[n] = (b158_kernel_stats){r->name, r->launches, r->total_ns};
        n++;
    }
    return n;
}

void b158_runtime_kernel_stats_reset(b158_runtime *rt)
{
    for (int i = 0; rt && i < B158_KERNEL_COUNT; i++)
        rt->kernels[i].launches = rt->kernels[i].total_ns = 0;
    for (int i = 0; rt && i < B158_RT_MAX_ROUTINES; i++)
        rt->routines[i].launches = rt->routines[i].total_ns = 0;
}

b158_status b158_rt_record(b158_runtime *rt, const char *name, uint64_t ns)
{
    for (int i = 0; i < B158_RT_MAX_ROUTINES; i++) {
        struct b158_routine_slot *r = &rt->routines[i];
        if (!r->name)
            r->name = name;
        if (strcmp(r->name, name) == 0) {
            r->launches++;
            r->total_ns += ns;
            return B158_OK;
        }
    }
    return B158_FAIL(B158_ERR_UNSUPPORTED, "more than %d routines to time (at %s)",
                     B158_RT_MAX_ROUTINES, name);
}

b158_status b158_rt_on_release(b158_runtime *rt, b158_rt_release_fn fn)
{
    for (int i = 0; i < B158_RT_MAX_RELEASE; i++) {
        if (!rt->release[i])
            rt->release[i] = fn;
        if (rt->release[i] == fn)
            return B158_OK;
    }
    return B158_FAIL(B158_ERR_UNSUPPORTED, "more than %d release functions", B158_RT_MAX_RELEASE);
}

/* ---- device memory ---------------------------------------------------------------------- */

b158_status b158_buf_alloc(b158_runtime *rt, b158_mem_category category, size_t bytes,
                           b158_buf *out)
{
    *out = (b158_buf){NULL, 0, category};
    if (bytes == 0)
        bytes = 16; /* OpenCL forbids empty buffers; keep the kernels' argument valid */
    uint64_t total = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    if (bytes > rt->info.max_alloc)
        return B158_FAIL(B158_ERR_DEVICE_MEMORY,
                         "device buffer of %.1f MiB (%s) exceeds the device's largest allocation "
                         "of %.1f MiB%s",
                         bytes / 1048576.0, b158_mem_category_name(category),
                         rt->info.max_alloc / 1048576.0,
                         rt->info.is_cpu ? " (on PoCL raise POCL_MEMORY_LIMIT=<GB>)" : "");
    if (total + bytes > rt->info.global_mem)
        return B158_FAIL(B158_ERR_DEVICE_MEMORY,
                         "device memory exhausted: %.1f MiB in use + %.1f MiB for %s > %.1f MiB on "
                         "%s%s",
                         total / 1048576.0, bytes / 1048576.0, b158_mem_category_name(category),
                         rt->info.global_mem / 1048576.0, rt->info.name,
                         rt->info.is_cpu ? " (on PoCL raise POCL_MEMORY_LIMIT=<GB>)" : "");
    cl_int err;
    cl_mem mem = clCreateBuffer(rt->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!mem)
        return B158_CL_FAIL(err, "clCreateBuffer");
    *out = (b158_buf){mem, bytes, category};
    rt->mem[category] += bytes;
    total += bytes;
    if (total > rt->mem_peak)
        rt->mem_peak = total;
    return B158_OK;
}

void b158_buf_free(b158_runtime *rt, b158_buf *buf)
{
    if (!buf || !buf->mem)
        return;
    clReleaseMemObject(buf->mem);
    rt->mem[buf->category] -= buf->bytes;
    *buf = (b158_buf){NULL, 0, buf->category};
}

static b158_status check_range(const b158_buf *buf, size_t offset, size_t bytes, const char *what)
{
    if (!buf->mem || offset > buf->bytes || bytes > buf->bytes - offset)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s of %zu bytes at %zu outside a %zu-byte buffer",
                         what, bytes, offset, buf->bytes);
    return B158_OK;
}

b158_status b158_buf_write(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                           const void *src)
{
    B158_TRY(check_range(buf, offset, bytes, "write"));
    if (bytes)
        B158_CL_CHECK(
            clEnqueueWriteBuffer(rt->queue, buf->mem, CL_TRUE, offset, bytes, src, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_read(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                          void *dst)
{
    B158_TRY(check_range(buf, offset, bytes, "read"));
    if (bytes)
        B158_CL_CHECK(
            clEnqueueReadBuffer(rt->queue, buf->mem, CL_TRUE, offset, bytes, dst, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_fill(b158_runtime *rt, const b158_buf *buf, uint8_t byte)
{
    B158_CL_CHECK(clEnqueueFillBuffer(rt->queue, buf->mem, &byte, 1, 0, buf->bytes, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_copy(b158_runtime *rt, const b158_buf *src, size_t src_off,
                          const b158_buf *dst, size_t dst_off, size_t bytes)
{
    B158_TRY(check_range(src, src_off, bytes, "copy source"));
    B158_TRY(check_range(dst, dst_off, bytes, "copy destination"));
    if (bytes)
        B158_CL_CHECK(clEnqueueCopyBuffer(rt->queue, src->mem, dst->mem, src_off, dst_off, bytes, 0,
                                          NULL, NULL));
    return B158_OK;
}

b158_status b158_rt_finish(b158_runtime *rt)
{
    B158_CL_CHECK(clFinish(rt->queue));
    return B158_OK;
}

/* ---- programs --------------------------------------------------------------------------- */

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
    /* common.cl holds helpers shared by every kernel file. */
    const char *common, *body;
    char *common_owned, *body_owned;
    B158_TRY(kernel_source("common.cl", &common, &common_owned));
    b158_status st = kernel_source(file, &body, &body_owned);
    if (st != B158_OK) {
        free(common_owned);
        return st;
    }
    size_t lc = strlen(common), lb = strlen(body);
    char *joined = malloc(lc + lb + 2);
    if (!joined) {
        free(common_owned);
        free(body_owned);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory joining kernel sources");
    }
    memcpy(joined, common, lc);
    joined[lc] = '\n';
    memcpy(joined + lc + 1, body, lb + 1);
    free(common_owned);
    free(body_owned);
    st = b158_rt_build(rt, file, joined, &rt->programs[i]);
    free(joined);
    if (st != B158_OK)
        return st;
    rt->program_files[i] = file;
    *out = rt->programs[i];
    return B158_OK;
}

b158_status b158_rt_kernel(b158_runtime *rt, enum b158_kernel_id id, cl_kernel *out)
{
    if (rt->kernels[id].kernel) {
        *out = rt->kernels[id].kernel;
        return B158_OK;
    }
    cl_program prog = NULL;
    B158_TRY(program_for(rt, kernel_table[id].file, &prog));
    cl_int err;
    cl_kernel k = clCreateKernel(prog, kernel_table[id].name, &err);
    if (!k)
        return b158_fail_at(B158_ERR_OPENCL, __FILE__, __LINE__,
                            "clCreateKernel(%s) from %s returned %s", kernel_table[id].name,
                            kernel_table[id].file, b158_cl_error_name(err));
    rt->kernels[id].kernel = k;
    *out = k;
    return B158_OK;
}

b158_status b158_rt_launch(b158_runtime *rt, enum b158_kernel_id id, size_t nargs,
                           const b158_arg *args, cl_uint dims, const size_t *global,
                           const size_t *local)
{
    cl_kernel k;
    B158_TRY(b158_rt_kernel(rt, id, &k));
    const char *name = kernel_table[id].name;
    for (size_t i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value);
        if (err != CL_SUCCESS)
            return b158_fail_at(B158_ERR_OPENCL, __FILE__, __LINE__,
                                "clSetKernelArg(%s, arg %zu, %zu bytes) returned %s", name, i,
                                args[i].size, b158_cl_error_name(err));
    }
    size_t gws[3] = {1, 1, 1};
    size_t wg_total = 1;
    for (cl_uint d = 0; d < dims; d++) {
        if (global[d] == 0)
            return B158_OK; /* nothing to do */
        gws[d] = global[d];
        if (local) {
            if (local[d] == 0)
                return B158_FAIL(B158_ERR_INVALID_ARG, "%s: local size 0 in dimension %u", name, d);
            gws[d] = (global[d] + local[d] - 1) / local[d] * local[d];
            wg_total *= local[d];
        }
    }
    if (local) {
        size_t kmax = 0;
        clGetKernelWorkGroupInfo(k, rt->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax,
                                 NULL);
        if (wg_total > rt->info.max_work_group || (kmax && wg_total > kmax))
            return B158_FAIL(B158_ERR_UNSUPPORTED,
                             "%s: work-group of %zu exceeds the limit (kernel %zu, device %zu) on "
                             "%s; lower the tuning for this device",
                             name, wg_total, kmax, rt->info.max_work_group, rt->info.name);
    }
    cl_event ev = NULL;
    cl_int err = clEnqueueNDRangeKernel(rt->queue, k, dims, NULL, gws, local, 0, NULL,
                                        rt->profile ? &ev : NULL);
    if (err != CL_SUCCESS)
        return b158_fail_at(err == CL_OUT_OF_RESOURCES || err == CL_MEM_OBJECT_ALLOCATION_FAILURE
                                ? B158_ERR_DEVICE_MEMORY
                                : B158_ERR_OPENCL,
                            __FILE__, __LINE__, "clEnqueueNDRangeKernel(%s) returned %s", name,
                            b158_cl_error_name(err));
    rt->kernels[id].launches++;
    if (ev) {
        cl_ulong t0 = 0, t1 = 0;
        err = clWaitForEvents(1, &ev);
        if (err == CL_SUCCESS) {
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
            rt->kernels[id].total_ns += t1 > t0 ? t1 - t0 : 0;
        }
        clReleaseEvent(ev);
        if (err != CL_SUCCESS)
            return b158_fail_at(B158_ERR_OPENCL, __FILE__, __LINE__,
                                "kernel %s failed while running: %s", name,
                                b158_cl_error_name(err));
    }
    return B158_OK;
}
