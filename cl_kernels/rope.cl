/* Rotary position embedding of q and k fused with the store of k and v into the FP16 KV cache
 * (one launch per layer instead of three).
 *
 * Work-item mapping: one work-item per (pair of dimensions i < head_dim / 2, token), no
 * __local, no barriers: it takes the angle's cos and sin once and applies them to its pair in
 * every head: rotates q's heads in place (row m at q + m * q_stride), rotates k's heads in
 * place, then writes its dimensions of k's and v's heads (rows at
 * k + k_off + m * kv_stride, v + v_off + m * kv_stride: q, k and v may be one buffer of
 * [q | k | v] rows, the output of the fused QKV matrix) as half into the cache row tok[m].y +
 * tok[m].x of the layer at element cache_off (rows past cache_rows are skipped; attention.cl has
 * the cache layout). tok[m].x is the token's position in its sequence (batches mix sequences).
 * Pairing: mode 0 = NEOX (i with i + n_rot/2, transformers' rotate_half), mode 1 = interleaved
 * (2i with 2i + 1, GPT-J / original LLaMA). Angle = tok[m].x * inv_freq[i], where the host
 * computed inv_freq[i] = theta_base^(-2i / n_rot) in double precision (b158_rope_inv_freq): the
 * device's pow may be 16 ulp off, which at position 4000 moves an angle visibly. Dimensions
 * past n_rot are left alone; n_rot = 0 rotates nothing (a plain KV store). */

__kernel void rope_kv_store(__global float *q, __global float *k, __global const float *v,
                            int k_off, int v_off, __global const float *inv_freq,
                            __global half *k_cache, __global half *v_cache, int q_stride,
                            int kv_stride, int n_head, int n_head_kv, int head_dim, int n_rot,
                            int m_rows, __global const int2 *tok, int cache_off, int cache_rows,
                            int mode)
{
    const int i = get_global_id(0);
    const int m = get_global_id(1);
    if (i >= head_dim / 2 || m >= m_rows)
        return;
    const int2 t = tok[m];
    /* the pair of dimensions this work-item owns in every head: a rotated pair, or two of the
     * dimensions past n_rot, which are copied as they are */
    const int rotated = i < n_rot / 2;
    int a, b;
    if (rotated) {
        a = mode == 0 ? i : 2 * i;
        b = mode == 0 ? i + n_rot / 2 : 2 * i + 1;
    } else {
        a = n_rot + 2 * (i - n_rot / 2);
        b = a + 1;
    }
    float c = 1.0f, s = 0.0f;
    if (rotated) {
        const float angle = (float)t.x * inv_freq[i];
        c = cos(angle);
        s = sin(angle);
    }
    __global float *qr = q + (size_t)m * q_stride;
    for (int h = 0; rotated && h < n_head; h++) {
        __global float *x = qr + (size_t)h * head_dim;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
    if (n_head_kv == 0)
        return;
    const int row = t.y + t.x;
    const int store = t.x >= 0 && t.y >= 0 && row < cache_rows;
    const size_t dst = (size_t)cache_off + (size_t)row * n_head_kv * head_dim;
    __global float *kr = k + k_off + (size_t)m * kv_stride;
    __global const float *vr = v + v_off + (size_t)m * kv_stride;
    for (int j = 0; j < n_head_kv; j++) {
        __global float *x = kr + (size_t)j * head_dim;
        float k0 = x[a], k1 = x[b];
        if (rotated) {
            const float r0 = k0 * c - k1 * s, r1 = k0 * s + k1 * c;
            x[a] = k0 = r0;
            x[b] = k1 = r1;
        }
        if (store) {
            const size_t e = dst + (size_t)j * head_dim;
            vstore_half(k0, e + a, k_cache);
            vstore_half(k1, e + b, k_cache);
            vstore_half(vr[(size_t)j * head_dim + a], e + a, v_cache);
            vstore_half(vr[(size_t)j * head_dim + b], e + b, v_cache);
        }
    }
}
