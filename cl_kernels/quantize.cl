/* Per-token absmax quantization of FP32 activations to int8 (REFERENCE.md s.1).
 *
 * Work-item mapping: one work-group of B158_WG work-items per row (token); the work-items
 * stride over the row's 16-float chunks (common.cl) for the absmax and again for the
 * conversion. With B158_WG == 1 (CPU) a row is one vector loop and there are no barriers. Exactly
 * m_rows groups are launched (no bounds return before a barrier: PoCL miscompiles that). Output
 * rows have stride k_pad (a multiple of 64) and the tail k..k_pad-1 is written as zero, so the
 * ternary kernels can read whole 64-element chunks. scale[m] receives s = 127/absmax, the factor
 * the int8 values carry (y = acc * w_scale / s). Rounding is to nearest with ties to even, as
 * torch.round in transformers' BitNet and the training code (kernels are built without fast-math,
 * so rint follows the default round-to-nearest-even mode). fmax skips NaN: a NaN element quantizes
 * to 0; an infinite one makes s = 0 and the row all zero. */

__kernel void quantize_rows(__global const float *x, __global char *q, __global float *scale, int k,
                            int k_pad, int m_rows)
{
    const int m = get_group_id(1);
    const int lid = get_local_id(0);
    __local float red[B158_WG];
    __global const float *xr = x + (size_t)m * k;
    __global char *qr = q + (size_t)m * k_pad;
    const int k16 = k / 16;

    float16 amax16 = 0.0f;
    for (int c = lid; c < k16; c += B158_WG)
        amax16 = fmax(amax16, fabs(vload16(c, xr)));
    float amax = b158_hmax16(amax16);
    for (int i = 16 * k16 + lid; i < k; i += B158_WG)
        amax = fmax(amax, fabs(xr[i]));
    amax = b158_wg_max(amax, red);

    /* ties to even, like torch.round; NaN (a NaN input, or an infinite one times s = 0)
     * becomes 0, as in b158_ref_quantize */
    const float s = 127.0f / fmax(amax, 1e-5f);
    for (int c = lid; c < k16; c += B158_WG)
        vstore16(b158_q8x16(vload16(c, xr) * s), c, qr);
    for (int i = 16 * k16 + lid; i < k_pad; i += B158_WG)
        qr[i] = i < k ? b158_q8(xr[i] * s) : (char)0;
    if (lid == 0)
        scale[m] = s;
}

/* x[m][i] = q[m][i] / scale[m]: the values the int8 activations stand for, as the FP16 baseline
 * engine feeds them to its FP16 matrices (the same function as the ternary engine computes).
 * One work-item per (element, row); no __local. */
__kernel void dequantize_rows(__global const char *q, __global const float *scale,
                              __global float *x, int k, int k_pad, int m_rows)
{
    const int i = get_global_id(0);
    const int m = get_global_id(1);
    if (i < k && m < m_rows)
        x[(size_t)m * k + i] = (float)q[(size_t)m * k_pad + i] / scale[m];
}

/* xh[m][i] = FP16(q[m][i] / scale[m]): the same values as dequantize_rows in FP16 storage, the
 * input of the CLBlast HGEMM/HGEMV baseline (vstore_half rounds to nearest even and needs no
 * cl_khr_fp16). One work-item per (element, row); no __local. */
__kernel void dequantize_rows_half(__global const char *q, __global const float *scale,
                                   __global half *xh, int k, int k_pad, int m_rows)
{
    const int i = get_global_id(0);
    const int m = get_global_id(1);
    if (i < k && m < m_rows)
        vstore_half((float)q[(size_t)m * k_pad + i] / scale[m], (size_t)m * k + i, xh);
}
