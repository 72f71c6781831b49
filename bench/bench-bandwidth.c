/* The device copy bandwidth: clEnqueueCopyBuffer and a copy kernel over 256 MiB buffers. */
#include "bench-bandwidth.h"

#include <stdlib.h>
#include <time.h>

#include "runtime.h"

/* Each work-item copies one contiguous piece of 256 float16s (16 KiB): on CPU devices a
 * work-item streams like one thread's memcpy, and the pieces spread over the cores. */
#define B158_BENCH_PIECE_BYTES 16384
static const char *bw_source =
    "__kernel void bench_copy(__global const float16 *a, __global float16 *b)\n"
    "{\n"
    "    const size_t base = get_global_id(0) * 256;\n"
    "    for (int i = 0; i < 256; i++)\n"
    "        b[base + i] = a[base + i];\n"
    "}\n";

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Seconds of one command, enqueued (copy = NULL: clEnqueueCopyBuffer) and finished. */
static cl_int timed(b158_runtime *rt, cl_kernel copy, const b158_buf *a, const b158_buf *b,
                    double *s)
{
    const size_t items = a->bytes / B158_BENCH_PIECE_BYTES;
    const double t0 = now_ns();
    cl_int err =
        copy ? clEnqueueNDRangeKernel(rt->queue, copy, 1, NULL, &items, NULL, 0, NULL, NULL)
             : clEnqueueCopyBuffer(rt->queue, a->mem, b->mem, 0, 0, a->bytes, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clFinish(rt->queue);
    *s = (now_ns() - t0) * 1e-9;
    return err;
}

int b158_bench_bandwidth_measure(b158_runtime *rt, int reps, b158_bench_bandwidth *out)
{
    const size_t bytes = (size_t)256 << 20;
    double t_api[64], t_copy[64];
    b158_buf a = {0}, b = {0};
    cl_program prog = NULL;
    cl_kernel copy = NULL;
    cl_int err = CL_SUCCESS;
    *out = (b158_bench_bandwidth){0};
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    b158_status st = b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &a);
    if (st == B158_OK)
        st = b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &b);
    if (st == B158_OK)
        st = b158_buf_fill(rt, &a, 0x3c); /* first touch of both buffers */
    if (st == B158_OK)
        st = b158_buf_fill(rt, &b, 0);
    if (st == B158_OK) {
        prog = clCreateProgramWithSource(rt->context, 1, &bw_source, NULL, &err);
        if (err == CL_SUCCESS)
            err = clBuildProgram(prog, 1, &rt->device, "", NULL, NULL);
        if (err == CL_SUCCESS)
            copy = clCreateKernel(prog, "bench_copy", &err);
        if (err == CL_SUCCESS)
            err = clSetKernelArg(copy, 0, sizeof a.mem, &a.mem);
        if (err == CL_SUCCESS)
            err = clSetKernelArg(copy, 1, sizeof b.mem, &b.mem);
    }
    /* one untimed round first: the kernels' first launches */
    for (int r = -1; st == B158_OK && err == CL_SUCCESS && r < reps; r++) {
        double s[2] = {0, 0};
        err = timed(rt, NULL, &a, &b, &s[0]);
        if (err == CL_SUCCESS)
            err = timed(rt, copy, &a, &b, &s[1]);
        if (r >= 0)
            t_api[r] = s[0], t_copy[r] = s[1];
    }
    if (st == B158_OK && err == CL_SUCCESS) {
        out->copy_api_gbs = 2.0 * (double)bytes / median_of(t_api, reps) * 1e-9;
        out->copy_kernel_gbs = 2.0 * (double)bytes / median_of(t_copy, reps) * 1e-9;
        out->copy_gbs =
            out->copy_api_gbs > out->copy_kernel_gbs ? out->copy_api_gbs : out->copy_kernel_gbs;
    }
    if (copy)
        clReleaseKernel(copy);
    if (prog)
        clReleaseProgram(prog);
    b158_buf_free(rt, &b);
    b158_buf_free(rt, &a);
    if (st == B158_OK && err != CL_SUCCESS)
        st = B158_CL_FAIL(err, "bandwidth measurement");
    return st != B158_OK;
}
