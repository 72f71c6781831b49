/* Device operations of the forward pass (launch wrappers) and their plain-C references. */
#ifndef B158_HOST_OPS_H
#define B158_HOST_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* ---- FP16 storage ----------------------------------------------------------------------- */
uint16_t b158_f32_to_f16(float f); /* round to nearest even, like vstore_half */
float b158_f16_to_f32(uint16_t h);
float b158_bf16_to_f32(uint16_t h);
uint16_t b158_f32_to_bf16(float f); /* round to nearest even, as torch and ggml */

/* ---- ternary weights -------------------------------------------------------------------- */

/* Elements per packed row: K rounded up to the 64-element chunk of cl_kernels/ternary.cl. */
static inline int b158_ternary_k_pad(int k)
{
    return (k + 63) / 64 * 64;
}

/* Packs a row-major n x k matrix of {-1, 0, +1} into the device layout (n * k_pad / 4 bytes).
 * Returns B158_ERR_FORMAT if a value is not ternary. */
b158_status b158_ternary_pack(const int8_t *w, int n, int k, uint8_t *out);

/* A ternary matrix on the device: codes plus one FP32 scale per output row. */
typedef struct b158_tmat {
    b158_buf codes;  /* n * k_pad / 4 bytes */
    b158_buf scales; /* n floats */
    int n, k, k_pad;
} b158_tmat;

/* Packs and uploads w (n x k, values -1/0/+1) with per-row scales (counted as weights). */
b158_status b158_tmat_upload(b158_runtime *rt, const int8_t *w, const float *scales, int n, int k,
                             b158_tmat *out);
/* Uploads an already packed matrix (n * k_pad / 4 bytes of codes). */
b158_status b158_tmat_upload_packed(b158_runtime *rt, const uint8_t *codes, const float *scales,
                                    int n, int k, b158_tmat *out);
void b158_tmat_free(b158_runtime *rt, b158_tmat *m);

/* ---- launch wrappers (enqueue only; buffers are the caller's) --------------------------- */

/* q[m][0..k_pad) int8 (zero tail), s[m] = 127 / max(absmax, 1e-5) for m_rows rows of x[m][k]. */
b158_status b158_op_quantize(b158_runtime *rt, const b158_buf *x, const b158_buf *q,
                             const b158_buf *s, int k, int k_pad, int m_rows);

/* x[m][0..k) = q[m][i] / s[m] (q with row stride k_pad). */
b158_status b158_op_dequantize(b158_runtime *rt, const b158_buf *q, const b158_buf *s,
                               const b158_buf *x, int k, int k_pad, int m_rows);

/* y[m][n] (+)= (sum_k w[n][k] q[m][k]) * w_scale[n] / s[m], q in [-127, 127] (as
 * b158_op_quantize writes it; the CPU GEMV negates in int8). m_rows == 1 uses the GEMV kernel,
 * more the GEMM kernel, of the runtime's variant. accumulate adds to y (fused residual). */
b158_status b158_op_ternary_matmul(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                   const b158_buf *s, const b158_buf *y, int m_rows,
                                   int accumulate);

/* Same, forcing the GEMM kernel even for one row (tests and benchmarks). */
b158_status b158_op_ternary_gemm(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                 const b158_buf *s, const b158_buf *y, int m_rows, int accumulate);

b158_status b158_op_rmsnorm(b158_runtime *rt, const b158_buf *x, const b158_buf *w,
                            const b158_buf *out, int n, int m_rows, float eps);

enum b158_rope_mode { B158_ROPE_NEOX = 0, B158_ROPE_INTERLEAVED = 1 };
/* out[i] = theta_base^(-2i / n_rot) for i < n_rot / 2, computed in double, rounded once. */
void b158_rope_inv_freq(float *out, int n_rot, float theta_base);
/* inv_freq: n_rot / 2 floats from b158_rope_inv_freq. */
b158_status b158_op_rope(b158_runtime *rt, const b158_buf *x, const b158_buf *inv_freq,
                         int row_stride, int n_heads, int head_dim, int n_rot, int m_rows, int pos0,
                         enum b158_rope_mode mode);

/* Writes m_rows K and V rows (kv_dim floats each, row stride row_stride) into the FP16 cache at
 * positions pos0.. of the layer starting at element cache_off. */
b158_status b158_op_kv_store(b158_runtime *rt, const b158_buf *k, const b158_buf *v,
                             const b158_buf *k_cache, const b158_buf *v_cache, int kv_dim,
                             int row_stride, int m_rows, int pos0, size_t cache_off);

/* out[m][n_head * head_dim]: causal attention of m_rows query rows at positions pos0 + m. */
b158_status b158_op_attention(b158_runtime *rt, const b158_buf *q, const b158_buf *k_cache,
                              const b158_buf *v_cache, const b158_buf *out, int n_head,
                              int n_head_kv, int head_dim, int q_stride, int m_rows, int pos0,
                              size_t cache_off, float scale);

enum b158_act { B158_ACT_SILU = 0, B158_ACT_RELU2 = 1 };
b158_status b158_op_glu(b158_runtime *rt, const b158_buf *gate, const b158_buf *up,
                        const b158_buf *out, int count, enum b158_act act);
b158_status b158_op_add(b158_runtime *rt, const b158_buf *x, const b158_buf *y, int count);
b158_status b158_op_embed(b158_runtime *rt, const b158_buf *table, const b158_buf *ids,
                          const b158_buf *out, int n_embd, int n_vocab, int m_rows);
b158_status b158_op_f16_matvec(b158_runtime *rt, const b158_buf *w, const b158_buf *x,
                               const b158_buf *y, int n_rows, int k, int m_rows);

/* xh[m][0..k) = FP16(q[m][i] / s[m]) (q with row stride k_pad): the baseline's FP16 input. */
b158_status b158_op_dequantize_half(b158_runtime *rt, const b158_buf *q, const b158_buf *s,
                                    const b158_buf *xh, int k, int k_pad, int m_rows);
/* y[i] = FP32(h[i]), or y[i] += FP32(h[i]) with accumulate, for i < count. */
b158_status b158_op_f16_to_f32(b158_runtime *rt, const b158_buf *h, const b158_buf *y, int count,
                               int accumulate);

/* ---- plain-C references (same semantics, sequential) ------------------------------------ */

void b158_ref_quantize(const float *x, int k, int m_rows, int8_t *q, float *s);
void b158_ref_dequantize(const int8_t *q, const float *s, int k, int m_rows, float *x);
/* acc (may be NULL) receives the exact int32 sums; y (may be NULL) the scaled outputs. */
void b158_ref_ternary_matmul(const int8_t *w, const float *w_scale, int n, int k, const int8_t *q,
                             const float *s, int m_rows, int32_t *acc, float *y);
void b158_ref_rmsnorm(const float *x, const float *w, float *out, int n, int m_rows, float eps);
void b158_ref_rope(float *x, const float *inv_freq, int row_stride, int n_heads, int head_dim,
                   int n_rot, int m_rows, int pos0, enum b158_rope_mode mode);
void b158_ref_kv_store(const float *k, const float *v, uint16_t *k_cache, uint16_t *v_cache,
                       int kv_dim, int row_stride, int m_rows, int pos0);
void b158_ref_attention(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                        float *out, int n_head, int n_head_kv, int head_dim, int q_stride,
                        int m_rows, int pos0, float scale);
void b158_ref_glu(const float *gate, const float *up, float *out, int count, enum b158_act act);
void b158_ref_add(float *x, const float *y, int count);
void b158_ref_embed(const uint16_t *table, const int32_t *ids, float *out, int n_embd, int n_vocab,
                    int m_rows);
void b158_ref_f16_matvec(const uint16_t *w, const float *x, float *y, int n_rows, int k,
                         int m_rows);
/* FP16 in and out: the FP32 sum of FP16 products, rounded to FP16 once (CLBlast may round
 * more often; tests state the difference they allow). */
void b158_ref_hgemm(const uint16_t *w, const uint16_t *x, uint16_t *y, int n_rows, int k,
                    int m_rows);

#endif
