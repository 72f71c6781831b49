/* The FP16 baseline's matmuls through CLBlast (HGEMV for one token, HGEMM for more) on devices
 * with cl_khr_fp16: the dense FP16 LLaMA-style model the paper compares BitNet b1.58 against. */
#include "blas.h"

#include <clblast_c.h>
#include <time.h>

#include "half.h"

int b158_blas_available(void)
{
    return 1;
}

/* CLBlast keeps every program it built (retaining the context) until told otherwise. */
static void release_programs(void)
{
    CLBlastClearCache();
}

/* CLBlast's own codes (below -1000) by name; OpenCL's through b158_cl_error_name. */
static const char *blas_status_name(CLBlastStatusCode c)
{
    switch (c) {
    case CLBlastNotImplemented:
        return "CLBlastNotImplemented";
    case CLBlastInvalidDimension:
        return "CLBlastInvalidDimension";
    case CLBlastInsufficientMemoryA:
        return "CLBlastInsufficientMemoryA";
    case CLBlastInsufficientMemoryB:
        return "CLBlastInsufficientMemoryB";
    case CLBlastInsufficientMemoryC:
        return "CLBlastInsufficientMemoryC";
    case CLBlastInsufficientMemoryX:
        return "CLBlastInsufficientMemoryX";
    case CLBlastInsufficientMemoryY:
        return "CLBlastInsufficientMemoryY";
    case CLBlastInsufficientMemoryTemp:
        return "CLBlastInsufficientMemoryTemp";
    case CLBlastInvalidLocalMemUsage:
        return "CLBlastInvalidLocalMemUsage";
    case CLBlastNoHalfPrecision:
        return "CLBlastNoHalfPrecision";
    case CLBlastDatabaseError:
        return "CLBlastDatabaseError";
    case CLBlastUnknownError:
        return "CLBlastUnknownError";
    case CLBlastUnexpectedError:
        return "CLBlastUnexpectedError";
    default:
        return (int)c > -1000 ? b158_cl_error_name((cl_int)c) : "CLBlast error";
    }
}

static b158_status blas_fail(CLBlastStatusCode c, const char *call, int line)
{
    if (c == CLBlastNoHalfPrecision)
        return b158_fail_at(B158_ERR_UNSUPPORTED, __FILE__, line,
                            "%s: the device has no cl_khr_fp16, which CLBlast's half precision "
                            "needs; use the FP16-storage kernels instead",
                            call);
    const b158_status code = c == CLBlastTempBufferAllocFailure || c == CLBlastOpenCLOutOfResources
                                 ? B158_ERR_DEVICE_MEMORY
                             : c == CLBlastOpenCLBuildProgramFailure ? B158_ERR_BUILD
                                                                     : B158_ERR_OPENCL;
    return b158_fail_at(code, __FILE__, line, "%s returned %s (%d)", call, blas_status_name(c),
                        (int)c);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

b158_status b158_hgemm_temp_bytes(b158_runtime *rt, int n_rows, int k, int m_rows, size_t *bytes)
{
    *bytes = 0;
    if (m_rows <= 1)
        return B158_OK; /* HGEMV needs none */
    size_t elems = 0;
    CLBlastStatusCode c =
        CLBlastHGemmTempBufferSize(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                                   (size_t)m_rows, (size_t)n_rows, (size_t)k, 0, (size_t)k, 0,
                                   (size_t)k, 0, (size_t)n_rows, &rt->queue, &elems);
    if (c != CLBlastSuccess)
        return blas_fail(c, "CLBlastHGemmTempBufferSize", __LINE__);
    *bytes = elems * 2;
    return B158_OK;
}

b158_status b158_op_hgemm(b158_runtime *rt, const b158_buf *w, const b158_buf *x, const b158_buf *y,
                          int n_rows, int k, int m_rows, const b158_buf *temp)
{
    if (n_rows <= 0 || k <= 0 || m_rows <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "hgemm: bad shape %d x %d, %d tokens", n_rows, k,
                         m_rows);
    if (!w || !x || !y || !w->mem || !x->mem || !y->mem || w->bytes < (size_t)n_rows * k * 2 ||
        x->bytes < (size_t)m_rows * k * 2 || y->bytes < (size_t)m_rows * n_rows * 2)
        return B158_FAIL(B158_ERR_INVALID_ARG, "hgemm: a buffer is missing or too small");
    if (!rt->info.has_fp16)
        return blas_fail(CLBlastNoHalfPrecision, "hgemm", __LINE__);
    const cl_half one = b158_f32_to_f16(1.0f), zero = 0;
    const char *name = m_rows == 1 ? "clblast_hgemv" : "clblast_hgemm";
    /* a routine is several kernels: with profiling on, its time is the wall time from an idle
     * queue to the routine's end */
    uint64_t t0 = 0;
    if (rt->profile) {
        B158_TRY(b158_rt_finish(rt));
        t0 = now_ns();
    }
    B158_TRY(b158_rt_on_release(rt, release_programs));
    CLBlastStatusCode c;
    if (m_rows == 1) {
        /* y (n_rows) = W (n_rows x k, row-major) . x. CLBlast computes beta * y even for
         * beta = 0, so y is zeroed first (stale NaNs would otherwise survive) */
        const cl_half z = 0;
        B158_CL_CHECK(clEnqueueFillBuffer(rt->queue, y->mem, &z, sizeof z, 0, (size_t)n_rows * 2, 0,
                                          NULL, NULL));
        c = CLBlastHgemv(CLBlastLayoutRowMajor, CLBlastTransposeNo, (size_t)n_rows, (size_t)k, one,
                         w->mem, 0, (size_t)k, x->mem, 0, 1, zero, y->mem, 0, 1, &rt->queue, NULL);
        if (c != CLBlastSuccess)
            return blas_fail(c, "CLBlastHgemv", __LINE__);
    } else {
        /* Y (m_rows x n_rows) = X (m_rows x k) . W^T, with a temp buffer the caller allocated
         * once (b158_hgemm_temp_bytes), so CLBlast allocates nothing per call */
        size_t need = 0;
        B158_TRY(b158_hgemm_temp_bytes(rt, n_rows, k, m_rows, &need));
        if (need && (!temp || !temp->mem || temp->bytes < need))
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "hgemm: temp buffer of %zu bytes needed for %d x %d x %d", need,
                             m_rows, n_rows, k);
        c = CLBlastHgemmWithTempBuffer(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, (size_t)m_rows,
            (size_t)n_rows, (size_t)k, one, x->mem, 0, (size_t)k, w->mem, 0, (size_t)k, zero,
            y->mem, 0, (size_t)n_rows, &rt->queue, NULL, need ? temp->mem : NULL);
        if (c != CLBlastSuccess)
            return blas_fail(c, "CLBlastHgemmWithTempBuffer", __LINE__);
    }
    if (rt->profile)
        B158_TRY(b158_rt_finish(rt));
    return b158_rt_record(rt, name, rt->profile ? now_ns() - t0 : 0);
}
