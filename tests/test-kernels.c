/* Every device kernel against its plain-C reference, on both kernel variants, with fresh random
 * inputs of awkward sizes and poisoned outputs. Integer results must match exactly; float
 * results within the normalized error stated at each comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"
#include "blas.h"
#include "half.h"
#include "ops.h"
#include "ref.h"
#include "test-common.h"

static const b158_variant variants[] = {B158_VARIANT_CPU, B158_VARIANT_GPU};
#define FOR_EACH_VARIANT(rt)                                                                       \
    for (size_t vi_ = 0; vi_ < 2; vi_++)                                                           \
        for (b158_runtime *rt = b158_test_runtime(variants[vi_]); rt; rt = NULL)

/* The GPU variant again with its row kernels (norms, quantization, GLU) loading 3 elements a
 * work-item at a time instead of the default 8 (B158_ROW_STEP): rows then end inside a step at
 * other places, and a step count that is not a power of two is checked. Their tests run on the
 * two variants and on this one. */
static b158_runtime *row_step_rt;

static void free_row_step_runtime(void)
{
    b158_runtime_free(row_step_rt);
}

static b158_runtime *row_step_runtime(void)
{
    if (!row_step_rt && b158_test_runtime(B158_VARIANT_GPU)) {
        b158_runtime_params p = b158_runtime_default_params();
        p.variant = B158_VARIANT_GPU;
        setenv("B158_ROW_STEP", "3", 1);
        const b158_status st = b158_runtime_create(&p, &row_step_rt);
        unsetenv("B158_ROW_STEP");
        CU_ASSERT_EQUAL_FATAL(st, B158_OK);
        CU_ASSERT_EQUAL_FATAL(row_step_rt->tune.row_step, 3);
        atexit(free_row_step_runtime);
    }
    return row_step_rt;
}

#define FOR_EACH_ROW_RUNTIME(rt)                                                                   \
    for (size_t vi_ = 0; vi_ < 3; vi_++)                                                           \
        for (b158_runtime *rt = vi_ < 2 ? b158_test_runtime(variants[vi_]) : row_step_runtime();   \
             rt; rt = NULL)

/* Sets rt's CPU ternary kernel for pass pass of a loop over those it has, best first (the
 * flags the launch wrappers read; vnni and bw: the runtime's own, vnni 0 for the GEMV, which has
 * no VNNI form): AVX-512 VNNI, AVX-512BW, then the portable one. False past the last; pass 0
 * with the runtime's own flags restores them. A GPU variant runtime (neither set) has one
 * pass. */
static int cpu_isa_pass(b158_runtime *rt, int pass, int vnni, int bw)
{
    rt->tune.x86_vnni = pass == 0 && vnni;
    rt->tune.x86_avx512bw = pass < vnni + bw && bw;
    return pass <= vnni + bw;
}

/* Sets rt's work-items per GPU GEMV row for pass pass of a loop over them: by the row's width
 * (the runtime's choice, pass 0, which restores it), then 8, 16 and 32 for every width. False
 * past the last; a CPU variant runtime has one pass. */
static int gemv_lanes_pass(b158_runtime *rt, int pass)
{
    static const int lanes[] = {0, 8, 16, 32};
    const int passes = b158_runtime_variant(rt) == B158_VARIANT_GPU ? 4 : 1;
    rt->tune.gemv_lanes = lanes[pass < passes ? pass : 0];
    return pass < passes;
}

static const char *vname(b158_runtime *rt)
{
    static char name[64];
    if (b158_runtime_variant(rt) != B158_VARIANT_GPU)
        return rt->tune.x86_vnni       ? "cpu avx512 vnni"
               : rt->tune.x86_avx512bw ? "cpu avx512bw"
                                       : "cpu";
    snprintf(name, sizeof name, "gpu%s, %d work-items a GEMV row (0: by its width)",
             rt->tune.row_step == 3 ? ", row step 3" : "", rt->tune.gemv_lanes);
    return name;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static b158_buf dev_upload(b158_runtime *rt, const void *data, size_t bytes)
{
    b158_buf b;
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &b), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_write(rt, &b, 0, bytes, data), B158_OK);
    return b;
}

static b158_buf dev_poisoned(b158_runtime *rt, size_t bytes)
{
    b158_buf b;
    CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &b), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_buf_fill(rt, &b, B158_POISON_BYTE), B158_OK);
    return b;
}

static void dev_read(b158_runtime *rt, const b158_buf *b, void *dst, size_t bytes)
{
    CU_ASSERT_EQUAL_FATAL(b158_buf_read(rt, b, 0, bytes, dst), B158_OK);
}

static void check_ok(b158_status st)
{
    if (st != B158_OK)
        fprintf(stderr, "\n%s\n", b158_last_error());
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
}

static void fill_uniform(float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = b158_test_uniform(lo, hi);
}

static void expect_nerr(const char *what, b158_runtime *rt, const float *got, const float *ref,
                        size_t n, double tol)
{
    double e = b158_test_nerr(got, ref, n);
    if (!(e <= tol))
        fprintf(stderr, "\n%s [%s]: normalized error %.3g > %.3g\n", what, vname(rt), e, tol);
    CU_ASSERT(e <= tol);
}

/* ---- FP16 conversions ------------------------------------------------------------------- */

static void test_half_roundtrip(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = b158_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        bad += b158_f32_to_f16(f) != h;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(b158_f32_to_f16(1.0f), 0x3c00);
    CU_ASSERT_EQUAL(b158_f32_to_f16(65504.0f), 0x7bff);
    CU_ASSERT_EQUAL(b158_f32_to_f16(65520.0f), 0x7c00);        /* ties to even: overflow */
    CU_ASSERT_EQUAL(b158_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie to even, down */
    CU_ASSERT_EQUAL(b158_f32_to_f16(0x1p-25f), 0x0000);        /* tie to even, zero */
    CU_ASSERT_EQUAL(b158_f32_to_f16(0x1.8p-25f), 0x0001);
    CU_ASSERT(isnan(b158_f16_to_f32(b158_f32_to_f16(NAN))));
}

/* ---- quantization ----------------------------------------------------------------------- */

static void test_quantize(void)
{
    const int ks[] = {1, 7, 64, 65, 300, 2560 + b158_test_randint(1, 63)};
    FOR_EACH_ROW_RUNTIME(rt)
    {
        for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
            const int k = ks[t], kp = b158_ternary_k_pad(k), m = b158_test_randint(1, 6);
            float *x = xmalloc((size_t)m * k * 4), *s = xmalloc((size_t)m * 4),
                  *sr = xmalloc((size_t)m * 4);
            int8_t *q = xmalloc((size_t)m * kp), *qr = xmalloc((size_t)m * k);
            fill_uniform(x, (size_t)m * k, -3.0f, 3.0f);
            if (m > 1) /* an all-zero row and a row with a huge outlier */
                memset(x + k, 0, (size_t)k * 4);
            x[b158_test_randint(0, k - 1)] = 1000.0f;
            x[(size_t)(m - 1) * k + b158_test_randint(0, k - 1)] = -1000.0f;
            b158_buf dx = dev_upload(rt, x, (size_t)m * k * 4);
            b158_buf dq = dev_poisoned(rt, (size_t)m * kp), ds = dev_poisoned(rt, (size_t)m * 4);
            check_ok(b158_op_quantize(rt, &dx, &dq, &ds, k, kp, m));
            dev_read(rt, &dq, q, (size_t)m * kp);
            dev_read(rt, &ds, s, (size_t)m * 4);
            b158_ref_quantize(x, k, m, qr, sr);
            int mism = 0, tail = 0;
            for (int r = 0; r < m; r++) {
                mism += memcmp(&s[r], &sr[r], 4) != 0;
                for (int i = 0; i < kp; i++) {
                    if (i < k)
                        mism += q[(size_t)r * kp + i] != qr[(size_t)r * k + i];
                    else
                        tail += q[(size_t)r * kp + i] != 0;
                }
            }
            if (mism || tail)
                fprintf(stderr, "\nquantize k=%d m=%d [%s]: %d mismatches, %d bad tail\n", k, m,
                        vname(rt), mism, tail);
            CU_ASSERT_EQUAL(mism, 0);
            CU_ASSERT_EQUAL(tail, 0);
            /* never -128 (|round(x * 127 / absmax)| <= 127): the ternary kernels negate in int8 */
            int min_q = 0;
            for (size_t i = 0; i < (size_t)m * kp; i++)
                min_q = q[i] < min_q ? q[i] : min_q;
            CU_ASSERT(min_q >= -127);
            /* and back to floats (the FP16 baseline's input): exact, same division */
            float *xd = xmalloc((size_t)m * k * 4), *xdr = xmalloc((size_t)m * k * 4);
            b158_buf dxd = dev_poisoned(rt, (size_t)m * k * 4);
            check_ok(b158_op_dequantize(rt, &dq, &ds, &dxd, k, kp, m));
            dev_read(rt, &dxd, xd, (size_t)m * k * 4);
            b158_ref_dequantize(qr, sr, k, m, xdr);
            CU_ASSERT_EQUAL(memcmp(xd, xdr, (size_t)m * k * 4), 0);
            b158_buf_free(rt, &dxd);
            free(xd), free(xdr);
            b158_buf_free(rt, &dx);
            b158_buf_free(rt, &dq);
            b158_buf_free(rt, &ds);
            free(x), free(s), free(sr), free(q), free(qr);
        }
    }
}

/* Non-finite activations (a model whose weights overflow) get the defined result on both paths,
 * without undefined behaviour in the reference (a NaN reached the int8 cast): NaN elements
 * quantize to 0 and an infinity makes its row's scale 0 and the row all zero. Rows: finite
 * with NaNs, +inf, -inf, all NaN, and one finite row to show the others do not leak. */
static void test_quantize_non_finite(void)
{
    const int k = b158_test_randint(1, 300), kp = b158_ternary_k_pad(k), m = 5;
    float *x = xmalloc((size_t)m * k * 4), *s = xmalloc((size_t)m * 4),
          *sr = xmalloc((size_t)m * 4);
    int8_t *q = xmalloc((size_t)m * kp), *qr = xmalloc((size_t)m * k);
    fill_uniform(x, (size_t)m * k, -3.0f, 3.0f);
    const int at = b158_test_randint(0, k - 1);
    x[at] = NAN;
    x[(size_t)k + b158_test_randint(0, k - 1)] = INFINITY;
    x[(size_t)2 * k + b158_test_randint(0, k - 1)] = -INFINITY;
    for (int i = 0; i < k; i++)
        x[(size_t)3 * k + i] = NAN;
    b158_ref_quantize(x, k, m, qr, sr);
    float amax = 0.0f; /* row 0 without its NaN */
    for (int i = 0; i < k; i++)
        amax = i == at ? amax : fmaxf(amax, fabsf(x[i]));
    CU_ASSERT_EQUAL(sr[0], 127.0f / fmaxf(amax, 1e-5f));
    CU_ASSERT_EQUAL(qr[at], 0);
    CU_ASSERT(sr[1] == 0.0f && sr[2] == 0.0f);
    CU_ASSERT_EQUAL(sr[3], 127.0f / 1e-5f);
    int nonzero = 0;
    for (int i = 0; i < 3 * k; i++)
        nonzero += i >= k && qr[i] != 0;
    CU_ASSERT_EQUAL(nonzero, 0);
    for (int i = 0; i < k; i++)
        nonzero += qr[(size_t)3 * k + i] != 0;
    CU_ASSERT_EQUAL(nonzero, 0);
    FOR_EACH_VARIANT(rt)
    {
        b158_buf dx = dev_upload(rt, x, (size_t)m * k * 4);
        b158_buf dq = dev_poisoned(rt, (size_t)m * kp), ds = dev_poisoned(rt, (size_t)m * 4);
        check_ok(b158_op_quantize(rt, &dx, &dq, &ds, k, kp, m));
        dev_read(rt, &dq, q, (size_t)m * kp);
        dev_read(rt, &ds, s, (size_t)m * 4);
        int mism = memcmp(s, sr, (size_t)m * 4) != 0;
        for (int r = 0; r < m; r++)
            for (int i = 0; i < k; i++)
                mism += q[(size_t)r * kp + i] != qr[(size_t)r * k + i];
        if (mism)
            fprintf(stderr, "\nquantize of non-finite rows, k=%d [%s]: %d mismatches\n", k,
                    vname(rt), mism);
        CU_ASSERT_EQUAL(mism, 0);
        b158_buf_free(rt, &dx);
        b158_buf_free(rt, &dq);
        b158_buf_free(rt, &ds);
    }
    free(x), free(s), free(sr), free(q), free(qr);
}

/* ---- ternary matmul --------------------------------------------------------------------- */

/* Runs one n x k matmul over m tokens: once with unit scales (the float result then equals the
 * int32 sum exactly, so the integer part is checked bit for bit) and once with random scales
 * and accumulation into a random y (normalized error 1e-6). */
/* extreme: every weight +-1 and every activation +-127 (row by row), the largest sums the
 * kernels' short lanes must hold without saturating. */
static void check_ternary(b158_runtime *rt, int n, int k, int m, int force_gemm, int extreme)
{
    const int kp = b158_ternary_k_pad(k);
    int8_t *w = xmalloc((size_t)n * k), *q = xmalloc((size_t)m * k);
    int8_t *qp = xmalloc((size_t)m * kp);
    float *ws = xmalloc((size_t)n * 4), *s = xmalloc((size_t)m * 4);
    float *y = xmalloc((size_t)m * n * 4), *yr = xmalloc((size_t)m * n * 4);
    float *y0 = xmalloc((size_t)m * n * 4);
    int32_t *acc = xmalloc((size_t)m * n * 4);
    const int zero_pct = b158_test_randint(0, 60);
    for (size_t i = 0; i < (size_t)n * k; i++)
        w[i] = b158_test_randint(0, 99) < zero_pct ? 0 : (b158_test_rand() & 1 ? 1 : -1);
    /* [-127, 127]: what quantize_rows writes, and what the CPU GEMV relies on */
    for (size_t i = 0; i < (size_t)m * k; i++)
        q[i] = (int8_t)b158_test_randint(-127, 127);
    for (size_t i = 0; extreme && i < (size_t)n * k; i++)
        w[i] = (i / (size_t)k) % 2 ? -1 : 1;
    for (size_t i = 0; extreme && i < (size_t)m * k; i++)
        q[i] = (i / (size_t)k) % 3 ? 127 : -127;
    memset(qp, 0, (size_t)m * kp);
    for (int r = 0; r < m; r++)
        memcpy(qp + (size_t)r * kp, q + (size_t)r * k, (size_t)k);
    for (int i = 0; i < n; i++)
        ws[i] = 1.0f;
    for (int i = 0; i < m; i++)
        s[i] = 1.0f;

    b158_tmat dw;
    check_ok(b158_tmat_upload(rt, w, ws, n, k, &dw));
    b158_buf dq = dev_upload(rt, qp, (size_t)m * kp), ds = dev_upload(rt, s, (size_t)m * 4);
    b158_buf dy = dev_poisoned(rt, (size_t)m * n * 4);
    check_ok(force_gemm ? b158_op_ternary_gemm(rt, &dw, &dq, &ds, &dy, m, 0)
                        : b158_op_ternary_matmul(rt, &dw, &dq, &ds, &dy, m, 0));
    dev_read(rt, &dy, y, (size_t)m * n * 4);
    b158_ref_ternary_matmul(w, ws, n, k, q, s, m, acc, NULL);
    int mism = 0;
    for (size_t i = 0; i < (size_t)m * n; i++)
        mism += y[i] != (float)acc[i];
    if (mism)
        fprintf(stderr, "\nternary %s %dx%d m=%d [%s]: %d of %d int32 sums differ\n",
                force_gemm || m > 1 ? "gemm" : "gemv", n, k, m, vname(rt), mism, m * n);
    CU_ASSERT_EQUAL(mism, 0);

    /* float epilogue with random scales, accumulated into a random y */
    fill_uniform(ws, (size_t)n, 0.01f, 2.0f);
    fill_uniform(s, (size_t)m, 0.5f, 300.0f);
    fill_uniform(y0, (size_t)m * n, -1000.0f, 1000.0f);
    b158_tmat dw2;
    check_ok(b158_tmat_upload(rt, w, ws, n, k, &dw2));
    b158_buf ds2 = dev_upload(rt, s, (size_t)m * 4), dy2 = dev_upload(rt, y0, (size_t)m * n * 4);
    check_ok(force_gemm ? b158_op_ternary_gemm(rt, &dw2, &dq, &ds2, &dy2, m, 1)
                        : b158_op_ternary_matmul(rt, &dw2, &dq, &ds2, &dy2, m, 1));
    dev_read(rt, &dy2, y, (size_t)m * n * 4);
    b158_ref_ternary_matmul(w, ws, n, k, q, s, m, NULL, yr);
    for (size_t i = 0; i < (size_t)m * n; i++)
        yr[i] += y0[i];
    expect_nerr("ternary epilogue", rt, y, yr, (size_t)m * n, 1e-6);

    b158_tmat_free(rt, &dw);
    b158_tmat_free(rt, &dw2);
    b158_buf_free(rt, &dq);
    b158_buf_free(rt, &ds);
    b158_buf_free(rt, &dy);
    b158_buf_free(rt, &ds2);
    b158_buf_free(rt, &dy2);
    free(w), free(q), free(qp), free(ws), free(s), free(y), free(yr), free(y0), free(acc);
}

static void test_ternary_gemv(void)
{
    FOR_EACH_VARIANT(rt)
    {
        const int vnni = rt->tune.x86_vnni, bw = rt->tune.x86_avx512bw;
        for (int pass = 0; cpu_isa_pass(rt, pass, 0, bw); pass++)
            for (int lp = 0; gemv_lanes_pass(rt, lp); lp++) {
                check_ternary(rt, 1, 1, 1, 0, 0);
                check_ternary(rt, b158_test_randint(1, 40), b158_test_randint(1, 63), 1, 0, 0);
                check_ternary(rt, b158_test_randint(100, 300), 64 * b158_test_randint(1, 8) + 1, 1,
                              0, 0);
                check_ternary(rt, b158_test_randint(200, 600), b158_test_randint(1000, 3000), 1, 0,
                              0);
                check_ternary(rt, b158_test_randint(2, 9), b158_test_randint(4000, 9000), 1, 0, 1);
                check_ternary(rt, 2560 + 3, 6912 - 5, 1, 0, 0); /* BitNet-sized, off by a little */
                check_ternary(rt, b158_test_randint(1, 9), 256 * b158_test_randint(1, 4), 1, 0, 0);
            }
        cpu_isa_pass(rt, 0, vnni, bw);
    }
}

/* The GPU GEMV's work-items a row (b158_op_gemv_shift): 8 while a work-item's share of the
 * row's 16-byte quarters takes one round of B158_GEMV_AHEAD loads, 16 or 32 past that, never
 * more than the work-group; B158_GEMV_LANES's fixed count, within the work-group */
static void test_gemv_lanes_rule(void)
{
    static b158_runtime rt; /* only its tuning is read */
    rt.tune.wg = 256, rt.tune.gemv_ahead = 5, rt.tune.gemv_lanes = 0;
    static const int widths[][2] = {{64, 3},   {2560, 3}, {2624, 4}, {3200, 4}, {5120, 4},
                                    {5184, 5}, {6912, 5}, {8640, 5}, {20480, 5}};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, widths[i][0]), widths[i][1]);
    rt.tune.gemv_ahead = 8; /* 8 a work-item: 4096 wide at 8 a row */
    CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 4096), 3);
    CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 4160), 4);
    rt.tune.gemv_ahead = 5, rt.tune.wg = 16; /* no more work-items a row than the group has */
    CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 6912), 4);
    rt.tune.wg = 8;
    CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 6912), 3);
    rt.tune.wg = 64;
    for (int lanes = 8, want = 3; lanes <= 32; lanes *= 2, want++) {
        rt.tune.gemv_lanes = lanes;
        CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 64), want);
        CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 6912), want);
    }
    rt.tune.wg = 16;
    CU_ASSERT_EQUAL(b158_op_gemv_shift(&rt, 64), 4); /* 32 asked, 16 in a group */
}

static void test_ternary_gemm(void)
{
    FOR_EACH_VARIANT(rt)
    {
        const int vnni = rt->tune.x86_vnni, bw = rt->tune.x86_avx512bw;
        for (int pass = 0; cpu_isa_pass(rt, pass, vnni, bw); pass++) {
            check_ternary(rt, b158_test_randint(1, 40), b158_test_randint(1, 63), 1, 1, 0);
            check_ternary(rt, b158_test_randint(30, 70), b158_test_randint(65, 200),
                          b158_test_randint(2, 5), 0, 0);
            check_ternary(rt, b158_test_randint(100, 300), b158_test_randint(300, 700),
                          b158_test_randint(17, 40), 0, 0);
            check_ternary(rt, 257, 2560 + 7, 33, 0, 0);
            /* past 16 blocks (the AVX-512 GEMM widens its short lanes every 4096 weights), at
             * the largest sums */
            check_ternary(rt, b158_test_randint(9, 40), b158_test_randint(4097, 9000),
                          b158_test_randint(5, 11), 0, 1);
            check_ternary(rt, b158_test_randint(9, 40), b158_test_randint(4097, 9000),
                          b158_test_randint(5, 11), 0, 0);
        }
        cpu_isa_pass(rt, 0, vnni, bw);
    }
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */

static void test_rmsnorm(void)
{
    const int ns[] = {1, 33, 257, 2560 + b158_test_randint(1, 99)};
    FOR_EACH_ROW_RUNTIME(rt)
    {
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
            const int n = ns[t], m = b158_test_randint(1, 7);
            float *x = xmalloc((size_t)m * n * 4), *w = xmalloc((size_t)n * 4);
            float *y = xmalloc((size_t)m * n * 4), *yr = xmalloc((size_t)m * n * 4);
            fill_uniform(x, (size_t)m * n, -50.0f, 50.0f);
            fill_uniform(w, (size_t)n, -2.0f, 2.0f);
            b158_buf dx = dev_upload(rt, x, (size_t)m * n * 4),
                     dw = dev_upload(rt, w, (size_t)n * 4);
            b158_buf dy = dev_poisoned(rt, (size_t)m * n * 4);
            check_ok(b158_op_rmsnorm(rt, &dx, &dw, &dy, n, m, 1e-5f));
            dev_read(rt, &dy, y, (size_t)m * n * 4);
            b158_ref_rmsnorm(x, w, yr, n, m, 1e-5f);
            expect_nerr("rmsnorm", rt, y, yr, (size_t)m * n, 1e-5);
            /* in place */
            check_ok(b158_op_rmsnorm(rt, &dx, &dw, &dx, n, m, 1e-5f));
            dev_read(rt, &dx, y, (size_t)m * n * 4);
            expect_nerr("rmsnorm in place", rt, y, yr, (size_t)m * n, 1e-5);
            b158_buf_free(rt, &dx);
            b158_buf_free(rt, &dw);
            b158_buf_free(rt, &dy);
            free(x), free(w), free(y), free(yr);
        }
    }
}

/* int8 rows q (stride kp, zero tail) and scales s of a fused kernel against the references' qr
 * (stride n) and sr: counts elements one step off, more than one step off and nonzero tail
 * bytes; returns the largest relative scale difference. */
static double q8_diff(const int8_t *q, const float *s, const int8_t *qr, const float *sr, int n,
                      int kp, int m, int *off, int *far, int *tail)
{
    double serr = 0;
    for (int r = 0; r < m; r++) {
        serr = fmax(serr, fabs(s[r] - sr[r]) / sr[r]);
        for (int i = 0; i < kp; i++) {
            const int a = q[(size_t)r * kp + i];
            if (i >= n) {
                *tail += a != 0;
                continue;
            }
            const int d = abs(a - qr[(size_t)r * n + i]);
            *off += d != 0;
            *far += d > 1;
        }
    }
    return serr;
}

/* rmsnorm then quantize in one kernel: the int8 rows and scales of the two references. Both
 * variants sum squares in another order than the reference (16 lanes, and a work-group
 * reduction on GPUs), which may move a value across a rounding boundary (one step, rarely). */
static void test_rmsnorm_quantize(void)
{
    const int ns[] = {1, 33, 257, 2560 + b158_test_randint(1, 99), 6912 - b158_test_randint(0, 9)};
    FOR_EACH_ROW_RUNTIME(rt)
    {
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
            const int n = ns[t], kp = b158_ternary_k_pad(n), m = b158_test_randint(1, 7);
            float *x = xmalloc((size_t)m * n * 4), *w = xmalloc((size_t)n * 4);
            float *xn = xmalloc((size_t)m * n * 4), *s = xmalloc((size_t)m * 4);
            float *sr = xmalloc((size_t)m * 4);
            int8_t *q = xmalloc((size_t)m * kp), *qr = xmalloc((size_t)m * n);
            fill_uniform(x, (size_t)m * n, -50.0f, 50.0f);
            fill_uniform(w, (size_t)n, -2.0f, 2.0f);
            b158_buf dx = dev_upload(rt, x, (size_t)m * n * 4);
            b158_buf dw = dev_upload(rt, w, (size_t)n * 4);
            b158_buf dq = dev_poisoned(rt, (size_t)m * kp), ds = dev_poisoned(rt, (size_t)m * 4);
            check_ok(b158_op_rmsnorm_quantize(rt, &dx, &dw, &dq, &ds, n, kp, m, 1e-5f));
            dev_read(rt, &dq, q, (size_t)m * kp);
            dev_read(rt, &ds, s, (size_t)m * 4);
            b158_ref_rmsnorm(x, w, xn, n, m, 1e-5f);
            b158_ref_quantize(xn, n, m, qr, sr);
            int off = 0, far = 0, tail = 0;
            const double serr = q8_diff(q, s, qr, sr, n, kp, m, &off, &far, &tail);
            if (off || tail)
                fprintf(stderr, "\nrmsnorm_quantize n=%d m=%d [%s]: %d off by one, %d bad tail\n",
                        n, m, vname(rt), off, tail);
            CU_ASSERT(serr <= 1e-5);
            CU_ASSERT_EQUAL(far, 0);
            CU_ASSERT_EQUAL(tail, 0);
            CU_ASSERT(off * 100 <= m * n);
            b158_buf_free(rt, &dx), b158_buf_free(rt, &dw);
            b158_buf_free(rt, &dq), b158_buf_free(rt, &ds);
            free(x), free(w), free(xn), free(s), free(sr), free(q), free(qr);
        }
    }
}

/* A decode GEMV whose last work-group then makes the next matmul's int8 input from the whole
 * output row (b158_op_ternary_gemv with a tail, or with dense the FP16 baseline's
 * b158_op_f16_gemv_q8 on the same weights as FP16), its q_out being its own input as in the
 * forward pass: y is the GEMV's (the integer sums exact with unit scales, also in FP32: below
 * 3000 x 127 < 2^24), q / s those of the reference of the tail on that y. Tails: RMSNorm (three
 * launches in a row, accumulating, so a counter that was not reset shows: no group would find
 * itself last and q would keep the GEMV's input); GLU of y's [gate | up] halves with and without
 * the sub-norm, silu and relu^2 (y's up half exact; h then stands in the gate half). */
static void check_gemv_tail(b158_runtime *rt, int glu, int norm, enum b158_act act, int dense)
{
    const int width = b158_test_randint(1, 3000), n = glu ? 2 * width : width;
    const int k = b158_test_randint(1, 3000);
    const int kp = b158_ternary_k_pad(k), kpo = b158_ternary_k_pad(width);
    const int qbytes = kp > kpo ? kp : kpo;
    int8_t *w = xmalloc((size_t)n * k), *qi = xmalloc((size_t)qbytes);
    int8_t *q = xmalloc((size_t)kpo), *qr = xmalloc((size_t)width);
    float *ws = xmalloc((size_t)n * 4), *nw = xmalloc((size_t)width * 4);
    float *y = xmalloc((size_t)n * 4), *xn = xmalloc((size_t)width * 4);
    float *gy = xmalloc((size_t)n * 4), sr = 0.0f, sv = 0.0f, sin = 1.0f;
    int32_t *acc = xmalloc((size_t)n * 4);
    for (size_t i = 0; i < (size_t)n * k; i++)
        w[i] = (int8_t)b158_test_randint(-1, 1);
    memset(qi, 0, (size_t)qbytes);
    for (int i = 0; i < k; i++)
        qi[i] = (int8_t)b158_test_randint(-127, 127);
    for (int i = 0; i < n; i++)
        ws[i] = 1.0f;
    fill_uniform(nw, (size_t)width, -2.0f, 2.0f);
    b158_ref_ternary_matmul(w, ws, n, k, qi, &sin, 1, acc, NULL);
    b158_tmat dw = {0};
    b158_buf dh = {0}; /* the dense FP16 copy */
    if (dense) {
        uint16_t *h = xmalloc((size_t)n * k * 2);
        for (size_t i = 0; i < (size_t)n * k; i++)
            h[i] = b158_f32_to_f16((float)w[i]);
        dh = dev_upload(rt, h, (size_t)n * k * 2);
        free(h);
    } else {
        check_ok(b158_tmat_upload(rt, w, ws, n, k, &dw));
    }
    b158_buf dnw = dev_upload(rt, nw, (size_t)width * 4), dsin = dev_upload(rt, &sin, 4);
    b158_buf dy = dev_poisoned(rt, (size_t)n * 4), dsout = dev_poisoned(rt, 4);
    b158_buf dcnt = dev_upload(rt, &(int32_t){0}, 4);
    const int reps = glu ? 2 : 3;
    for (int rep = 0; rep < reps; rep++) {
        /* the input again (the tail overwrote it): what a tail that did not run leaves */
        b158_buf dq = dev_upload(rt, qi, (size_t)qbytes);
        const b158_gemv_norm tail = {.norm_w = norm ? &dnw : NULL,
                                     .q = &dq,
                                     .s = &dsout,
                                     .counter = &dcnt,
                                     .k_pad = kpo,
                                     .eps = 1e-5f,
                                     .glu = glu,
                                     .act = act};
        const int accumulate = !glu && rep > 0; /* GLU leaves h in the gate half */
        if (dense)
            check_ok(b158_op_f16_gemv_q8(rt, &dh, n, k, &dq, &dsin, &dy, accumulate, &tail));
        else
            check_ok(b158_op_ternary_gemv(rt, &dw, &dq, &dsin, &dy, accumulate, &tail));
        dev_read(rt, &dy, y, (size_t)n * 4);
        dev_read(rt, &dq, q, (size_t)kpo);
        dev_read(rt, &dsout, &sv, 4);
        const float times = glu ? 1.0f : (float)(rep + 1);
        int mism = 0;
        for (int i = glu ? width : 0; i < n; i++)
            mism += y[i] != (float)acc[i] * times;
        for (int i = 0; i < n; i++)
            gy[i] = (float)acc[i] * times;
        if (glu) {
            b158_ref_glu(gy, gy + width, xn, width, act);
            if (norm)
                b158_ref_rmsnorm(xn, nw, xn, width, 1, 1e-5f);
        } else {
            b158_ref_rmsnorm(gy, nw, xn, width, 1, 1e-5f);
        }
        b158_ref_quantize(xn, width, 1, qr, &sr);
        int off = 0, far = 0, bad_tail = 0;
        const double serr = q8_diff(q, &sv, qr, &sr, width, kpo, 1, &off, &far, &bad_tail);
        if (mism || far || bad_tail || serr > 1e-5)
            fprintf(stderr,
                    "\n%s gemv tail glu %d norm %d act %d, %dx%d rep %d [%s]: %d sums differ, %d "
                    "off, %d far, %d bad tail, scale err %g\n",
                    dense ? "f16" : "ternary", glu, norm, (int)act, n, k, rep, vname(rt), mism, off,
                    far, bad_tail, serr);
        CU_ASSERT_EQUAL(mism, 0);
        CU_ASSERT(serr <= 1e-5);
        CU_ASSERT_EQUAL(far, 0);
        CU_ASSERT_EQUAL(bad_tail, 0);
        CU_ASSERT(off * 100 <= width);
        b158_buf_free(rt, &dq);
    }
    int32_t cnt = -1;
    dev_read(rt, &dcnt, &cnt, 4);
    CU_ASSERT_EQUAL(cnt, 0);
    if (dense)
        b158_buf_free(rt, &dh);
    else
        b158_tmat_free(rt, &dw);
    b158_buf_free(rt, &dnw), b158_buf_free(rt, &dsin), b158_buf_free(rt, &dy);
    b158_buf_free(rt, &dsout), b158_buf_free(rt, &dcnt);
    free(w), free(qi), free(q), free(qr), free(ws), free(nw), free(y), free(xn), free(gy);
    free(acc);
}

static void test_gemv_norm(void)
{
    FOR_EACH_ROW_RUNTIME(rt)
    {
        /* the groups meet at the tail's counter behind a device-scope fence wherever one builds:
         * programs of OpenCL C 3.0 (Intel's runtime) have one of their own (a probe that stops
         * building would leave mem_fence, which CPU devices forgive and GPUs need not) */
        if (b158_runtime_variant(rt) == B158_VARIANT_GPU && strstr(rt->options, "CL3.0") &&
            !getenv("B158_PORTABLE") && !getenv("B158_DEVICE_FENCE"))
            CU_ASSERT_NOT_EQUAL(rt->tune.device_fence, 0);
        const int vnni = rt->tune.x86_vnni, bw = rt->tune.x86_avx512bw;
        for (int pass = 0; cpu_isa_pass(rt, pass, 0, bw); pass++) {
            /* the GPU variant with one of its counts of work-items a GEMV row, at random */
            gemv_lanes_pass(rt, b158_test_randint(0, 3));
            check_gemv_tail(rt, 0, 1, B158_ACT_SILU, 0);
            check_gemv_tail(rt, 1, 1, B158_ACT_SILU, 0);
            check_gemv_tail(rt, 1, 0, B158_ACT_RELU2, 0);
            check_gemv_tail(rt, 1, b158_test_randint(0, 1),
                            b158_test_randint(0, 1) ? B158_ACT_RELU2 : B158_ACT_SILU, 0);
        }
        cpu_isa_pass(rt, 0, vnni, bw);
        gemv_lanes_pass(rt, 0);
        /* the FP16 baseline's GEMV, its tails the same functions */
        check_gemv_tail(rt, 0, 1, B158_ACT_SILU, 1);
        check_gemv_tail(rt, 1, 1, B158_ACT_SILU, 1);
        check_gemv_tail(rt, 1, 0, B158_ACT_RELU2, 1);
    }
}

/* ---- rope ------------------------------------------------------------------------------- */

static void test_rope(void)
{
    FOR_EACH_VARIANT(rt)
    {
        for (int mode = 0; mode < 2; mode++) {
            for (int t = 0; t < 3; t++) {
                const int hd = 2 * b158_test_randint(2, 64), nh = b158_test_randint(1, 7);
                const int n_rot = t == 0 ? hd : 2 * b158_test_randint(1, hd / 2);
                const int m = b158_test_randint(1, 9), stride = nh * hd + b158_test_randint(0, 5);
                /* each row at its own position, as in a batch of several sequences */
                int32_t *tok = xmalloc((size_t)m * 8);
                for (int r = 0; r < m; r++) {
                    tok[2 * r] = t == 2 ? b158_test_randint(1000, 4000) : b158_test_randint(0, 9);
                    tok[2 * r + 1] = b158_test_randint(0, 3) * 4096;
                }
                const float base = t == 1 ? 500000.0f : 10000.0f;
                const size_t cnt = (size_t)m * stride;
                float *x = xmalloc(cnt * 4), *xr = xmalloc(cnt * 4), *y = xmalloc(cnt * 4);
                float *inv = xmalloc((size_t)n_rot / 2 * 4);
                fill_uniform(x, cnt, -4.0f, 4.0f);
                memcpy(xr, x, cnt * 4);
                b158_rope_inv_freq(inv, n_rot, base);
                b158_buf dx = dev_upload(rt, x, cnt * 4);
                b158_buf dinv = dev_upload(rt, inv, (size_t)n_rot / 2 * 4);
                b158_buf dtok = dev_upload(rt, tok, (size_t)m * 8);
                check_ok(b158_op_rope(rt, &dx, &dinv, stride, nh, hd, n_rot, m, &dtok, mode));
                dev_read(rt, &dx, y, cnt * 4);
                b158_ref_rope(xr, inv, stride, nh, hd, n_rot, m, tok, mode);
                /* same angles on both sides: only sin/cos differ (OpenCL allows 4 ulp) */
                expect_nerr(mode ? "rope interleaved" : "rope neox", rt, y, xr, cnt, 2e-6);
                b158_buf_free(rt, &dx);
                b158_buf_free(rt, &dinv);
                b158_buf_free(rt, &dtok);
                free(x), free(xr), free(y), free(inv), free(tok);
            }
        }
        /* pairing, by hand: one head of 4 at position 1; inv_freq[0] = 1 rotates by 1 rad the
         * pair (0, 2) under NEOX and (0, 1) interleaved; position 0 is the identity */
        float h[4] = {1.0f, 2.0f, 3.0f, 4.0f}, out[4], inv[2];
        b158_rope_inv_freq(inv, 4, 10000.0f);
        CU_ASSERT(inv[0] == 1.0f && inv[1] == 0.01f);
        b158_buf dinv = dev_upload(rt, inv, sizeof inv);
        const int32_t at0[2] = {0, 0}, at1[2] = {1, 0};
        b158_buf d0 = dev_upload(rt, at0, sizeof at0), d1 = dev_upload(rt, at1, sizeof at1);
        for (int mode = 0; mode < 2; mode++) {
            b158_buf dh = dev_upload(rt, h, sizeof h);
            check_ok(b158_op_rope(rt, &dh, &dinv, 4, 1, 4, 4, 1, &d0, mode));
            dev_read(rt, &dh, out, sizeof out);
            CU_ASSERT_EQUAL(memcmp(out, h, sizeof h), 0);
            check_ok(b158_op_rope(rt, &dh, &dinv, 4, 1, 4, 4, 1, &d1, mode));
            dev_read(rt, &dh, out, sizeof out);
            const float partner = mode == B158_ROPE_NEOX ? h[2] : h[1];
            CU_ASSERT(fabsf(out[0] - (h[0] * cosf(1.0f) - partner * sinf(1.0f))) < 1e-5f);
            b158_buf_free(rt, &dh);
        }
        b158_buf_free(rt, &dinv);
        b158_buf_free(rt, &d0);
        b158_buf_free(rt, &d1);
    }
}

/* q and k rotated and k, v stored in one launch: the same bytes as the three parts one after
 * another (q heads and kv heads on the right slots, strides and cache rows kept apart), and
 * the references' values. */
static void test_rope_kv_store(void)
{
    FOR_EACH_VARIANT(rt)
    {
        const int hd = 2 * b158_test_randint(4, 40), nkv = b158_test_randint(1, 3);
        const int nh = nkv * b158_test_randint(1, 4), m = b158_test_randint(1, 9);
        const int n_rot = b158_test_randint(0, 1) ? hd : 2 * b158_test_randint(1, hd / 2);
        const int qs = nh * hd + b158_test_randint(0, 7), kvs = nkv * hd + b158_test_randint(0, 7);
        const int kvd = nkv * hd, n_ctx = 40, rows = 3 * n_ctx;
        const size_t layer = (size_t)rows * kvd, off = layer; /* layer 1 of 2 */
        const int mode = b158_test_randint(0, 1);
        /* positions distinct (7 is prime to n_ctx): two tokens on one cache row would race */
        int32_t *tok = xmalloc((size_t)m * 8);
        const int base = b158_test_randint(0, n_ctx - 1);
        for (int r = 0; r < m; r++)
            tok[2 * r] = (base + 7 * r) % n_ctx, tok[2 * r + 1] = n_ctx * (r % 3);
        float *q = xmalloc((size_t)m * qs * 4), *k = xmalloc((size_t)m * kvs * 4);
        float *v = xmalloc((size_t)m * kvs * 4), *inv = xmalloc((size_t)hd * 4);
        fill_uniform(q, (size_t)m * qs, -3.0f, 3.0f);
        fill_uniform(k, (size_t)m * kvs, -3.0f, 3.0f);
        fill_uniform(v, (size_t)m * kvs, -3.0f, 3.0f);
        b158_rope_inv_freq(inv, n_rot > 0 ? n_rot : 2, 10000.0f);
        b158_buf dtok = dev_upload(rt, tok, (size_t)m * 8), dinv = dev_upload(rt, inv, hd * 4);
        b158_buf q1 = dev_upload(rt, q, (size_t)m * qs * 4),
                 k1 = dev_upload(rt, k, (size_t)m * kvs * 4);
        b158_buf q2 = dev_upload(rt, q, (size_t)m * qs * 4),
                 k2 = dev_upload(rt, k, (size_t)m * kvs * 4);
        b158_buf dv = dev_upload(rt, v, (size_t)m * kvs * 4);
        b158_buf kc1 = dev_poisoned(rt, layer * 4), vc1 = dev_poisoned(rt, layer * 4);
        b158_buf kc2 = dev_poisoned(rt, layer * 4), vc2 = dev_poisoned(rt, layer * 4);
        const b158_rope_kv a = {&q1,
                                &k1,
                                &dv,
                                &dinv,
                                &kc1,
                                &vc1,
                                qs,
                                kvs,
                                nh,
                                nkv,
                                hd,
                                n_rot,
                                (enum b158_rope_mode)mode,
                                0,
                                0};
        check_ok(b158_op_rope_kv_store(rt, &a, &dtok, m, off, rows));
        if (n_rot > 0) {
            check_ok(b158_op_rope(rt, &q2, &dinv, qs, nh, hd, n_rot, m, &dtok, mode));
            check_ok(b158_op_rope(rt, &k2, &dinv, kvs, nkv, hd, n_rot, m, &dtok, mode));
        }
        check_ok(b158_op_kv_store(rt, &k2, &dv, &kc2, &vc2, kvd, kvs, m, &dtok, off, rows));
        float *a1 = xmalloc(layer * 4 * 2), *a2 = xmalloc(layer * 4 * 2);
        dev_read(rt, &q1, a1, (size_t)m * qs * 4), dev_read(rt, &q2, a2, (size_t)m * qs * 4);
        CU_ASSERT_EQUAL(memcmp(a1, a2, (size_t)m * qs * 4), 0);
        dev_read(rt, &kc1, a1, layer * 4), dev_read(rt, &kc2, a2, layer * 4);
        CU_ASSERT_EQUAL(memcmp(a1, a2, layer * 4), 0);
        dev_read(rt, &vc1, a1, layer * 4), dev_read(rt, &vc2, a2, layer * 4);
        CU_ASSERT_EQUAL(memcmp(a1, a2, layer * 4), 0);
        /* against the references: q rotated, and v stored exactly (k: FP16 of a rotation) */
        dev_read(rt, &q1, a1, (size_t)m * qs * 4);
        if (n_rot > 0)
            b158_ref_rope(q, inv, qs, nh, hd, n_rot, m, tok, (enum b158_rope_mode)mode);
        expect_nerr("rope_kv_store q", rt, a1, q, (size_t)m * qs, 2e-6);
        uint16_t *kr = xmalloc(layer * 2), *vr = xmalloc(layer * 2), *vc = xmalloc(layer * 4);
        for (size_t i = 0; i < layer; i++)
            kr[i] = vr[i] = 0x7f7f;
        b158_ref_kv_store(k, v, kr, vr, kvd, kvs, m, tok, rows);
        dev_read(rt, &vc1, vc, layer * 4);
        CU_ASSERT_EQUAL(memcmp(vc + layer, vr, layer * 2), 0);
        b158_buf bufs[] = {dtok, dinv, q1, k1, q2, k2, dv, kc1, vc1, kc2, vc2};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b158_buf_free(rt, &bufs[i]);
        free(tok), free(q), free(k), free(v), free(inv), free(a1), free(a2);
        free(kr), free(vr), free(vc);
    }
}

/* ---- attention and KV store ------------------------------------------------------------- */

/* A split of the attention's keys for m tokens of nh heads of dim hd: splits (1 = none) with
 * poisoned partial results and zeroed counters; att_split_free checks the counters are back at
 * zero. */
typedef struct {
    b158_att_split a;
    b158_buf part, counter;
    int n;
} att_split;

static att_split *att_split_new(b158_runtime *rt, int splits, int nh, int hd, int m)
{
    att_split *sp = xmalloc(sizeof *sp);
    sp->n = m * nh;
    int32_t *zero = calloc((size_t)sp->n, 4);
    sp->part = dev_poisoned(rt, (size_t)sp->n * splits * (hd + 2) * 4);
    sp->counter = dev_upload(rt, zero, (size_t)sp->n * 4);
    sp->a = (b158_att_split){splits, &sp->part, &sp->counter};
    free(zero);
    return sp;
}

static void att_split_free(b158_runtime *rt, att_split *sp)
{
    int32_t *cnt = xmalloc((size_t)sp->n * 4);
    dev_read(rt, &sp->counter, cnt, (size_t)sp->n * 4);
    int nonzero = 0;
    for (int i = 0; i < sp->n; i++)
        nonzero += cnt[i] != 0;
    if (nonzero)
        fprintf(stderr, "\nattention split over %d: %d head counters not reset\n", sp->a.splits,
                nonzero);
    CU_ASSERT_EQUAL(nonzero, 0);
    b158_buf_free(rt, &sp->part), b158_buf_free(rt, &sp->counter);
    free(cnt), free(sp);
}

/* The attention again with its sub-norm tail, twice (the per-token counters must come back
 * to zero): the same out rows o as without it, and in q / s their rmsnorm_quantize. */
static void check_attention_tail(b158_runtime *rt, const b158_buf *dq, const b158_buf *dkc,
                                 const b158_buf *dvc, const b158_buf *dtok, const float *o, int nh,
                                 int nkv, int hd, int m, size_t off, int rows, float scale,
                                 const b158_att_split *split)
{
    const int qdim = nh * hd, kpo = b158_ternary_k_pad(qdim);
    float *nw = xmalloc((size_t)qdim * 4), *o2 = xmalloc((size_t)m * qdim * 4);
    float *xn = xmalloc((size_t)m * qdim * 4), *sv = xmalloc((size_t)m * 4);
    float *sr = xmalloc((size_t)m * 4);
    int8_t *q = xmalloc((size_t)m * kpo), *qr = xmalloc((size_t)m * qdim);
    int32_t *cnt = calloc((size_t)m, 4);
    fill_uniform(nw, (size_t)qdim, -2.0f, 2.0f);
    b158_buf dnw = dev_upload(rt, nw, (size_t)qdim * 4), dcnt = dev_upload(rt, cnt, (size_t)m * 4);
    b158_buf dq8 = dev_poisoned(rt, (size_t)m * kpo), ds = dev_poisoned(rt, (size_t)m * 4);
    b158_buf dout = dev_poisoned(rt, (size_t)m * qdim * 4);
    const b158_gemv_norm sub = {
        .norm_w = &dnw, .q = &dq8, .s = &ds, .counter = &dcnt, .k_pad = kpo, .eps = 1e-5f};
    for (int rep = 0; rep < 2; rep++)
        check_ok(b158_op_attention(rt, dq, dkc, dvc, &dout, nh, nkv, hd, qdim, m, dtok, off, rows,
                                   scale, NULL, &sub, split));
    dev_read(rt, &dout, o2, (size_t)m * qdim * 4);
    dev_read(rt, &dq8, q, (size_t)m * kpo);
    dev_read(rt, &ds, sv, (size_t)m * 4);
    dev_read(rt, &dcnt, cnt, (size_t)m * 4);
    CU_ASSERT_EQUAL(memcmp(o, o2, (size_t)m * qdim * 4), 0);
    b158_ref_rmsnorm(o, nw, xn, qdim, m, 1e-5f);
    b158_ref_quantize(xn, qdim, m, qr, sr);
    int off1 = 0, far = 0, bad_tail = 0, counters = 0;
    const double serr = q8_diff(q, sv, qr, sr, qdim, kpo, m, &off1, &far, &bad_tail);
    for (int r = 0; r < m; r++)
        counters += cnt[r] != 0;
    if (far || bad_tail || serr > 1e-5 || counters)
        fprintf(stderr,
                "\nattention tail h%d d%d m %d [%s]: %d off, %d far, %d bad tail, "
                "scale err %g, %d counters not reset\n",
                nh, hd, m, vname(rt), off1, far, bad_tail, serr, counters);
    CU_ASSERT(serr <= 1e-5);
    CU_ASSERT_EQUAL(far, 0);
    CU_ASSERT_EQUAL(bad_tail, 0);
    CU_ASSERT(off1 * 100 <= m * qdim);
    CU_ASSERT_EQUAL(counters, 0);
    b158_buf_free(rt, &dnw), b158_buf_free(rt, &dcnt), b158_buf_free(rt, &dq8);
    b158_buf_free(rt, &ds), b158_buf_free(rt, &dout);
    free(nw), free(o2), free(xn), free(sv), free(sr), free(q), free(qr), free(cnt);
}

/* n_seq sequences of n_ctx rows each in layer 1 of a two-layer cache; every sequence gets a
 * history of at most hist rows in a first kv_store, then m batch tokens of random sequences
 * (in order) are stored and attend, each to its own sequence only. */
static void check_attention(b158_runtime *rt, int nh, int nkv, int hd, int n_seq, int hist, int m)
{
    const int kv_dim = nkv * hd, qdim = nh * hd, n_ctx = hist + m + b158_test_randint(0, 5);
    const int rows = n_seq * n_ctx;
    const size_t layer = (size_t)rows * kv_dim, off = layer;
    int *pos = xmalloc((size_t)n_seq * sizeof *pos);
    int32_t *htok = xmalloc((size_t)rows * 8), *tok = xmalloc((size_t)m * 8);
    int n_hist = 0;
    for (int q = 0; q < n_seq; q++) {
        pos[q] = b158_test_randint(0, hist);
        for (int p = 0; p < pos[q]; p++, n_hist++)
            htok[2 * n_hist] = p, htok[2 * n_hist + 1] = q * n_ctx;
    }
    for (int r = 0; r < m; r++) {
        const int q = b158_test_randint(0, n_seq - 1);
        tok[2 * r] = pos[q]++, tok[2 * r + 1] = q * n_ctx;
    }
    float *q = xmalloc((size_t)m * qdim * 4), *kv = xmalloc((size_t)(n_hist + m) * kv_dim * 4);
    float *vv = xmalloc((size_t)(n_hist + m) * kv_dim * 4);
    float *o = xmalloc((size_t)m * qdim * 4), *orf = xmalloc((size_t)m * qdim * 4);
    uint16_t *kc = xmalloc(layer * 2 * 2), *vc = xmalloc(layer * 2 * 2);
    uint16_t *kr = xmalloc(layer * 2), *vr = xmalloc(layer * 2);
    for (size_t i = 0; i < layer; i++)
        kr[i] = vr[i] = 0x7f7f; /* the device cache is poisoned with the same bytes */
    fill_uniform(q, (size_t)m * qdim, -2.0f, 2.0f);
    fill_uniform(kv, (size_t)(n_hist + m) * kv_dim, -2.0f, 2.0f);
    fill_uniform(vv, (size_t)(n_hist + m) * kv_dim, -3.0f, 3.0f);

    b158_buf dkc = dev_poisoned(rt, layer * 2 * 2), dvc = dev_poisoned(rt, layer * 2 * 2);
    /* history in one call, the batch in a second, as prefill then decode would */
    if (n_hist > 0) {
        b158_buf dk = dev_upload(rt, kv, (size_t)n_hist * kv_dim * 4);
        b158_buf dv = dev_upload(rt, vv, (size_t)n_hist * kv_dim * 4);
        b158_buf dt = dev_upload(rt, htok, (size_t)n_hist * 8);
        check_ok(
            b158_op_kv_store(rt, &dk, &dv, &dkc, &dvc, kv_dim, kv_dim, n_hist, &dt, off, rows));
        b158_ref_kv_store(kv, vv, kr, vr, kv_dim, kv_dim, n_hist, htok, rows);
        b158_buf_free(rt, &dk), b158_buf_free(rt, &dv), b158_buf_free(rt, &dt);
    }
    const float *knew = kv + (size_t)n_hist * kv_dim, *vnew = vv + (size_t)n_hist * kv_dim;
    b158_buf dk2 = dev_upload(rt, knew, (size_t)m * kv_dim * 4);
    b158_buf dv2 = dev_upload(rt, vnew, (size_t)m * kv_dim * 4);
    b158_buf dtok = dev_upload(rt, tok, (size_t)m * 8);
    check_ok(b158_op_kv_store(rt, &dk2, &dv2, &dkc, &dvc, kv_dim, kv_dim, m, &dtok, off, rows));
    b158_ref_kv_store(knew, vnew, kr, vr, kv_dim, kv_dim, m, tok, rows);
    dev_read(rt, &dkc, kc, layer * 2 * 2);
    dev_read(rt, &dvc, vc, layer * 2 * 2);
    /* every row of layer 1 as the reference has it (unused rows still poisoned), layer 0
     * untouched */
    CU_ASSERT_EQUAL(memcmp(kc + off, kr, layer * 2), 0);
    CU_ASSERT_EQUAL(memcmp(vc + off, vr, layer * 2), 0);
    int untouched = 1;
    for (size_t i = 0; i < off; i++)
        untouched &= kc[i] == 0x7f7f && vc[i] == 0x7f7f;
    CU_ASSERT(untouched);

    b158_buf dq = dev_upload(rt, q, (size_t)m * qdim * 4),
             dout = dev_poisoned(rt, (size_t)m * qdim * 4);
    const float scale = 1.0f / sqrtf((float)hd);
    b158_ref_attention(q, kr, vr, orf, nh, nkv, hd, qdim, m, tok, rows, scale);
    /* whole heads, then on the GPU variant the keys split among 2 to 9 groups per head (splits
     * beyond the 32-key pieces of a short history stay empty) */
    const int gpu = b158_runtime_variant(rt) == B158_VARIANT_GPU;
    for (int v = 0; v < 1 + gpu; v++) {
        att_split *sp = att_split_new(rt, v ? b158_test_randint(2, 9) : 1, nh, hd, m);
        check_ok(b158_op_attention(rt, &dq, &dkc, &dvc, &dout, nh, nkv, hd, qdim, m, &dtok, off,
                                   rows, scale, NULL, NULL, v ? &sp->a : NULL));
        dev_read(rt, &dout, o, (size_t)m * qdim * 4);
        char what[112];
        snprintf(what, sizeof what, "attention h%d/%d d%d %d seqs hist %d m %d, %d splits", nh, nkv,
                 hd, n_seq, hist, m, sp->a.splits);
        expect_nerr(what, rt, o, orf, (size_t)m * qdim, 2e-5);
        check_attention_tail(rt, &dq, &dkc, &dvc, &dtok, o, nh, nkv, hd, m, off, rows, scale,
                             v ? &sp->a : NULL);
        att_split_free(rt, sp);
    }
    b158_buf_free(rt, &dk2), b158_buf_free(rt, &dv2), b158_buf_free(rt, &dtok);
    b158_buf_free(rt, &dkc), b158_buf_free(rt, &dvc);
    b158_buf_free(rt, &dq), b158_buf_free(rt, &dout);
    free(q), free(kv), free(vv), free(o), free(orf), free(kc), free(vc), free(kr), free(vr);
    free(pos), free(htok), free(tok);
}

/* RoPE + KV store inside the attention (one token of each of n_seq sequences, with histories
 * in the cache) against rope_kv_store then the attention: the same output and the same cache,
 * bit for bit. */
static void check_attention_rope(b158_runtime *rt, int nh, int nkv, int hd, int n_rot, int mode,
                                 int n_seq, int hist)
{
    const int kv_dim = nkv * hd, qdim = nh * hd, row = qdim + 2 * kv_dim, m = n_seq;
    const int n_ctx = hist + 1 + b158_test_randint(0, 4), rows = n_seq * n_ctx;
    const size_t layer = (size_t)rows * kv_dim, off = layer, cache = 2 * layer * 2;
    int32_t *htok = xmalloc((size_t)rows * 8), *tok = xmalloc((size_t)m * 8);
    int n_hist = 0;
    for (int q = 0; q < n_seq; q++) {
        const int len = b158_test_randint(0, hist);
        for (int p = 0; p < len; p++, n_hist++)
            htok[2 * n_hist] = p, htok[2 * n_hist + 1] = q * n_ctx;
        /* the batch takes the sequences in reverse order */
        tok[2 * (n_seq - 1 - q)] = len, tok[2 * (n_seq - 1 - q) + 1] = q * n_ctx;
    }
    float *qkv = xmalloc((size_t)m * row * 4), *hkv = xmalloc((size_t)(n_hist + 1) * kv_dim * 4);
    float *inv = xmalloc((size_t)(n_rot / 2 + 1) * 4), *o1 = xmalloc((size_t)m * qdim * 4);
    float *o2 = xmalloc((size_t)m * qdim * 4);
    uint16_t *c1 = xmalloc(cache), *c2 = xmalloc(cache);
    fill_uniform(qkv, (size_t)m * row, -2.0f, 2.0f);
    fill_uniform(hkv, (size_t)(n_hist + 1) * kv_dim, -2.0f, 2.0f);
    b158_rope_inv_freq(inv, n_rot > 0 ? n_rot : 2, 10000.0f);
    b158_buf dinv = dev_upload(rt, inv, (size_t)(n_rot / 2 + 1) * 4);
    b158_buf dtok = dev_upload(rt, tok, (size_t)m * 8);
    b158_buf dkc[2], dvc[2], dout[2], dqkv[2];
    for (int v = 0; v < 2; v++) {
        dkc[v] = dev_poisoned(rt, cache), dvc[v] = dev_poisoned(rt, cache);
        dout[v] = dev_poisoned(rt, (size_t)m * qdim * 4);
        dqkv[v] = dev_upload(rt, qkv, (size_t)m * row * 4);
        if (n_hist > 0) {
            b158_buf dh = dev_upload(rt, hkv, (size_t)n_hist * kv_dim * 4);
            b158_buf dt = dev_upload(rt, htok, (size_t)n_hist * 8);
            check_ok(b158_op_kv_store(rt, &dh, &dh, &dkc[v], &dvc[v], kv_dim, kv_dim, n_hist, &dt,
                                      off, rows));
            b158_buf_free(rt, &dh), b158_buf_free(rt, &dt);
        }
    }
    const float scale = 1.0f / sqrtf((float)hd);
    const b158_rope_kv a = {.q = &dqkv[0],
                            .k = &dqkv[0],
                            .v = &dqkv[0],
                            .inv_freq = &dinv,
                            .k_cache = &dkc[0],
                            .v_cache = &dvc[0],
                            .q_stride = row,
                            .kv_stride = row,
                            .n_head = nh,
                            .n_head_kv = nkv,
                            .head_dim = hd,
                            .n_rot = n_rot,
                            .mode = (enum b158_rope_mode)mode,
                            .k_off = qdim,
                            .v_off = qdim + kv_dim};
    /* both with the same split of the keys on the GPU variant (1 to 7 groups a head) */
    const int splits = b158_runtime_variant(rt) == B158_VARIANT_GPU ? b158_test_randint(1, 7) : 1;
    att_split *sp = att_split_new(rt, splits, nh, hd, m);
    check_ok(b158_op_rope_kv_store(rt, &a, &dtok, m, off, rows));
    check_ok(b158_op_attention(rt, &dqkv[0], &dkc[0], &dvc[0], &dout[0], nh, nkv, hd, row, m, &dtok,
                               off, rows, scale, NULL, NULL, &sp->a));
    const b158_att_rope r = {&dinv, n_rot, (enum b158_rope_mode)mode, qdim, qdim + kv_dim};
    check_ok(b158_op_attention(rt, &dqkv[1], &dkc[1], &dvc[1], &dout[1], nh, nkv, hd, row, m, &dtok,
                               off, rows, scale, &r, NULL, &sp->a));
    att_split_free(rt, sp);
    dev_read(rt, &dout[0], o1, (size_t)m * qdim * 4);
    dev_read(rt, &dout[1], o2, (size_t)m * qdim * 4);
    const int same_out = memcmp(o1, o2, (size_t)m * qdim * 4) == 0;
    dev_read(rt, &dkc[0], c1, cache);
    dev_read(rt, &dkc[1], c2, cache);
    int same_cache = memcmp(c1, c2, cache) == 0;
    dev_read(rt, &dvc[0], c1, cache);
    dev_read(rt, &dvc[1], c2, cache);
    same_cache &= memcmp(c1, c2, cache) == 0;
    if (!same_out || !same_cache)
        fprintf(stderr,
                "\nattention with rope h%d/%d d%d rot %d mode %d, %d seqs, %d splits [%s]: %s%s\n",
                nh, nkv, hd, n_rot, mode, n_seq, splits, vname(rt),
                same_out ? "" : "outputs differ ", same_cache ? "" : "caches differ");
    CU_ASSERT(same_out);
    CU_ASSERT(same_cache);
    for (int v = 0; v < 2; v++) {
        b158_buf_free(rt, &dkc[v]), b158_buf_free(rt, &dvc[v]);
        b158_buf_free(rt, &dout[v]), b158_buf_free(rt, &dqkv[v]);
    }
    b158_buf_free(rt, &dinv), b158_buf_free(rt, &dtok);
    free(htok), free(tok), free(qkv), free(hkv), free(inv), free(o1), free(o2), free(c1), free(c2);
}

static void test_attention(void)
{
    FOR_EACH_VARIANT(rt)
    {
        check_attention(rt, 1, 1, 2, 1, 0, 1);
        check_attention(rt, 4, 4, 16, 1, b158_test_randint(0, 3), b158_test_randint(1, 5));
        check_attention(rt, 6, 2, 40, 1, b158_test_randint(50, 150), 1); /* decode, GQA 3:1 */
        check_attention(rt, 6, 3, 24, 1, 0, b158_test_randint(60, 90));  /* prefill */
        check_attention(rt, 4, 1, 128, 1, b158_test_randint(5, 40), 7);  /* 2B-4T head dim */
        check_attention(rt, 2, 1, 200, 1, b158_test_randint(0, 70), 3);  /* head dim > 128 */
        /* decode at the 2B-4T shape with a long history; eight q heads per kv head */
        check_attention(rt, 20, 5, 128, 1, b158_test_randint(300, 700), 1);
        check_attention(rt, 8, 1, 72, 1, b158_test_randint(100, 300), 2);
        /* several sequences: decode of a few, and prefill mixed with decode */
        check_attention(rt, 4, 2, 32, b158_test_randint(2, 5), b158_test_randint(10, 60), 5);
        check_attention(rt, 3, 3, 20, 3, b158_test_randint(0, 20), b158_test_randint(20, 40));
        /* RoPE and the KV store inside the attention: NEOX and interleaved, partial rotation,
         * GQA, head dims not a multiple of 8, several sequences, empty histories */
        check_attention_rope(rt, 20, 5, 128, 128, 0, 1, b158_test_randint(0, 300)); /* 2B-4T */
        check_attention_rope(rt, 6, 2, 40, 24, 1, b158_test_randint(2, 6), 30);
        check_attention_rope(rt, 4, 4, 34, 34, 0, 3, b158_test_randint(0, 3));
        check_attention_rope(rt, 3, 1, 18, 0, 0, 2, 20);
        check_attention_rope(rt, 8, 2, 64, 32, 1, 5, b158_test_randint(1, 80));
        /* a head dimension past the kernel's limit is refused, not overrun */
        b158_buf b, t;
        CU_ASSERT_EQUAL_FATAL(b158_buf_alloc(rt, B158_MEM_SCRATCH, 1 << 20, &b), B158_OK);
        const int32_t far[2] = {1 << 14, 0};
        t = dev_upload(rt, far, sizeof far);
        CU_ASSERT_EQUAL(b158_op_attention(rt, &b, &b, &b, &b, 1, 1, 512, 512, 1, &t, 0, 1, 1.0f,
                                          NULL, NULL, NULL),
                        B158_ERR_UNSUPPORTED);
        /* splits on the CPU variant, or whose results do not fit, are refused */
        const b158_att_split many = {3, &b, &b}, cramped = {3, &t, &b};
        if (b158_runtime_variant(rt) != B158_VARIANT_GPU)
            CU_ASSERT_EQUAL(b158_op_attention(rt, &b, &b, &b, &b, 4, 1, 64, 256, 1, &t, 0, 1, 1.0f,
                                              NULL, NULL, &many),
                            B158_ERR_INVALID_ARG);
        CU_ASSERT_EQUAL(b158_op_attention(rt, &b, &b, &b, &b, 4, 1, 64, 256, 1, &t, 0, 1, 1.0f,
                                          NULL, NULL, &cramped),
                        B158_ERR_INVALID_ARG);
        /* a cache region past the buffer is refused */
        CU_ASSERT_EQUAL(b158_op_kv_store(rt, &b, &b, &b, &b, 64, 64, 1, &t, 0, 1 << 14),
                        B158_ERR_INVALID_ARG);
        /* a position past the cache writes nothing and reads only the cache */
        float *kv = xmalloc(64 * 4), *o = xmalloc(64 * 4);
        fill_uniform(kv, 64, -1.0f, 1.0f);
        b158_buf dk = dev_upload(rt, kv, 64 * 4), dc = dev_poisoned(rt, 8 * 64 * 2);
        b158_buf dv = dev_poisoned(rt, 8 * 64 * 2), dout = dev_poisoned(rt, 64 * 4);
        check_ok(b158_op_kv_store(rt, &dk, &dk, &dc, &dv, 64, 64, 1, &t, 0, 8));
        uint16_t c[8 * 64];
        dev_read(rt, &dc, c, sizeof c);
        int poisoned = 1;
        for (size_t i = 0; i < 8 * 64; i++)
            poisoned &= c[i] == 0x7f7f;
        CU_ASSERT(poisoned);
        check_ok(b158_op_attention(rt, &dk, &dc, &dv, &dout, 1, 1, 64, 64, 1, &t, 0, 8, 1.0f, NULL,
                                   NULL, NULL));
        b158_buf_free(rt, &dk), b158_buf_free(rt, &dc), b158_buf_free(rt, &dv);
        b158_buf_free(rt, &dout);
        free(kv), free(o);
        b158_buf_free(rt, &b);
        b158_buf_free(rt, &t);
    }
}

/* ---- elementwise, embedding, FP16 matvec ------------------------------------------------ */

/* act(gate) * up, optionally sub-normed, quantized in one launch, against ref_glu (then
 * ref_rmsnorm) then ref_quantize: the device's exp may differ from the host's in the last bits,
 * which can move a value across a rounding boundary of the int8 grid (one step, rarely). Gate
 * and up in two buffers, and as one buffer of [gate | up] rows (the fused FFN matrix). */
static void test_glu(void)
{
    FOR_EACH_ROW_RUNTIME(rt)
    {
        for (int t = 0; t < 8; t++) {
            const int act = t & 1, norm = (t >> 1) & 1, fused = (t >> 2) & 1;
            const int n = b158_test_randint(1, 3000), kp = b158_ternary_k_pad(n);
            const int m = b158_test_randint(1, 5), stride = fused ? 2 * n : n;
            float *gu = xmalloc((size_t)m * 2 * n * 4), *w = xmalloc((size_t)n * 4);
            float *g = xmalloc((size_t)m * n * 4), *u = xmalloc((size_t)m * n * 4);
            float *h = xmalloc((size_t)m * n * 4), *s = xmalloc((size_t)m * 4);
            float *sr = xmalloc((size_t)m * 4);
            int8_t *q = xmalloc((size_t)m * kp), *qr = xmalloc((size_t)m * n);
            fill_uniform(g, (size_t)m * n, -30.0f, 30.0f);
            fill_uniform(u, (size_t)m * n, -30.0f, 30.0f);
            fill_uniform(w, (size_t)n, -2.0f, 2.0f);
            for (int r = 0; fused && r < m; r++) { /* [gate | up] rows */
                memcpy(gu + (size_t)r * stride, g + (size_t)r * n, (size_t)n * 4);
                memcpy(gu + (size_t)r * stride + n, u + (size_t)r * n, (size_t)n * 4);
            }
            b158_buf dg = fused ? dev_upload(rt, gu, (size_t)m * 2 * n * 4)
                                : dev_upload(rt, g, (size_t)m * n * 4);
            b158_buf du = fused ? dg : dev_upload(rt, u, (size_t)m * n * 4);
            b158_buf dw = dev_upload(rt, w, (size_t)n * 4);
            b158_buf dq = dev_poisoned(rt, (size_t)m * kp), ds = dev_poisoned(rt, (size_t)m * 4);
            check_ok(b158_op_glu_norm_quantize(rt, &dg, &du, fused ? n : 0, stride,
                                               norm ? &dw : NULL, &dq, &ds, n, kp, m, 1e-5f,
                                               (enum b158_act)act));
            dev_read(rt, &dq, q, (size_t)m * kp);
            dev_read(rt, &ds, s, (size_t)m * 4);
            b158_ref_glu(g, u, h, m * n, (enum b158_act)act);
            if (norm)
                b158_ref_rmsnorm(h, w, h, n, m, 1e-5f);
            b158_ref_quantize(h, n, m, qr, sr);
            int off = 0, far = 0, tail = 0;
            const double serr = q8_diff(q, s, qr, sr, n, kp, m, &off, &far, &tail);
            if (off || far || tail || serr > 1e-5)
                fprintf(stderr,
                        "\nglu_norm_quantize act %d norm %d fused %d n %d [%s]: %d off, "
                        "%d far, %d tail, scale %.1e\n",
                        act, norm, fused, n, vname(rt), off, far, tail, serr);
            CU_ASSERT(serr <= 1e-5);
            CU_ASSERT_EQUAL(far, 0);
            CU_ASSERT_EQUAL(tail, 0);
            CU_ASSERT(off * 100 <= m * n);
            b158_buf_free(rt, &dg), b158_buf_free(rt, &dw), b158_buf_free(rt, &dq);
            b158_buf_free(rt, &ds);
            if (!fused)
                b158_buf_free(rt, &du);
            free(gu), free(w), free(g), free(u), free(h), free(s), free(sr), free(q), free(qr);
        }
    }
}

static void test_embed(void)
{
    FOR_EACH_VARIANT(rt)
    {
        const int n_embd = b158_test_randint(1, 300), n_vocab = b158_test_randint(2, 500);
        const int m = b158_test_randint(2, 9);
        uint16_t *table = xmalloc((size_t)n_vocab * n_embd * 2);
        int32_t *ids = xmalloc((size_t)m * 4);
        float *o = xmalloc((size_t)m * n_embd * 4), *orf = xmalloc((size_t)m * n_embd * 4);
        for (size_t i = 0; i < (size_t)n_vocab * n_embd; i++)
            table[i] = b158_f32_to_f16(b158_test_uniform(-1.0f, 1.0f));
        for (int i = 0; i < m; i++)
            ids[i] = b158_test_randint(0, n_vocab - 1);
        ids[m - 1] = n_vocab; /* out of range: NaN, never a read past the table */
        b158_buf dt = dev_upload(rt, table, (size_t)n_vocab * n_embd * 2);
        b158_buf di = dev_upload(rt, ids, (size_t)m * 4),
                 dout = dev_poisoned(rt, (size_t)m * n_embd * 4);
        check_ok(b158_op_embed(rt, &dt, &di, &dout, n_embd, n_vocab, m));
        dev_read(rt, &dout, o, (size_t)m * n_embd * 4);
        b158_ref_embed(table, ids, orf, n_embd, n_vocab, m);
        CU_ASSERT_EQUAL(memcmp(o, orf, (size_t)(m - 1) * n_embd * 4), 0);
        int nans = 0;
        for (int i = 0; i < n_embd; i++)
            nans += isnan(o[(size_t)(m - 1) * n_embd + i]);
        CU_ASSERT_EQUAL(nans, n_embd);
        b158_buf_free(rt, &dt), b158_buf_free(rt, &di), b158_buf_free(rt, &dout);
        free(table), free(ids), free(o), free(orf);
    }
}

/* Greedy tokens on the device: rows of awkward widths (one value to more than a 128k
 * vocabulary) with the maximum repeated at several places (the lowest index wins) or at the
 * very end, NaN sprinkled in, a row of -inf and a row of NaN; twice over (the counters must come
 * back to zero), each time exactly b158_ref_argmax. */
static void test_argmax(void)
{
    FOR_EACH_VARIANT(rt)
    {
        static const int widths[] = {1, 2, 7, 300, 4097, 0};
        for (size_t t = 0; t < sizeof widths / sizeof widths[0]; t++) {
            const int n = widths[t] ? widths[t] : b158_test_randint(128000, 130000);
            const int m = b158_test_randint(2, 6);
            float *x = xmalloc((size_t)m * n * 4);
            fill_uniform(x, (size_t)m * n, -20.0f, 20.0f);
            for (int r = 0; r < m; r++) {
                float *xr = x + (size_t)r * n;
                const float top = 25.0f + (float)r;
                for (int c = 0; c < 3; c++) /* ties: the lowest of these wins */
                    xr[b158_test_randint(0, n - 1)] = top;
                for (int c = 0; c < n / 50; c++)
                    xr[b158_test_randint(0, n - 1)] = NAN;
            }
            x[n - 1] = 100.0f; /* row 0: the largest is the last value */
            if (m > 2)
                for (int i = 0; i < n; i++)
                    x[(size_t)(m - 1) * n + i] = -INFINITY;
            if (m > 3)
                for (int i = 0; i < n; i++)
                    x[(size_t)(m - 2) * n + i] = NAN;
            int32_t *got = xmalloc((size_t)m * 4), *cnt = xmalloc((size_t)m * 4);
            b158_buf dx = dev_upload(rt, x, (size_t)m * n * 4);
            b158_buf dp = dev_poisoned(rt, (size_t)m * B158_ARGMAX_GROUPS * 8);
            b158_buf dc = dev_poisoned(rt, (size_t)m * 4), dout = dev_poisoned(rt, (size_t)m * 4);
            CU_ASSERT_EQUAL_FATAL(b158_buf_fill(rt, &dc, 0), B158_OK);
            int wrong = 0, counters = 0;
            for (int rep = 0; rep < 2; rep++) {
                CU_ASSERT_EQUAL_FATAL(b158_buf_fill(rt, &dout, B158_POISON_BYTE), B158_OK);
                check_ok(b158_op_argmax(rt, &dx, n, m, &dp, &dc, &dout));
                dev_read(rt, &dout, got, (size_t)m * 4);
                dev_read(rt, &dc, cnt, (size_t)m * 4);
                for (int r = 0; r < m; r++) {
                    wrong += got[r] != b158_ref_argmax(x + (size_t)r * n, n);
                    counters += cnt[r] != 0;
                }
            }
            if (wrong || counters)
                fprintf(stderr, "\nargmax n %d m %d [%s]: %d wrong, %d counters not reset\n", n, m,
                        vname(rt), wrong, counters);
            CU_ASSERT_EQUAL(wrong, 0);
            CU_ASSERT_EQUAL(counters, 0);
            b158_buf_free(rt, &dx), b158_buf_free(rt, &dp), b158_buf_free(rt, &dc);
            b158_buf_free(rt, &dout);
            free(x), free(got), free(cnt);
        }
    }
}

/* Random FP16 weights (n x k) and FP32 activations (m x k) for the FP16 matmul tests, on the
 * host and uploaded. */
static void f16_inputs(b158_runtime *rt, int n, int k, int m, uint16_t **w, float **x, b158_buf *dw,
                       b158_buf *dx)
{
    *w = xmalloc((size_t)n * k * 2);
    *x = xmalloc((size_t)m * k * 4);
    for (size_t i = 0; i < (size_t)n * k; i++)
        (*w)[i] = b158_f32_to_f16(b158_test_uniform(-0.1f, 0.1f));
    fill_uniform(*x, (size_t)m * k, -3.0f, 3.0f);
    *dw = dev_upload(rt, *w, (size_t)n * k * 2);
    *dx = dev_upload(rt, *x, (size_t)m * k * 4);
}

static void test_f16_matvec(void)
{
    FOR_EACH_VARIANT(rt)
    {
        for (int t = 0; t < 3; t++) {
            const int n = t == 2 ? 5003 : b158_test_randint(1, 700);
            /* short rows; rows of whole 16-byte pieces (the GPU kernel's 128-bit loads); odd */
            const int k = t == 0   ? b158_test_randint(1, 7)
                          : t == 1 ? 8 * b158_test_randint(1, 325)
                                   : b158_test_randint(4, 1300) * 2 + 1;
            /* one token where rows are whole pieces: the GPU variant's matvec (several tokens
             * take its tiled GEMM) */
            const int m = t == 1 ? 1 : b158_test_randint(1, 3);
            uint16_t *w;
            float *x, *y = xmalloc((size_t)m * n * 4), *yr = xmalloc((size_t)m * n * 4);
            b158_buf dw, dx;
            f16_inputs(rt, n, k, m, &w, &x, &dw, &dx);
            b158_buf dy = dev_poisoned(rt, (size_t)m * n * 4);
            check_ok(b158_op_f16_matvec(rt, &dw, &dx, &dy, n, k, m));
            dev_read(rt, &dy, y, (size_t)m * n * 4);
            b158_ref_f16_matvec(w, x, yr, n, k, m);
            expect_nerr("f16 matvec", rt, y, yr, (size_t)m * n, 2e-5);
            b158_buf_free(rt, &dw), b158_buf_free(rt, &dx), b158_buf_free(rt, &dy);
            free(w), free(x), free(y), free(yr);
        }
    }
}

/* The FP16 baseline's one-token GEMV on int8 input (b158_op_f16_gemv_q8) against the reference
 * matvec on the dequantized row q / s, at widths that are and are not whole 8-weight pieces
 * (the GPU kernel's 128-bit loads) and rows that leave a work-group part empty; the input's
 * bytes past k poisoned (the kernel must stop at k), y poisoned or accumulated into. The same
 * bound as the matvec's. */
static void test_f16_gemv_q8(void)
{
    FOR_EACH_VARIANT(rt)
    {
        for (int t = 0; t < 4; t++) {
            const int n = t == 3 ? 5003 : b158_test_randint(1, 700), accumulate = t >= 2;
            const int k = t == 0   ? b158_test_randint(1, 7)
                          : t == 1 ? b158_test_randint(4, 1300) * 2 + 1
                                   : 8 * b158_test_randint(1, 865);
            const int kp = b158_ternary_k_pad(k);
            uint16_t *w;
            float *x, *y = xmalloc((size_t)n * 4), *yr = xmalloc((size_t)n * 4);
            float *y0 = xmalloc((size_t)n * 4), sc = b158_test_uniform(0.5f, 40.0f);
            b158_buf dw, dx;
            f16_inputs(rt, n, k, 1, &w, &x, &dw, &dx);
            int8_t *q = xmalloc((size_t)kp);
            for (int i = 0; i < kp; i++)
                q[i] = (int8_t)(i < k ? b158_test_randint(-127, 127) : 0x55);
            for (int i = 0; i < k; i++)
                x[i] = (float)q[i] / sc;
            fill_uniform(y0, (size_t)n, -10.0f, 10.0f);
            b158_buf dq = dev_upload(rt, q, (size_t)kp), ds = dev_upload(rt, &sc, 4);
            b158_buf dy =
                accumulate ? dev_upload(rt, y0, (size_t)n * 4) : dev_poisoned(rt, (size_t)n * 4);
            check_ok(b158_op_f16_gemv_q8(rt, &dw, n, k, &dq, &ds, &dy, accumulate, NULL));
            dev_read(rt, &dy, y, (size_t)n * 4);
            b158_ref_f16_matvec(w, x, yr, n, k, 1);
            for (int i = 0; accumulate && i < n; i++)
                yr[i] += y0[i];
            char what[64];
            snprintf(what, sizeof what, "f16 gemv q8 %dx%d%s", n, k,
                     accumulate ? ", accumulate" : "");
            expect_nerr(what, rt, y, yr, (size_t)n, 2e-5);
            b158_buf_free(rt, &dw), b158_buf_free(rt, &dx), b158_buf_free(rt, &dy);
            b158_buf_free(rt, &dq), b158_buf_free(rt, &ds);
            free(w), free(x), free(y), free(yr), free(y0), free(q);
        }
    }
}

/* Several tokens: the CPU variant's tiled f16_gemm (6 rows x 4 tokens per work-item), at sizes
 * that leave partial tiles of rows and tokens and K tails (K < 16, K not a multiple of 16); the
 * last two cases accumulate into random y (one token, then several). The same bound as the
 * matvec: the kernel's 16 partial sums against the reference's one chain. */
static void test_f16_gemm(void)
{
    FOR_EACH_VARIANT(rt)
    {
        for (int t = 0; t < 6; t++) {
            const int accumulate = t >= 4;
            const int n = t == 1 ? 6 * b158_test_randint(1, 90) + 5 : b158_test_randint(1, 700);
            const int k = t == 0   ? b158_test_randint(1, 15)
                          : t == 3 ? 16 * b158_test_randint(1, 100)
                                   : 16 * b158_test_randint(1, 160) + b158_test_randint(1, 15);
            const int m = t == 1   ? 4 * b158_test_randint(1, 16) + 3
                          : t == 4 ? 1
                                   : b158_test_randint(2, 70);
            uint16_t *w;
            float *x, *y = xmalloc((size_t)m * n * 4), *yr = xmalloc((size_t)m * n * 4);
            b158_buf dw, dx;
            f16_inputs(rt, n, k, m, &w, &x, &dw, &dx);
            float *y0 = xmalloc((size_t)m * n * 4);
            fill_uniform(y0, (size_t)m * n, -10.0f, 10.0f);
            b158_buf dy = accumulate ? dev_upload(rt, y0, (size_t)m * n * 4)
                                     : dev_poisoned(rt, (size_t)m * n * 4);
            check_ok(b158_op_f16_matmul(rt, &dw, &dx, &dy, n, k, m, accumulate));
            dev_read(rt, &dy, y, (size_t)m * n * 4);
            b158_ref_f16_matvec(w, x, yr, n, k, m);
            for (size_t i = 0; accumulate && i < (size_t)m * n; i++)
                yr[i] += y0[i];
            char what[64];
            snprintf(what, sizeof what, "f16 gemm %dx%d, %d tokens%s", n, k, m,
                     accumulate ? ", accumulate" : "");
            expect_nerr(what, rt, y, yr, (size_t)m * n, 2e-5);
            b158_buf_free(rt, &dw), b158_buf_free(rt, &dx), b158_buf_free(rt, &dy);
            free(w), free(x), free(y), free(yr), free(y0);
        }
    }
}

/* ---- the FP16 baseline's pieces ---------------------------------------------------------- */

/* The FP16 baseline's dense weights: element for element the FP16 rounding of w * scale of the
 * packed ternary matrix (awkward widths: blocks cut short, planes past k; a negative scale gives
 * -0 for w = 0), exactly. */
static void test_f16_dense(void)
{
    FOR_EACH_VARIANT(rt)
    {
        for (int rep = 0; rep < 3; rep++) {
            const int n = b158_test_randint(1, 40), k = b158_test_randint(1, 1100);
            const int kp = b158_ternary_k_pad(k);
            int8_t *w = xmalloc((size_t)n * k);
            uint8_t *codes = xmalloc((size_t)n * kp / 4);
            float *sc = xmalloc((size_t)n * 4);
            uint16_t *got = xmalloc((size_t)n * k * 2);
            for (size_t i = 0; i < (size_t)n * k; i++)
                w[i] = (int8_t)b158_test_randint(-1, 1);
            for (int r = 0; r < n; r++)
                sc[r] = b158_test_uniform(1e-4f, 3.0f) * (r == n / 2 ? -1.0f : 1.0f);
            CU_ASSERT_EQUAL_FATAL(b158_ternary_pack(w, n, k, codes), B158_OK);
            const b158_tpack t = {codes, sc, n, k, kp};
            b158_buf d;
            check_ok(b158_baseline_upload(rt, &t, &d));
            dev_read(rt, &d, got, (size_t)n * k * 2);
            int bad = 0;
            for (int r = 0; r < n; r++)
                for (int e = 0; e < k; e++)
                    bad += got[(size_t)r * k + e] !=
                           b158_f32_to_f16((float)w[(size_t)r * k + e] * sc[r]);
            if (bad)
                fprintf(stderr, "\ndense FP16 weights %d x %d: %d wrong\n", n, k, bad);
            CU_ASSERT_EQUAL(bad, 0);
            b158_buf_free(rt, &d);
            free(w), free(codes), free(sc), free(got);
        }
    }
}

static void test_f16_convert(void)
{
    FOR_EACH_VARIANT(rt)
    {
        /* int8 activations to FP16: exactly the FP16 rounding of q / s */
        const int k = b158_test_randint(1, 3000), kp = b158_ternary_k_pad(k),
                  m = b158_test_randint(1, 5);
        int8_t *q = xmalloc((size_t)m * kp);
        float *s = xmalloc((size_t)m * 4), *xr = xmalloc((size_t)m * k * 4);
        uint16_t *xh = xmalloc((size_t)m * k * 2);
        for (size_t i = 0; i < (size_t)m * kp; i++)
            q[i] = (int8_t)b158_test_randint(-128, 127);
        for (int r = 0; r < m; r++)
            s[r] = 127.0f / b158_test_uniform(0.01f, 50.0f);
        b158_buf dq = dev_upload(rt, q, (size_t)m * kp), ds = dev_upload(rt, s, (size_t)m * 4);
        b158_buf dx = dev_poisoned(rt, (size_t)m * k * 2);
        check_ok(b158_op_dequantize_half(rt, &dq, &ds, &dx, k, kp, m));
        dev_read(rt, &dx, xh, (size_t)m * k * 2);
        int off = 0; /* the division may be 2.5 ulp off in FP32: at most one FP16 step */
        for (int r = 0; r < m; r++)
            for (int i = 0; i < k; i++) {
                const uint16_t want = b158_f32_to_f16((float)q[(size_t)r * kp + i] / s[r]);
                const int d = (int)xh[(size_t)r * k + i] - (int)want;
                off += d < -1 || d > 1;
            }
        CU_ASSERT_EQUAL(off, 0);

        /* FP16 back to FP32, stored and accumulated: exact */
        const int n = b158_test_randint(1, 5000);
        uint16_t *h = xmalloc((size_t)n * 2);
        float *y0 = xmalloc((size_t)n * 4), *y = xmalloc((size_t)n * 4);
        for (int i = 0; i < n; i++) {
            h[i] = b158_f32_to_f16(b158_test_uniform(-300.0f, 300.0f));
            y0[i] = b158_test_uniform(-10.0f, 10.0f);
        }
        b158_buf dh = dev_upload(rt, h, (size_t)n * 2), dy = dev_poisoned(rt, (size_t)n * 4);
        int bad = 0;
        check_ok(b158_op_f16_to_f32(rt, &dh, &dy, n, 0));
        dev_read(rt, &dy, y, (size_t)n * 4);
        for (int i = 0; i < n; i++)
            bad += y[i] != b158_f16_to_f32(h[i]);
        check_ok(b158_buf_write(rt, &dy, 0, (size_t)n * 4, y0));
        check_ok(b158_op_f16_to_f32(rt, &dh, &dy, n, 1));
        dev_read(rt, &dy, y, (size_t)n * 4);
        for (int i = 0; i < n; i++)
            bad += y[i] != y0[i] + b158_f16_to_f32(h[i]);
        CU_ASSERT_EQUAL(bad, 0);
        b158_buf_free(rt, &dq), b158_buf_free(rt, &ds), b158_buf_free(rt, &dx);
        b158_buf_free(rt, &dh), b158_buf_free(rt, &dy);
        free(q), free(s), free(xr), free(xh), free(h), free(y0), free(y);
    }
}

/* CLBlast HGEMV / HGEMM against the FP32-accumulating reference. CLBlast accumulates in FP16,
 * rounding every partial sum (unit roundoff 2^-11), so the error grows linearly with K: on
 * Intel's CPU runtime up to 1.1e-5 * K (0.027 at K = 2530) was measured; 4e-3 + 2e-5 * K is
 * allowed (4e-3: a few FP16 steps of the largest output at small K). A wrong layout or an
 * unwritten element is off by 100%. On a device without cl_khr_fp16 the call must refuse with
 * a clear error. */
static void test_hgemm(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_CPU);
    if (!rt)
        return;
    const b158_device_info *d = b158_runtime_device(rt);
    if (!b158_blas_available()) { /* a build choice, not a device's lack: refused, and passes */
        b158_buf a, b, c;
        size_t bytes = 1;
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &a));
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &b));
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &c));
        CU_ASSERT_EQUAL(b158_op_hgemm(rt, &a, &b, &c, 4, 4, 1, NULL), B158_ERR_UNSUPPORTED);
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "no CLBlast"));
        CU_ASSERT_EQUAL(b158_hgemm_temp_bytes(rt, 4, 4, 2, &bytes), B158_ERR_UNSUPPORTED);
        CU_ASSERT_EQUAL(bytes, 0);
        b158_buf_free(rt, &a), b158_buf_free(rt, &b), b158_buf_free(rt, &c);
        return;
    }
    if (!d->has_fp16) {
        b158_buf a, b, c;
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &a));
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &b));
        check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, 64, &c));
        CU_ASSERT_EQUAL(b158_op_hgemm(rt, &a, &b, &c, 4, 4, 1, NULL), B158_ERR_UNSUPPORTED);
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "cl_khr_fp16"));
        b158_buf_free(rt, &a), b158_buf_free(rt, &b), b158_buf_free(rt, &c);
        char msg[512];
        snprintf(msg, sizeof msg, "%s has no cl_khr_fp16: CLBlast HGEMM/HGEMV not run", d->name);
        b158_test_skip_unless("B158_REQUIRE_FP16", msg);
        return;
    }
    for (int t = 0; t < 5; t++) {
        const int n = t == 4 ? 6912 : b158_test_randint(1, 900);
        const int k = t == 0 ? b158_test_randint(1, 9) : b158_test_randint(10, 2900);
        const int m = t % 2 ? 1 : b158_test_randint(2, 70);
        uint16_t *w = xmalloc((size_t)n * k * 2), *x = xmalloc((size_t)m * k * 2);
        uint16_t *y = xmalloc((size_t)m * n * 2), *yr = xmalloc((size_t)m * n * 2);
        float *yf = xmalloc((size_t)m * n * 4), *yrf = xmalloc((size_t)m * n * 4);
        for (size_t i = 0; i < (size_t)n * k; i++)
            w[i] = b158_f32_to_f16(b158_test_uniform(-0.1f, 0.1f));
        for (size_t i = 0; i < (size_t)m * k; i++)
            x[i] = b158_f32_to_f16(b158_test_uniform(-3.0f, 3.0f));
        size_t temp_bytes = 0;
        check_ok(b158_hgemm_temp_bytes(rt, n, k, m, &temp_bytes));
        b158_buf dw = dev_upload(rt, w, (size_t)n * k * 2),
                 dx = dev_upload(rt, x, (size_t)m * k * 2);
        b158_buf dy = dev_poisoned(rt, (size_t)m * n * 2), dt = {0};
        if (temp_bytes)
            check_ok(b158_buf_alloc(rt, B158_MEM_SCRATCH, temp_bytes, &dt));
        check_ok(b158_op_hgemm(rt, &dw, &dx, &dy, n, k, m, &dt));
        dev_read(rt, &dy, y, (size_t)m * n * 2);
        b158_ref_hgemm(w, x, yr, n, k, m);
        for (size_t i = 0; i < (size_t)m * n; i++) {
            yf[i] = b158_f16_to_f32(y[i]);
            yrf[i] = b158_f16_to_f32(yr[i]);
        }
        char what[96];
        snprintf(what, sizeof what, "clblast %s %dx%d, %d tokens", m == 1 ? "hgemv" : "hgemm", n, k,
                 m);
        expect_nerr(what, rt, yf, yrf, (size_t)m * n, 4e-3 + 2e-5 * k);
        b158_buf_free(rt, &dw), b158_buf_free(rt, &dx), b158_buf_free(rt, &dy);
        b158_buf_free(rt, &dt);
        free(w), free(x), free(y), free(yr), free(yf), free(yrf);
    }
}

static void add_suites(void)
{
    b158_test_suite("half", (b158_test_case[]){{"roundtrip", test_half_roundtrip}, {NULL, NULL}});
    b158_test_suite("quantize", (b158_test_case[]){{"rows", test_quantize},
                                                   {"non_finite", test_quantize_non_finite},
                                                   {NULL, NULL}});
    b158_test_suite("ternary_gemv", (b158_test_case[]){{"gemv", test_ternary_gemv},
                                                       {"lanes_rule", test_gemv_lanes_rule},
                                                       {NULL, NULL}});
    b158_test_suite("ternary_gemm", (b158_test_case[]){{"gemm", test_ternary_gemm}, {NULL, NULL}});
    b158_test_suite("rmsnorm", (b158_test_case[]){{"rows", test_rmsnorm},
                                                  {"quantize", test_rmsnorm_quantize},
                                                  {"gemv_norm", test_gemv_norm},
                                                  {NULL, NULL}});
    b158_test_suite("rope", (b158_test_case[]){{"neox_interleaved", test_rope},
                                               {"kv_store", test_rope_kv_store},
                                               {NULL, NULL}});
    b158_test_suite("attention", (b158_test_case[]){{"gqa_causal", test_attention}, {NULL, NULL}});
    b158_test_suite("glu", (b158_test_case[]){{"norm_quantize", test_glu}, {NULL, NULL}});
    b158_test_suite("embed", (b158_test_case[]){{"gather", test_embed}, {NULL, NULL}});
    b158_test_suite("argmax", (b158_test_case[]){{"greedy_rows", test_argmax}, {NULL, NULL}});
    b158_test_suite("f16_matvec", (b158_test_case[]){{"lm_head", test_f16_matvec},
                                                     {"gemm_tiles", test_f16_gemm},
                                                     {"gemv_q8", test_f16_gemv_q8},
                                                     {NULL, NULL}});
    b158_test_suite("f16_baseline", (b158_test_case[]){{"convert", test_f16_convert},
                                                       {"dense_weights", test_f16_dense},
                                                       {NULL, NULL}});
    b158_test_suite("clblast", (b158_test_case[]){{"hgemm_hgemv", test_hgemm}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
