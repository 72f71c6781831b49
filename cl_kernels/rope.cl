/* Rotary position embedding, in place on rows of heads: x[m * row_stride + h * head_dim + i].
 *
 * Work-item mapping: one work-item per (rotated pair, head, token); no __local, no barriers.
 * Pairing: mode 0 = NEOX (i with i + n_rot/2, transformers' rotate_half), mode 1 = interleaved
 * (2i with 2i + 1, GPT-J / original LLaMA). Angle = tok[m].x * inv_freq[i] (tok[m].x: the
 * token's position in its sequence, B158 batches mix sequences), where the host
 * computed inv_freq[i] = theta_base^(-2i / n_rot) in double precision (b158_rope_inv_freq): the
 * device's pow may be 16 ulp off, which at position 4000 moves an angle visibly. Dimensions
 * past n_rot are left alone. */

__kernel void rope(__global float *x, __global const float *inv_freq, int row_stride, int n_heads,
                   int head_dim, int n_rot, int m_rows, __global const int2 *tok, int mode)
{
    const int i = get_global_id(0);
    const int h = get_global_id(1);
    const int m = get_global_id(2);
    if (i >= n_rot / 2 || h >= n_heads || m >= m_rows)
        return;
    const float angle = (float)tok[m].x * inv_freq[i];
    const float c = cos(angle), s = sin(angle);
    __global float *head = x + (size_t)m * row_stride + (size_t)h * head_dim;
    const int a = mode == 0 ? i : 2 * i;
    const int b = mode == 0 ? i + n_rot / 2 : 2 * i + 1;
    const float x0 = head[a], x1 = head[b];
    head[a] = x0 * c - x1 * s;
    head[b] = x0 * s + x1 * c;
}
