/* OpenCL device discovery: platforms and devices in a stable order, what each can do, and the
 * choice of one by index, name or type. */
#include "runtime-device.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

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

void b158_device_fill_info(cl_platform_id p, cl_device_id d, int index, b158_device_info *info)
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
    cl_ulong gmem = 0, amax = 0, lmem = 0, cache = 0;
    size_t wg = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof amax, &amax, NULL);
    clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof cache, &cache, NULL);
    info->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    info->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    info->compute_units = cu;
    info->global_mem = gmem;
    info->max_alloc = amax;
    info->local_mem = lmem;
    info->max_work_group = wg;
    info->cache_bytes = cache;

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
        b158_device_fill_info(devs[i].platform, devs[i].device, (int)i, &out[i]);
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
        b158_device_fill_info(devs[i].platform, devs[i].device, (int)i, &info);
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
            b158_device_fill_info(devs[i].platform, devs[i].device, (int)i, &info);
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

b158_status b158_device_select(const char *sel, cl_platform_id *platform, cl_device_id *device,
                               int *index)
{
    struct found_device fd;
    B158_TRY(select_device(sel, &fd, index));
    *platform = fd.platform;
    *device = fd.device;
    return B158_OK;
}
