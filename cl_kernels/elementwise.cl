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

inline float16 b158_act16(float16 g, int act)
{
    if (act == 0)
        return g / (1.0f + exp(-g));
    const float16 r = fmax(g, 0.0f);
    return r * r;
}

/* The FFN's gate and up halves to the int8 input of its down projection in one launch:
 * h = act(gate) * up, then (norm != 0) the sub-norm h / sqrt(mean(h^2) + eps) * w, then the
 * absmax int8 quantization of quantize_rows (q rows of stride k_pad, zero tail, scale[m]).
 * Row m's gate is gate[m * stride + i], its up up[up_off + m * stride + i] (one buffer holding
 * [gate | up] rows, or two). h overwrites the gate values (the gate buffer is scratch
 * afterwards); the normed values are recomputed per pass, in the expressions of the separate
 * glu / rmsnorm / quantize_rows steps, never stored.
 * Work-item mapping: one work-group of B158_WG work-items per row, striding over its 16-float
 * chunks and then its tail (common.cl); exactly m_rows groups (no bounds return before a
 * barrier). */
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
    const int n16 = n / 16;
    /* h replaces the gate values (only this work-item reads them again): the activation is
     * taken once per element, not once per pass */
    float16 ss16 = 0.0f, hmax16 = 0.0f;
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 h = b158_act16(vload16(c, g), act) * vload16(c, u);
        vstore16(h, c, g);
        ss16 += h * h;
        hmax16 = fmax(hmax16, fabs(h));
    }
    float ss = b158_hsum16(ss16), hmax = b158_hmax16(hmax16);
    for (int i = 16 * n16 + lid; i < n; i += B158_WG) {
        const float h = b158_act(g[i], act) * u[i];
        g[i] = h;
        ss += h * h;
        hmax = fmax(hmax, fabs(h));
    }
    float inv = 1.0f, amax;
    if (norm) {
        ss = b158_wg_sum(ss, red);
        inv = 1.0f / sqrt(ss / (float)n + eps);
        float16 amax16 = 0.0f;
        for (int c = lid; c < n16; c += B158_WG)
            amax16 = fmax(amax16, fabs(vload16(c, g) * inv * vload16(c, w)));
        amax = b158_hmax16(amax16);
        for (int i = 16 * n16 + lid; i < n; i += B158_WG)
            amax = fmax(amax, fabs(g[i] * inv * w[i]));
    } else {
        amax = hmax;
    }
    amax = b158_wg_max(amax, red);
    const float s = 127.0f / fmax(amax, 1e-5f);
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 h = vload16(c, g);
        vstore16(b158_q8x16((norm ? h * inv * vload16(c, w) : h) * s), c, qr);
    }
    for (int i = 16 * n16 + lid; i < k_pad; i += B158_WG)
        qr[i] = i < n ? b158_q8((norm ? g[i] * inv * w[i] : g[i]) * s) : (char)0;
    if (lid == 0)
        scale[m] = s;
}
