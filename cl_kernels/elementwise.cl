/* The gated FFN activation, fused with the sub-norm and quantization that follow it. */

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
    b158_glu_norm_quantize_row(gate + (size_t)m * stride, up + up_off + (size_t)m * stride, 1, w,
                               q + (size_t)m * k_pad, scale + m, n, k_pad, eps, act, norm, red);
}
