/* RMSNorm with weight: out = x / sqrt(mean(x^2) + eps) * w, per row, in FP32.
 *
 * Work-item mapping: one work-group of B158_WG work-items per row; work-items stride over the
 * row's 16-float chunks and then its tail (common.cl); the sum of squares is reduced in __local
 * (no barriers when B158_WG == 1). The host launches exactly m_rows groups, so there is no
 * bounds return: PoCL miscompiles a return before a barrier even when the whole group takes
 * it. In-place use (out == x) is allowed: each element is read before the same work-item writes
 * it. */

__kernel void rmsnorm(__global const float *x, __global const float *w, __global float *out, int n,
                      int m_rows, float eps)
{
    __local float red[B158_WG];
    const int m = get_group_id(1);
    const int lid = get_local_id(0);
    __global const float *xr = x + (size_t)m * n;
    __global float *orow = out + (size_t)m * n;
    const float inv = 1.0f / sqrt(b158_row_sumsq(xr, n, red) / (float)n + eps);
#if B158_WG > 1
    for (int i0 = lid; i0 < n; i0 += B158_ROW_STEP2 * B158_WG) {
        float v[B158_ROW_STEP2], wv[B158_ROW_STEP2];
        b158_row_load2(v, xr, i0, n, 1);
        b158_row_load2(wv, w, i0, n, 1);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP2; k++)
            if (i0 + k * B158_WG < n)
                orow[i0 + k * B158_WG] = v[k] * inv * wv[k];
    }
#else
    const int n16 = n / 16;
    for (int c = lid; c < n16; c += B158_WG)
        vstore16(vload16(c, xr) * inv * vload16(c, w), c, orow);
    for (int i = 16 * n16 + lid; i < n; i += B158_WG)
        orow[i] = xr[i] * inv * w[i];
#endif
}

/* RMSNorm fused with the int8 quantization that follows it (quantize_rows): q[m][0..k_pad) and
 * scale[m] of the normed row, which is never stored. The normed values are recomputed, in the
 * same expression as rmsnorm's, for the absmax pass and for the conversion, so the result is
 * that of rmsnorm then quantize_rows. Same mapping and rules as both kernels above. */
__kernel void rmsnorm_quantize(__global const float *x, __global const float *w, __global char *q,
                               __global float *scale, int n, int k_pad, int m_rows, float eps)
{
    __local float red[B158_WG];
    const int m = get_group_id(1);
    b158_rmsnorm_quantize_row(x + (size_t)m * n, w, 1, q + (size_t)m * k_pad, scale + m, n, k_pad,
                              eps, red);
}
