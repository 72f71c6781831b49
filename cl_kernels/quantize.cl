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
    __local float red[B158_WG];
    const int m = get_group_id(1);
    b158_rmsnorm_quantize_row(x + (size_t)m * k, x, 0, q + (size_t)m * k_pad, scale + m, k, k_pad,
                              0.0f, red);
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
