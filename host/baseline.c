/* The FP16 baseline engine: dense FP16 uploads, session scratch, CLBlast's warm-up and the
 * matmul path of the dense LLaMA-style model the paper compares BitNet b1.58 against. */
#include "baseline.h"

#include <stdlib.h>

#include "blas.h"
#include "half.h"

b158_status b158_baseline_check(const b158_runtime *rt, b158_weight_mode mode)
{
    if (mode != B158_WEIGHTS_FP16_CLBLAST)
        return B158_OK;
    if (!b158_blas_available())
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "this build of b158-cl has no CLBlast (configured with B158_CLBLAST=OFF "
                         "or without libclblast-dev), so the CLBlast FP16 baseline is "
                         "unavailable; use the FP16-storage kernels (B158_WEIGHTS_FP16)");
    if (!rt->info.has_fp16)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "the CLBlast FP16 baseline needs cl_khr_fp16, which %s does not have; "
                         "use the FP16-storage kernels (B158_WEIGHTS_FP16)",
                         rt->info.name);
    return B158_OK;
}

b158_status b158_baseline_upload(b158_runtime *rt, const b158_tpack *t, b158_buf *out)
{
    const size_t bytes = (size_t)t->n * t->k * 2;
    uint16_t *h = malloc(bytes);
    if (!h)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for a %d x %d FP16 matrix", t->n,
                         t->k);
    /* row by row from the packed layout (b158_tpack_get's): byte j of 256-weight block b holds
     * elements 256b + j + 64l at bits 2l, and a row has only four values, (c - 1) * scale for
     * the codes c, converted once */
    const size_t row_bytes = (size_t)t->k_pad / 4;
    for (int r = 0; r < t->n; r++) {
        uint16_t lut[4];
        for (int c = 0; c < 4; c++)
            lut[c] = b158_f32_to_f16((float)(c - 1) * t->scales[r]);
        const uint8_t *codes = t->codes + (size_t)r * row_bytes;
        uint16_t *hr = h + (size_t)r * t->k;
        for (int b = 0; b < t->k_pad / 256; b++)
            for (int l = 0; l < 4; l++) {
                const int e0 = 256 * b + 64 * l, n = t->k - e0 < 64 ? t->k - e0 : 64;
                for (int j = 0; j < n; j++)
                    hr[e0 + j] = lut[(codes[64 * b + j] >> (2 * l)) & 3];
            }
    }
    b158_status st = b158_buf_alloc(rt, B158_MEM_WEIGHTS, bytes, out);
    if (st == B158_OK)
        st = b158_buf_write(rt, out, 0, bytes, h);
    free(h);
    return st;
}

void b158_baseline_free(b158_runtime *rt, b158_baseline *b)
{
    b158_buf_free(rt, &b->xf);
    b158_buf_free(rt, &b->xh);
    b158_buf_free(rt, &b->yh);
    b158_buf_free(rt, &b->blas_temp);
}

static b158_status build_kernels(b158_runtime *rt, const enum b158_kernel_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cl_kernel k;
        B158_TRY(b158_rt_kernel(rt, ids[i], &k));
    }
    return B158_OK;
}

/* The FP16-storage kernels' scratch and kernels: one token reads the int8 input itself
 * (f16_gemv_q8); several are dequantized into xf first, for f16_gemm (the prefill). */
static b158_status create_kernels(b158_runtime *rt, size_t B, size_t W, b158_baseline *b)
{
    static const enum b158_kernel_id used[] = {B158_K_F16_GEMV_Q8, B158_K_DEQUANTIZE_ROWS,
                                               B158_K_F16_GEMM};
    if (B > 1)
        B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, B * W * 4, &b->xf));
    return build_kernels(rt, used, B > 1 ? sizeof used / sizeof used[0] : 1);
}

/* CLBlast's scratch, and one call of HGEMV and HGEMM: CLBlast compiles a routine's kernels on
 * its first call, so no token pays for it (the results land in scratch and are unused). */
static b158_status create_clblast(b158_runtime *rt, const b158_model *m, size_t B, size_t W,
                                  b158_baseline *b)
{
    static const enum b158_kernel_id used[] = {B158_K_DEQUANTIZE_ROWS_HALF, B158_K_F16_TO_F32};
    const b158_model_info *h = &m->info;
    const int qd = h->n_head * h->head_dim, kvd = h->n_head_kv * h->head_dim;
    /* the block's matmuls: q|k|v, o, gate|up, down (host/model.h) */
    const int rows[] = {qd + 2 * kvd, h->n_embd, 2 * h->n_ff, h->n_embd};
    const int cols[] = {h->n_embd, qd, h->n_embd, h->n_ff};
    size_t out = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        out = (size_t)rows[i] > out ? (size_t)rows[i] : out;
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, B * W * 2, &b->xh));
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, B * out * 2, &b->yh));
    /* HGEMM's temp buffer for the largest of the block's shapes at a full batch, so CLBlast
     * allocates nothing per call */
    size_t temp = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t t;
        B158_TRY(b158_hgemm_temp_bytes(rt, rows[i], cols[i], (int)B, &t));
        temp = t > temp ? t : temp;
    }
    if (temp)
        B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, temp, &b->blas_temp));
    B158_TRY(build_kernels(rt, used, sizeof used / sizeof used[0]));
    const b158_buf *w = &m->dev[0].ho;
    B158_TRY(b158_op_hgemm(rt, w, &b->xh, &b->yh, h->n_embd, qd, 1, NULL));
    if (B > 1)
        B158_TRY(b158_op_hgemm(rt, w, &b->xh, &b->yh, h->n_embd, qd, (int)B, &b->blas_temp));
    return b158_rt_finish(rt);
}

b158_status b158_baseline_create(b158_runtime *rt, const b158_model *m, int n_batch, int width,
                                 b158_baseline *out)
{
    *out = (b158_baseline){.mode = m->dev_mode};
    if (m->rt != rt || m->dev_mode == B158_WEIGHTS_TERNARY || n_batch <= 0 || width <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_baseline_create: the model is not on this device in a baseline "
                         "mode, or the batch is empty");
    const size_t B = (size_t)n_batch, W = (size_t)width;
    return m->dev_mode == B158_WEIGHTS_FP16_CLBLAST ? create_clblast(rt, m, B, W, out)
                                                    : create_kernels(rt, B, W, out);
}

int b158_baseline_reads_q8(const b158_baseline *b, int n)
{
    return b->mode == B158_WEIGHTS_FP16 && n == 1;
}

b158_status b158_baseline_input(b158_runtime *rt, const b158_baseline *b, const b158_buf *q8,
                                const b158_buf *s, int k, int n)
{
    const int k_pad = b158_ternary_k_pad(k);
    if (b158_baseline_reads_q8(b, n))
        return B158_OK;
    return b->mode == B158_WEIGHTS_FP16_CLBLAST
               ? b158_op_dequantize_half(rt, q8, s, &b->xh, k, k_pad, n)
               : b158_op_dequantize(rt, q8, s, &b->xf, k, k_pad, n);
}

b158_status b158_baseline_linear(b158_runtime *rt, const b158_baseline *b, const b158_buf *w, int k,
                                 const b158_buf *q8, const b158_buf *s, const b158_buf *y, int n,
                                 int accumulate, const b158_gemv_norm *norm)
{
    const int rows = (int)(w->bytes / 2 / (size_t)k);
    if (b158_baseline_reads_q8(b, n))
        return b158_op_f16_gemv_q8(rt, w, rows, k, q8, s, y, accumulate, norm);
    if (norm)
        return B158_FAIL(
            B158_ERR_INVALID_ARG,
            "b158_baseline_linear: a tail needs one token on the FP16-storage kernels");
    if (b->mode == B158_WEIGHTS_FP16_CLBLAST) {
        /* HGEMM / HGEMV in FP16, the result widened into y */
        B158_TRY(b158_op_hgemm(rt, w, &b->xh, &b->yh, rows, k, n, &b->blas_temp));
        return b158_op_f16_to_f32(rt, &b->yh, y, n * rows, accumulate);
    }
    return b158_op_f16_matmul(rt, w, &b->xf, y, rows, k, n, accumulate);
}
