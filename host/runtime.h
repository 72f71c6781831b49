/* Internal runtime API: device buffers with byte accounting, launches and profiling totals
 * (host/runtime.c), programs and kernels (host/runtime-program.c). Device discovery is
 * host/runtime-device.h. */
#ifndef B158_HOST_RUNTIME_H
#define B158_HOST_RUNTIME_H

#include <CL/cl.h>

#include "b158/b158.h"
#include "error.h"
#include "kernels.h"

/* Tuning parameters that go into the generated #define prelude of every program. */
typedef struct b158_tuning {
    int gpu;         /* B158_GPU: 1 = work-group kernels, 0 = barrier-free CPU kernels */
    int wg;          /* B158_WG: work-group size of reduction kernels (1 on CPU) */
    int gemv_rows;   /* B158_GEMV_ROWS: rows per work-group of the fused layer's GPU GEMV */
    int gemv_lanes;  /* work-items per row of the GPU GEMV and chain (a launch argument, not in
                        the prelude): 8, 16 or 32, 0 by the row's width (b158_op_gemv_shift) */
    int gemv_ahead;  /* B158_GEMV_AHEAD: 16-byte weight loads a GPU GEMV work-item issues at once */
    int gemv_early;  /* B158_GEMV_EARLY: the fused decode layer loads each GEMV's first weights
                        before it waits for the GEMV's input (1) or right before the GEMV (0) */
    int row_step;    /* B158_ROW_STEP: elements a GPU work-item loads at once in the row norms
                        and quantization (common.cl) */
    int gemm_tn;     /* B158_GEMM_TN: weight rows per GPU GEMM tile */
    int gemm_tm;     /* B158_GEMM_TM: tokens per GPU GEMM tile */
    int gemm_cpu_m;  /* B158_GEMM_CPU_M: tokens per work-item of the CPU GEMM */
    int avx512_rows; /* B158_AVX512_ROWS: rows per work-item of the AVX-512 GEMV and GEMM */
    int head_dim_max; /* B158_HEAD_DIM_MAX: largest head dimension the attention kernel holds */
    int x86_avx512bw; /* B158_X86_AVX512BW: the device builds x86 AVX-512BW builtins (CPU) */
    int x86_vnni;     /* B158_X86_AVX512VNNI: and AVX-512 VNNI's vpdpbusd (with x86_avx512bw) */
    int int_dot;      /* B158_INT_DOT: cl_khr_integer_dot_product's 4x8-bit dot products */
    int ptx_dp4a;     /* B158_PTX_DP4A: NVIDIA's inline PTX dp4a builds for the device */
    int ptx_cvt;      /* B158_PTX_CVT: and its cvt.f32.f16 of halves in a register */
    int amd_dot;      /* B158_AMD_DOT: AMD's v_dot4_i32_i8 through __builtin_amdgcn_sdot4 */
    int device_fence; /* B158_DEVICE_FENCE: the fence before and after work-groups meet at a
                         counter: 0 mem_fence, 1 PTX membar.gl, 2 AMD's agent-scope fence,
                         3 OpenCL C 3.0's atomic_work_item_fence at device scope, 4 PTX
                         fence.acq_rel.gpu */
    int subgroups;    /* B158_SUBGROUPS: work-group reductions by sub-group, 0 none, 1
                         cl_khr_subgroups, 2 NVIDIA warps through PTX shfl.sync */
    int prefetch;     /* B158_PREFETCH: the fused decode layer's L2 prefetch of its weights: 0
                         none, 1 OpenCL's prefetch(), 2 PTX prefetch.global.L2 per 128-byte
                         line, 3 PTX cp.async.bulk.prefetch.L2 per block of rows (sm_90) */
    int poll_sleep;   /* B158_POLL_SLEEP: ns a work-group waiting at a grid barrier or a chain's
                         flag sleeps between polls (PTX nanosleep, NVIDIA), 0 none */
    int stage_clock;  /* B158_STAGE_CLOCK: the fused decode layer's timestamps (profiling runs):
                         0 none, 1 cl_khr_kernel_clock, 2 NVIDIA's %globaltimer (ns) */
} b158_tuning;

/* A device buffer and what it is counted as. */
typedef struct b158_buf {
    cl_mem mem;
    size_t bytes;
    b158_mem_category category;
} b158_buf;

struct b158_kernel_slot {
    cl_kernel kernel;
    size_t max_wg; /* CL_KERNEL_WORK_GROUP_SIZE, queried once (0: unknown) */
    uint64_t launches;
    uint64_t total_ns;
};

/* Profiling totals of work another library enqueued on the runtime's queue (b158_rt_record). */
#define B158_RT_MAX_ROUTINES 8
struct b158_routine_slot {
    const char *name; /* NULL = free slot */
    uint64_t launches;
    uint64_t total_ns;
};

/* Profiling totals per site of the forward pass (b158_rt_site). */
#define B158_RT_MAX_SITES 24

/* Called once when the runtime is freed, before its context is released. */
typedef void (*b158_rt_release_fn)(void);
#define B158_RT_MAX_RELEASE 4

struct b158_runtime {
    b158_device_info info;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    b158_variant variant;
    int profile;
    int correct_div; /* device supports -cl-fp32-correctly-rounded-divide-sqrt */
    b158_tuning tune;
    char cache_dir[1024];
    char options[4096]; /* compiler options used for every program */
    char prelude[2048]; /* generated #define lines */
    cl_program programs[16];
    const char *program_files[16];
    struct b158_kernel_slot kernels[B158_KERNEL_COUNT];
    struct b158_routine_slot routines[B158_RT_MAX_ROUTINES];
    struct b158_routine_slot sites[B158_RT_MAX_SITES];
    const char *site; /* the site the next launches belong to (b158_rt_site), or NULL */
    b158_rt_release_fn release[B158_RT_MAX_RELEASE];
    uint64_t mem[B158_MEM_CATEGORY_COUNT];
    uint64_t mem_peak;
    struct b158_plan *rec; /* the plan being recorded (b158_rt_plan_begin), or NULL */
    int flush_every;       /* clFlush after this many launches (0: never; B158_FLUSH_EVERY) */
    int since_flush;       /* launches since the last flush */
    uint64_t enqueue_ns;   /* host time spent inside clEnqueueNDRangeKernel, all launches */
    cl_event *sink;        /* b158_rt_queued_begin's: profiled launches' events kept, not waited */
    int sink_n, sink_cap;
    cl_event gate; /* the user event the queue waits on while queued launches pile up */
};

/* Name of an OpenCL error code ("CL_INVALID_WORK_GROUP_SIZE"). */
const char *b158_cl_error_name(cl_int err);

/* Records "call failed: CL_ERROR_NAME" with the place; returns B158_ERR_OPENCL (or
 * B158_ERR_DEVICE_MEMORY for allocation failures). */
b158_status b158_cl_fail_at(cl_int err, const char *call, const char *file, int line);
#define B158_CL_FAIL(err, call) b158_cl_fail_at((err), (call), __FILE__, __LINE__)
#define B158_CL_CHECK(expr)                                                                        \
    do {                                                                                           \
        cl_int b158_cl_err_ = (expr);                                                              \
        if (b158_cl_err_ != CL_SUCCESS)                                                            \
            return B158_CL_FAIL(b158_cl_err_, #expr);                                              \
    } while (0)

/* A developer's override of a tuning value from the environment: an integer in [lo, hi] (a
 * power of two with pow2), else fallback (with a warning when the variable is set but
 * unusable). */
int b158_env_int(const char *name, int lo, int hi, int pow2, int fallback);

/* Whether the runtime's device is an NVIDIA GPU (inline PTX and the probes that build it) */
int b158_rt_nvidia_gpu(const b158_runtime *rt);
/* Whether this host's CPU has AVX-512BW (where the CPU devices' AVX-512 probe is asked) */
int b158_rt_host_avx512bw(void);
int b158_rt_host_avx512vnni(void); /* and AVX-512 VNNI */

/* Device memory: the one place that creates buffers, so the counters are exact. */
b158_status b158_buf_alloc(b158_runtime *rt, b158_mem_category category, size_t bytes,
                           b158_buf *out);
void b158_buf_free(b158_runtime *rt, b158_buf *buf); /* no-op on an empty buffer */
b158_status b158_buf_write(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                           const void *src);
/* The same without waiting: src must stay as it is until the queue is next waited for (a
 * blocking read, or b158_rt_finish). */
b158_status b158_buf_write_async(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                 const void *src);
b158_status b158_buf_read(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                          void *dst);
/* The same without waiting: dst holds the bytes once the queue is next waited for. */
b158_status b158_buf_read_async(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                void *dst);
b158_status b158_buf_fill(b158_runtime *rt, const b158_buf *buf, uint8_t byte);
/* A read without waiting whose own end *done marks (b158_rt_wait waits for it alone, not for
 * what is queued after it); dst holds the bytes then. */
b158_status b158_buf_read_event(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                void *dst, cl_event *done);

/* Host memory that reads from the device land in at full speed: a CL_MEM_ALLOC_HOST_PTR buffer
 * mapped once, for the life of the allocation (page-locked on NVIDIA's OpenCL, which otherwise
 * copies through a staging buffer). Not device memory: not counted. */
typedef struct b158_host_mem {
    cl_mem mem;
    void *ptr;
} b158_host_mem;
b158_status b158_host_alloc(b158_runtime *rt, size_t bytes, b158_host_mem *out);
void b158_host_free(b158_runtime *rt, b158_host_mem *m); /* no-op on an empty one */
/* Device-side copy of bytes between buffers (enqueued, not waited for). */
b158_status b158_buf_copy(b158_runtime *rt, const b158_buf *src, size_t src_off,
                          const b158_buf *dst, size_t dst_off, size_t bytes);

/* ---- programs and kernels (host/runtime-program.c) ---------------------------------------- */

/* Compiles an OpenCL C source (prelude prepended) for the runtime's device, through the binary
 * cache. label names it in messages. On failure returns B158_ERR_BUILD with the build log and
 * the options in the last error. */
b158_status b158_rt_build(b158_runtime *rt, const char *label, const char *source, cl_program *out);

/* The kernel for id, built on first use. */
b158_status b158_rt_kernel(b158_runtime *rt, enum b158_kernel_id id, cl_kernel *out);
/* A kernel object of its own for id (the caller releases it), from the same program. */
b158_status b158_rt_kernel_new(b158_runtime *rt, enum b158_kernel_id id, cl_kernel *out);
/* Releases the kernels and programs the runtime built (b158_runtime_free). */
void b158_rt_programs_free(b158_runtime *rt);

/* ---- launches (host/runtime.c) ------------------------------------------------------------ */

/* Kernel arguments: {size, pointer}; pointer NULL with a size reserves __local memory. */
typedef struct b158_arg {
    size_t size;
    const void *value;
} b158_arg;
#define B158_ARG(x) ((b158_arg){sizeof(x), &(x)})
#define B158_ARG_MEM(buf) ((b158_arg){sizeof(cl_mem), &(buf)->mem})
#define B158_ARG_LOCAL(bytes) ((b158_arg){(bytes), NULL})

/* Sets the arguments and enqueues kernel id over global[] (rounded up to a multiple of local[]
 * per dimension; kernels guard their bounds). local NULL lets the driver choose. Checks the
 * work-group size against the kernel's and the device's limits. With profiling on, waits for
 * the event and adds its time to the kernel's totals. */
b158_status b158_rt_launch(b158_runtime *rt, enum b158_kernel_id id, size_t nargs,
                           const b158_arg *args, cl_uint dims, const size_t *global,
                           const size_t *local);
#define B158_LAUNCH(rt, id, dims, global, local, ...)                                              \
    b158_rt_launch((rt), (id), sizeof((b158_arg[]){__VA_ARGS__}) / sizeof(b158_arg),               \
                   (b158_arg[]){__VA_ARGS__}, (dims), (global), (local))

b158_status b158_rt_finish(b158_runtime *rt);
/* Sends what is queued to the device without waiting */
b158_status b158_rt_flush(b158_runtime *rt);
/* Waits for event ev (b158_buf_read_event's) and releases it */
b158_status b158_rt_wait(b158_runtime *rt, cl_event ev);

/* Queued timing (benchmarks, profiling runtimes): between begin and end the queue waits on a
 * gate, so the launches enqueued meanwhile (up to cap, whose events events[] keeps instead of
 * waiting for each) start together when end opens it, back to back as a decode step's do,
 * whatever the host's enqueue cost. end waits for them and gives span_ns, the first launch's
 * start to the last one's end, and busy_ns, the sum of their own times; it releases the
 * events. A launch past cap fails (B158_ERR_INVALID_ARG); without profiling begin fails
 * (B158_ERR_UNSUPPORTED). */
b158_status b158_rt_queued_begin(b158_runtime *rt, cl_event *events, int cap);
b158_status b158_rt_queued_end(b158_runtime *rt, int *n, uint64_t *span_ns, uint64_t *busy_ns);

/* A recorded run of launches, each on a kernel object of its own whose arguments were set when
 * it was recorded: running the plan again only enqueues them (a decode step, whose buffers and
 * shapes stay the same, sets no argument after its first time). */
typedef struct b158_plan_step {
    cl_kernel kernel;
    enum b158_kernel_id id;
    const char *site; /* b158_rt_site's when it was recorded */
    cl_uint dims;
    int has_local;
    size_t global[3], local[3];
} b158_plan_step;
typedef struct b158_plan {
    b158_plan_step *steps;
    int n, cap;
    int failed; /* a launch could not be recorded (no memory), or a buffer command (write, read,
                   fill, copy) came between begin and end, which a replay would skip: not to
                   be run */
} b158_plan;

/* Between begin and end every launch is also recorded into plan (which starts empty). The
 * launches, and any buffer command (which fails the plan), still run as usual. */
void b158_rt_plan_begin(b158_runtime *rt, b158_plan *plan);
void b158_rt_plan_end(b158_runtime *rt);
/* Enqueues the plan's launches in order (counted and profiled like b158_rt_launch). */
b158_status b158_rt_plan_run(b158_runtime *rt, const b158_plan *plan);
void b158_plan_free(b158_plan *plan); /* releases its kernel objects; the plan is then empty */

/* Names the site of the forward pass that the launches from here on belong to, for the
 * profiling totals per site (b158_runtime_site_stats); NULL: none. site must outlive rt (a
 * string literal). A plan's launches keep the site they were recorded under. */
void b158_rt_site(b158_runtime *rt, const char *site);

/* Adds one run of ns nanoseconds to the totals of a routine that another library enqueued on
 * the runtime's queue (several kernels of its own, timed by the caller); the routines appear
 * in b158_runtime_kernel_stats after the kernels. name must outlive rt. B158_ERR_UNSUPPORTED
 * past B158_RT_MAX_ROUTINES names. */
b158_status b158_rt_record(b158_runtime *rt, const char *name, uint64_t ns);

/* Has fn called once when rt is freed, before its context goes: a library that keeps
 * programs of the context (CLBlast does) lets go of them there. A function registered twice
 * runs once. B158_ERR_UNSUPPORTED past B158_RT_MAX_RELEASE functions. */
b158_status b158_rt_on_release(b158_runtime *rt, b158_rt_release_fn fn);

#endif
