/* FP16-weight matrix x FP32 vectors (LM head, FP16 baseline): y[m][n] = sum_k W[n][k] x[m][k],
 * or y[m][n] += that with accumulate (the baseline's residual adds, no extra launch).
 * Weights are FP16 storage read with vload_half (works without cl_khr_fp16); arithmetic FP32.
 *
 * Work-item mapping, GPU (B158_WG > 1): one work-group of B158_WG work-items per row n; work-item
 * l reads 8-wide pieces l, l + B158_WG, ... of the row (coalesced) and partial sums are reduced
 * in __local. CPU (B158_WG == 1): work-item n takes rows n and n + (n_rows + 1) / 2 together
 * (two streams from far-apart places), in groups of any size, a sequential loop, no barriers
 * (thousands of one-item groups would cost PoCL more than the work), with independent 16-wide
 * accumulators so the FMAs do not wait on each other and the loop keeps up with memory. Each row is
 * applied to all m_rows tokens while it is hot in cache; the CPU variant's prefill takes f16_gemm
 * below instead. */

#if B158_WG == 1
/* The CPU variant's dot products of FP16 weights with a row x of floats (xtype float, X16 /
 * X1 loading 16 / 1 of them) or of int8 activations (char, converted): name takes one row, n
 * weights 64 at a time in four chains; name2 two rows at once, as two streams from far-apart
 * places keep more of the memory system busy than one (about 38 -> 49 GB/s with two threads
 * here). */
#define B158_DOT_HALF(name, name2, xtype, X16, X1)                                                 \
    inline float name(__global const half *w, __global const xtype *x, int n)                      \
    {                                                                                              \
        float16 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;                                        \
        int i = 0;                                                                                 \
        for (; i + 64 <= n; i += 64) {                                                             \
            a0 = fma(vload_half16(0, w + i), X16(x, i), a0);                                       \
            a1 = fma(vload_half16(0, w + i + 16), X16(x, i + 16), a1);                             \
            a2 = fma(vload_half16(0, w + i + 32), X16(x, i + 32), a2);                             \
            a3 = fma(vload_half16(0, w + i + 48), X16(x, i + 48), a3);                             \
        }                                                                                          \
        for (; i + 16 <= n; i += 16)                                                               \
            a0 = fma(vload_half16(0, w + i), X16(x, i), a0);                                       \
        const float16 a = (a0 + a1) + (a2 + a3);                                                   \
        const float8 b = a.lo + a.hi;                                                              \
        const float4 c = b.lo + b.hi;                                                              \
        float s = (c.x + c.y) + (c.z + c.w);                                                       \
        for (; i < n; i++)                                                                         \
            s += vload_half(i, w) * X1(x, i);                                                      \
        return s;                                                                                  \
    }                                                                                              \
    inline float2 name2(__global const half *wa, __global const half *wb, __global const xtype *x, \
                        int n)                                                                     \
    {                                                                                              \
        float16 a0 = 0.0f, a1 = 0.0f, b0 = 0.0f, b1 = 0.0f;                                        \
        int i = 0;                                                                                 \
        for (; i + 32 <= n; i += 32) {                                                             \
            const float16 x0 = X16(x, i), x1 = X16(x, i + 16);                                     \
            a0 = fma(vload_half16(0, wa + i), x0, a0);                                             \
            b0 = fma(vload_half16(0, wb + i), x0, b0);                                             \
            a1 = fma(vload_half16(0, wa + i + 16), x1, a1);                                        \
            b1 = fma(vload_half16(0, wb + i + 16), x1, b1);                                        \
        }                                                                                          \
        for (; i + 16 <= n; i += 16) {                                                             \
            const float16 x0 = X16(x, i);                                                          \
            a0 = fma(vload_half16(0, wa + i), x0, a0);                                             \
            b0 = fma(vload_half16(0, wb + i), x0, b0);                                             \
        }                                                                                          \
        const float16 a = a0 + a1, b = b0 + b1;                                                    \
        const float8 a8 = a.lo + a.hi, b8 = b.lo + b.hi;                                           \
        const float4 a4 = a8.lo + a8.hi, b4 = b8.lo + b8.hi;                                       \
        float2 s = (float2)((a4.x + a4.y) + (a4.z + a4.w), (b4.x + b4.y) + (b4.z + b4.w));         \
        for (; i < n; i++)                                                                         \
            s += (float2)(vload_half(i, wa), vload_half(i, wb)) * X1(x, i);                        \
        return s;                                                                                  \
    }
#define B158_LOAD_F16(x, i) vload16(0, (x) + (i))
#define B158_LOAD_F1(x, i) (x)[i]
#define B158_LOAD_Q16(x, i) convert_float16(vload16(0, (x) + (i)))
#define B158_LOAD_Q1(x, i) ((float)(x)[i])
B158_DOT_HALF(b158_dot_half, b158_dot_half2, float, B158_LOAD_F16, B158_LOAD_F1)
B158_DOT_HALF(b158_dot_half_q8, b158_dot_half2_q8, char, B158_LOAD_Q16, B158_LOAD_Q1)
#endif

#if B158_WG > 1
#define B158_MV_WG (B158_WG < 64 ? B158_WG : 64) /* f16_matvec's work-items per row */
B158_TREE_REDUCE(b158_mv_sum, float, B158_ADD, B158_MV_WG)
#endif

__kernel void f16_matvec(__global const half *w, __global const float *x, __global float *y,
                         int n_rows, int k, int m_rows, int accumulate)
{
    __local float red[B158_WG];
#if B158_WG == 1
    const int n = get_global_id(0);
    const int lid = 0;
#else
    const int n = get_group_id(0);
    const int lid = get_local_id(0);
#endif
#if B158_WG == 1
    if (n >= (n_rows + 1) / 2)
        return; /* GPU grids are exact: no return before a barrier */
#endif
    __global const half *wr = w + (size_t)n * k;
#if B158_WG == 1
    const int half_rows = (n_rows + 1) / 2, nb = n + half_rows;
    if (n < half_rows && nb < n_rows) {
        __global const half *wb = w + (size_t)nb * k;
        for (int m = 0; m < m_rows; m++) {
            const float2 s = b158_dot_half2(wr, wb, x + (size_t)m * k, k);
            const size_t o = (size_t)m * n_rows + n;
            y[o] = accumulate ? y[o] + s.x : s.x;
            y[o + half_rows] = accumulate ? y[o + half_rows] + s.y : s.y;
        }
    } else if (n < half_rows) {
        for (int m = 0; m < m_rows; m++) {
            const float s = b158_dot_half(wr, x + (size_t)m * k, k);
            const size_t o = (size_t)m * n_rows + n;
            y[o] = accumulate ? y[o] + s : s;
        }
    }
    (void)lid;
    (void)red;
#else
    /* at most 64 work-items a row: on an H200 the LM head took 163 us with 64 and 315 with 256
     * (a row of 2560 is 320 pieces: 256 work-items do one or two each, then a deeper tree) */
    const int k8 = k / 8;
    /* rows of a multiple of 8 halves start on 16 bytes: each piece is then one 128-bit load
     * (uint4), converted in registers (b158_half8_of) */
    __global const uint4 *wr4 = (__global const uint4 *)wr;
    for (int m = 0; m < m_rows; m++) {
        __global const float *xm = x + (size_t)m * k;
        float8 acc8 = 0.0f;
        if (k % 8 == 0) {
            /* x rows start on 32 bytes too: whole float8 loads (vload8 may become 8 scalar
             * loads where alignment is unknown) */
            __global const float8 *xm8 = (__global const float8 *)xm;
            for (int p = lid; p < k8; p += B158_MV_WG)
                acc8 += b158_half8_of(wr4[p]) * xm8[p];
        } else {
            for (int p = lid; p < k8; p += B158_MV_WG)
                acc8 += vload_half8(p, wr) * vload8(0, xm + 8 * p);
        }
        float acc = acc8.s0 + acc8.s1 + acc8.s2 + acc8.s3 + acc8.s4 + acc8.s5 + acc8.s6 + acc8.s7;
        for (int i = 8 * k8 + lid; i < k; i += B158_MV_WG)
            acc += vload_half(i, wr) * xm[i];
        acc = b158_mv_sum(acc, red);
        const size_t o = (size_t)m * n_rows + n;
        if (lid == 0)
            y[o] = accumulate ? y[o] + acc : acc;
    }
#endif
}

/* The FP16 baseline's one-token GEMV on the ternary engine's int8 input (quantize.cl: q, one
 * row of stride k_pad, and its scale): y[n] (+)= sum_k W[n][k] q[k] / scale, the sums of
 * f16_matvec on dequantize_rows' x up to float rounding (the division comes once a row, as in the
 * ternary GEMV), with no dequantization launched before it; then the ternary GEMV's optional
 * tail (b158_last_group_tail: the next matmul's int8 input made by the last group), so a decode
 * block of the baseline runs as many launches as the ternary engine's.
 * GPU (B158_WG > 1): B158_FL work-items a row, B158_WG / B158_FL rows a work-group; a row's
 * work-items read consecutive 16-byte pieces of it (eight weights, one 128-bit load, beside the
 * eight activations they meet), four pieces in flight, then one __local reduction per group.
 * CPU (B158_WG == 1): f16_matvec's mapping, two rows a work-item. */
#if B158_WG > 1
#define B158_FL (B158_WG < 32 ? B158_WG : 32) /* work-items a row */

/* This work-item's part of row wr . q (k wide): pieces lane, lane + B158_FL, ... */
inline float b158_gemv_q8_part(__global const half *wr, __global const char *q, int k, int lane)
{
    const int k8 = k / 8;
    float8 a0 = 0.0f, a1 = 0.0f;
    int p = lane;
    if (k % 8 == 0) { /* rows start on 16 bytes: whole uint4 pieces; q rows on 64 */
        __global const uint4 *w4 = (__global const uint4 *)wr;
        __global const uint2 *q2 = (__global const uint2 *)q;
        for (; p + 3 * B158_FL < k8; p += 4 * B158_FL) {
            const uint4 w0 = w4[p], w1 = w4[p + B158_FL], w2 = w4[p + 2 * B158_FL],
                        w3 = w4[p + 3 * B158_FL];
            const uint2 x0 = q2[p], x1 = q2[p + B158_FL], x2 = q2[p + 2 * B158_FL],
                        x3 = q2[p + 3 * B158_FL];
            a0 = fma(b158_half8_of(w0), convert_float8(as_char8(x0)), a0);
            a1 = fma(b158_half8_of(w1), convert_float8(as_char8(x1)), a1);
            a0 = fma(b158_half8_of(w2), convert_float8(as_char8(x2)), a0);
            a1 = fma(b158_half8_of(w3), convert_float8(as_char8(x3)), a1);
        }
        for (; p < k8; p += B158_FL)
            a0 = fma(b158_half8_of(w4[p]), convert_float8(as_char8(q2[p])), a0);
    } else {
        for (; p < k8; p += B158_FL)
            a0 = fma(vload_half8(p, wr), convert_float8(vload8(p, q)), a0);
    }
    const float8 a = a0 + a1;
    float acc = ((a.s0 + a.s1) + (a.s2 + a.s3)) + ((a.s4 + a.s5) + (a.s6 + a.s7));
    for (int i = 8 * k8 + lane; i < k; i += B158_FL)
        acc += vload_half(i, wr) * (float)q[i];
    return acc;
}

__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void
f16_gemv_q8(__global const half *w, __global const char *q, __global const float *q_scale,
            __global float *y, int n_rows, int k, int accumulate, B158_TAIL_PARAMS)
{
    __local float red[B158_WG];
    __local int last;
    const int lid = get_local_id(0), lane = lid % B158_FL;
    const int n = get_group_id(0) * (B158_WG / B158_FL) + lid / B158_FL;
    red[lid] = n < n_rows ? b158_gemv_q8_part(w + (size_t)n * k, q, k, lane) : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = B158_FL / 2; s > 0; s >>= 1) { /* each row's lanes, side by side */
        if (lane < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lane == 0 && n < n_rows) {
        const float v = red[lid] / q_scale[0];
        y[n] = accumulate ? y[n] + v : v;
    }
    b158_last_group_tail(y, n_rows, B158_TAIL_ARGS, &last, red);
}
#else
__kernel void f16_gemv_q8(__global const half *w, __global const char *q,
                          __global const float *q_scale, __global float *y, int n_rows, int k,
                          int accumulate, B158_TAIL_PARAMS)
{
    __local float red[1];
    __local int last;
    const int n = get_global_id(0), half_rows = (n_rows + 1) / 2, nb = n + half_rows;
    if (n < half_rows) { /* no return: every work-item reaches the tail */
        const float xs = q_scale[0];
        __global const half *wr = w + (size_t)n * k;
        if (nb < n_rows) {
            const float2 v = b158_dot_half2_q8(wr, w + (size_t)nb * k, q, k) / xs;
            y[n] = accumulate ? y[n] + v.x : v.x;
            y[nb] = accumulate ? y[nb] + v.y : v.y;
        } else {
            const float v = b158_dot_half_q8(wr, q, k) / xs;
            y[n] = accumulate ? y[n] + v : v;
        }
    }
    b158_last_group_tail(y, n_rows, B158_TAIL_ARGS, &last, red);
}
#endif

#if B158_WG == 1
#define B158_F16_GEMM_R 6 /* weight rows per work-item: F16_GEMM_ROWS of host/ops.c */
#define B158_F16_GEMM_T 4 /* tokens per work-item: F16_GEMM_TOKENS of host/ops.c */
/* The prefill GEMM of the CPU variant (m_rows > 1), y[m][n] = sum_k W[n][k] x[m][k]: work-item
 * (i, j) computes the tile of B158_F16_GEMM_R rows from n0 = j * R and B158_F16_GEMM_T tokens
 * from m0 = i * T, R x T dot products in 16-wide registers, each weight piece converted once
 * for T tokens and each x piece loaded once for R rows. A work-group is one row tile for all
 * token tiles, so its R weight rows stay in cache while the tokens stream past. Tiles at the
 * edges repeat the last row or token (no branch in the loop) and store only what is theirs.
 * No __local, no barriers; rows need no alignment (vload). */
__kernel void f16_gemm(__global const half *w, __global const float *x, __global float *y,
                       int n_rows, int k, int m_rows, int accumulate)
{
    const int m0 = get_global_id(0) * B158_F16_GEMM_T, n0 = get_global_id(1) * B158_F16_GEMM_R;
    if (m0 >= m_rows || n0 >= n_rows)
        return;
    __global const half *wr[B158_F16_GEMM_R];
    __global const float *xr[B158_F16_GEMM_T];
    float16 acc[B158_F16_GEMM_R][B158_F16_GEMM_T];
#pragma unroll
    for (int r = 0; r < B158_F16_GEMM_R; r++)
        wr[r] = w + (size_t)min(n0 + r, n_rows - 1) * k;
#pragma unroll
    for (int t = 0; t < B158_F16_GEMM_T; t++)
        xr[t] = x + (size_t)min(m0 + t, m_rows - 1) * k;
#pragma unroll
    for (int r = 0; r < B158_F16_GEMM_R; r++)
#pragma unroll
        for (int t = 0; t < B158_F16_GEMM_T; t++)
            acc[r][t] = 0.0f;
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        float16 xv[B158_F16_GEMM_T];
#pragma unroll
        for (int t = 0; t < B158_F16_GEMM_T; t++)
            xv[t] = vload16(0, xr[t] + i);
#pragma unroll
        for (int r = 0; r < B158_F16_GEMM_R; r++) {
            const float16 wv = vload_half16(0, wr[r] + i);
#pragma unroll
            for (int t = 0; t < B158_F16_GEMM_T; t++)
                acc[r][t] = fma(wv, xv[t], acc[r][t]);
        }
    }
#pragma unroll
    for (int r = 0; r < B158_F16_GEMM_R; r++)
#pragma unroll
        for (int t = 0; t < B158_F16_GEMM_T; t++) {
            const float16 a = acc[r][t];
            const float8 b = a.lo + a.hi;
            const float4 c = b.lo + b.hi;
            float s = (c.x + c.y) + (c.z + c.w);
            for (int j = i; j < k; j++)
                s += vload_half(j, wr[r]) * xr[t][j];
            const size_t o = (size_t)(m0 + t) * n_rows + n0 + r;
            if (n0 + r < n_rows && m0 + t < m_rows)
                y[o] = accumulate ? y[o] + s : s;
        }
}
#endif

#if B158_WG > 1
#define B158_FG 16 /* work-group side */
#define B158_FT 64 /* rows and tokens per tile: 4 x 4 per work-item */
#define B158_FK 32 /* k per step */
/* Element c of row r (width k) of w (FP16) or else of x, zero past k */
inline float b158_f16_at(__global const half *w, __global const float *x, int r, int k, int c)
{
    return c >= k ? 0.0f : w ? vload_half((size_t)r * k + c, w) : x[(size_t)r * k + c];
}

/* The 8 values of row r (of rows, width k) from column c, zero past k or past the rows:
 * returned, not written through a pointer, so they stay in registers */
inline float8 b158_f16_piece(__global const half *w, __global const float *x, int r, int rows,
                             int k, int c)
{
    if (r >= rows)
        return (float8)0.0f;
    if (c + 8 <= k && k % 8 == 0) /* whole 16- or 32-byte pieces: rows of a multiple of 8 */
        return w ? b158_half8_of(*(__global const uint4 *)(w + (size_t)r * k + c))
                 : *(__global const float8 *)(x + (size_t)r * k + c);
    return (float8)(b158_f16_at(w, x, r, k, c), b158_f16_at(w, x, r, k, c + 1),
                    b158_f16_at(w, x, r, k, c + 2), b158_f16_at(w, x, r, k, c + 3),
                    b158_f16_at(w, x, r, k, c + 4), b158_f16_at(w, x, r, k, c + 5),
                    b158_f16_at(w, x, r, k, c + 6), b158_f16_at(w, x, r, k, c + 7));
}

/* The prefill GEMM of the GPU variant (m_rows > 1), y[m][n] (+)= sum_k W[n][k] x[m][k]: a
 * 16 x 16 work-group computes a tile of 64 rows x 64 tokens, work-item (tx, ty) the rows
 * tx + 16i and tokens ty + 16j (4 x 4 in registers). Per step of 32 along k the group converts
 * the tile's weights to float and copies the tokens' x into __local (one 8-wide piece of each per
 * work-item, 16-byte loads where k % 8 == 0), so each weight is read from memory once per 64
 * tokens instead of once per token. */
__kernel __attribute__((reqd_work_group_size(B158_FG, B158_FG, 1))) void
f16_gemm(__global const half *w, __global const float *x, __global float *y, int n_rows, int k,
         int m_rows, int accumulate)
{
    __local float wt[B158_FT][B158_FK + 1];
    __local float xt[B158_FT][B158_FK + 1];
    const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * B158_FG + tx;
    const int n0 = get_group_id(0) * B158_FT, m0 = get_group_id(1) * B158_FT;
    const int pr = tid >> 2, pc = (tid & 3) * 8; /* this work-item's piece of each tile */
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += B158_FK) {
        vstore8(b158_f16_piece(w, NULL, n0 + pr, n_rows, k, k0 + pc), 0, &wt[pr][pc]);
        vstore8(b158_f16_piece(NULL, x, m0 + pr, m_rows, k, k0 + pc), 0, &xt[pr][pc]);
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int kk = 0; kk < B158_FK; kk++) {
            float wv[4], xv[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                wv[i] = wt[tx + B158_FG * i][kk];
#pragma unroll
            for (int j = 0; j < 4; j++)
                xv[j] = xt[ty + B158_FG * j][kk];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fma(wv[i], xv[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx + B158_FG * i, m = m0 + ty + B158_FG * j;
            if (n < n_rows && m < m_rows) {
                const size_t o = (size_t)m * n_rows + n;
                y[o] = accumulate ? y[o] + acc[i][j] : acc[i][j];
            }
        }
}
#endif

/* y[i] = h[i], or y[i] += h[i] with accumulate: FP16 results of the CLBlast baseline back into
 * the FP32 stream (vload_half, no cl_khr_fp16 needed). One work-item per element; no __local. */
__kernel void f16_to_f32(__global const half *h, __global float *y, int count, int accumulate)
{
    const int i = get_global_id(0);
    if (i < count)
        y[i] = accumulate ? y[i] + vload_half(i, h) : vload_half(i, h);
}
