/* Rotary position embedding of q and k fused with the store of k and v into the FP16 KV cache
 * (one launch per layer instead of three).
 *
 * Work-item mapping: one work-item per (head slot, token); no __local, no barriers. Slots
 * 0..n_head-1 rotate the heads of q in place (row m at q + m * q_stride); slots n_head.. take
 * kv head j = slot - n_head: rotate k's head in place, then write k's and v's head (rows at
 * k + k_off + m * kv_stride, v + v_off + m * kv_stride: q, k and v may be one buffer of
 * [q | k | v] rows, the output of the fused QKV matrix) as half into the cache row tok[m].y +
 * tok[m].x of the layer at element cache_off (rows past cache_rows are skipped; attention.cl has
 * the cache layout). tok[m].x is the token's position in its sequence (batches mix sequences).
 * Pairing: mode 0 = NEOX (i with i + n_rot/2, transformers' rotate_half), mode 1 = interleaved
 * (2i with 2i + 1, GPT-J / original LLaMA). Angle = tok[m].x * inv_freq[i], where the host
 * computed inv_freq[i] = theta_base^(-2i / n_rot) in double precision (b158_rope_inv_freq): the
 * device's pow may be 16 ulp off, which at position 4000 moves an angle visibly. Dimensions
 * past n_rot are left alone; n_rot = 0 rotates nothing (a plain KV store). */

inline void b158_rope_head(__global float *x, __global const float *inv_freq, int n_rot, int pos,
                           int mode)
{
    for (int i = 0; i < n_rot / 2; i++) {
        const float angle = (float)pos * inv_freq[i];
        const float c = cos(angle), s = sin(angle);
        const int a = mode == 0 ? i : 2 * i;
        const int b = mode == 0 ? i + n_rot / 2 : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

__kernel void rope_kv_store(__global float *q, __global float *k, __global const float *v,
                            int k_off, int v_off, __global const float *inv_freq,
                            __global half *k_cache, __global half *v_cache, int q_stride,
                            int kv_stride, int n_head, int n_head_kv, int head_dim, int n_rot,
                            int m_rows, __global const int2 *tok, int cache_off, int cache_rows,
                            int mode)
{
    const int h = get_global_id(0);
    const int m = get_global_id(1);
    if (h >= n_head + n_head_kv || m >= m_rows)
        return;
    const int2 t = tok[m];
    if (h < n_head) {
        b158_rope_head(q + (size_t)m * q_stride + (size_t)h * head_dim, inv_freq, n_rot, t.x, mode);
        return;
    }
    const int j = h - n_head;
    __global float *kh = k + k_off + (size_t)m * kv_stride + (size_t)j * head_dim;
    __global const float *vh = v + v_off + (size_t)m * kv_stride + (size_t)j * head_dim;
    b158_rope_head(kh, inv_freq, n_rot, t.x, mode);
    const int row = t.y + t.x;
    if (t.x < 0 || t.y < 0 || row >= cache_rows)
        return;
    const size_t dst =
        (size_t)cache_off + (size_t)row * n_head_kv * head_dim + (size_t)j * head_dim;
    for (int d = 0; d < head_dim; d++) {
        vstore_half(kh[d], dst + d, k_cache);
        vstore_half(vh[d], dst + d, v_cache);
    }
}
