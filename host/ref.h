/* Plain-C references of the kernels (host/ref.c): the same semantics as the launch wrappers of
 * host/ops.h, sequential, on host arrays. Tests hold the kernels to them; the CPU reference
 * path of the forward pass is built from them. */
#ifndef B158_HOST_REF_H
#define B158_HOST_REF_H

#include <stdint.h>

#include "kernels.h"

/* out[i] = theta_base^(-2i / n_rot) for i < n_rot / 2, computed in double, rounded once. */
void b158_rope_inv_freq(float *out, int n_rot, float theta_base);

void b158_ref_quantize(const float *x, int k, int m_rows, int8_t *q, float *s);
void b158_ref_dequantize(const int8_t *q, const float *s, int k, int m_rows, float *x);
/* acc (may be NULL) receives the exact int32 sums; y (may be NULL) the scaled outputs. */
void b158_ref_ternary_matmul(const int8_t *w, const float *w_scale, int n, int k, const int8_t *q,
                             const float *s, int m_rows, int32_t *acc, float *y);
void b158_ref_rmsnorm(const float *x, const float *w, float *out, int n, int m_rows, float eps);
/* tok: m_rows pairs {position in its sequence, cache row of the sequence's position 0}, as
 * the device kernels take them (host/ops.h); the caches hold cache_rows rows of one layer. */
void b158_ref_rope(float *x, const float *inv_freq, int row_stride, int n_heads, int head_dim,
                   int n_rot, int m_rows, const int32_t *tok, enum b158_rope_mode mode);
void b158_ref_kv_store(const float *k, const float *v, uint16_t *k_cache, uint16_t *v_cache,
                       int kv_dim, int row_stride, int m_rows, const int32_t *tok, int cache_rows);
void b158_ref_attention(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                        float *out, int n_head, int n_head_kv, int head_dim, int q_stride,
                        int m_rows, const int32_t *tok, int cache_rows, float scale);
void b158_ref_glu(const float *gate, const float *up, float *out, int count, enum b158_act act);
void b158_ref_embed(const uint16_t *table, const b158_token *ids, float *out, int n_embd,
                    int n_vocab, int m_rows);
/* The greedy token of a row of n logits: the lowest index of its largest value; NaN never
 * counts (a row of NaN gives 0). */
int b158_ref_argmax(const float *x, int n);
void b158_ref_f16_matvec(const uint16_t *w, const float *x, float *y, int n_rows, int k,
                         int m_rows);
/* FP16 in and out: the FP32 sum of FP16 products, rounded to FP16 once (CLBlast may round
 * more often; tests state the difference they allow). */
void b158_ref_hgemm(const uint16_t *w, const uint16_t *x, uint16_t *y, int n_rows, int k,
                    int m_rows);

#endif
