/* FP16-weight matrix x FP32 vectors (LM head, FP16 baseline): y[m][n] = sum_k W[n][k] x[m][k].
 * Weights are FP16 storage read with vload_half (works without cl_khr_fp16); arithmetic FP32.
 *
 * Work-item mapping, GPU (B158_WG > 1): one work-group of B158_WG work-items per row n; work-item
 * l reads 8-wide pieces l, l + B158_WG, ... of the row (coalesced) and partial sums are reduced
 * in __local. CPU (B158_WG == 1): one work-item per row in groups of any size, a sequential
 * loop, no barriers (thousands of one-item groups would cost PoCL more than the work), with
 * four independent 16-wide accumulators so the FMAs do not wait on each other and the loop
 * keeps up with memory. Each row is applied to all m_rows tokens while it is hot in cache. */

#if B158_WG == 1
/* Dot product of n FP16 weights with n floats, 64 at a time in four chains. */
inline float b158_dot_half(__global const half *w, __global const float *x, int n)
{
    float16 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = fma(vload_half16(0, w + i), vload16(0, x + i), a0);
        a1 = fma(vload_half16(0, w + i + 16), vload16(0, x + i + 16), a1);
        a2 = fma(vload_half16(0, w + i + 32), vload16(0, x + i + 32), a2);
        a3 = fma(vload_half16(0, w + i + 48), vload16(0, x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16)
        a0 = fma(vload_half16(0, w + i), vload16(0, x + i), a0);
    const float16 a = (a0 + a1) + (a2 + a3);
    const float8 b = a.lo + a.hi;
    const float4 c = b.lo + b.hi;
    float s = (c.x + c.y) + (c.z + c.w);
    for (; i < n; i++)
        s += vload_half(i, w) * x[i];
    return s;
}
#endif

__kernel void f16_matvec(__global const half *w, __global const float *x, __global float *y,
                         int n_rows, int k, int m_rows)
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
    if (n >= n_rows)
        return; /* GPU grids are exact: no return before a barrier */
#endif
    __global const half *wr = w + (size_t)n * k;
#if B158_WG == 1
    for (int m = 0; m < m_rows; m++)
        y[(size_t)m * n_rows + n] = b158_dot_half(wr, x + (size_t)m * k, k);
    (void)lid;
    (void)red;
#else
    const int k8 = k / 8;
    for (int m = 0; m < m_rows; m++) {
        __global const float *xm = x + (size_t)m * k;
        float8 acc8 = 0.0f;
        for (int p = lid; p < k8; p += B158_WG)
            acc8 += vload_half8(p, wr) * vload8(0, xm + 8 * p);
        float acc = acc8.s0 + acc8.s1 + acc8.s2 + acc8.s3 + acc8.s4 + acc8.s5 + acc8.s6 + acc8.s7;
        for (int i = 8 * k8 + lid; i < k; i += B158_WG)
            acc += vload_half(i, wr) * xm[i];
        acc = b158_wg_sum(acc, red);
        if (lid == 0)
            y[(size_t)m * n_rows + n] = acc;
    }
#endif
}

/* y[i] = h[i], or y[i] += h[i] with accumulate: FP16 results of the CLBlast baseline back into
 * the FP32 stream (vload_half, no cl_khr_fp16 needed). One work-item per element; no __local. */
__kernel void f16_to_f32(__global const half *h, __global float *y, int count, int accumulate)
{
    const int i = get_global_id(0);
    if (i < count)
        y[i] = accumulate ? y[i] + vload_half(i, h) : vload_half(i, h);
}
