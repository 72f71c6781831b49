/* Device operations of the forward pass: the launch wrappers of the kernels (host/ops.c) and
 * ternary matrices on the device (host/ternary.c). Their plain-C references: host/ref.h. */
#ifndef B158_HOST_OPS_H
#define B158_HOST_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* ---- ternary weights -------------------------------------------------------------------- */

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

/* The GEMV (one token) and GEMM kernels the ternary matmuls launch on this runtime: the GPU
 * variant's, the *_avx512 ones on a CPU whose compiler builds AVX-512BW builtins, or the
 * portable CPU kernels. */
enum b158_kernel_id b158_op_ternary_gemv_kernel(const b158_runtime *rt);
enum b158_kernel_id b158_op_ternary_gemm_kernel(const b158_runtime *rt);

/* log2 of the work-items per row the GPU variant's GEMV (and GEMV chain) gives rows of k_pad
 * weights (3 to 5) */
int b158_op_gemv_shift(const b158_runtime *rt, int k_pad);
/* and the work-groups (jobs of a chain stage) it takes for the rows of w */
int b158_op_gemv_jobs(const b158_runtime *rt, const b158_tmat *w);

/* y[m][n] (+)= (sum_k w[n][k] q[m][k]) * w_scale[n] / s[m], q in [-127, 127] (as
 * b158_op_quantize writes it; the CPU GEMV negates in int8). m_rows == 1 uses the GEMV kernel,
 * more the GEMM kernel, of the runtime's variant. accumulate adds to y (fused residual). */
b158_status b158_op_ternary_matmul(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                   const b158_buf *s, const b158_buf *y, int m_rows,
                                   int accumulate);

/* What follows a decode GEMV, done by its last work-group (one launch fewer): the int8 input
 * of the next matmul from the GEMV's whole output row y (w->n wide), into q / s (rows of
 * stride k_pad): glu 0: b158_op_rmsnorm_quantize(y, norm_w); glu 1: y is [gate | up] and this
 * is b158_op_glu_norm_quantize of its halves with act, sub-normed by norm_w unless NULL. q may
 * be the GEMV's own input. counter is one int32 the session keeps at zero between launches. */
typedef struct b158_gemv_norm {
    const b158_buf *norm_w, *q, *s, *counter;
    int k_pad;
    float eps;
    int glu;
    enum b158_act act;
} b158_gemv_norm;

/* b158_op_ternary_matmul for one token, then (norm != NULL) that norm and quantization. */
b158_status b158_op_ternary_gemv(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                 const b158_buf *s, const b158_buf *y, int accumulate,
                                 const b158_gemv_norm *norm);

/* Same, forcing the GEMM kernel even for one row (tests and benchmarks). */
b158_status b158_op_ternary_gemm(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                 const b158_buf *s, const b158_buf *y, int m_rows, int accumulate);

b158_status b158_op_rmsnorm(b158_runtime *rt, const b158_buf *x, const b158_buf *w,
                            const b158_buf *out, int n, int m_rows, float eps);

/* q / s of b158_op_quantize for the rows of b158_op_rmsnorm(x, w) (n wide), in one launch; the
 * normed rows are not stored. */
b158_status b158_op_rmsnorm_quantize(b158_runtime *rt, const b158_buf *x, const b158_buf *w,
                                     const b158_buf *q, const b158_buf *s, int n, int k_pad,
                                     int m_rows, float eps);

/* Token positions of a batch: tok[m] = {position of token m in its sequence, cache row of
 * that sequence's position 0} as two int32 (cl int2), m_rows of them in a device buffer. The
 * cache rows of one layer run from element cache_off for cache_rows rows (n_seq * n_ctx). */

/* RoPE of q and k fused with the store of k and v into the FP16 cache (cl_kernels/rope.cl):
 * the n_head heads of q (rows of q_stride floats) rotated in place; the n_head_kv heads of k
 * (rows of kv_stride) rotated in place, then k's and v's rows written as half at cache row
 * tok[m].y + tok[m].x of the layer (rows past cache_rows skipped). n_head or n_head_kv may be
 * 0 (the other part alone), n_rot 0 rotates nothing; head_dim is even. inv_freq: n_rot / 2 floats
 * from b158_rope_inv_freq (host/ref.h). */
typedef struct b158_rope_kv {
    const b158_buf *q, *k, *v, *inv_freq, *k_cache, *v_cache;
    int q_stride, kv_stride, n_head, n_head_kv, head_dim, n_rot;
    enum b158_rope_mode mode;
    int k_off, v_off; /* elements before row 0 of k and of v (one [q | k | v] buffer) */
} b158_rope_kv;
b158_status b158_op_rope_kv_store(b158_runtime *rt, const b158_rope_kv *args, const b158_buf *tok,
                                  int m_rows, size_t cache_off, int cache_rows);

/* Its two parts alone: RoPE of m_rows rows of n_heads heads in place, and the store of m_rows
 * K and V rows (kv_dim floats each, row stride row_stride) without rotation. */
b158_status b158_op_rope(b158_runtime *rt, const b158_buf *x, const b158_buf *inv_freq,
                         int row_stride, int n_heads, int head_dim, int n_rot, int m_rows,
                         const b158_buf *tok, enum b158_rope_mode mode);
b158_status b158_op_kv_store(b158_runtime *rt, const b158_buf *k, const b158_buf *v,
                             const b158_buf *k_cache, const b158_buf *v_cache, int kv_dim,
                             int row_stride, int m_rows, const b158_buf *tok, size_t cache_off,
                             int cache_rows);

/* RoPE and KV store done by the attention itself: q holds raw [q | k | v] rows, k at k_off and
 * v at v_off of each row (stride q_stride); rotation as b158_op_rope_kv_store's. */
typedef struct b158_att_rope {
    const b158_buf *inv_freq;
    int n_rot;
    enum b158_rope_mode mode;
    int k_off, v_off;
} b158_att_rope;

/* Attention split over the keys (flash-decoding; GPU variant only): splits work-groups per
 * (head, token) each take a share of the keys (ceil(keys / splits) rounded up to 32, so short
 * contexts leave the last splits empty) and write a partial result to part (m_rows * n_head *
 * splits * (head_dim + 2) floats); the last of a head's splits to finish combines them (counter:
 * m_rows * n_head int32 kept at zero). A one-token step on a GPU then uses its compute units
 * where a head per group would leave most idle. */
typedef struct b158_att_split {
    int splits;
    const b158_buf *part, *counter;
} b158_att_split;

/* One transformer block of a one-token step in one launch (cl_kernels/decode.cl, GPU variant):
 * the attention's norm and QKV, attention with RoPE and the KV store, the output projection
 * into x2 = x + ..., the feed-forward's norm and gate|up, act(gate) * up and the down
 * projection into x = x2 + .... The same results as the unfused launches, bit for bit. Its
 * groups work-groups must all run at once (grid barriers): at most the device's concurrent
 * groups, one on CPU devices. q8 / qs hold k_pad_max bytes and one float per group; bar holds
 * int32 [0] an error flag, then 4 barrier counters per layer, all zero before the step (a
 * barrier that timed out sets the flag). */
typedef struct b158_decode_step {
    const b158_buf *x, *x2, *qkv, *att, *gu, *q8, *qs;
    const b158_buf *k_cache, *v_cache, *tok, *inv_freq, *bar;
    const b158_buf *stamps; /* with rt->tune.stage_clock: B158_STAMPS uint64 per group and
                               layer (b158_op_decode_layer's comment); else unused */
    b158_att_split split;   /* the attention's; splits 1 = none (part and counter unread) */
    int k_pad_max, groups;
    int n_embd, n_ff, n_head, n_head_kv, head_dim, n_rot, cache_rows, sub_norms;
    enum b158_rope_mode rope_mode;
    enum b158_act act;
    float att_scale, eps;
} b158_decode_step;

/* A block's weights; the sub-norms only where the step's sub_norms is set. */
typedef struct b158_decode_weights {
    const b158_tmat *wqkv, *wo, *wgu, *wdown;
    const b158_buf *attn_norm, *attn_sub_norm, *ffn_norm, *ffn_sub_norm;
} b158_decode_weights;

/* Block layer of the step (cache rows of the layer from element cache_off, barrier counters
 * 1 + 4 layer .. 4 + 4 layer of bar). With a stage clock, group g's timestamps of the block go
 * to stamps[(layer * groups + g) * B158_STAMPS ..]: the start, then the end of each part
 * (host/stage-profile.h). */
b158_status b158_op_decode_layer(b158_runtime *rt, const b158_decode_step *a,
                                 const b158_decode_weights *w, int layer, size_t cache_off);

/* One stage of b158_op_gemv_chain: y (+)= W . the chain's int8 input (add), then with norm the
 * next stage's input over it (b158_op_ternary_gemv's tails; norm->q / s / counter are the
 * chain's). */
typedef struct b158_chain_stage {
    const b158_tmat *w;
    const b158_buf *y;
    int add;
    const b158_gemv_norm *norm;
} b158_chain_stage;

/* 1 to 4 one-token GEMVs in one launch (GPU variant), each stage's tail writing the next one's
 * input over q / s (every stage but the last has a tail, all with the same counter, act and
 * eps): b158_op_ternary_gemv of each in order, bit for bit. groups work-groups take the stages'
 * blocks of rows (jobs) in order (0: one group a job); a job of a later stage waits for the flag
 * sync[1 + 4 layer + stage - 1], set when that stage is done (sync: int32 [0] the error flag, set
 * by a wait that timed out, then 4 flags per layer, zero before the launch). With a stage clock
 * and stamps (stamp_jobs > 0: at least the launch's jobs), job j writes B158_CHAIN_STAMPS
 * timestamps to stamps[(layer stamp_jobs + j) B158_CHAIN_STAMPS ..] (host/stage-profile.h). */
b158_status b158_op_gemv_chain(b158_runtime *rt, const b158_chain_stage *stage, int stages,
                               const b158_buf *q, const b158_buf *s, const b158_buf *sync,
                               int layer, int groups, const b158_buf *stamps, int stamp_jobs);

/* out[m][n_head * head_dim]: causal attention of query row m over cache rows tok[m].y ..
 * tok[m].y + tok[m].x (its sequence up to its own position), clamped to the cache. With rope
 * (every token of the batch from a different sequence, e.g. decode) it is b158_op_rope_kv_store
 * then the attention, in one launch, bit for bit. With norm (glu 0 only; counter m_rows int32
 * kept at zero) the last work-group of each token then does b158_op_rmsnorm_quantize of the
 * token's out row into norm->q / norm->s (the sub-norm). split (NULL: none) splits the keys. */
b158_status b158_op_attention(b158_runtime *rt, const b158_buf *q, const b158_buf *k_cache,
                              const b158_buf *v_cache, const b158_buf *out, int n_head,
                              int n_head_kv, int head_dim, int q_stride, int m_rows,
                              const b158_buf *tok, size_t cache_off, int cache_rows, float scale,
                              const b158_att_rope *rope, const b158_gemv_norm *norm,
                              const b158_att_split *split);

/* The int8 input of the FFN's down projection from its gate and up halves, in one launch:
 * h = act(gate) * up, with norm_w (n floats) the sub-norm rmsnorm(h) * norm_w (NULL: none),
 * quantized as b158_op_quantize writes q / s. Row m's gate at gate[m * stride], its up at
 * up[up_off + m * stride] (gate and up may be one buffer of [gate | up] rows). The gate values
 * are overwritten with h. */
b158_status b158_op_glu_norm_quantize(b158_runtime *rt, const b158_buf *gate, const b158_buf *up,
                                      int up_off, int stride, const b158_buf *norm_w,
                                      const b158_buf *q, const b158_buf *s, int n, int k_pad,
                                      int m_rows, float eps, enum b158_act act);
/* out[m] (int32) = b158_ref_argmax of row m of x (m_rows rows of n floats): the greedy token
 * read back instead of the row. part holds m_rows * B158_ARGMAX_GROUPS int32 pairs, counter
 * m_rows int32 kept at zero. */
#define B158_ARGMAX_GROUPS 256
b158_status b158_op_argmax(b158_runtime *rt, const b158_buf *x, int n, int m_rows,
                           const b158_buf *part, const b158_buf *counter, const b158_buf *out);
b158_status b158_op_embed(b158_runtime *rt, const b158_buf *table, const b158_buf *ids,
                          const b158_buf *out, int n_embd, int n_vocab, int m_rows);
/* y[m][n] = sum_k W[n][k] x[m][k], W (n_rows, k) FP16, x (m_rows, k) and y (m_rows, n_rows)
 * FP32: the LM head and the FP16 baseline. The CPU variant runs m_rows > 1 as the tiled
 * f16_gemm, else f16_matvec. b158_op_f16_matmul with accumulate adds to y instead. */
b158_status b158_op_f16_matvec(b158_runtime *rt, const b158_buf *w, const b158_buf *x,
                               const b158_buf *y, int n_rows, int k, int m_rows);
b158_status b158_op_f16_matmul(b158_runtime *rt, const b158_buf *w, const b158_buf *x,
                               const b158_buf *y, int n_rows, int k, int m_rows, int accumulate);

/* The FP16 baseline's one-token GEMV on the int8 input q / s of b158_op_quantize (one row, at
 * least k bytes): y[n] (+)= sum_k W[n][k] q[k] / s for W (n_rows, k) FP16, then with norm the
 * tail of b158_op_ternary_gemv (the next matmul's int8 input over norm->q / norm->s). Where k is
 * a multiple of 8 the GPU kernel reads w in 16-byte and q in 8-byte pieces from the buffers'
 * starts (whole buffers, as b158_buf_alloc's, are aligned for them). */
b158_status b158_op_f16_gemv_q8(b158_runtime *rt, const b158_buf *w, int n_rows, int k,
                                const b158_buf *q, const b158_buf *s, const b158_buf *y,
                                int accumulate, const b158_gemv_norm *norm);

/* xh[m][0..k) = FP16(q[m][i] / s[m]) (q with row stride k_pad): the baseline's FP16 input. */
b158_status b158_op_dequantize_half(b158_runtime *rt, const b158_buf *q, const b158_buf *s,
                                    const b158_buf *xh, int k, int k_pad, int m_rows);
/* y[i] = FP32(h[i]), or y[i] += FP32(h[i]) with accumulate, for i < count. */
b158_status b158_op_f16_to_f32(b158_runtime *rt, const b158_buf *h, const b158_buf *y, int count,
                               int accumulate);

#endif
