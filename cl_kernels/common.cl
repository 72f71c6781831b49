/* Helpers shared by every kernel file; the generated prelude (B158_* defines) comes before. */

#ifndef B158_WG
#error "the b158 prelude must define B158_WG"
#endif

/* Work-group reductions over B158_WG work-items (a power of two; B158_TREE_REDUCE over another
 * size). With B158_WG == 1 (the CPU variant) they compile to nothing, so CPU kernels have no
 * barriers. red holds B158_WG values; every work-item of the group must call these (uniform
 * control flow). */
#define B158_TREE_REDUCE(name, type, combine, size)                                                \
    inline type name(type v, __local type *red)                                                    \
    {                                                                                              \
        const int lid = get_local_id(0);                                                           \
        red[lid] = v;                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        for (int s = (size) / 2; s > 0; s >>= 1) {                                                 \
            if (lid < s)                                                                           \
                red[lid] = combine(red[lid], red[lid + s]);                                        \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        }                                                                                          \
        const type r = red[0];                                                                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        return r;                                                                                  \
    }
#define B158_ADD(a, b) ((a) + (b))

/* Sub-group reductions where the device has them (B158_SUBGROUPS, from the runtime's probe):
 * 1 = cl_khr_subgroups' sub_group_reduce_* (Intel), 2 = NVIDIA's warps of 32 through inline PTX
 * shfl.sync (NVIDIA's OpenCL has no subgroup extension; work-items 32w .. 32w + 31 of a
 * one-dimensional group are warp w). A work-group reduction is then one reduction per sub-group,
 * one __local step and two barriers, instead of log2(B158_WG) + 2 barriers. b158_sg_* return the
 * sub-group's result to its first work-item at least. */
#if B158_SUBGROUPS == 1
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#define B158_SG_ID() ((int)get_sub_group_id())
#define B158_SG_LANE() ((int)get_sub_group_local_id())
#define B158_SG_COUNT() ((int)get_num_sub_groups())
#define b158_sg_sum(v) sub_group_reduce_add(v)
#define b158_sg_max(v) sub_group_reduce_max(v)
#define b158_sg_sum_int(v) sub_group_reduce_add(v)
#elif B158_SUBGROUPS == 2
#define B158_SG_ID() ((int)get_local_id(0) >> 5)
#define B158_SG_LANE() ((int)get_local_id(0) & 31)
#define B158_SG_COUNT() (B158_WG >> 5)
#define B158_WARP_REDUCE(name, type, reg, combine)                                                 \
    inline type name(type v)                                                                       \
    {                                                                                              \
        for (int m = 16; m > 0; m >>= 1) {                                                         \
            type o;                                                                                \
            asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"                        \
                         : "=" reg(o)                                                              \
                         : reg(v), "r"(m));                                                        \
            v = combine(v, o);                                                                     \
        }                                                                                          \
        return v;                                                                                  \
    }
B158_WARP_REDUCE(b158_sg_sum, float, "f", B158_ADD)
B158_WARP_REDUCE(b158_sg_max, float, "f", fmax)
B158_WARP_REDUCE(b158_sg_sum_int, int, "r", B158_ADD)
inline int b158_shfl_xor_int(int v, int mask)
{
    int r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(v), "r"(mask));
    return r;
}
#endif
#define B158_SG_REDUCE(name, type, combine, sgop)                                                  \
    inline type name(type v, __local type *red)                                                    \
    {                                                                                              \
        v = sgop(v);                                                                               \
        if (B158_SG_LANE() == 0)                                                                   \
            red[B158_SG_ID()] = v;                                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        type r = red[0];                                                                           \
        for (int i = 1; i < B158_SG_COUNT(); i++)                                                  \
            r = combine(r, red[i]);                                                                \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        return r;                                                                                  \
    }

#if B158_WG == 1
#define B158_WG_REDUCE(name, type, combine, sgop)                                                  \
    inline type name(type v, __local type *red)                                                    \
    {                                                                                              \
        return v;                                                                                  \
    }
#elif B158_SUBGROUPS
#define B158_WG_REDUCE(name, type, combine, sgop) B158_SG_REDUCE(name, type, combine, sgop)
#else
#define B158_WG_REDUCE(name, type, combine, sgop) B158_TREE_REDUCE(name, type, combine, B158_WG)
#endif
B158_WG_REDUCE(b158_wg_sum, float, B158_ADD, b158_sg_sum)
B158_WG_REDUCE(b158_wg_max, float, fmax, b158_sg_max)
B158_WG_REDUCE(b158_wg_sum_int, int, B158_ADD, b158_sg_sum_int)

/* (b158_wg_sum(v.x), b158_wg_max(v.y)), the same values: with sub-groups both in one __local
 * step (two barriers instead of four; red holds B158_WG floats, of which this takes two a
 * sub-group: sub-groups of 2 work-items or more, as NVIDIA's warps and Intel's are), else one
 * after the other */
inline float2 b158_wg_sum_max(float2 v, __local float *red)
{
#if B158_WG > 1 && B158_SUBGROUPS
    v = (float2)(b158_sg_sum(v.x), b158_sg_max(v.y));
    if (B158_SG_LANE() == 0)
        vstore2(v, B158_SG_ID(), red);
    barrier(CLK_LOCAL_MEM_FENCE);
    float2 r = vload2(0, red);
    for (int i = 1; i < B158_SG_COUNT(); i++) {
        const float2 o = vload2(i, red);
        r = (float2)(r.x + o.x, fmax(r.y, o.y));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
#else
    const float s = b158_wg_sum(v.x, red);
    return (float2)(s, b158_wg_max(v.y, red));
#endif
}

/* Row kernels (norms, quantization, GLU) walk a row in 16-float chunks: chunk c is elements
 * 16c .. 16c+15, work-item l of B158_WG takes chunks l, l + B158_WG, ... and then the n % 16
 * tail elements one by one. On CPUs (B158_WG == 1) that is one 16-lane vector loop per row,
 * which a work-item loop over single elements never becomes (the compilers vectorize across
 * work-items, and a row is one work-item's loop); on GPUs neighbouring work-items still read
 * neighbouring 64-byte pieces. Partial sums of different lanes are added in another order than
 * a sequential loop: the float parts are within rounding, as on the GPU variant. */
inline float b158_hsum16(float16 v)
{
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
    const float2 c = b.lo + b.hi;
    return c.x + c.y;
}

inline float b158_hmax16(float16 v)
{
    const float8 a = fmax(v.lo, v.hi);
    const float4 b = fmax(a.lo, a.hi);
    const float2 c = fmax(b.lo, b.hi);
    return fmax(c.x, c.y);
}

/* int8 of v already scaled: round to nearest even, clamp to [-128, 127], NaN to 0 (the scalar
 * rule of quantize_rows, lane by lane) */
inline char b158_q8(float v)
{
    const float r = rint(v);
    return isnan(r) ? (char)0 : (char)clamp(r, -128.0f, 127.0f);
}

inline char16 b158_q8x16(float16 v)
{
    const float16 r = rint(v); /* clamp would turn NaN into -128 */
    return convert_char16(select(clamp(r, -128.0f, 127.0f), (float16)0.0f, isnan(r)));
}

/* Row kernels on GPUs (B158_WG > 1) take element i on work-item i % B158_WG instead: the loads
 * of a warp's neighbouring work-items then fall on one 128-byte line each (the 16-float chunks
 * of neighbouring work-items are 64 bytes apart, so each of a chunk's 16 loads touched a line per
 * work-item: on an H200, 5.8 us of the fused layer's 63 went to normalizing a 2560-wide row),
 * and B158_ROW_STEP elements (the prelude's: 8 on GPUs) are loaded before any is used. A
 * work-item's partial sums run over its elements in increasing order in every function below, so
 * the norms agree to the bit. */
/* The step of the rows that load two arrays (a row and its norm weights; B158_ROW_STEP is that
 * of the GLU's three): as many floats in flight, so the GEMV kernels whose tails hold them need
 * no more registers (sm_90: 63, 4 groups a unit; 12 elements a step for all three took 73), and a
 * 2560-wide row at 256 work-items (10 elements each) is one step a pass (13 at the GPUs' 9) */
#define B158_ROW_STEP2 (B158_ROW_STEP + B158_ROW_STEP / 2)

/* dst[k] = src[i0 + k * B158_WG] where cond and that is below n, else 0, for k < B158_ROW_STEP
 * (b158_row_load) or B158_ROW_STEP2 (b158_row_load2): a constant, or the arrays spill */
inline float b158_row_at(__global const float *src, int i, int n, int cond)
{
    return cond && i < n ? src[i] : 0.0f;
}

inline void b158_row_load(float *dst, __global const float *src, int i0, int n, int cond)
{
#pragma unroll
    for (int k = 0; k < B158_ROW_STEP; k++)
        dst[k] = b158_row_at(src, i0 + k * B158_WG, n, cond);
}

inline void b158_row_load2(float *dst, __global const float *src, int i0, int n, int cond)
{
#pragma unroll
    for (int k = 0; k < B158_ROW_STEP2; k++)
        dst[k] = b158_row_at(src, i0 + k * B158_WG, n, cond);
}

/* sum of x[i]^2 over the row, this work-item's share reduced over the group */
inline float b158_row_sumsq(__global const float *xr, int n, __local float *red)
{
#if B158_WG > 1
    float ss = 0.0f;
    for (int i0 = get_local_id(0); i0 < n; i0 += B158_ROW_STEP2 * B158_WG) {
        float v[B158_ROW_STEP2];
        b158_row_load2(v, xr, i0, n, 1);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP2; k++)
            ss += v[k] * v[k];
    }
    return b158_wg_sum(ss, red);
#else
    const int lid = get_local_id(0);
    const int n16 = n / 16;
    float16 ss16 = 0.0f;
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 v = vload16(c, xr);
        ss16 += v * v;
    }
    float ss = b158_hsum16(ss16);
    for (int i = 16 * n16 + lid; i < n; i += B158_WG)
        ss += xr[i] * xr[i];
    return b158_wg_sum(ss, red);
#endif
}

#if B158_WG > 1
/* The conversion of a GPU row kernel: qr[i] = x[i] * inv * w[i] (norm; else x[i]) * s as int8,
 * zero from n to k_pad, B158_ROW_STEP2 elements of x and w a work-item at a time */
inline void b158_quantize_normed(__global const float *xr, __global const float *w, int norm,
                                 __global char *qr, int n, int k_pad, float inv, float s)
{
    for (int i0 = get_local_id(0); i0 < k_pad; i0 += B158_ROW_STEP2 * B158_WG) {
        float v[B158_ROW_STEP2], wv[B158_ROW_STEP2];
        b158_row_load2(v, xr, i0, n, 1);
        b158_row_load2(wv, w, i0, n, norm);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP2; k++) {
            const int i = i0 + k * B158_WG;
            if (i < k_pad)
                qr[i] = i < n ? b158_q8((norm ? v[k] * inv * wv[k] : v[k]) * s) : (char)0;
        }
    }
}
#endif

/* One row of rmsnorm_quantize (norm.cl): the int8 row qr (stride k_pad, zero tail) and its
 * scale *scale of the RMS-normed x row, which is never stored. One pass takes the sum of squares
 * and the absmax of x * w (the normed values' absmax is that times the positive 1 / rms), a
 * second converts, recomputing the normed values in rmsnorm's expression: rmsnorm then
 * quantize_rows but for the scale's last bit. With norm 0 it is quantize_rows of x itself (w
 * unread; the sum of squares is still reduced: PoCL's work-group compiler pays dearly for a
 * barrier under a condition). Called by all B158_WG work-items of a group. */
#define B158_NQ16(c) (norm ? vload16(c, xr) * inv * vload16(c, w) : vload16(c, xr))
#define B158_NQ(i) (norm ? xr[i] * inv * w[i] : xr[i])
inline void b158_rmsnorm_quantize_row(__global const float *xr, __global const float *w, int norm,
                                      __global char *qr, __global float *scale, int n, int k_pad,
                                      float eps, __local float *red)
{
    const int lid = get_local_id(0);
#if B158_WG > 1
    float ss = 0.0f, amax = 0.0f;
    for (int i0 = lid; i0 < n; i0 += B158_ROW_STEP2 * B158_WG) {
        float v[B158_ROW_STEP2], wv[B158_ROW_STEP2];
        b158_row_load2(v, xr, i0, n, 1);
        b158_row_load2(wv, w, i0, n, norm);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP2; k++) {
            ss += v[k] * v[k];
            amax = fmax(amax, fabs(norm ? v[k] * wv[k] : v[k]));
        }
    }
#else
    const int n16 = n / 16;
    float16 ss16 = 0.0f, amax16 = 0.0f;
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 v = vload16(c, xr);
        ss16 += v * v;
        amax16 = fmax(amax16, fabs(norm ? v * vload16(c, w) : v));
    }
    float ss = b158_hsum16(ss16), amax = b158_hmax16(amax16);
    for (int i = 16 * n16 + lid; i < n; i += B158_WG) {
        ss += xr[i] * xr[i];
        amax = fmax(amax, fabs(norm ? xr[i] * w[i] : xr[i]));
    }
#endif
    const float2 sm = b158_wg_sum_max((float2)(ss, amax), red);
    const float inv = 1.0f / sqrt(sm.x / (float)n + eps);
    amax = sm.y;
    /* ties to even, like torch.round; NaN (a NaN input, or an infinite one times s = 0)
     * becomes 0, as in b158_ref_quantize */
    const float s = 127.0f / fmax(norm ? amax * inv : amax, 1e-5f);
#if B158_WG > 1
    b158_quantize_normed(xr, w, norm, qr, n, k_pad, inv, s);
#else
    for (int c = lid; c < n16; c += B158_WG)
        vstore16(b158_q8x16(B158_NQ16(c) * s), c, qr);
    for (int i = 16 * n16 + lid; i < k_pad; i += B158_WG)
        qr[i] = i < n ? b158_q8(B158_NQ(i) * s) : (char)0;
#endif
    if (lid == 0)
        *scale = s;
}

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

/* One row of glu_norm_quantize (elementwise.cl): h = act(g) * u, written over g when store,
 * then (norm) the sub-norm with weights w, then the int8 row qr (stride k_pad, zero tail) and
 * *scale. The normed values are recomputed per pass, never stored; h too without store (the
 * fused decode layer, whose groups all read the same g). Called by all B158_WG work-items of a
 * group; a stored h is read back only by the work-item that wrote it. */
#define B158_GLU_H16(c) (store ? vload16(c, g) : b158_act16(vload16(c, g), act) * vload16(c, u))
#define B158_GLU_H(i) (store ? g[i] : b158_act(g[i], act) * u[i])
inline void b158_glu_norm_quantize_row(__global float *g, __global const float *u, int store,
                                       __global const float *w, __global char *qr,
                                       __global float *scale, int n, int k_pad, float eps, int act,
                                       int norm, __local float *red)
{
    const int lid = get_local_id(0);
#if B158_WG > 1
    float ss = 0.0f, amax = 0.0f;
    for (int i0 = lid; i0 < n; i0 += B158_ROW_STEP * B158_WG) {
        float gv[B158_ROW_STEP], uv[B158_ROW_STEP], wv[B158_ROW_STEP];
        b158_row_load(gv, g, i0, n, 1);
        b158_row_load(uv, u, i0, n, 1);
        b158_row_load(wv, w, i0, n, norm);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP; k++) {
            const int i = i0 + k * B158_WG;
            const float h = b158_act(gv[k], act) * uv[k]; /* 0 past the end */
            if (store && i < n)
                g[i] = h;
            ss += h * h;
            amax = fmax(amax, fabs(norm ? h * wv[k] : h));
        }
    }
#else
    const int n16 = n / 16;
    /* h replaces the gate values (only this work-item reads them again): the activation is
     * taken once per element, not once per pass */
    float16 ss16 = 0.0f, amax16 = 0.0f;
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 h = b158_act16(vload16(c, g), act) * vload16(c, u);
        if (store)
            vstore16(h, c, g);
        ss16 += h * h;
        amax16 = fmax(amax16, fabs(norm ? h * vload16(c, w) : h));
    }
    float ss = b158_hsum16(ss16), amax = b158_hmax16(amax16);
    for (int i = 16 * n16 + lid; i < n; i += B158_WG) {
        const float h = b158_act(g[i], act) * u[i];
        if (store)
            g[i] = h;
        ss += h * h;
        amax = fmax(amax, fabs(norm ? h * w[i] : h));
    }
#endif
    /* the sum of squares is reduced either way: a barrier under a condition costs PoCL's
     * work-group compiler dearly. The normed absmax is that of h * w times the positive 1 / rms
     * (as in b158_rmsnorm_quantize_row): one pass over h before the conversion, not two. */
    const float2 sm = b158_wg_sum_max((float2)(ss, amax), red);
    const float inv = norm ? 1.0f / sqrt(sm.x / (float)n + eps) : 1.0f;
    amax = sm.y;
    const float s = 127.0f / fmax(norm ? amax * inv : amax, 1e-5f);
#if B158_WG > 1
    /* h stored: it and the weights, two arrays at the norms' step (2B-4T's 6912-wide h in 3
     * steps at 256 work-items, not 4) */
    if (store)
        b158_quantize_normed(g, w, norm, qr, n, k_pad, inv, s);
    for (int i0 = lid; !store && i0 < k_pad; i0 += B158_ROW_STEP * B158_WG) {
        float gv[B158_ROW_STEP], uv[B158_ROW_STEP], wv[B158_ROW_STEP];
        b158_row_load(gv, g, i0, n, 1);
        b158_row_load(uv, u, i0, n, 1);
        b158_row_load(wv, w, i0, n, norm);
#pragma unroll
        for (int k = 0; k < B158_ROW_STEP; k++) {
            const int i = i0 + k * B158_WG;
            const float h = b158_act(gv[k], act) * uv[k];
            if (i < k_pad)
                qr[i] = i < n ? b158_q8((norm ? h * inv * wv[k] : h) * s) : (char)0;
        }
    }
#else
    for (int c = lid; c < n16; c += B158_WG) {
        const float16 h = B158_GLU_H16(c);
        vstore16(b158_q8x16((norm ? h * inv * vload16(c, w) : h) * s), c, qr);
    }
    for (int i = 16 * n16 + lid; i < k_pad; i += B158_WG)
        qr[i] = i < n ? b158_q8((norm ? B158_GLU_H(i) * inv * w[i] : B158_GLU_H(i)) * s) : (char)0;
#endif
    if (lid == 0)
        *scale = s;
}

/* Ternary code c = w + 1 in {0, 1, 2} applied to int8 activations without multiplying:
 * +x where c == 2, -x where c == 0, 0 where c == 1. Widened to short so -(-128) is exact. */
inline short16 b158_tern16(uchar16 c, char16 x)
{
    short16 xs = convert_short16(x);
    short16 plus = convert_short16(as_char16(c == (uchar16)2));
    short16 minus = convert_short16(as_char16(c == (uchar16)0));
    return (xs & plus) - (xs & minus);
}

/* The same computed in int8 lanes and widened once: exact for x in [-127, 127], which is all
 * quantize_rows writes (|round(x * 127 / absmax)| <= 127), since -x then fits in int8. */
inline short16 b158_tern8(uchar16 c, char16 x)
{
    const char16 plus = c == (uchar16)2, minus = c == (uchar16)0;
    return convert_short16((x & plus) - (x & minus));
}

/* The 8 halves of a 16-byte piece (of a KV cache row, an FP16 weight row), already in registers,
 * as floats (element 0 in the low bits of u.x): NVIDIA's cvt.f32.f16 through inline PTX where it
 * builds (B158_PTX_CVT; vload_half8 takes a pointer, which puts the piece in memory first), else
 * vload_half8 on a private copy. Both are exact. */
#if B158_PTX_CVT
inline float2 b158_half2_of(uint w)
{
    float lo, hi;
    asm("{ .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h; }"
        : "=f"(lo), "=f"(hi)
        : "r"(w));
    return (float2)(lo, hi);
}
inline float8 b158_half8_of(uint4 u)
{
    return (float8)(b158_half2_of(u.x), b158_half2_of(u.y), b158_half2_of(u.z), b158_half2_of(u.w));
}
#else
inline float8 b158_half8_of(uint4 u)
{
    return vload_half8(0, (const half *)&u);
}
#endif

/* This work-item's global stores made visible to every compute unit before what follows, and the
 * stores other groups made visible so seen after it: what work-groups meeting at an atomic
 * counter need (b158_last_arrival, b158_tail_of, the fused layer's grid barrier). OpenCL 1.2's
 * mem_fence promises order within the work-group only, and compilers take it at that (clang's
 * libclc makes it PTX membar.cta; ROCm's leaves the compute unit's L1 as it is).
 * B158_DEVICE_FENCE 4: PTX fence.acq_rel.gpu (sm_70 and later: SASS MEMBAR.ALL.GPU, what the
 * counter's release / acquire pattern needs); 1: PTX membar.gl, CUDA's __threadfence, the
 * sequentially consistent fence.sc.gpu (MEMBAR.SC.GPU); 2: AMD's agent-scope fence (waits for
 * the stores, invalidates L1); 3: OpenCL C 3.0's own device-scope fence (programs built as 3.0
 * on devices with the atomic scope and order features: Intel's); 0: mem_fence (CPU devices, one
 * coherent cache hierarchy). */
#if B158_DEVICE_FENCE == 4
#define b158_fence_device() asm volatile("fence.acq_rel.gpu;" ::: "memory")
#elif B158_DEVICE_FENCE == 1
#define b158_fence_device() asm volatile("membar.gl;" ::: "memory")
#elif B158_DEVICE_FENCE == 2
#define b158_fence_device() __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "agent")
#elif B158_DEVICE_FENCE == 3
#define b158_fence_device()                                                                        \
    atomic_work_item_fence(CLK_GLOBAL_MEM_FENCE, memory_order_seq_cst, memory_scope_device)
#else
#define b158_fence_device() mem_fence(CLK_GLOBAL_MEM_FENCE)
#endif

/* Whether this group is the last of expected ones to arrive at *count (which it then resets to
 * zero): after fencing its stores; the last one fences again before it reads the others'. Called
 * by every work-item of the group; *last is __local. */
inline int b158_last_arrival(__global volatile int *count, int expected, __local int *last)
{
    b158_fence_device();
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        *last = atomic_inc(count) == expected - 1;
        if (*last)
            *count = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int r = *last;
    if (r)
        b158_fence_device();
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* The decode GEMVs' and the attention's optional tail: after its part of a row is stored, the
 * last work-group to finish (of the expected ones that share the row: get_num_groups(0) for
 * b158_last_group_tail) turns the whole row y (n_rows wide) into the int8 input of the next
 * matmul, q_out / s_out (stride k_pad_out), the launch that would follow, saved:
 *   tail 1: rmsnorm_quantize of y with weights norm_w;
 *   tail 2 / 3: y is [gate | up] (n_rows / 2 each): glu_norm_quantize with the activation act,
 *   with (2) or without (3) the sub-norm by norm_w; h overwrites the gate half.
 * The groups count themselves in *count (zero between launches; the last group resets it);
 * each group fences its stores before its increment and the last fences again before reading,
 * so it sees every row. q_out may be the GEMV's own input: every group has finished reading it
 * when the last one arrives. Every work-item of a group that arrives must reach this (no return
 * before it); with B158_WG == 1 (CPU) one work-item of the last group does the row. */
#define B158_TAIL_PARAMS                                                                           \
    int tail, __global volatile int *count, __global const float *norm_w, __global char *q_out,    \
        __global float *s_out, int k_pad_out, float eps, int act
#define B158_TAIL_ARGS tail, count, norm_w, q_out, s_out, k_pad_out, eps, act
inline void b158_tail_of(__global float *y, int n_rows, int expected, B158_TAIL_PARAMS,
                         __local int *last, __local float *red)
{
    const int lid = get_local_id(0);
    /* b158_last_arrival's steps written out: `tail && b158_last_arrival(...)` here made PoCL's
     * build of ternary_gemv_avx512 crash */
    if (tail) {
        b158_fence_device();
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (lid == 0)
            *last = atomic_inc(count) == expected - 1;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (*last) {
            b158_fence_device();
#if B158_WG == 1
            if (lid == 0) {
#else
            {
#endif
                if (tail == 1)
                    b158_rmsnorm_quantize_row(y, norm_w, 1, q_out, s_out, n_rows, k_pad_out, eps,
                                              red);
                else
                    b158_glu_norm_quantize_row(y, y + n_rows / 2, 1, norm_w, q_out, s_out,
                                               n_rows / 2, k_pad_out, eps, act, tail == 2, red);
            }
            if (lid == 0)
                *count = 0;
        }
    }
}

inline void b158_last_group_tail(__global float *y, int n_rows, B158_TAIL_PARAMS, __local int *last,
                                 __local float *red)
{
    b158_tail_of(y, n_rows, (int)get_num_groups(0), B158_TAIL_ARGS, last, red);
}
