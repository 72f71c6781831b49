/* b158-cl public API: status codes, error reporting, devices, runtime and memory accounting. */
#ifndef B158_B158_H
#define B158_B158_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define B158_VERSION_STRING "0.1.0"

/* Every fallible call returns one of these. Values are stable; new ones are appended. */
typedef enum b158_status {
    B158_OK = 0,
    B158_ERR_INVALID_ARG = 1,   /* a caller passed a bad argument (NULL, size 0, ...) */
    B158_ERR_IO = 2,            /* a file could not be opened, read, mapped or written */
    B158_ERR_FORMAT = 3,        /* a model or vocabulary file is malformed */
    B158_ERR_UNSUPPORTED = 4,   /* valid input this build does not handle (arch, type, ...) */
    B158_ERR_NO_PLATFORM = 5,   /* no OpenCL platform / ICD is installed */
    B158_ERR_NO_DEVICE = 6,     /* no device matches the selection */
    B158_ERR_OPENCL = 7,        /* an OpenCL call failed; the message names call and error */
    B158_ERR_BUILD = 8,         /* a kernel program failed to build; the message has the log */
    B158_ERR_DEVICE_MEMORY = 9, /* the device cannot hold what was asked for */
    B158_ERR_HOST_MEMORY = 10,  /* malloc failed */
    B158_ERR_CONTEXT_FULL = 11, /* more tokens than the context length */
    B158_ERR_INTERRUPTED = 12,  /* stopped on request (Ctrl-C) */
} b158_status;

/* Short constant name of a status ("B158_ERR_FORMAT"); never NULL. */
const char *b158_status_str(b158_status status);

/* Human-readable message of the last failure in this thread: what failed, where, why and
 * what to do. Empty string when nothing failed yet. Valid until the next failing call. */
const char *b158_last_error(void);

/* A token id: a row of the vocabulary and of the model's embedding. */
typedef int32_t b158_token;

/* Severity of a log message. Values are stable. */
typedef enum b158_log_level {
    B158_LOG_ERROR = 0,
    B158_LOG_WARN = 1,
    B158_LOG_INFO = 2,
    B158_LOG_DEBUG = 3,
} b158_log_level;

/* Log sink for progress and warnings. NULL restores the default (stderr, levels up to
 * B158_LOG_INFO). The sink is process-wide; set it before other threads use the library. */
typedef void (*b158_log_fn)(b158_log_level level, const char *message, void *user);
void b158_log_set(b158_log_fn fn, void *user);

/* ---- devices ---------------------------------------------------------------------------- */

/* What the engine needs to know of one OpenCL device. Sizes in bytes. */
typedef struct b158_device_info {
    int index;              /* global index across platforms, as used by --device */
    char platform[128];     /* platform name */
    char name[128];         /* device name */
    char vendor[64];        /* device vendor */
    char driver[128];       /* driver version */
    char version[128];      /* device OpenCL version string */
    char c_version[64];     /* OpenCL C version string */
    int is_gpu;             /* CL_DEVICE_TYPE_GPU */
    int is_cpu;             /* CL_DEVICE_TYPE_CPU */
    uint32_t compute_units; /* CL_DEVICE_MAX_COMPUTE_UNITS */
    uint64_t global_mem;    /* CL_DEVICE_GLOBAL_MEM_SIZE */
    uint64_t max_alloc;     /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    uint64_t local_mem;     /* CL_DEVICE_LOCAL_MEM_SIZE */
    size_t max_work_group;  /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    int has_fp16;           /* cl_khr_fp16 */
    int has_subgroups;      /* cl_khr_subgroups or cl_intel_subgroups */
    int has_int_dot;        /* cl_khr_integer_dot_product */
    uint64_t cache_bytes;   /* CL_DEVICE_GLOBAL_MEM_CACHE_SIZE (0: none or unknown) */
} b158_device_info;

/* Fills up to cap entries of out (may be NULL when cap is 0) and sets *count to the number of
 * devices found. Errors: B158_ERR_INVALID_ARG (count NULL), B158_ERR_NO_PLATFORM (no OpenCL
 * platform installed), B158_ERR_NO_DEVICE (platforms without devices), B158_ERR_OPENCL. */
b158_status b158_device_list(b158_device_info *out, size_t cap, size_t *count);

/* ---- runtime ---------------------------------------------------------------------------- */

/* Which family of kernels to use. */
typedef enum b158_variant {
    B158_VARIANT_AUTO = 0, /* from the device type: GPU kernels on GPUs, CPU kernels elsewhere */
    B158_VARIANT_CPU = 1,  /* one row per work-item, no barriers, unpack in registers */
    B158_VARIANT_GPU = 2,  /* work-groups sharing __local tiles, barriers */
} b158_variant;

typedef struct b158_runtime_params {
    const char *device;    /* index ("1") or case-insensitive name substring ("pthread");
                              NULL or "" = $B158_DEVICE, else the first GPU, else any device */
    b158_variant variant;  /* kernel family; 0 = auto */
    int profile;           /* nonzero: record a profiling event for every launch */
    const char *cache_dir; /* program binary cache; NULL = $B158_CACHE_DIR, else
                              $XDG_CACHE_HOME/b158-cl or ~/.cache/b158-cl; "" disables */
} b158_runtime_params;

b158_runtime_params b158_runtime_default_params(void);

/* Owns the OpenCL context, queue, programs and kernels. */
typedef struct b158_runtime b158_runtime;

/* A runtime on the device params selects (NULL params = the defaults). Errors:
 * B158_ERR_INVALID_ARG (out NULL), B158_ERR_NO_PLATFORM, B158_ERR_NO_DEVICE (nothing matches
 * the selection; the message lists the devices found), B158_ERR_OPENCL (context or queue),
 * B158_ERR_HOST_MEMORY. */
b158_status b158_runtime_create(const b158_runtime_params *params, b158_runtime **out);
void b158_runtime_free(b158_runtime *rt);

/* The device this runtime runs on, and the kernel family it chose. */
const b158_device_info *b158_runtime_device(const b158_runtime *rt);
b158_variant b158_runtime_variant(const b158_runtime *rt);

/* Device memory categories of the allocation counter. */
typedef enum b158_mem_category {
    B158_MEM_WEIGHTS = 0,
    B158_MEM_KV_CACHE = 1,
    B158_MEM_SCRATCH = 2,
    B158_MEM_CATEGORY_COUNT = 3,
} b158_mem_category;

/* Bytes currently allocated on the device in one category (B158_MEM_CATEGORY_COUNT = all). */
uint64_t b158_runtime_mem_bytes(const b158_runtime *rt, b158_mem_category category);
/* Highest total ever allocated at once. */
uint64_t b158_runtime_mem_peak(const b158_runtime *rt);
const char *b158_mem_category_name(b158_mem_category category);

/* Profiling totals per kernel (only with params.profile). Returns the number of kernels with
 * at least one launch; fills up to cap entries. Times in nanoseconds of device time. */
typedef struct b158_kernel_stats {
    const char *name;
    uint64_t launches;
    uint64_t total_ns;
} b158_kernel_stats;
size_t b158_runtime_kernel_stats(const b158_runtime *rt, b158_kernel_stats *out, size_t cap);
/* The same totals per site of the forward pass instead of per kernel: the launches of one part
 * of a step ("q|k|v", "attention", "gate|up (+ GLU)", "LM head", ...; a site is one or more
 * kernels), in the order each site first ran. */
size_t b158_runtime_site_stats(const b158_runtime *rt, b158_kernel_stats *out, size_t cap);
void b158_runtime_kernel_stats_reset(b158_runtime *rt); /* both */
/* Host nanoseconds spent inside kernel enqueue calls so far, every launch of rt (profiling or
 * not): how much of a step's wall time the launches cost the host. */
uint64_t b158_runtime_enqueue_ns(const b158_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
