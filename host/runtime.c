/* OpenCL runtime: context and queue on the chosen device, tuning, device memory with byte
 * accounting, launches and profiling totals. Devices: host/runtime-device.c; programs and
 * kernels: host/runtime-program.c. */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime-device.h"

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

/* ---- runtime ---------------------------------------------------------------------------- */

b158_runtime_params b158_runtime_default_params(void)
{
    return (b158_runtime_params){NULL, B158_VARIANT_AUTO, 0, NULL};
}

/* B158_PORTABLE=1: keep to the portable kernels (no vendor or ISA paths). */
static int portable_only(void)
{
    const char *v = getenv("B158_PORTABLE");
    return v && strcmp(v, "1") == 0;
}

int b158_rt_nvidia_gpu(const b158_runtime *rt)
{
    return rt->info.is_gpu && strstr(rt->info.vendor, "NVIDIA") != NULL;
}

/* An AMD GPU: ROCm's vendor string is "Advanced Micro Devices, Inc.", Mesa's "AMD". */
static int amd_gpu(const b158_runtime *rt)
{
    return rt->info.is_gpu &&
           (strstr(rt->info.vendor, "Advanced Micro Devices") || strstr(rt->info.vendor, "AMD"));
}

/* Whether the device's compiler builds the program src with the runtime's options. */
static int builds(b158_runtime *rt, const char *src)
{
    cl_int err;
    cl_program prog = clCreateProgramWithSource(rt->context, 1, &src, NULL, &err);
    if (!prog)
        return 0;
    err = clBuildProgram(prog, 1, &rt->device, rt->options, NULL, NULL);
    clReleaseProgram(prog);
    return err == CL_SUCCESS;
}

/* Whether this host's CPU has AVX-512BW: the precondition of the probe below, which on any
 * other CPU cannot build (and a failed build is not silent: PoCL prints the compiler's error
 * count on stderr) */
int b158_rt_host_avx512bw(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") != 0;
#else
    return 0;
#endif
}

/* Whether this host's CPU also has AVX-512 VNNI (the precondition of probe_x86_vnni) */
int b158_rt_host_avx512vnni(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
#else
    return 0;
#endif
}

/* Whether the device's compiler builds the x86 AVX-512BW builtins that ternary_gemv_avx512
 * uses: a capability query no OpenCL info parameter answers, asked of CPU devices only (the
 * compiler generates code for the CPU it runs on, so only where this CPU has AVX-512BW).
 * B158_PORTABLE=1 skips it, so the portable kernels run everywhere. */
static int probe_x86_avx512bw(b158_runtime *rt)
{
    if (!rt->info.is_cpu || portable_only() || !b158_rt_host_avx512bw())
        return 0;
    static const char *src =
        "typedef char v64c __attribute__((__vector_size__(64)));\n"
        "typedef short v32s __attribute__((__vector_size__(64)));\n"
        "typedef int v16i __attribute__((__vector_size__(64)));\n"
        "__kernel void probe(__global const v64c *a, __global const v32s *b, __global v16i *o)\n"
        "{ o[0] = __builtin_ia32_pmaddwd512(__builtin_ia32_pmaddubsw512(a[0], a[1]), b[0]); }\n";
    return builds(rt, src);
}

/* Whether AVX-512 VNNI's vpdpbusd as the kernels write it (inline assembly: see
 * ternary_gemm_vnni) builds, runs on the device and sums the products right: asked of CPU
 * devices where probe_x86_avx512bw succeeded and this CPU has VNNI, by one work-item on 64 byte
 * pairs. B158_VNNI=0 skips it (the A/B against the AVX-512BW kernels). */
static int probe_x86_vnni(b158_runtime *rt, int avx512bw)
{
    if (!avx512bw || !b158_rt_host_avx512vnni() || !b158_env_int("B158_VNNI", 0, 1, 0, 1))
        return 0;
    static const char *src =
        "typedef int v16i __attribute__((__vector_size__(64)));\n"
        "__kernel void probe(__global const v16i *a, __global v16i *o)\n"
        "{ v16i acc = a[0];\n"
        "  __asm__(\"vpdpbusd %2, %1, %0\" : \"+v\"(acc) : \"v\"(a[1]), \"v\"(a[2]));\n"
        "  o[0] = acc; }\n";
    int32_t in[48], out[16] = {0};
    uint8_t *u = (uint8_t *)&in[16];
    int8_t *sb = (int8_t *)&in[32];
    for (int i = 0; i < 16; i++)
        in[i] = 1000 * i - 7000;
    for (int i = 0; i < 64; i++) {
        u[i] = (uint8_t)(131 + 2 * i);
        sb[i] = (int8_t)(i % 2 ? 127 - i : i - 128);
    }
    cl_int err;
    cl_program prog = clCreateProgramWithSource(rt->context, 1, &src, NULL, &err);
    cl_kernel k = NULL;
    cl_mem a = NULL, o = NULL;
    int ok = prog && clBuildProgram(prog, 1, &rt->device, rt->options, NULL, NULL) == CL_SUCCESS;
    if (ok) {
        k = clCreateKernel(prog, "probe", &err);
        a = clCreateBuffer(rt->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof in, in,
                           &err);
        o = clCreateBuffer(rt->context, CL_MEM_WRITE_ONLY, sizeof out, NULL, &err);
        const size_t one = 1;
        ok = k && a && o && clSetKernelArg(k, 0, sizeof a, &a) == CL_SUCCESS &&
             clSetKernelArg(k, 1, sizeof o, &o) == CL_SUCCESS &&
             clEnqueueNDRangeKernel(rt->queue, k, 1, NULL, &one, NULL, 0, NULL, NULL) ==
                 CL_SUCCESS &&
             clEnqueueReadBuffer(rt->queue, o, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL) ==
                 CL_SUCCESS;
    }
    for (int i = 0; ok && i < 16; i++) {
        int32_t want = in[i];
        for (int j = 4 * i; j < 4 * i + 4; j++)
            want += (int32_t)u[j] * sb[j];
        ok = out[i] == want;
    }
    if (o)
        clReleaseMemObject(o);
    if (a)
        clReleaseMemObject(a);
    if (k)
        clReleaseKernel(k);
    if (prog)
        clReleaseProgram(prog);
    return ok;
}

/* Whether the device's compiler takes NVIDIA's inline PTX dp4a (4-way s8 x s8 dot product with
 * accumulate, sm_61 and later), which NVIDIA's OpenCL offers through asm() and no extension: asked
 * of GPU devices whose vendor is NVIDIA, by building the exact statement the kernels use.
 * B158_PORTABLE=1 skips it. */
#define B158_PTX_DP4A_ASM                                                                          \
    "asm(\"dp4a.s32.s32 %0, %1, %2, %3;\" : \"=r\"(d) : \"r\"(c), \"r\"(a), \"r\"(acc));"
static int probe_ptx_dp4a(b158_runtime *rt)
{
    if (!b158_rt_nvidia_gpu(rt) || portable_only())
        return 0;
    static const char *src = "__kernel void probe(__global const uint *x, __global int *o)\n"
                             "{ uint c = x[0], a = x[1]; int acc = (int)x[2], d;\n"
                             "  " B158_PTX_DP4A_ASM "\n  o[0] = d; }\n";
    return builds(rt, src);
}

/* Whether the device's compiler takes the LLVM builtin for AMD's 4-way s8 x s8 dot product
 * (v_dot4_i32_i8: gfx906, gfx908, gfx90a, gfx103x; ROCm's OpenCL compiles with LLVM's AMD
 * backend, which has no OpenCL extension for it): asked of AMD GPUs by building the kernels'
 * statement. B158_PORTABLE=1 skips it. */
static int probe_amd_dot(b158_runtime *rt)
{
    if (!amd_gpu(rt) || portable_only())
        return 0;
    static const char *src = "__kernel void probe(__global const uint *x, __global int *o)\n"
                             "{ o[0] = __builtin_amdgcn_sdot4((int)x[0], (int)x[1], (int)x[2], "
                             "false); }\n";
    return builds(rt, src);
}

/* Which fence makes a work-group's global stores visible to the others before it counts itself
 * at an atomic counter, and theirs to it after (b158_fence_device in cl_kernels/common.cl): OpenCL
 * 1.2's mem_fence promises order within the work-group only, and compilers take it at that
 * (clang's libclc makes it PTX membar.cta; ROCm's a work-group fence that leaves the compute
 * unit's L1 as it is). NVIDIA GPUs: PTX fence.acq_rel.gpu (sm_70 and later), else membar.gl
 * (CUDA's __threadfence, sequentially consistent: a heavier MEMBAR.SC.GPU; B158_DEVICE_FENCE=2
 * asks for it), AMD GPUs: the LLVM builtin's agent-scope fence, each where the device's
 * compiler builds it; programs built as OpenCL C 3.0 (Intel's devices): its
 * atomic_work_item_fence at device scope, where the device has that scope and seq_cst order;
 * elsewhere, and with B158_PORTABLE=1 or B158_DEVICE_FENCE=0 (A/B switches), mem_fence (CPU
 * devices: one coherent cache hierarchy). */
static int probe_device_fence(b158_runtime *rt)
{
    static const char *acq_rel = "__kernel void probe(__global int *p)\n"
                                 "{ p[0] = 1; asm volatile(\"fence.acq_rel.gpu;\" ::: \"memory\"); "
                                 "}\n";
    static const char *ptx = "__kernel void probe(__global int *p)\n"
                             "{ p[0] = 1; asm volatile(\"membar.gl;\" ::: \"memory\"); }\n";
    static const char *amd = "__kernel void probe(__global int *p)\n"
                             "{ p[0] = 1; __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, \"agent\"); }\n";
    static const char *cl3 = "__kernel void probe(__global int *p)\n"
                             "{ p[0] = 1; atomic_work_item_fence(CLK_GLOBAL_MEM_FENCE, "
                             "memory_order_seq_cst, memory_scope_device); }\n";
    const int want = b158_env_int("B158_DEVICE_FENCE", 0, 2, 0, 1);
    if (portable_only() || want == 0)
        return 0;
    if (b158_rt_nvidia_gpu(rt))
        return want == 1 && builds(rt, acq_rel) ? 4 : builds(rt, ptx) ? 1 : 0;
    if (amd_gpu(rt))
        return builds(rt, amd) ? 2 : 0;
    return strstr(rt->options, "CL3.0") && builds(rt, cl3) ? 3 : 0;
}

/* Which sub-group reductions the GPU variant's work-group reductions use (b158_tuning.subgroups):
 * NVIDIA's warp shuffle through inline PTX on NVIDIA GPUs, cl_khr_subgroups' reductions where
 * the device names a sub-group extension and builds them (asked by building the kernels' own
 * calls; not asked of the others, PoCL 3.1 among them, whose failed build would print the
 * compiler's error count on stderr at every runtime creation); none for groups smaller than a
 * warp, or with B158_SUBGROUPS=0 or B158_PORTABLE=1. */
static int probe_subgroups(b158_runtime *rt, int wg)
{
    static const char *shfl =
        "__kernel void probe(__global float *o, __global int *p)\n"
        "{ float r; int q;\n"
        "  asm volatile(\"shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;\" : \"=f\"(r) : "
        "\"f\"(o[0]), \"r\"(16));\n"
        "  asm volatile(\"shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;\" : \"=r\"(q) : "
        "\"r\"(p[0]), \"r\"(16));\n"
        "  o[1] = r; p[1] = q; }\n";
    static const char *khr =
        "#pragma OPENCL EXTENSION cl_khr_subgroups : enable\n"
        "__kernel void probe(__global float *o, __global int *p)\n"
        "{ o[get_sub_group_id()] = sub_group_reduce_add(o[get_local_id(0)]) +\n"
        "      sub_group_reduce_max(o[1]) + (float)get_num_sub_groups();\n"
        "  p[get_sub_group_local_id()] = sub_group_reduce_add(p[0]); }\n";
    if (b158_env_int("B158_SUBGROUPS", 0, 1, 0, 1) == 0 || portable_only())
        return 0;
    if (b158_rt_nvidia_gpu(rt))
        return wg % 32 == 0 && builds(rt, shfl) ? 2 : 0;
    return rt->info.has_subgroups && builds(rt, khr) ? 1 : 0;
}

/* How the fused decode layer asks for its weights ahead (b158_tuning.prefetch): on NVIDIA GPUs
 * the best of the two PTX prefetches that builds (the kernel's own statements), elsewhere none;
 * B158_PREFETCH=0 turns it off, =1 asks for at least OpenCL's prefetch() (tests), and
 * B158_PORTABLE=1 keeps to that. */
static int probe_prefetch(b158_runtime *rt)
{
    static const char *bulk =
        "__kernel void probe(__global const uchar *p, uint n)\n"
        "{ asm volatile(\"cp.async.bulk.prefetch.L2.global [%0], %1;\" :: \"l\"((ulong)p), "
        "\"r\"(n) : \"memory\"); }\n";
    static const char *line =
        "__kernel void probe(__global const uchar *p)\n"
        "{ asm volatile(\"prefetch.global.L2 [%0];\" :: \"l\"((ulong)p)); }\n";
    const int want = b158_env_int("B158_PREFETCH", 0, 1, 0, -1);
    if (want == 0)
        return 0;
    int kind = 0;
    if (b158_rt_nvidia_gpu(rt) && !portable_only())
        kind = builds(rt, bulk) ? 3 : builds(rt, line) ? 2 : 0;
    return kind ? kind : want == 1;
}

/* Which clock the fused decode layer's stage timestamps read (b158_tuning.stage_clock): asked
 * of profiling runtimes of the GPU variant only, by building the kernel's own expression. */
static int probe_stage_clock(b158_runtime *rt)
{
    if (!rt->profile)
        return 0;
    static const char *ptx =
        "__kernel void probe(__global ulong *o)\n"
        "{ ulong t; asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(t));\n"
        "  o[0] = t; }\n";
    static const char *khr =
        "__kernel void probe(__global ulong *o) { o[0] = clock_read_device(); }\n";
    if (b158_rt_nvidia_gpu(rt) && builds(rt, ptx))
        return 2;
    return strstr(rt->options, "CL3.0") && builds(rt, khr) ? 1 : 0;
}

/* The pause between a waiting work-group's polls (b158_tuning.poll_sleep): B158_POLL_SLEEP ns
 * (0 to 100000, default 0: none), where NVIDIA's compiler takes PTX nanosleep (sm_70 and
 * later). Up to 528 groups of a 2B-4T GEMV chain on an H200 poll one flag's line in L2 at
 * once; the pause is an A/B for the chain's sitting. */
static int probe_poll_sleep(b158_runtime *rt)
{
    static const char *ptx = "__kernel void probe(__global int *o)\n"
                             "{ asm volatile(\"nanosleep.u32 %0;\" :: \"r\"(o[1])); o[0] = 1; }\n";
    const int ns = b158_env_int("B158_POLL_SLEEP", 0, 100000, 0, 0);
    return ns && b158_rt_nvidia_gpu(rt) && !portable_only() && builds(rt, ptx) ? ns : 0;
}

/* Whether NVIDIA's compiler takes the attention's half-to-float conversion of a register through
 * inline PTX (cvt.f32.f16): asked of NVIDIA GPUs by building the statement itself. */
static int probe_ptx_cvt(b158_runtime *rt)
{
    if (!b158_rt_nvidia_gpu(rt) || portable_only())
        return 0;
    static const char *src =
        "__kernel void probe(__global const uint *x, __global float *o)\n"
        "{ float lo, hi; uint w = x[0];\n"
        "  asm(\"{ .reg .b16 l, h;\\n mov.b32 {l, h}, %2;\\n cvt.f32.f16 %0, l;\\n cvt.f32.f16 %1, "
        "h; }\" : \"=f\"(lo), \"=f\"(hi) : \"r\"(w));\n"
        "  o[0] = lo; o[1] = hi; }\n";
    return builds(rt, src);
}

int b158_env_int(const char *name, int lo, int hi, int pow2, int fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    const long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi || (pow2 && (x & (x - 1)))) {
        b158_log(B158_LOG_WARN, "%s=%s ignored: want %s in [%d, %d]", name, v,
                 pow2 ? "a power of two" : "an integer", lo, hi);
        return fallback;
    }
    return (int)x;
}

/* OpenCL C 1.2 everywhere, but 3.0 where the device has cl_khr_integer_dot_product: its
 * built-ins are declared in OpenCL C 3.0 only (and 1.2 code is valid 3.0 code). The programs'
 * options and the prelude's B158_INT_DOT both follow this. */
static int wants_cl3(const b158_device_info *info)
{
    return info->has_int_dot && strncmp(info->c_version, "OpenCL C 3", 10) == 0;
}

static void choose_tuning(b158_runtime *rt)
{
    b158_tuning t;
    if (rt->variant == B158_VARIANT_GPU) {
        t = (b158_tuning){.gpu = 1,
                          .wg = 64,
                          .row_step = 9,
                          .gemv_rows = 4,
                          .gemv_ahead = 5,
                          .gemm_tn = 64,
                          .gemm_tm = 64,
                          .gemm_cpu_m = 4,
                          .avx512_rows = 1,
                          .head_dim_max = 256};
        /* the tree reductions need a power of two: 256 on GPUs (an H100's decode step 3.2 ->
         * 2.7 ms against 64: a row's norm in one group, and each attention head, run on more
         * work-items), 64 on CPU devices running this variant (tests), at most what the device
         * allows; the GEMV gives each row 8 work-items. B158_GPU_WG, B158_GEMM_TN and
         * B158_GEMM_TM override (tuning experiments). */
        if (rt->info.is_gpu)
            t.wg = 256;
        const int max_wg = rt->info.max_work_group < 1024 ? (int)rt->info.max_work_group : 1024;
        t.wg = b158_env_int("B158_GPU_WG", 8, max_wg > 8 ? max_wg : 8, 1, t.wg);
        while ((size_t)t.wg > rt->info.max_work_group && t.wg > 8)
            t.wg /= 2;
        t.gemv_rows = t.wg / 8;
        /* the loads in flight per work-item of a GPU GEMV: 5 quarters, a 2560-wide row's share
         * in one round trip. On an H200 (2B-4T) 8 took 13.5 us for the 13824 x 2560 and the
         * 2560 x 6912 GEMVs against 11.8 and 12.0 us at 5, and decoded 540 against 573 tokens/s:
         * sm_90's 76 registers a work-item let 3 groups of 256 share a unit, 60 let 4 (the
         * 432 groups of gate|up in one wave of 528, not two of 396). 4 decoded as fast. */
        t.gemv_ahead = b158_env_int("B158_GEMV_AHEAD", 1, 16, 0, t.gemv_ahead);
        /* work-items a row: by the row's width unless B158_GEMV_LANES (8, 16 or 32) says */
        t.gemv_lanes = b158_env_int("B158_GEMV_LANES", 8, 32, 1, 0);
        /* the fused layer's GEMVs start their loads before the grid barrier and norm in front
         * of them (registers held across them; B158_GEMV_EARLY=0 for the A/B) */
        t.gemv_early = b158_env_int("B158_GEMV_EARLY", 0, 1, 0, 1);
        /* the row kernels' loads in flight a work-item: 9 of each of the GLU's three arrays
         * (2B-4T's 6912-wide GLU tail: 3 steps at 256 work-items, not 4 at 8), 13 of a norm's
         * two (a 3200-wide row in one step), and sm_90's GEMV kernels, whose tails hold them,
         * keep 63-64 registers (10: 71-72, a group a unit fewer); B158_ROW_STEP for the A/B */
        t.row_step = b158_env_int("B158_ROW_STEP", 1, 32, 0, t.row_step);
        t.gemm_tn = b158_env_int("B158_GEMM_TN", 16, 64, 1, t.gemm_tn); /* (TN + TM) 272 B local */
        t.gemm_tm = b158_env_int("B158_GEMM_TM", 16, 64, 1, t.gemm_tm);
        t.ptx_dp4a = probe_ptx_dp4a(rt);
        t.ptx_cvt = probe_ptx_cvt(rt);
        t.amd_dot = probe_amd_dot(rt);
        t.device_fence = probe_device_fence(rt);
        t.stage_clock = probe_stage_clock(rt);
        t.poll_sleep = probe_poll_sleep(rt);
        t.prefetch = probe_prefetch(rt);
        t.subgroups = probe_subgroups(rt, t.wg);
    } else {
        t = (b158_tuning){.gpu = 0,
                          .wg = 1,
                          .row_step = 1,
                          .gemv_rows = 1,
                          .gemv_ahead = 1,
                          .gemm_tn = 32,
                          .gemm_tm = 16,
                          .gemm_cpu_m = 4,
                          .avx512_rows = 8,
                          .head_dim_max = 256,
                          .x86_avx512bw = probe_x86_avx512bw(rt)};
        t.x86_vnni = probe_x86_vnni(rt, t.x86_avx512bw);
    }
    t.int_dot = wants_cl3(&rt->info) && !portable_only();
    rt->tune = t;
    snprintf(rt->prelude, sizeof rt->prelude,
             "/* b158-cl prelude: device features and tuning */\n"
             "#define B158_GPU %d\n#define B158_WG %d\n#define B158_GEMV_ROWS %d\n"
             "#define B158_GEMV_AHEAD %d\n#define B158_GEMV_EARLY %d\n#define B158_ROW_STEP %d\n"
             "#define B158_GEMM_TN %d\n#define B158_GEMM_TM %d\n#define B158_GEMM_CPU_M %d\n"
             "#define B158_AVX512_ROWS %d\n"
             "#define B158_HEAD_DIM_MAX %d\n#define B158_HAS_FP16 %d\n"
             "#define B158_X86_AVX512BW %d\n#define B158_X86_AVX512VNNI %d\n"
             "#define B158_INT_DOT %d\n#define B158_PTX_DP4A %d\n"
             "#define B158_PTX_CVT %d\n#define B158_AMD_DOT %d\n#define B158_DEVICE_FENCE %d\n"
             "#define B158_STAGE_CLOCK %d\n#define B158_PREFETCH %d\n#define B158_SUBGROUPS %d\n"
             "#define B158_POLL_SLEEP %d\n#line 1\n",
             t.gpu, t.wg, t.gemv_rows, t.gemv_ahead, t.gemv_early, t.row_step, t.gemm_tn, t.gemm_tm,
             t.gemm_cpu_m, t.avx512_rows, t.head_dim_max, rt->info.has_fp16, t.x86_avx512bw,
             t.x86_vnni, t.int_dot, t.ptx_dp4a, t.ptx_cvt, t.amd_dot, t.device_fence, t.stage_clock,
             t.prefetch, t.subgroups, t.poll_sleep);
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
    cl_platform_id platform;
    cl_device_id device;
    int index = 0;
    B158_TRY(b158_device_select(p.device, &platform, &device, &index));

    b158_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory creating the runtime");
    rt->platform = platform;
    rt->device = device;
    b158_device_fill_info(platform, device, index, &rt->info);
    rt->variant = p.variant != B158_VARIANT_AUTO ? p.variant
                  : rt->info.is_gpu              ? B158_VARIANT_GPU
                                                 : B158_VARIANT_CPU;
    rt->profile = p.profile;
    choose_cache_dir(rt, p.cache_dir);

    cl_device_fp_config fp = 0;
    clGetDeviceInfo(rt->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    rt->correct_div = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    /* Correctly rounded division keeps the activation scale 127/absmax identical to the C
     * reference, which the bit-exact int8 quantization depends on. */
    snprintf(rt->options, sizeof rt->options, "-cl-std=CL%s%s",
             wants_cl3(&rt->info) ? "3.0" : "1.2",
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
    choose_tuning(rt); /* after the context: it may build a probe program */
    const char *flush = getenv("B158_FLUSH_EVERY");
    rt->flush_every = flush ? atoi(flush) : 0;
    if (rt->flush_every < 0)
        rt->flush_every = 0;
    *out = rt;
    return B158_OK;
}

void b158_runtime_free(b158_runtime *rt)
{
    if (!rt)
        return;
    if (rt->gate) { /* queued timing left begun: let its launches run, release their events */
        int n;
        uint64_t span, busy;
        (void)b158_rt_queued_end(rt, &n, &span, &busy);
    }
    for (int i = 0; i < B158_RT_MAX_RELEASE && rt->release[i]; i++)
        rt->release[i]();
    b158_rt_programs_free(rt);
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

/* Adds a run of ns to the totals of the slot named name among n slots (the first free one if
 * none is); 0 where all n are taken by other names */
static int slot_add(struct b158_routine_slot *slots, int n, const char *name, uint64_t ns)
{
    for (int i = 0; i < n; i++) {
        struct b158_routine_slot *r = &slots[i];
        if (!r->name)
            r->name = name;
        if (strcmp(r->name, name) == 0) {
            r->launches++;
            r->total_ns += ns;
            return 1;
        }
    }
    return 0;
}

/* The slots of count with launches, as totals out[n], out[n + 1], ... (up to cap); the count
 * of entries after them, n included */
static size_t slots_stats(const struct b158_routine_slot *slots, int count, b158_kernel_stats *out,
                          size_t cap, size_t n)
{
    for (int i = 0; i < count && slots[i].name; i++) {
        if (!slots[i].launches)
            continue;
        if (n < cap)
            out[n] = (b158_kernel_stats){slots[i].name, slots[i].launches, slots[i].total_ns};
        n++;
    }
    return n;
}

size_t b158_runtime_kernel_stats(const b158_runtime *rt, b158_kernel_stats *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; rt && i < B158_KERNEL_COUNT; i++) {
        const struct b158_kernel_slot *k = &rt->kernels[i];
        if (!k->launches)
            continue;
        if (n < cap)
            out[n] = (b158_kernel_stats){b158_kernel_name((enum b158_kernel_id)i), k->launches,
                                         k->total_ns};
        n++;
    }
    return rt ? slots_stats(rt->routines, B158_RT_MAX_ROUTINES, out, cap, n) : n;
}

size_t b158_runtime_site_stats(const b158_runtime *rt, b158_kernel_stats *out, size_t cap)
{
    return rt ? slots_stats(rt->sites, B158_RT_MAX_SITES, out, cap, 0) : 0;
}

void b158_runtime_kernel_stats_reset(b158_runtime *rt)
{
    for (int i = 0; rt && i < B158_KERNEL_COUNT; i++)
        rt->kernels[i].launches = rt->kernels[i].total_ns = 0;
    for (int i = 0; rt && i < B158_RT_MAX_ROUTINES; i++)
        rt->routines[i].launches = rt->routines[i].total_ns = 0;
    for (int i = 0; rt && i < B158_RT_MAX_SITES; i++) /* in the order they run from here */
        rt->sites[i] = (struct b158_routine_slot){NULL, 0, 0};
}

b158_status b158_rt_record(b158_runtime *rt, const char *name, uint64_t ns)
{
    if (rt->site)
        slot_add(rt->sites, B158_RT_MAX_SITES, rt->site, ns);
    if (slot_add(rt->routines, B158_RT_MAX_ROUTINES, name, ns))
        return B158_OK;
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

b158_status b158_host_alloc(b158_runtime *rt, size_t bytes, b158_host_mem *out)
{
    *out = (b158_host_mem){NULL, NULL};
    cl_int err;
    cl_mem mem = clCreateBuffer(rt->context, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR,
                                bytes ? bytes : 16, NULL, &err);
    if (!mem)
        return B158_CL_FAIL(err, "clCreateBuffer (host memory)");
    void *ptr = clEnqueueMapBuffer(rt->queue, mem, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0,
                                   bytes ? bytes : 16, 0, NULL, NULL, &err);
    if (!ptr) {
        clReleaseMemObject(mem);
        return B158_CL_FAIL(err, "clEnqueueMapBuffer");
    }
    *out = (b158_host_mem){mem, ptr};
    return B158_OK;
}

void b158_host_free(b158_runtime *rt, b158_host_mem *m)
{
    if (!m || !m->mem)
        return;
    clEnqueueUnmapMemObject(rt->queue, m->mem, m->ptr, 0, NULL, NULL);
    clFinish(rt->queue);
    clReleaseMemObject(m->mem);
    *m = (b158_host_mem){NULL, NULL};
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

/* A wait for the queue while b158_rt_queued_begin's gate holds it would never end */
static b158_status check_not_held(const b158_runtime *rt, const char *what)
{
    if (rt->gate)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s while queued launches wait for their start",
                         what);
    return B158_OK;
}

/* A command other than a launch while a plan records: a replay enqueues launches only and
 * would go without it, so the plan fails (it is not replayed; the command itself runs). */
static void not_in_plan(b158_runtime *rt)
{
    if (rt->rec)
        rt->rec->failed = 1;
}

static b158_status buf_write(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                             const void *src, cl_bool blocking)
{
    B158_TRY(check_range(buf, offset, bytes, "write"));
    not_in_plan(rt);
    if (blocking)
        B158_TRY(check_not_held(rt, "a blocking write"));
    if (bytes)
        B158_CL_CHECK(
            clEnqueueWriteBuffer(rt->queue, buf->mem, blocking, offset, bytes, src, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_write(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                           const void *src)
{
    return buf_write(rt, buf, offset, bytes, src, CL_TRUE);
}

b158_status b158_buf_write_async(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                 const void *src)
{
    return buf_write(rt, buf, offset, bytes, src, CL_FALSE);
}

static b158_status buf_read(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                            void *dst, cl_bool blocking)
{
    B158_TRY(check_range(buf, offset, bytes, "read"));
    not_in_plan(rt);
    if (blocking)
        B158_TRY(check_not_held(rt, "a blocking read"));
    if (bytes)
        B158_CL_CHECK(
            clEnqueueReadBuffer(rt->queue, buf->mem, blocking, offset, bytes, dst, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_read(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                          void *dst)
{
    return buf_read(rt, buf, offset, bytes, dst, CL_TRUE);
}

b158_status b158_buf_read_async(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                void *dst)
{
    return buf_read(rt, buf, offset, bytes, dst, CL_FALSE);
}

b158_status b158_buf_read_event(b158_runtime *rt, const b158_buf *buf, size_t offset, size_t bytes,
                                void *dst, cl_event *done)
{
    B158_TRY(check_range(buf, offset, bytes, "read"));
    not_in_plan(rt);
    B158_CL_CHECK(
        clEnqueueReadBuffer(rt->queue, buf->mem, CL_FALSE, offset, bytes, dst, 0, NULL, done));
    return B158_OK;
}

b158_status b158_buf_fill(b158_runtime *rt, const b158_buf *buf, uint8_t byte)
{
    not_in_plan(rt);
    B158_CL_CHECK(clEnqueueFillBuffer(rt->queue, buf->mem, &byte, 1, 0, buf->bytes, 0, NULL, NULL));
    return B158_OK;
}

b158_status b158_buf_copy(b158_runtime *rt, const b158_buf *src, size_t src_off,
                          const b158_buf *dst, size_t dst_off, size_t bytes)
{
    B158_TRY(check_range(src, src_off, bytes, "copy source"));
    B158_TRY(check_range(dst, dst_off, bytes, "copy destination"));
    not_in_plan(rt);
    if (bytes)
        B158_CL_CHECK(clEnqueueCopyBuffer(rt->queue, src->mem, dst->mem, src_off, dst_off, bytes, 0,
                                          NULL, NULL));
    return B158_OK;
}

uint64_t b158_runtime_enqueue_ns(const b158_runtime *rt)
{
    return rt->enqueue_ns;
}

b158_status b158_rt_finish(b158_runtime *rt)
{
    B158_TRY(check_not_held(rt, "waiting for the queue"));
    B158_CL_CHECK(clFinish(rt->queue));
    return B158_OK;
}

b158_status b158_rt_flush(b158_runtime *rt)
{
    B158_CL_CHECK(clFlush(rt->queue));
    return B158_OK;
}

b158_status b158_rt_wait(b158_runtime *rt, cl_event ev)
{
    if (rt->gate) {
        clReleaseEvent(ev);
        return check_not_held(rt, "waiting for a read");
    }
    const cl_int err = clWaitForEvents(1, &ev);
    clReleaseEvent(ev);
    B158_CL_CHECK(err);
    return B158_OK;
}

/* ---- launches --------------------------------------------------------------------------- */

/* Enqueues kernel k (of id, at site, which may be NULL) with its arguments set; counts it, and
 * with profiling on waits for it and adds its time to id's and the site's totals. */
static b158_status enqueue(b158_runtime *rt, enum b158_kernel_id id, const char *site, cl_kernel k,
                           cl_uint dims, const size_t *gws, const size_t *local)
{
    const char *name = b158_kernel_name(id);
    cl_event ev = NULL;
    if (rt->sink && rt->sink_n == rt->sink_cap)
        return B158_FAIL(B158_ERR_INVALID_ARG, "more queued launches than the %d events kept",
                         rt->sink_cap);
    struct timespec e0, e1;
    clock_gettime(CLOCK_MONOTONIC, &e0);
    cl_int err = clEnqueueNDRangeKernel(rt->queue, k, dims, NULL, gws, local, 0, NULL,
                                        rt->profile ? &ev : NULL);
    clock_gettime(CLOCK_MONOTONIC, &e1);
    rt->enqueue_ns +=
        (uint64_t)((e1.tv_sec - e0.tv_sec) * 1000000000LL + (e1.tv_nsec - e0.tv_nsec));
    /* some drivers hold enqueued work until a flush: a long step would start late */
    if (err == CL_SUCCESS && rt->flush_every && ++rt->since_flush >= rt->flush_every) {
        rt->since_flush = 0;
        err = clFlush(rt->queue);
    }
    if (err != CL_SUCCESS)
        return b158_fail_at(err == CL_OUT_OF_RESOURCES || err == CL_MEM_OBJECT_ALLOCATION_FAILURE
                                ? B158_ERR_DEVICE_MEMORY
                                : B158_ERR_OPENCL,
                            __FILE__, __LINE__, "clEnqueueNDRangeKernel(%s) returned %s", name,
                            b158_cl_error_name(err));
    rt->kernels[id].launches++;
    if (ev && rt->sink) {
        rt->sink[rt->sink_n++] = ev;
    } else if (ev) {
        cl_ulong t0 = 0, t1 = 0;
        err = clWaitForEvents(1, &ev);
        if (err == CL_SUCCESS) {
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
            rt->kernels[id].total_ns += t1 > t0 ? t1 - t0 : 0;
            if (site)
                slot_add(rt->sites, B158_RT_MAX_SITES, site, t1 > t0 ? t1 - t0 : 0);
        }
        clReleaseEvent(ev);
        if (err != CL_SUCCESS)
            return b158_fail_at(B158_ERR_OPENCL, __FILE__, __LINE__,
                                "kernel %s failed while running: %s", name,
                                b158_cl_error_name(err));
    }
    return B158_OK;
}

b158_status b158_rt_queued_begin(b158_runtime *rt, cl_event *events, int cap)
{
    if (!rt->profile)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "queued timing needs a profiling runtime");
    if (rt->gate)
        return B158_FAIL(B158_ERR_INVALID_ARG, "queued timing already begun");
    cl_int err;
    rt->gate = clCreateUserEvent(rt->context, &err);
    if (!rt->gate)
        return B158_CL_FAIL(err, "clCreateUserEvent");
    err = clEnqueueBarrierWithWaitList(rt->queue, 1, &rt->gate, NULL);
    if (err != CL_SUCCESS) {
        clSetUserEventStatus(rt->gate, CL_COMPLETE);
        clReleaseEvent(rt->gate);
        rt->gate = NULL;
        return B158_CL_FAIL(err, "clEnqueueBarrierWithWaitList");
    }
    rt->sink = events;
    rt->sink_n = 0;
    rt->sink_cap = cap;
    return B158_OK;
}

b158_status b158_rt_queued_end(b158_runtime *rt, int *n, uint64_t *span_ns, uint64_t *busy_ns)
{
    if (rt->gate) {
        clSetUserEventStatus(rt->gate, CL_COMPLETE);
        clReleaseEvent(rt->gate);
        rt->gate = NULL;
    }
    cl_event *ev = rt->sink;
    const int count = ev ? rt->sink_n : 0;
    rt->sink = NULL;
    rt->sink_n = rt->sink_cap = 0;
    cl_int err = clFinish(rt->queue);
    cl_ulong first = 0, last = 0, busy = 0;
    for (int i = 0; i < count; i++) {
        cl_ulong t0 = 0, t1 = 0;
        if (err == CL_SUCCESS)
            err = clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        if (err == CL_SUCCESS)
            err = clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        clReleaseEvent(ev[i]);
        first = i == 0 || t0 < first ? t0 : first;
        last = t1 > last ? t1 : last;
        busy += t1 > t0 ? t1 - t0 : 0;
    }
    if (err != CL_SUCCESS)
        return B158_CL_FAIL(err, "queued launches");
    *n = count;
    *span_ns = last > first ? last - first : 0;
    *busy_ns = busy;
    return B158_OK;
}

/* The kernel object a launch of id sets its arguments on: the runtime's shared one, or while a
 * plan is recorded one of its own (the shared one if that cannot be had: the plan then fails,
 * the launch still runs). */
static cl_kernel launch_kernel(b158_runtime *rt, enum b158_kernel_id id, cl_kernel shared)
{
    b158_plan *p = rt->rec;
    if (!p || p->failed)
        return shared;
    if (p->n == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 256;
        b158_plan_step *steps = realloc(p->steps, (size_t)cap * sizeof *steps);
        if (!steps) {
            p->failed = 1;
            return shared;
        }
        p->steps = steps;
        p->cap = cap;
    }
    cl_kernel own;
    if (b158_rt_kernel_new(rt, id, &own) != B158_OK) {
        p->failed = 1;
        return shared;
    }
    p->steps[p->n] = (b158_plan_step){.kernel = own, .id = id, .site = rt->site};
    return own;
}

b158_status b158_rt_launch(b158_runtime *rt, enum b158_kernel_id id, size_t nargs,
                           const b158_arg *args, cl_uint dims, const size_t *global,
                           const size_t *local)
{
    cl_kernel shared;
    B158_TRY(b158_rt_kernel(rt, id, &shared));
    const char *name = b158_kernel_name(id);
    struct b158_kernel_slot *slot = &rt->kernels[id];
    size_t gws[3] = {1, 1, 1}, lws[3] = {1, 1, 1};
    size_t wg_total = 1;
    for (cl_uint d = 0; d < dims; d++) {
        if (global[d] == 0)
            return B158_OK; /* nothing to do */
        gws[d] = global[d];
        if (local) {
            if (local[d] == 0)
                return B158_FAIL(B158_ERR_INVALID_ARG, "%s: local size 0 in dimension %u", name, d);
            gws[d] = (global[d] + local[d] - 1) / local[d] * local[d];
            lws[d] = local[d];
            wg_total *= local[d];
        }
    }
    if (local) {
        if (!slot->max_wg)
            clGetKernelWorkGroupInfo(shared, rt->device, CL_KERNEL_WORK_GROUP_SIZE,
                                     sizeof slot->max_wg, &slot->max_wg, NULL);
        if (wg_total > rt->info.max_work_group || (slot->max_wg && wg_total > slot->max_wg))
            return B158_FAIL(B158_ERR_UNSUPPORTED,
                             "%s: work-group of %zu exceeds the limit (kernel %zu, device %zu) on "
                             "%s; lower the tuning for this device",
                             name, wg_total, slot->max_wg, rt->info.max_work_group, rt->info.name);
    }
    const cl_kernel k = launch_kernel(rt, id, shared);
    for (size_t i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value);
        if (err != CL_SUCCESS) {
            if (k != shared) {
                clReleaseKernel(k);
                rt->rec->failed = 1;
            }
            return b158_fail_at(B158_ERR_OPENCL, __FILE__, __LINE__,
                                "clSetKernelArg(%s, arg %zu, %zu bytes) returned %s", name, i,
                                args[i].size, b158_cl_error_name(err));
        }
    }
    if (k != shared) {
        b158_plan_step *st = &rt->rec->steps[rt->rec->n++];
        st->dims = dims;
        st->has_local = local != NULL;
        memcpy(st->global, gws, sizeof gws);
        memcpy(st->local, lws, sizeof lws);
    }
    return enqueue(rt, id, rt->site, k, dims, gws, local ? lws : NULL);
}

void b158_rt_site(b158_runtime *rt, const char *site)
{
    rt->site = site;
}

void b158_rt_plan_begin(b158_runtime *rt, b158_plan *plan)
{
    *plan = (b158_plan){0};
    rt->rec = plan;
}

void b158_rt_plan_end(b158_runtime *rt)
{
    rt->rec = NULL;
}

b158_status b158_rt_plan_run(b158_runtime *rt, const b158_plan *plan)
{
    if (plan->failed)
        return B158_FAIL(B158_ERR_INVALID_ARG, "a launch plan that failed to record was run");
    for (int i = 0; i < plan->n; i++) {
        const b158_plan_step *st = &plan->steps[i];
        B158_TRY(enqueue(rt, st->id, st->site, st->kernel, st->dims, st->global,
                         st->has_local ? st->local : NULL));
    }
    return B158_OK;
}

void b158_plan_free(b158_plan *plan)
{
    for (int i = 0; i < plan->n; i++)
        clReleaseKernel(plan->steps[i].kernel);
    free(plan->steps);
    *plan = (b158_plan){0};
}
