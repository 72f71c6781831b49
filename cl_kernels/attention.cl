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
 * the token's counter.
 * Optional RoPE + KV store (rope_store 1, B158_ROPE_PARAMS; for batches whose tokens all belong
 * to different sequences, e.g. decode): q holds raw [q | k | v] rows (k at k_off, v at v_off of a
 * row), each group rotates its q head itself, and rotates its kv head's k and rounds k and v to
 * half for the token's own key, which it uses instead of reading that cache row; the first group
 * of each kv head stores them in the cache. The arithmetic is rope_kv_store's, so the result is
 * bit for bit that of rope_kv_store then attention (one launch fewer per layer). */

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

#define B158_ROPE_PARAMS                                                                           \
    int rope_store, __global const float *inv_freq, int n_rot, int rope_mode, int k_off, int v_off
/* Splits over keys (GPU variant; 1 on the CPU variant): splits groups per (head, token), their
 * partial results in split_out (b158_att_part), the heads' counters (m_rows x n_head, zero
 * between launches) in head_count. */
#define B158_SPLIT_PARAMS int splits, __global float *split_out, __global volatile int *head_count

/* Pair i of the rotation (rope.cl's rule): its two dimensions, and its cos and sin at pos */
inline int2 b158_att_pair(int i, int n_rot, int mode)
{
    return mode == 0 ? (int2)(i, i + n_rot / 2) : (int2)(2 * i, 2 * i + 1);
}

inline float2 b158_att_rot(__global const float *inv_freq, int i, int pos)
{
    const float angle = (float)pos * inv_freq[i];
    return (float2)(cos(angle), sin(angle));
}

/* The pair (x0, x1) rotated by cs = (cos, sin), rope_kv_store's expressions */
inline float2 b158_att_rotate(float x0, float x1, float2 cs)
{
    return (float2)(x0 * cs.x - x1 * cs.y, x0 * cs.y + x1 * cs.x);
}

/* k and v of one dimension of the token's own key as the cache holds them: stored at element e
 * when store, rounded to half and back either way */
inline float2 b158_att_own_kv(float k, float v, size_t e, int store, __global half *k_cache,
                              __global half *v_cache)
{
    if (store) {
        vstore_half(k, e, k_cache);
        vstore_half(v, e, v_cache);
    }
    ushort b[2];
    vstore_half(k, 0, (half *)b);
    vstore_half(v, 1, (half *)b);
    return (float2)(vload_half(0, (const half *)b), vload_half(1, (const half *)b));
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
        s = fma(q[d], vload_half(d, k), s);
    return s;
}

/* The same on a float row k holding half values: the same sums in the same order */
inline float b158_dot_float(const float *q, const float *k, int head_dim)
{
    float16 acc = 0.0f;
    int d = 0;
    for (; d + 16 <= head_dim; d += 16)
        acc = fma(vload16(0, q + d), vload16(0, k + d), acc);
    float s = b158_hsum16(acc);
    for (; d < head_dim; d++)
        s = fma(q[d], k[d], s);
    return s;
}

__kernel void attention(__global const float *q, __global half *k_cache, __global half *v_cache,
                        __global float *out, int n_head, int n_head_kv, int head_dim, int q_stride,
                        int m_rows, __global const int2 *tok, int cache_off, int cache_rows,
                        float scale, B158_ROPE_PARAMS, B158_SPLIT_PARAMS, B158_TAIL_PARAMS)
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
    float kcur[B158_HEAD_DIM_MAX], vcur[B158_HEAD_DIM_MAX];
    for (int d = 0; d < head_dim; d++) {
        qs[d] = qh[d];
        acc[d] = 0.0f;
    }
    /* the token's own key (fused RoPE + KV store): its index, or -1 */
    int cur = -1;
    if (rope_store) {
        const int2 w = tok[m];
        const int grp = n_head / n_head_kv, j = h / grp;
        __global const float *kr = q + (size_t)m * q_stride + k_off + (size_t)j * head_dim;
        __global const float *vr = q + (size_t)m * q_stride + v_off + (size_t)j * head_dim;
        for (int d = 0; d < head_dim; d++)
            kcur[d] = kr[d], vcur[d] = vr[d];
        for (int i = 0; i < n_rot / 2; i++) {
            const int2 ab = b158_att_pair(i, n_rot, rope_mode);
            const float2 cs = b158_att_rot(inv_freq, i, w.x);
            const float2 rq = b158_att_rotate(qs[ab.x], qs[ab.y], cs);
            const float2 rk = b158_att_rotate(kcur[ab.x], kcur[ab.y], cs);
            qs[ab.x] = rq.x, qs[ab.y] = rq.y, kcur[ab.x] = rk.x, kcur[ab.y] = rk.y;
        }
        const int row = w.y + w.x;
        if (w.x >= 0 && w.y >= 0 && row < cache_rows) {
            cur = n_keys - 1;
            const size_t e = (size_t)cache_off + (size_t)row * kv_dim + (size_t)j * head_dim;
            for (int d = 0; d < head_dim; d++) {
                const float2 kv =
                    b158_att_own_kv(kcur[d], vcur[d], e + d, h % grp == 0, k_cache, v_cache);
                kcur[d] = kv.x, vcur[d] = kv.y;
            }
        }
    }
    for (int d = 0; d < head_dim; d++)
        qs[d] *= scale;
    float run_max = -INFINITY, run_sum = 0.0f;
    for (int t0 = 0; t0 < n_keys; t0 += B158_ATT_TILE) {
        const int tile = min(B158_ATT_TILE, n_keys - t0);
        float tmax = -INFINITY;
        for (int u = 0; u < tile; u++) {
            sc[u] = t0 + u == cur ? b158_dot_float(qs, kcur, head_dim)
                                  : b158_dot_half(qs, kbase + (size_t)(t0 + u) * kv_dim, head_dim);
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
            if (t0 + u == cur) {
                for (; d + 16 <= head_dim; d += 16)
                    vstore16(fma((float16)p, vload16(0, vcur + d), vload16(0, acc + d)), 0,
                             acc + d);
                for (; d < head_dim; d++)
                    acc[d] = fma(p, vcur[d], acc[d]);
                continue;
            }
            for (; d + 16 <= head_dim; d += 16)
                vstore16(fma((float16)p, vload_half16(0, vr + d), vload16(0, acc + d)), 0, acc + d);
            for (; d < head_dim; d++)
                acc[d] = fma(p, vload_half(d, vr), acc[d]);
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

/* Split over keys (flash-decoding; GPU variant): split sp of splits takes the keys [k0, k1) of a
 * token with n_keys keys, ceil(n_keys / splits) rounded up to a multiple of 32 each, so the last
 * splits of a short context may be empty (the host takes fewer splits for fewer keys). */
inline int2 b158_att_range(int n_keys, int sp, int splits)
{
    const int chunk = ((n_keys + splits - 1) / splits + 31) & ~31;
    const int k0 = min(n_keys, sp * chunk);
    return (int2)(k0, min(n_keys, k0 + chunk));
}

/* Offset of split sp of head h of token m in the splits' partial results: head_dim unnormalized
 * output sums, then the split's running max and sum of exp (-INFINITY and 0 when empty) */
inline size_t b158_att_part(int m, int h, int sp, int n_head, int splits, int head_dim)
{
    return (((size_t)m * n_head + h) * splits + sp) * (size_t)(head_dim + 2);
}

/* Head h of token m, keys of split sp of splits, by the whole group: the kernel's work-group
 * (h * splits + sp, m), and one head or split of the fused decode layer (decode.cl). With one
 * split the head's output goes to out, else the split's partial result to split_out
 * (b158_att_part). qs, kcur and vcur hold B158_HEAD_DIM_MAX floats, ps, red and part B158_WG. */
inline void b158_att_head(__global const float *q, __global half *k_cache, __global half *v_cache,
                          __global float *out, int n_head, int n_head_kv, int head_dim,
                          int q_stride, __global const int2 *tok, int cache_off, int cache_rows,
                          float scale, B158_ROPE_PARAMS, int h, int m, int sp, int splits,
                          __global float *split_out, __local float *qs, __local float *kcur,
                          __local float *vcur, __local float *ps, __local float *red,
                          __local float8 *part)
{
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
    /* q; with rope_store, rotated with the token's own key, which goes to the cache (barriers
     * outside the conditionals: PoCL's work-group compiler wants them there) */
    const int2 w = tok[m];
    const int grp = n_head / n_head_kv, j = h / grp, row = w.y + w.x;
    const int fuse = rope_store && w.x >= 0 && w.y >= 0 && row < cache_rows;
    __global const float *kr = q + (size_t)m * q_stride + k_off + (size_t)j * head_dim;
    __global const float *vr = q + (size_t)m * q_stride + v_off + (size_t)j * head_dim;
    for (int d = lid; d < head_dim; d += B158_WG) {
        qs[d] = qh[d];
        if (rope_store)
            kcur[d] = kr[d], vcur[d] = vr[d];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = lid; rope_store && i < n_rot / 2; i += B158_WG) {
        const int2 ab = b158_att_pair(i, n_rot, rope_mode);
        const float2 cs = b158_att_rot(inv_freq, i, w.x);
        const float2 rq = b158_att_rotate(qs[ab.x], qs[ab.y], cs);
        const float2 rk = b158_att_rotate(kcur[ab.x], kcur[ab.y], cs);
        qs[ab.x] = rq.x, qs[ab.y] = rq.y, kcur[ab.x] = rk.x, kcur[ab.y] = rk.y;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const size_t e = (size_t)cache_off + (size_t)row * kv_dim + (size_t)j * head_dim;
    for (int d = lid; d < head_dim; d += B158_WG) {
        if (fuse) {
            const float2 kv =
                b158_att_own_kv(kcur[d], vcur[d], e + d, h % grp == 0 && sp == 0, k_cache, v_cache);
            kcur[d] = kv.x, vcur[d] = kv.y;
        }
        qs[d] *= scale;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int cur = fuse ? n_keys - 1 : -1; /* the token's own key, or none */
    const int2 range = b158_att_range(n_keys, sp, splits);

    /* p.v: with 16-byte rows, work-item lid takes the 8 dims of chunk lid % chunks for the keys
     * lid / chunks, + subs, ... of each tile (8 multiply-adds per 16-byte load, tile / subs keys
     * one after another), and the subs partial rows are added once at the end; else dims lid,
     * lid + B158_WG, ... over every key */
    const int chunks = head_dim / 8, vec = k_aligned && head_dim % 8 == 0 && chunks <= B158_WG;
    const int subs = vec ? B158_WG / chunks : 1, sub = vec ? lid / chunks : 0;
    const int ch = vec ? lid % chunks : 0;
    float8 acc8 = 0.0f;
    float acc[B158_ATT_OWN];
    for (int j = 0; j < B158_ATT_OWN; j++)
        acc[j] = 0.0f;
    float run_max = -INFINITY, run_sum = 0.0f;
    /* q.k with 16-byte rows of at most 16 pieces (head_dim <= 128): the tile's keys in 8
     * passes of B158_WG / 8 keys, 8 work-items a key (neighbours read a key row's neighbouring
     * pieces), each taking pieces lane and lane + 8; every pass's loads are independent, so all
     * are in flight at once, and the 8 partial sums of a key meet in __local (part) */
    const int lanes8 = vec && chunks <= 16;
    __local float *kpart = (__local float *)part;
    for (int t0 = range.x; t0 < range.y; t0 += B158_WG) {
        const int t = t0 + lid;
        float s = -INFINITY;
        if (lanes8) {
            const int lane = lid & 7, c1 = lane + 8;
            /* the 8 passes' key loads first, then their sums (one memory latency a tile, not
             * one a pass: a loop that loads and sums per pass stayed rolled in clang's nvptx
             * code) */
            uint4 u0[8], u1[8];
#pragma unroll
            for (int pass = 0; pass < 8; pass++) {
                const int tk = t0 + pass * (B158_WG / 8) + (lid >> 3);
                __global const uint4 *kr = (__global const uint4 *)(kbase + (size_t)tk * kv_dim);
                const int load = tk < range.y && tk != cur && lane < chunks;
                u0[pass] = load ? kr[lane] : (uint4)0;
                u1[pass] = load && c1 < chunks ? kr[c1] : (uint4)0;
            }
#pragma unroll
            for (int pass = 0; pass < 8; pass++) {
                const int tk = t0 + pass * (B158_WG / 8) + (lid >> 3);
                float a = 0.0f;
                if (tk < range.y && tk == cur && lane < chunks) {
                    float8 kv = vload8(lane, kcur), qv = vload8(lane, qs);
                    a = dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                    if (c1 < chunks) {
                        kv = vload8(c1, kcur), qv = vload8(c1, qs);
                        a += dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                    }
                } else if (tk < range.y && lane < chunks) {
                    float8 kv = b158_half8_of(u0[pass]), qv = vload8(lane, qs);
                    a = dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                    if (c1 < chunks) {
                        kv = b158_half8_of(u1[pass]), qv = vload8(c1, qs);
                        a += dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                    }
                }
                kpart[pass * B158_WG + lid] = a;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (t < range.y) {
                __local const float *kp =
                    kpart + lid / (B158_WG / 8) * B158_WG + lid % (B158_WG / 8) * 8;
                s = ((kp[0] + kp[1]) + (kp[2] + kp[3])) + ((kp[4] + kp[5]) + (kp[6] + kp[7]));
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        } else if (t < range.y && t == cur) {
            /* the same sums as below on the token's own key */
            s = 0.0f;
            int d = 0;
            if (k_aligned)
                for (; d + 8 <= head_dim; d += 8) {
                    const float8 kv = vload8(0, kcur + d), qv = vload8(0, qs + d);
                    s += dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                }
            for (; d < head_dim; d++)
                s = fma(qs[d], kcur[d], s);
        } else if (t < range.y) { /* explicit fma: both paths round alike on every compiler */
            __global const half *kr = kbase + (size_t)t * kv_dim;
            s = 0.0f;
            int d = 0;
            if (k_aligned) /* the key row in 16-byte pieces (scalar half loads otherwise) */
                for (; d + 8 <= head_dim; d += 8) {
                    const float8 kv = b158_half8_of(*(__global const uint4 *)(kr + d));
                    const float8 qv = vload8(0, qs + d);
                    s += dot(kv.lo, qv.lo) + dot(kv.hi, qv.hi);
                }
            for (; d < head_dim; d++)
                s = fma(qs[d], vload_half(d, kr), s);
        }
        const float new_max = fmax(run_max, b158_wg_max(s, red));
        const float p = t < range.y ? exp(s - new_max) : 0.0f;
        const float corr = exp(run_max - new_max); /* 0 on the first tile */
        ps[lid] = p;
        run_sum = run_sum * corr + b158_wg_sum(p, red);
        const int tile = min(B158_WG, range.y - t0);
        if (vec) { /* eight keys' V loads issued before their multiply-adds, in key order */
            acc8 *= corr;
            for (int u = sub; sub < subs && u < tile; u += 8 * subs) {
                uint4 raw[8];
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int k = u + i * subs;
                    raw[i] =
                        k < tile && t0 + k != cur
                            ? *(__global const uint4 *)(vbase + (size_t)(t0 + k) * kv_dim + 8 * ch)
                            : (uint4)0;
                }
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int k = u + i * subs;
                    if (k < tile) {
                        const float8 v = t0 + k == cur ? vload8(ch, vcur) : b158_half8_of(raw[i]);
                        acc8 = fma((float8)ps[k], v, acc8);
                    }
                }
            }
        }
        for (int j = 0; !vec && j < B158_ATT_OWN; j++) {
            const int d = lid + j * B158_WG;
            if (d >= head_dim)
                break;
            float a = acc[j] * corr;
            for (int u = 0; u < tile; u++)
                a = fma(ps[u],
                        t0 + u == cur ? vcur[d] : vload_half((size_t)(t0 + u) * kv_dim + d, vbase),
                        a);
            acc[j] = a;
        }
        run_max = new_max;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    part[lid] = acc8;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global float *oh = out + (size_t)m * n_head * head_dim + (size_t)h * head_dim;
    __global float *po = split_out + b158_att_part(m, h, sp, n_head, splits, head_dim);
    for (int j = 0; j < B158_ATT_OWN; j++) {
        const int d = lid + j * B158_WG;
        if (d >= head_dim)
            break;
        float a = acc[j];
        if (vec) {
            __local const float *pd = (__local const float *)part + d;
            a = 0.0f;
            for (int i = 0; i < subs; i++)
                a += pd[8 * chunks * i];
        }
        if (splits == 1)
            oh[d] = a / run_sum;
        else
            po[d] = a;
    }
    if (splits > 1 && lid == 0)
        po[head_dim] = run_max, po[head_dim + 1] = run_sum;
}

/* The output of head h of token m from its splits' partial results, by the whole group:
 * rescaled to their common max and divided by the total sum */
inline void b158_att_combine(__global const float *split_out, __global float *out, int n_head,
                             int head_dim, int splits, int h, int m)
{
    __global const float *p = split_out + b158_att_part(m, h, 0, n_head, splits, head_dim);
    const int stride = head_dim + 2;
    float mx = -INFINITY, total = 0.0f;
    for (int sp = 0; sp < splits; sp++)
        mx = fmax(mx, p[sp * stride + head_dim]);
    for (int sp = 0; sp < splits; sp++) /* an empty split: 0 * exp(-inf) */
        total += p[sp * stride + head_dim + 1] * exp(p[sp * stride + head_dim] - mx);
    __global float *oh = out + (size_t)m * n_head * head_dim + (size_t)h * head_dim;
    for (int d = get_local_id(0); d < head_dim; d += B158_WG) {
        float a = 0.0f;
        for (int sp = 0; sp < splits; sp++)
            a = fma(p[sp * stride + d], exp(p[sp * stride + head_dim] - mx), a);
        oh[d] = a / total;
    }
}

__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void
attention(__global const float *q, __global half *k_cache, __global half *v_cache,
          __global float *out, int n_head, int n_head_kv, int head_dim, int q_stride, int m_rows,
          __global const int2 *tok, int cache_off, int cache_rows, float scale, B158_ROPE_PARAMS,
          B158_SPLIT_PARAMS, B158_TAIL_PARAMS)
{
    __local float qs[B158_HEAD_DIM_MAX];
    __local float kcur[B158_HEAD_DIM_MAX], vcur[B158_HEAD_DIM_MAX];
    __local float ps[B158_WG];
    __local float red[B158_WG];
    __local float8 part[B158_WG];
    __local int last;
    const int m = get_group_id(1), h = get_group_id(0) / splits, sp = get_group_id(0) % splits;
    b158_att_head(q, k_cache, v_cache, out, n_head, n_head_kv, head_dim, q_stride, tok, cache_off,
                  cache_rows, scale, rope_store, inv_freq, n_rot, rope_mode, k_off, v_off, h, m, sp,
                  splits, split_out, qs, kcur, vcur, ps, red, part);
    /* with splits, the last split of a head to finish makes its output, and only those groups
     * count for the tail (no return before a barrier: PoCL miscompiles that) */
    const int whole =
        splits == 1 || b158_last_arrival(head_count + (size_t)m * n_head + h, splits, &last);
    if (splits > 1 && whole)
        b158_att_combine(split_out, out, n_head, head_dim, splits, h, m);
    b158_tail_of(out + (size_t)m * n_head * head_dim, n_head * head_dim, n_head, tail && whole,
                 count + m, norm_w, q_out + (size_t)m * k_pad_out, s_out + m, k_pad_out, eps, act,
                 &last, red);
}
#endif
