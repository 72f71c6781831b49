/* RMSNorm with weight: out = x / sqrt(mean(x^2) + eps) * w, per row, in FP32.
 *
 * Work-item mapping: one work-group of B158_WG work-items per row; work-items stride over the
 * row; the sum of squares is reduced in __local (no barriers when B158_WG == 1). The host
 * launches exactly m_rows groups, so there is no bounds return: PoCL miscompiles a return
 * before a barrier even when the whole group takes it. In-place use
 * (out == x) is allowed: each element is read before the same work-item writes it. */

__kernel void rmsnorm(__global const float *x, __global const float *w, __global float *out, int n,
                      int m_rows, float eps)
{
    __local float red[B158_WG];
    const int m = get_group_id(1);
    const int lid = get_local_id(0);
    __global const float *xr = x + (size_t)m * n;
    __global float *orow = out + (size_t)m * n;
    float ss = 0.0f;
    for (int i = lid; i < n; i += B158_WG)
        ss += xr[i] * xr[i];
    ss = b158_wg_sum(ss, red);
    const float inv = 1.0f / sqrt(ss / (float)n + eps);
    for (int i = lid; i < n; i += B158_WG)
        orow[i] = xr[i] * inv * w[i];
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
    const int lid = get_local_id(0);
    __global const float *xr = x + (size_t)m * n;
    __global char *qr = q + (size_t)m * k_pad;
    float ss = 0.0f;
    for (int i = lid; i < n; i += B158_WG)
        ss += xr[i] * xr[i];
    ss = b158_wg_sum(ss, red);
    const float inv = 1.0f / sqrt(ss / (float)n + eps);
    float amax = 0.0f;
    for (int i = lid; i < n; i += B158_WG)
        amax = fmax(amax, fabs(xr[i] * inv * w[i]));
    amax = b158_wg_max(amax, red);
    const float s = 127.0f / fmax(amax, 1e-5f);
    for (int i = lid; i < k_pad; i += B158_WG) {
        const float v = i < n ? rint(xr[i] * inv * w[i] * s) : 0.0f;
        qr[i] = isnan(v) ? (char)0 : (char)clamp(v, -128.0f, 127.0f);
    }
    if (lid == 0)
        scale[m] = s;
}
