/* The gated FFN activation, fused with the sub-norm and quantization that follow it. */

/* act(g) of the gated FFN: 0 = silu(g) = g / (1 + e^-g), 1 = relu(g)^2 (BitNet 2B-4T). relu^2 is
 * kept in FP32: it overflows FP16 on real checkpoints. */
inline float b158_act(float g, int act)
{
    if (act == 0)
        return g / (1.0f + exp(-g));
    const float r = fmax(g, 0.0f);
    return r * r;
}

/* The FFN's gate and up halves to the int8 input of its down projection in one launch:
 * h = act(gate) * up, then (norm != 0) the sub-norm h / sqrt(mean(h^2) + eps) * w, then the
 * absmax int8 quantization of quantize_rows (q rows of stride k_pad, zero tail, scale[m]).
 * Row m's gate is gate[m * stride + i], its up up[up_off + m * stride + i] (one buffer holding
 * [gate | up] rows, or two). h overwrites the gate values (the gate buffer is scratch
 * afterwards); the normed values are recomputed per pass, in the expressions of the separate
 * glu / rmsnorm / quantize_rows steps, never stored.
 * Work-item mapping: one work-group of B158_WG work-items per row, striding over it; exactly
 * m_rows groups (no bounds return before a barrier). */
__kernel void glu_norm_quantize(__global float *gate, __global const float *up, int up_off,
                                int stride, __global const float *w, __global char *q,
                                __global float *scale, int n, int k_pad, int m_rows, float eps,
                                int act, int norm)
{
    __local float red[B158_WG];
    const int m = get_group_id(1);
    const int lid = get_local_id(0);
    __global float *g = gate + (size_t)m * stride;
    __global const float *u = up + up_off + (size_t)m * stride;
    __global char *qr = q + (size_t)m * k_pad;
    /* h replaces the gate values (only this work-item reads them again): the activation is
     * taken once per element, not once per pass */
    float ss = 0.0f, hmax = 0.0f;
    for (int i = lid; i < n; i += B158_WG) {
        const float h = b158_act(g[i], act) * u[i];
        g[i] = h;
        ss += h * h;
        hmax = fmax(hmax, fabs(h));
    }
    float inv = 1.0f, amax;
    if (norm) {
        ss = b158_wg_sum(ss, red);
        inv = 1.0f / sqrt(ss / (float)n + eps);
        amax = 0.0f;
        for (int i = lid; i < n; i += B158_WG)
            amax = fmax(amax, fabs(g[i] * inv * w[i]));
    } else {
        amax = hmax;
    }
    amax = b158_wg_max(amax, red);
    const float s = 127.0f / fmax(amax, 1e-5f);
    for (int i = lid; i < k_pad; i += B158_WG) {
        const float v = i < n ? rint((norm ? g[i] * inv * w[i] : g[i]) * s) : 0.0f;
        qr[i] = isnan(v) ? (char)0 : (char)clamp(v, -128.0f, 127.0f);
    }
    if (lid == 0)
        scale[m] = s;
}
