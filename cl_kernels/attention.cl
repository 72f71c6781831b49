/* Causal multi-head attention with GQA over an FP16 KV cache; scores and softmax in FP32.
 *
 * Cache layout (one layer): k_cache[row][kv_head][head_dim] as half, same for v_cache, starting
 * at element cache_off (the layer's offset in a buffer shared by all layers), cache_rows rows.
 * Sequences own consecutive runs of rows: token m of a batch is at position tok[m].x of the
 * sequence whose position 0 is row tok[m].y. Rows past cache_rows are never touched.
 * rope_kv_store (rope.cl) writes the rows; vstore_half rounds to nearest even.
 * attention: one work-group of B158_WG work-items per (head, token). Token m attends to
 * positions 0 .. tok[m].x of its own sequence. Keys are processed in tiles of B158_WG: each
 * work-item scores one key of the tile against q (staged in __local), the tile's max and sum
 * are reduced in __local, and the running output is rescaled online (flash-attention style),
 * so no score matrix is stored. Work-item l owns output dims l, l + B158_WG, ... in registers.
 * With B158_WG == 1 (CPU) this is a plain loop over keys with no barriers. head_dim must not
 * exceed B158_HEAD_DIM_MAX (the host checks). The grid is exactly n_head x m_rows groups: no
 * bounds return before a barrier (PoCL miscompiles that even when the group is uniform).
 * Optional tail (tail 1, B158_TAIL_PARAMS in common.cl): the last of a token's n_head groups
 * RMS-norms and quantizes the token's whole output row (the attention sub-norm), with count[m]
 * the token's counter. */

/* Element offset of head h's kv head at position 0 of the sequence of a token at where =
 * {position, cache row of position 0}, and in *n_keys the keys it attends to, both clamped to
 * the cache's rows. */
inline size_t b158_att_base(int2 where, int h, int n_head, int n_head_kv, int head_dim,
                            int cache_off, int cache_rows, int *n_keys)
{
    const int row0 = clamp(where.y, 0, cache_rows - 1);
    *n_keys = clamp(where.x + 1, 1, cache_rows - row0);
    const int kvh = h / (n_head / n_head_kv);
    return (size_t)cache_off + (size_t)row0 * n_head_kv * head_dim + (size_t)kvh * head_dim;
}

#if B158_WG == 1
/* CPU: one work-item per (head, token), keys in tiles of B158_ATT_TILE. A tile's scores are
 * q.k dot products in 16 independent partial sums (vload_half16), then one softmax rescale per
 * tile (not per key), the tile's weights as two 16-lane exp, and the p.v sums, 16 lanes at a
 * time, into a private row: no serial chain of dependent adds grows with the position. */
#define B158_ATT_TILE 32 /* two 16-lane vectors of scores */

inline float b158_dot_half(const float *q, __global const half *k, int head_dim)
{
    float16 acc = 0.0f;
    int d = 0;
    for (; d + 16 <= head_dim; d += 16)
        acc = fma(vload16(0, q + d), vload_half16(0, k + d), acc);
    float s = b158_hsum16(acc);
    for (; d < head_dim; d++)
        s += q[d] * vload_half(d, k);
    return s;
}

__kernel void attention(__global const float *q, __global const half *k_cache,
                        __global const half *v_cache, __global float *out, int n_head,
                        int n_head_kv, int head_dim, int q_stride, int m_rows,
                        __global const int2 *tok, int cache_off, int cache_rows, float scale,
                        B158_TAIL_PARAMS)
{
    __local int last;
    __local float red[B158_WG];
    const int h = get_group_id(0);
    const int m = get_group_id(1);
    const int kv_dim = n_head_kv * head_dim;
    int n_keys;
    const size_t base =
        b158_att_base(tok[m], h, n_head, n_head_kv, head_dim, cache_off, cache_rows, &n_keys);
    __global const half *kbase = k_cache + base;
    __global const half *vbase = v_cache + base;
    __global const float *qh = q + (size_t)m * q_stride + (size_t)h * head_dim;
    float qs[B158_HEAD_DIM_MAX], acc[B158_HEAD_DIM_MAX], sc[B158_ATT_TILE];
    for (int d = 0; d < head_dim; d++) {
        qs[d] = qh[d] * scale;
        acc[d] = 0.0f;
    }
    float run_max = -INFINITY, run_sum = 0.0f;
    for (int t0 = 0; t0 < n_keys; t0 += B158_ATT_TILE) {
        const int tile = min(B158_ATT_TILE, n_keys - t0);
        float tmax = -INFINITY;
        for (int u = 0; u < tile; u++) {
            sc[u] = b158_dot_half(qs, kbase + (size_t)(t0 + u) * kv_dim, head_dim);
            tmax = fmax(tmax, sc[u]);
        }
        const float new_max = fmax(run_max, tmax);
        const float corr = exp(run_max - new_max); /* 0 on the first tile */
        run_sum *= corr;
        for (int d = 0; d < head_dim; d++)
            acc[d] *= corr;
        /* the tile's weights, 16 lanes at a time (one vector exp, not one per key) */
        for (int u = tile; u < B158_ATT_TILE; u++)
            sc[u] = -INFINITY;
        const float16 p0 = exp(vload16(0, sc) - new_max), p1 = exp(vload16(1, sc) - new_max);
        vstore16(p0, 0, sc);
        vstore16(p1, 1, sc);
        run_sum += b158_hsum16(p0 + p1);
        for (int u = 0; u < tile; u++) {
            const float p = sc[u];
            __global const half *vr = vbase + (size_t)(t0 + u) * kv_dim;
            int d = 0;
            for (; d + 16 <= head_dim; d += 16)
                vstore16(fma((float16)p, vload_half16(0, vr + d), vload16(0, acc + d)), 0, acc + d);
            for (; d < head_dim; d++)
                acc[d] += p * vload_half(d, vr);
        }
        run_max = new_max;
    }
    __global float *oh = out + (size_t)m * n_head * head_dim + (size_t)h * head_dim;
    for (int d = 0; d < head_dim; d++)
        oh[d] = acc[d] / run_sum;
    b158_last_group_tail(out + (size_t)m * n_head * head_dim, n_head * head_dim, tail, count + m,
                         norm_w, q_out + (size_t)m * k_pad_out, s_out + m, k_pad_out, eps, act,
                         &last, red);
}

#else
#define B158_ATT_OWN ((B158_HEAD_DIM_MAX + B158_WG - 1) / B158_WG)

__kernel void attention(__global const float *q, __global const half *k_cache,
                        __global const half *v_cache, __global float *out, int n_head,
                        int n_head_kv, int head_dim, int q_stride, int m_rows,
                        __global const int2 *tok, int cache_off, int cache_rows, float scale,
                        B158_TAIL_PARAMS)
{
    __local float qs[B158_HEAD_DIM_MAX];
    __local float ps[B158_WG];
    __local float red[B158_WG];
    __local int last;
    const int h = get_group_id(0);
    const int m = get_group_id(1);
    const int lid = get_local_id(0);
    const int kv_dim = n_head_kv * head_dim;
    int n_keys;
    const size_t base =
        b158_att_base(tok[m], h, n_head, n_head_kv, head_dim, cache_off, cache_rows, &n_keys);
    __global const half *kbase = k_cache + base;
    __global const half *vbase = v_cache + base;
    /* every key row of this head starts on 16 bytes (buffers are aligned far more) */
    const int k_aligned = base % 8 == 0 && kv_dim % 8 == 0;
    __global const float *qh = q + (size_t)m * q_stride + (size_t)h * head_dim;
    for (int d = lid; d < head_dim; d += B158_WG)
        qs[d] = qh[d] * scale;
    barrier(CLK_LOCAL_MEM_FENCE);

    float acc[B158_ATT_OWN];
    for (int j = 0; j < B158_ATT_OWN; j++)
        acc[j] = 0.0f;
    float run_max = -INFINITY, run_sum = 0.0f;
    for (int t0 = 0; t0 < n_keys; t0 += B158_WG) {
        const int t = t0 + lid;
        float s = -INFINITY;
        if (t < n_keys) {
            __global const half *kr = kbase + (size_t)t * kv_dim;
            s = 0.0f;
            int d = 0;
            if (k_aligned) /* the key row in 16-byte pieces (scalar half loads otherwise) */
                for (; d + 8 <= head_dim; d += 8) {
                    const uint4 u = *(__global const uint4 *)(kr + d);
                    const float8 kv = vload_half8(0, (const half *)&u);
                    const float8 qv = vload8(0, qs + d);
                    s += dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                }
            for (; d < head_dim; d++)
                s += qs[d] * vload_half(d, kr);
        }
        const float new_max = fmax(run_max, b158_wg_max(s, red));
        const float p = t < n_keys ? exp(s - new_max) : 0.0f;
        const float corr = exp(run_max - new_max); /* 0 on the first tile */
#if B158_WG > 1
        ps[lid] = p;
#endif
        run_sum = run_sum * corr + b158_wg_sum(p, red);
        const int tile = min(B158_WG, n_keys - t0);
        for (int j = 0; j < B158_ATT_OWN; j++) {
            const int d = lid + j * B158_WG;
            if (d >= head_dim)
                break;
            float a = acc[j] * corr;
#if B158_WG > 1
            for (int u = 0; u < tile; u++)
                a += ps[u] * vload_half((size_t)(t0 + u) * kv_dim + d, vbase);
#else
            a += p * vload_half((size_t)t0 * kv_dim + d, vbase);
#endif
            acc[j] = a;
        }
        run_max = new_max;
#if B158_WG > 1
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
    }
    __global float *oh = out + (size_t)m * n_head * head_dim + (size_t)h * head_dim;
    for (int j = 0; j < B158_ATT_OWN; j++) {
        const int d = lid + j * B158_WG;
        if (d < head_dim)
            oh[d] = acc[j] / run_sum;
    }
    b158_last_group_tail(out + (size_t)m * n_head * head_dim, n_head * head_dim, tail, count + m,
                         norm_w, q_out + (size_t)m * k_pad_out, s_out + m, k_pad_out, eps, act,
                         &last, red);
}
#endif
