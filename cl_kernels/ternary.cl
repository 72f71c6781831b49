/* Ternary matmul: int8 activations x 2-bit ternary weights, int32 accumulation by add/subtract,
 * FP32 epilogue y = acc * w_scale[n] / x_scale[m] (optionally added to y: fused residual).
 *
 * Weight layout (host/ternary.c packs it): row n of N holds k_pad = round_up(K, 256) codes
 * c = w + 1, 4 per byte, as k_pad/256 blocks of 64 bytes. In block b, byte j holds elements
 * 256b + j + 64l at bits 2l..2l+1 (l = 0..3): one 64-byte load gives four 64-lane planes that
 * line up with four consecutive 64-byte activation loads (the AVX-512 GEMV), and its 16-byte
 * quarter s gives four 16-lane planes that line up with the char16 activations at
 * 256b + 16s + 64l (every other kernel; b158_xq below). Padding codes are 1 (w = 0). Rows are
 * 64-byte aligned because k_pad/4 is a multiple of 64.
 * Activations: int8 rows of stride k_pad with a zero tail (quantize.cl), values in [-127, 127]
 * (never -128: the CPU GEMV negates in int8), scale s per row.
 * Output: y[m * n_rows + n]. */

/* Index of the first char16 of activations that 16-byte weight quarter c (of k_pad/64) meets;
 * its other three planes are at +4, +8 and +12. */
inline int b158_xq(int c)
{
    return 16 * (c >> 2) + (c & 3);
}

/* The 64 signed activations of one chunk, lane-wise (16 lanes of 4 weights each): |lane| <=
 * 4 * 128 = 512, so up to B158_SHORT_CHUNKS chunks add up in short lanes without overflow
 * before the one horizontal reduction (which costs more than a chunk's adds). Each weight is
 * applied in int8 lanes (b158_tern8: activations in [-127, 127], as quantize_rows writes them)
 * and widened once per group. */
#define B158_SHORT_CHUNKS 63
inline short16 b158_chunk_lanes(uchar16 p, __global const char16 *xc)
{
    return b158_tern8(p & (uchar16)3, xc[0]) + b158_tern8((p >> (uchar16)2) & (uchar16)3, xc[4]) +
           b158_tern8((p >> (uchar16)4) & (uchar16)3, xc[8]) + b158_tern8(p >> (uchar16)6, xc[12]);
}

/* The same with short-lane arithmetic, for the GEMM: its compare masks are shared by all the
 * tokens of a work-item, and per token this measured faster than b158_tern8 on PoCL. */
inline short16 b158_chunk_lanes16(uchar16 p, __global const char16 *xc)
{
    return b158_tern16(p & (uchar16)3, xc[0]) + b158_tern16((p >> (uchar16)2) & (uchar16)3, xc[4]) +
           b158_tern16((p >> (uchar16)4) & (uchar16)3, xc[8]) +
           b158_tern16(p >> (uchar16)6, xc[12]);
}

inline int b158_lanes_sum(short16 t)
{
    int8 h = convert_int8(t.lo) + convert_int8(t.hi);
    int4 f = h.lo + h.hi;
    return f.x + f.y + f.z + f.w;
}

/* Dot product of one packed row with one activation row: short lanes, flushed to int. */
inline int b158_row_dot(__global const uchar16 *wr, __global const char16 *x, int chunks)
{
    int acc = 0;
    for (int c0 = 0; c0 < chunks; c0 += B158_SHORT_CHUNKS) {
        const int c1 = min(chunks, c0 + B158_SHORT_CHUNKS);
        short16 lanes = 0;
        for (int c = c0; c < c1; c++)
            lanes += b158_chunk_lanes(wr[c], x + b158_xq(c));
        acc += b158_lanes_sum(lanes);
    }
    return acc;
}

inline void b158_store(__global float *y, size_t i, float v, int accumulate)
{
    y[i] = accumulate ? y[i] + v : v;
}

/* CPU GEMV: one work-item per output row, unpacking in registers; no __local but the tail's. */
__kernel void ternary_gemv_cpu(__global const uchar16 *w, __global const float *w_scale,
                               __global const char16 *x, __global const float *x_scale,
                               __global float *y, int n_rows, int k_pad, int accumulate,
                               B158_TAIL_PARAMS)
{
    __local int last;
    __local float red[B158_WG];
    const int n = get_global_id(0);
    if (n < n_rows) {
        const int chunks = k_pad / 64;
        const int acc = b158_row_dot(w + (size_t)n * chunks, x, chunks);
        b158_store(y, n, (float)acc * w_scale[n] / x_scale[0], accumulate);
    }
    b158_last_group_tail(y, n_rows, B158_TAIL_ARGS, &last, red);
}

#if B158_X86_AVX512BW
/* CPU GEMV and GEMM on x86 with AVX-512BW (the runtime defines B158_X86_AVX512BW after checking
 * that these builtins build for the device; the *_cpu kernels are the portable path), one
 * 64-byte load per 256 weights. On the unsigned codes c = w + 1 in {0, 1, 2} vpmaddubsw
 * multiplies 64 u8 codes by 64 s8 activations and adds pairs into s16, and sum(w q) =
 * sum(c q) - sum(q): sum(q) belongs to the token, not to the row, so a work-item of
 * B158_AVX512_ROWS rows takes it once (the same instruction on all-ones codes) and a block then
 * costs four vpmaddubsw per token. A block adds at most 4 planes x 2 x 2 x 127 = 2032 to an s16
 * lane of sum(c q), so B158_GEMM_FLUSH = 16 blocks (4096 weights) fit before vpmaddwd widens
 * them into 16 int32 lanes. Rows and activations must be 64-byte aligned (the packed layout and
 * quantize_rows' k_pad stride keep them so). Edges reread the last row or token (no branch in
 * the loops) and store only their own. */
typedef char b158_m512c __attribute__((__vector_size__(64)));
typedef short b158_m512s __attribute__((__vector_size__(64)));
typedef uchar b158_uchar64 __attribute__((ext_vector_type(64)));
typedef short b158_short32 __attribute__((ext_vector_type(32)));
inline b158_short32 b158_maddubs(b158_uchar64 u, b158_uchar64 s)
{
    return __builtin_astype(__builtin_ia32_pmaddubsw512(__builtin_astype(u, b158_m512c),
                                                        __builtin_astype(s, b158_m512c)),
                            b158_short32);
}
inline int16 b158_madd_ones(b158_short32 a)
{
    return __builtin_astype(
        __builtin_ia32_pmaddwd512(__builtin_astype(a, b158_m512s),
                                  __builtin_astype((b158_short32)1, b158_m512s)),
        int16);
}

inline int b158_sum16(int16 v)
{
    const int8 h = v.lo + v.hi;
    const int4 f = h.lo + h.hi;
    return f.x + f.y + f.z + f.w;
}

#define B158_GEMM_FLUSH 16

/* sum(q) of one activation row */
inline int b158_sum_q(__global const b158_uchar64 *xr, int blocks)
{
    const b158_uchar64 ones = (b158_uchar64)1;
    int16 acc = 0;
    for (int b = 0; b < blocks; b++) {
        __global const b158_uchar64 *xb = xr + 4 * b;
        acc += b158_madd_ones(b158_maddubs(ones, xb[0]) + b158_maddubs(ones, xb[1]) +
                              b158_maddubs(ones, xb[2]) + b158_maddubs(ones, xb[3]));
    }
    return b158_sum16(acc);
}

/* Row n's int16 partial sums of sum(c q) for the blocks b0 .. b1 (at most B158_GEMM_FLUSH, so
 * the 16-bit lanes of t cannot overflow), added into acc */
#define B158_ROW_BLOCKS(acc, wr, b0, b1)                                                           \
    do {                                                                                           \
        b158_short32 t_ = 0;                                                                       \
        for (int b = (b0); b < (b1); b++) {                                                        \
            const b158_uchar64 p_ = (wr)[b];                                                       \
            __global const b158_uchar64 *xb_ = xv + 4 * b;                                         \
            t_ += b158_maddubs(p_ & m3, xb_[0]) + b158_maddubs((p_ >> 2) & m3, xb_[1]) +           \
                  b158_maddubs((p_ >> 4) & m3, xb_[2]) + b158_maddubs(p_ >> 6, xb_[3]);            \
        }                                                                                          \
        acc += b158_madd_ones(t_);                                                                 \
    } while (0)

/* Decode GEMV: work-item i takes B158_AVX512_ROWS / 2 rows from n0 = i * B158_AVX512_ROWS / 2
 * and as many from n0 + n_half (n_half = n_rows / 2 rounded up to that count), a row of each at a
 * time: two weight streams from far-apart places per thread keep more of the memory system
 * busy than one. */
__kernel void ternary_gemv_avx512(__global const uchar *w, __global const float *w_scale,
                                  __global const uchar *x, __global const float *x_scale,
                                  __global float *y, int n_rows, int k_pad, int accumulate,
                                  B158_TAIL_PARAMS)
{
    __local int last;
    __local float red[B158_WG];
    const int per = B158_AVX512_ROWS / 2;
    const int n_half = (n_rows + 2 * per - 1) / (2 * per) * per;
    const int n0 = get_global_id(0) * per;
    if (n0 < n_half) {
        const int blocks = k_pad / 256;
        __global const b158_uchar64 *xv = (__global const b158_uchar64 *)x;
        const int qsum = b158_sum_q(xv, blocks);
        const b158_uchar64 m3 = (b158_uchar64)3;
        const float xs = x_scale[0];
        for (int r = 0; r < per; r++) {
            const int na = n0 + r, nb = na + n_half;
            if (na >= n_rows)
                break;
            /* a row past the end reads row na again and is not stored */
            const int nbr = nb < n_rows ? nb : na;
            __global const b158_uchar64 *wa =
                (__global const b158_uchar64 *)w + (size_t)na * blocks;
            __global const b158_uchar64 *wb =
                (__global const b158_uchar64 *)w + (size_t)nbr * blocks;
            int16 acca = 0, accb = 0;
            for (int b0 = 0; b0 < blocks; b0 += B158_GEMM_FLUSH) {
                const int b1 = min(blocks, b0 + B158_GEMM_FLUSH);
                B158_ROW_BLOCKS(acca, wa, b0, b1);
                B158_ROW_BLOCKS(accb, wb, b0, b1);
            }
            b158_store(y, na, (float)(b158_sum16(acca) - qsum) * w_scale[na] / xs, accumulate);
            if (nb < n_rows)
                b158_store(y, nb, (float)(b158_sum16(accb) - qsum) * w_scale[nb] / xs, accumulate);
        }
    }
    b158_last_group_tail(y, n_rows, B158_TAIL_ARGS, &last, red);
}

/* Prefill: one work-item per (B158_AVX512_ROWS rows, 4 tokens). Each 64-byte weight load is
 * unpacked into its planes once and applied to every token; the tokens' activation rows stay in
 * L1 across the rows. */
/* t += the block-b dot of one token (its activation row at xr) with planes c0..c3, in 32 short
 * lanes of sum(c q) */
#define B158_TOKEN_BLOCK(t, xr)                                                                    \
    do {                                                                                           \
        __global const b158_uchar64 *xb_ = (xr) + 4 * b;                                           \
        t += b158_maddubs(c0, xb_[0]) + b158_maddubs(c1, xb_[1]) + b158_maddubs(c2, xb_[2]) +      \
             b158_maddubs(c3, xb_[3]);                                                             \
    } while (0)

/* Row n's values v (one a token, tokens mt .. mt + mcount - 1) over their activation scales */
inline void b158_store_tokens(__global float *y, int n, int n_rows, int mt, int mcount, float4 v,
                              __global const float *x_scale, int accumulate)
{
    b158_store(y, (size_t)mt * n_rows + n, v.x / x_scale[mt], accumulate);
    if (mcount > 1)
        b158_store(y, (size_t)(mt + 1) * n_rows + n, v.y / x_scale[mt + 1], accumulate);
    if (mcount > 2)
        b158_store(y, (size_t)(mt + 2) * n_rows + n, v.z / x_scale[mt + 2], accumulate);
    if (mcount > 3)
        b158_store(y, (size_t)(mt + 3) * n_rows + n, v.w / x_scale[mt + 3], accumulate);
}

/* A GEMM work-item's four tokens from token m0 (mcount of them; past the last, the last again):
 * their activation rows x0 .. x3 and sum(q) each, qsum */
#define B158_GEMM_TOKENS(m0)                                                                       \
    const size_t stride_ = (size_t)k_pad / 64;                                                     \
    __global const b158_uchar64 *x0 = (__global const b158_uchar64 *)x + (size_t)(m0)*stride_;     \
    __global const b158_uchar64 *x1 = x0 + (size_t)min(1, mcount - 1) * stride_;                   \
    __global const b158_uchar64 *x2 = x0 + (size_t)min(2, mcount - 1) * stride_;                   \
    __global const b158_uchar64 *x3 = x0 + (size_t)min(3, mcount - 1) * stride_;                   \
    const int4 qsum = (int4)(b158_sum_q(x0, blocks), b158_sum_q(x1, blocks),                       \
                             b158_sum_q(x2, blocks), b158_sum_q(x3, blocks))

/* Four tokens per work-item, written out: PoCL keeps arrays of vectors indexed in loops on the
 * stack, which costs more than the arithmetic. */
__kernel void ternary_gemm_avx512(__global const uchar *w, __global const float *w_scale,
                                  __global const uchar *x, __global const float *x_scale,
                                  __global float *y, int n_rows, int k_pad, int m_rows,
                                  int accumulate)
{
    const int n0 = get_global_id(0) * B158_AVX512_ROWS;
    const int m0 = get_global_id(1) * 4;
    if (n0 >= n_rows || m0 >= m_rows)
        return;
    const int blocks = k_pad / 256;
    const int mcount = min(4, m_rows - m0);
    const int ncount = min(B158_AVX512_ROWS, n_rows - n0);
    B158_GEMM_TOKENS(m0);
    const b158_uchar64 m3 = (b158_uchar64)3;
    for (int r = 0; r < ncount; r++) {
        const int n = n0 + r;
        __global const b158_uchar64 *wr = (__global const b158_uchar64 *)w + (size_t)n * blocks;
        int16 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int b0 = 0; b0 < blocks; b0 += B158_GEMM_FLUSH) {
            const int b1 = min(blocks, b0 + B158_GEMM_FLUSH);
            b158_short32 t0 = 0, t1 = 0, t2 = 0, t3 = 0;
            for (int b = b0; b < b1; b++) {
                const b158_uchar64 p = wr[b];
                const b158_uchar64 c0 = p & m3, c1 = (p >> 2) & m3, c2 = (p >> 4) & m3, c3 = p >> 6;
                B158_TOKEN_BLOCK(t0, x0);
                B158_TOKEN_BLOCK(t1, x1);
                B158_TOKEN_BLOCK(t2, x2);
                B158_TOKEN_BLOCK(t3, x3);
            }
            a0 += b158_madd_ones(t0), a1 += b158_madd_ones(t1);
            a2 += b158_madd_ones(t2), a3 += b158_madd_ones(t3);
        }
        const int4 acc = (int4)(b158_sum16(a0), b158_sum16(a1), b158_sum16(a2), b158_sum16(a3));
        b158_store_tokens(y, n, n_rows, m0, mcount, convert_float4(acc - qsum) * w_scale[n],
                          x_scale, accumulate);
    }
}

#if B158_X86_AVX512VNNI
/* The GEMM where the CPU has AVX-512 VNNI (the runtime defines B158_X86_AVX512VNNI after running
 * vpdpbusd on the device): vpdpbusd multiplies 64 u8 by 64 s8 and adds each four products into
 * an int32 lane, one instruction where vpmaddubsw needed an s16 add after it and vpmaddwd every
 * 16 blocks. (The decode GEMV is bound by memory: on the development VM a VNNI form of it ran
 * no faster, so ternary_gemv_avx512 stays the one.) It is written as inline assembly: PoCL 3.1's
 * LLVM takes an AMD Zen 4 for a "skylake-avx512", without VNNI, and will not select the builtin
 * (not even in a kernel that asks for the feature: its work-group function does not). */
typedef int b158_m512i __attribute__((__vector_size__(64)));
inline int16 b158_dpbusd(int16 acc, b158_uchar64 u, b158_uchar64 s)
{
    b158_m512i a = __builtin_astype(acc, b158_m512i);
    __asm__("vpdpbusd %2, %1, %0"
            : "+v"(a)
            : "v"(__builtin_astype(u, b158_m512i)), "v"(__builtin_astype(s, b158_m512i)));
    return __builtin_astype(a, int16);
}

/* acc_a / acc_b += one token's block (its four 64-byte pieces at xb) applied to the unpacked
 * planes ca0..3 / cb0..3 of two rows */
#define B158_VNNI_TOKEN(acc_a, acc_b, xb)                                                          \
    do {                                                                                           \
        __global const b158_uchar64 *xb_ = (xb);                                                   \
        acc_a = b158_dpbusd(b158_dpbusd(acc_a, ca0, xb_[0]), ca1, xb_[1]);                         \
        acc_b = b158_dpbusd(b158_dpbusd(acc_b, cb0, xb_[0]), cb1, xb_[1]);                         \
        acc_a = b158_dpbusd(b158_dpbusd(acc_a, ca2, xb_[2]), ca3, xb_[3]);                         \
        acc_b = b158_dpbusd(b158_dpbusd(acc_b, cb2, xb_[2]), cb3, xb_[3]);                         \
    } while (0)

/* Prefill: ternary_gemm_avx512's work-items (B158_AVX512_ROWS rows, 4 tokens), two rows at a
 * time: each weight block unpacked into its four planes once (shifted down, the unpacking shared
 * by the tokens) and each activation load applied to both rows; an accumulator per row and
 * token, written out (see ternary_gemm_avx512 on arrays of vectors). On the development VM's Zen
 * 4 a 2B-4T prefill of 128 tokens ran at 1.11x the AVX-512BW kernels' speed (README). */
__kernel void ternary_gemm_vnni(__global const uchar *w, __global const float *w_scale,
                                __global const uchar *x, __global const float *x_scale,
                                __global float *y, int n_rows, int k_pad, int m_rows,
                                int accumulate)
{
    const int n0 = get_global_id(0) * B158_AVX512_ROWS;
    const int mt = get_global_id(1) * 4;
    if (n0 >= n_rows || mt >= m_rows)
        return;
    const int blocks = k_pad / 256;
    const int mcount = min(4, m_rows - mt);
    const int ncount = min(B158_AVX512_ROWS, n_rows - n0);
    B158_GEMM_TOKENS(mt);
    const b158_uchar64 m3 = (b158_uchar64)3;
    for (int r = 0; r < ncount; r += 2) {
        /* two rows at a time, each activation load serving both (an odd last row is done
         * twice and stored once) */
        const int na = n0 + r, nb = n0 + min(r + 1, ncount - 1);
        __global const b158_uchar64 *wa = (__global const b158_uchar64 *)w + (size_t)na * blocks;
        __global const b158_uchar64 *wb = (__global const b158_uchar64 *)w + (size_t)nb * blocks;
        int16 a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        for (int b = 0; b < blocks; b++) {
            const b158_uchar64 pa = wa[b], pb = wb[b];
            const b158_uchar64 ca0 = pa & m3, ca1 = (pa >> 2) & m3, ca2 = (pa >> 4) & m3,
                               ca3 = pa >> 6;
            const b158_uchar64 cb0 = pb & m3, cb1 = (pb >> 2) & m3, cb2 = (pb >> 4) & m3,
                               cb3 = pb >> 6;
            B158_VNNI_TOKEN(a0, b0, x0 + 4 * b);
            B158_VNNI_TOKEN(a1, b1, x1 + 4 * b);
            B158_VNNI_TOKEN(a2, b2, x2 + 4 * b);
            B158_VNNI_TOKEN(a3, b3, x3 + 4 * b);
        }
        const int4 sa = (int4)(b158_sum16(a0), b158_sum16(a1), b158_sum16(a2), b158_sum16(a3));
        const int4 sb = (int4)(b158_sum16(b0), b158_sum16(b1), b158_sum16(b2), b158_sum16(b3));
        b158_store_tokens(y, na, n_rows, mt, mcount, convert_float4(sa - qsum) * w_scale[na],
                          x_scale, accumulate);
        if (r + 1 < ncount)
            b158_store_tokens(y, nb, n_rows, mt, mcount, convert_float4(sb - qsum) * w_scale[nb],
                              x_scale, accumulate);
    }
}
#endif
#endif

/* CPU GEMM (prefill): one work-item per (row n, block of B158_GEMM_CPU_M tokens); each weight
 * chunk is unpacked once and applied to every token of the block. */
__kernel void ternary_gemm_cpu(__global const uchar16 *w, __global const float *w_scale,
                               __global const char16 *x, __global const float *x_scale,
                               __global float *y, int n_rows, int k_pad, int m_rows, int accumulate)
{
    const int n = get_global_id(0);
    const int m0 = get_global_id(1) * B158_GEMM_CPU_M;
    if (n >= n_rows || m0 >= m_rows)
        return;
    const int chunks = k_pad / 64;
    const int mcount = min(B158_GEMM_CPU_M, m_rows - m0);
    __global const uchar16 *wr = w + (size_t)n * chunks;
    int acc[B158_GEMM_CPU_M];
    for (int j = 0; j < B158_GEMM_CPU_M; j++)
        acc[j] = 0;
    for (int c0 = 0; c0 < chunks; c0 += B158_SHORT_CHUNKS) {
        const int c1 = min(chunks, c0 + B158_SHORT_CHUNKS);
        short16 lanes[B158_GEMM_CPU_M];
        for (int j = 0; j < B158_GEMM_CPU_M; j++)
            lanes[j] = 0;
        for (int c = c0; c < c1; c++) {
            const uchar16 p = wr[c];
            for (int j = 0; j < mcount; j++)
                lanes[j] += b158_chunk_lanes16(p, x + (size_t)(m0 + j) * (k_pad / 16) + b158_xq(c));
        }
        for (int j = 0; j < mcount; j++)
            acc[j] += b158_lanes_sum(lanes[j]);
    }
    for (int j = 0; j < mcount; j++)
        b158_store(y, (size_t)(m0 + j) * n_rows + n, (float)acc[j] * w_scale[n] / x_scale[m0 + j],
                   accumulate);
}

/* sum of the four s8 x s8 byte products of w and a, added to acc: the device's integer dot
 * product where it has one (B158_PTX_DP4A: NVIDIA's dp4a through inline PTX, the statement the
 * runtime's probe built; B158_AMD_DOT: AMD's v_dot4_i32_i8 through the LLVM builtin ROCm's
 * compiler has for GPUs with it, gfx906 / gfx908 / gfx90a / gfx103x; B158_INT_DOT:
 * cl_khr_integer_dot_product), else four multiplies (which LLVM's AMD backend leaves as four
 * 24-bit multiplies on byte selects) */
#if B158_INT_DOT
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
#endif
inline int b158_dot4(uint w, uint a, int acc)
{
#if B158_PTX_DP4A
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(w), "r"(a), "r"(acc));
    return d;
#elif B158_AMD_DOT
    return __builtin_amdgcn_sdot4((int)w, (int)a, acc, false);
#elif B158_INT_DOT
    return dot_acc_sat_4x8packed_ss_int(w, a, acc);
#else
    const int4 p = convert_int4(as_char4(w)) * convert_int4(as_char4(a));
    return acc + p.x + p.y + p.z + p.w;
#endif
}

/* Plane l of a 16-byte weight quarter p as 16 signed bytes w = c - 1 in {-1, 0, +1}: per byte,
 * (c | 0x80) - 1 never borrows from its neighbour (0x7f, 0x80, 0x81 for c = 0, 1, 2) and
 * ^ 0x80 maps those to 0xff, 0x00, 0x01. */
inline uint4 b158_plane_signed(uint4 p, int l)
{
    const uint4 c = (p >> (uint4)(2 * l)) & (uint4)0x03030303u;
    return ((c | (uint4)0x80808080u) - (uint4)0x01010101u) ^ (uint4)0x80808080u;
}

/* acc + the dot product of weight quarter p (64 weights) with the 64 activations it meets:
 * straight-line code, the four activation loads first (in a loop over the planes, compilers
 * left each load right before its dot products, one memory latency per plane; as straight-line
 * code the device's scheduler can issue the loads of several quarters ahead) */
#define B158_PLANE_DOT(acc, p, l, a)                                                               \
    do {                                                                                           \
        const uint4 w_ = b158_plane_signed(p, l);                                                  \
        acc = b158_dot4(w_.x, (a).x, b158_dot4(w_.y, (a).y, acc));                                 \
        acc = b158_dot4(w_.z, (a).z, b158_dot4(w_.w, (a).w, acc));                                 \
    } while (0)
inline int b158_quarter_dot(uint4 p, __global const uint4 *xq, int acc)
{
    const uint4 a0 = xq[0], a1 = xq[4], a2 = xq[8], a3 = xq[12];
    B158_PLANE_DOT(acc, p, 0, a0);
    B158_PLANE_DOT(acc, p, 1, a1);
    B158_PLANE_DOT(acc, p, 2, a2);
    B158_PLANE_DOT(acc, p, 3, a3);
    return acc;
}

/* Weight quarter q of row wr, or one of codes 1 (w = 0, adding nothing) past the row's end */
#define B158_ZERO_QUARTER ((uint4)0x55555555u)
inline uint4 b158_quarter_or_zero(__global const uint4 *wr, int q, int quarters)
{
    return q < quarters ? wr[q] : B158_ZERO_QUARTER;
}

/* One step of a GPU GEMV row for a lane of lanes: the B158_GEMV_AHEAD weight quarters c,
 * c + lanes, ... of row wr (zero weights past the row's end), into p; a lane's first step has
 * c = lane */
inline void b158_gemv_gpu_load(__global const uint4 *wr, int quarters, int c, int lanes, uint4 *p)
{
#pragma unroll
    for (int i = 0; i < B158_GEMV_AHEAD; i++)
        p[i] = b158_quarter_or_zero(wr, c + lanes * i, quarters);
}

/* acc + the dot products of one step's quarters p (quarters c, c + lanes, ...) with x; quarters
 * past the row's end (zero weights) are skipped: a 2560-wide row's 40 quarters are 5 a lane of 8,
 * so at 8 ahead the last 3 of every lane (the same in a warp) would be a dot product of zeros */
inline int b158_gemv_gpu_step(const uint4 *p, int c, int lanes, int quarters,
                              __global const uint4 *x, int acc)
{
#pragma unroll
    for (int i = 0; i < B158_GEMV_AHEAD; i++)
        if (c + lanes * i < quarters)
            acc = b158_quarter_dot(p[i], x + b158_xq(c + lanes * i), acc);
    return acc;
}

/* Work-item lane (of lanes: 8, 16 or 32) of a GPU GEMV row: its partial dot product of weight
 * row wr (quarters 16-byte quarters) with the activations x, the quarters lane, lane + lanes, ...,
 * B158_GEMV_AHEAD loads issued before any is used: a 2B-4T row (40 quarters, 5 a lane of 8) is
 * one round trip to memory, a 6912-wide one (108) three at 8 lanes and 5 ahead, one at 32. p
 * holds the first step's quarters, loaded (b158_gemv_gpu_load) where the caller chose (the fused
 * decode layer: before it waits for its input), and with second set p1 the second step's; later
 * steps load into p. */
inline int b158_gemv_gpu_part_from(uint4 *p, const uint4 *p1, int second, __global const uint4 *wr,
                                   int quarters, int lane, int lanes, __global const uint4 *x)
{
    int acc = 0;
    for (int c = lane; c < quarters; c += lanes * B158_GEMV_AHEAD) {
        if (second && c == lane + lanes * B158_GEMV_AHEAD) {
#pragma unroll
            for (int i = 0; i < B158_GEMV_AHEAD; i++)
                p[i] = p1[i];
        } else if (c != lane) {
            b158_gemv_gpu_load(wr, quarters, c, lanes, p);
        }
        acc = b158_gemv_gpu_step(p, c, lanes, quarters, x, acc);
    }
    return acc;
}

inline int b158_gemv_gpu_part(__global const uint4 *wr, int quarters, int lane, int lanes,
                              __global const uint4 *x)
{
    uint4 p[B158_GEMV_AHEAD];
    b158_gemv_gpu_load(wr, quarters, lane, lanes, p);
    return b158_gemv_gpu_part_from(p, p, 0, wr, quarters, lane, lanes, x);
}

/* Row n's weight scale and (add) addend y_in[n], loaded by the row's first work-item (of lanes)
 * before the row's dot products, so that their round trip to memory overlaps the weights'
 * instead of following the sums (b158_gemv_gpu_finish takes them) */
inline float2 b158_gemv_gpu_row_consts(int n, int lanes, __global const float *w_scale,
                                       __global const float *y_in, int add, int n_rows)
{
    float2 c = 0.0f;
    if ((get_local_id(0) & (lanes - 1)) == 0 && n < n_rows) {
        c.x = w_scale[n];
        if (add)
            c.y = y_in[n];
    }
    return c;
}

/* Row n of a GPU GEMV from this work-item's partial sum part, by the whole group: the row's
 * lanes' sums meet in red (B158_WG ints; through warp shuffles on NVIDIA) and the row's first
 * work-item stores y[n] = (add ? y_in[n] : 0) + W[n] . x * w_scale[n] / x_scale, with c the row's
 * (w_scale[n], y_in[n]) from b158_gemv_gpu_row_consts (y_in may be y) */
inline void b158_gemv_gpu_finish(int part, int n, int lanes, float2 c, float x_scale,
                                 __global float *y, int add, int n_rows, __local int *red)
{
    const int lid = get_local_id(0);
#if B158_SUBGROUPS == 2 /* a row's lanes are neighbours in a warp: three to five shuffles, the     \
                           same for the whole warp (lanes is the launch's) */
    int total = part;
    if (lanes > 16)
        total += b158_shfl_xor_int(total, 16);
    if (lanes > 8)
        total += b158_shfl_xor_int(total, 8);
    total += b158_shfl_xor_int(total, 4);
    total += b158_shfl_xor_int(total, 2);
    total += b158_shfl_xor_int(total, 1);
    if ((lid & (lanes - 1)) == 0 && n < n_rows) {
#else
    red[lid] = part;
    barrier(CLK_LOCAL_MEM_FENCE);
    if ((lid & (lanes - 1)) == 0 && n < n_rows) {
        int total = 0;
        for (int i = 0; i < lanes; i++)
            total += red[lid + i];
#endif
        const float v = (float)total * c.x / x_scale;
        y[n] = add ? c.y + v : v;
    }
}

/* The B158_WG >> shift rows from n0 of a GPU GEMV, 1 << shift work-items a row, by the whole
 * group (b158_gemv_gpu_finish) */
inline void b158_gemv_gpu_rows(__global const uint4 *w, __global const float *w_scale,
                               __global const uint4 *x, float x_scale, __global float *y,
                               __global const float *y_in, int add, int n0, int n_rows, int k_pad,
                               int shift, __local int *red)
{
    const int lid = get_local_id(0), quarters = k_pad / 64, n = n0 + (lid >> shift);
    const int lanes = 1 << shift;
    const float2 c = b158_gemv_gpu_row_consts(n, lanes, w_scale, y_in, add, n_rows);
    const int part = n < n_rows ? b158_gemv_gpu_part(w + (size_t)n * quarters, quarters,
                                                     lid & (lanes - 1), lanes, x)
                                : 0;
    b158_gemv_gpu_finish(part, n, lanes, c, x_scale, y, add, n_rows, red);
}

/* GPU GEMV: 1 << shift work-items per row (8, or 16 / 32 for the rows that would take 8 more
 * than one round of loads: b158_op_ternary_gemv), B158_WG >> shift rows per work-group. The
 * work-items of a row read consecutive 16-byte quarters (128 bytes per step at 8), B158_GEMV_AHEAD
 * steps' loads issued before any is used; a quarter is 64 weights in four planes of 2-bit codes c =
 * w + 1, each turned into signed bytes and applied to the 16 activations it meets (b158_xq) with
 * 4-way s8 x s8 dot products. Nothing is staged and nothing precedes the loads; one __local step at
 * the end, where each row's first work-item adds its lanes' partial sums. */
__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void
ternary_gemv_gpu(__global const uint4 *w, __global const float *w_scale, __global const uint4 *x,
                 __global const float *x_scale, __global float *y, int n_rows, int k_pad, int shift,
                 int accumulate, B158_TAIL_PARAMS)
{
    __local int red[B158_WG];
    __local float redf[B158_WG];
    __local int last;
    const float xs = x_scale[0];
    const int n0 = get_group_id(0) * (B158_WG >> shift);
    /* a constant shift in each call: the loads' offsets then fold into the instructions (a
     * variable one took sm_90 from 60 registers to 66, 3 groups a unit instead of 4) */
    if (shift == 5)
        b158_gemv_gpu_rows(w, w_scale, x, xs, y, y, accumulate, n0, n_rows, k_pad, 5, red);
    else if (shift == 4)
        b158_gemv_gpu_rows(w, w_scale, x, xs, y, y, accumulate, n0, n_rows, k_pad, 4, red);
    else
        b158_gemv_gpu_rows(w, w_scale, x, xs, y, y, accumulate, n0, n_rows, k_pad, 3, red);
    b158_last_group_tail(y, n_rows, B158_TAIL_ARGS, &last, redf);
}

/* GPU GEMM (prefill): a 16 x 16 work-group computes a tile of B158_GEMM_TN rows x B158_GEMM_TM
 * tokens, register-tiled: work-item (tx, ty) holds the rows tx + 16i and tokens ty + 16j. Per
 * 256-weight block the group unpacks the tile's 64-byte weight blocks into __local as signed
 * bytes in element order (plane l of 4-byte word m of a block holds elements 64l + 4m .. +3, the
 * unpacked word 16l + m) and copies the tokens' 256 activations beside them, each with one
 * 16-byte load per piece; the inner loop then reads 16 bytes of each row and token at a time
 * from __local (rows padded to 68 words: 16-byte reads of neighbouring rows hit different banks)
 * and does 4 x 4 x 4 four-way dot products. Double-buffered through registers: the next block's
 * pieces are loaded from global memory before the current block's products, and stored into
 * __local after them. */
#define B158_GT 16
#define B158_GRI (B158_GEMM_TN / B158_GT)
#define B158_GRJ (B158_GEMM_TM / B158_GT)
#define B158_GKW 68 /* __local words per row: 64 of one block + 4 of padding */
#define B158_GWP ((B158_GEMM_TN * 4 + B158_GT * B158_GT - 1) / (B158_GT * B158_GT))
#define B158_GXP ((B158_GEMM_TM * 16 + B158_GT * B158_GT - 1) / (B158_GT * B158_GT))

/* Block b's pieces of the tile that work-item tid copies: weights (rows past n_rows as code 1,
 * w = 0) and activations (tokens past m_rows as 0) */
inline void b158_gemm_fetch(__global const uint4 *w, __global const uint4 *x, int n0, int m0,
                            int n_rows, int m_rows, int k_pad, int b, int tid, uint4 *wp, uint4 *xp)
{
    const int blocks = k_pad / 256;
#pragma unroll
    for (int i = 0; i < B158_GWP; i++) {
        const int e = tid + i * B158_GT * B158_GT, r = e >> 2, q = e & 3;
        wp[i] = e < B158_GEMM_TN * 4 && n0 + r < n_rows ? w[((size_t)(n0 + r) * blocks + b) * 4 + q]
                                                        : (uint4)0x55555555u;
    }
#pragma unroll
    for (int i = 0; i < B158_GXP; i++) {
        const int e = tid + i * B158_GT * B158_GT, t = e >> 4, q = e & 15;
        xp[i] = e < B158_GEMM_TM * 16 && m0 + t < m_rows
                    ? x[(size_t)(m0 + t) * (k_pad / 16) + 16 * b + q]
                    : (uint4)0;
    }
}

__kernel __attribute__((reqd_work_group_size(B158_GT, B158_GT, 1))) void
ternary_gemm_gpu(__global const uint4 *w, __global const float *w_scale, __global const uint4 *x,
                 __global const float *x_scale, __global float *y, int n_rows, int k_pad,
                 int m_rows, int accumulate)
{
    __local uint4 wt[B158_GEMM_TN * B158_GKW / 4];
    __local uint4 xt[B158_GEMM_TM * B158_GKW / 4];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int tid = ty * B158_GT + tx;
    const int n0 = get_group_id(0) * B158_GEMM_TN, m0 = get_group_id(1) * B158_GEMM_TM;
    const int blocks = k_pad / 256;
    int acc[B158_GRI][B158_GRJ];
#pragma unroll
    for (int i = 0; i < B158_GRI; i++)
#pragma unroll
        for (int j = 0; j < B158_GRJ; j++)
            acc[i][j] = 0;

    uint4 wp[B158_GWP], xp[B158_GXP];
    b158_gemm_fetch(w, x, n0, m0, n_rows, m_rows, k_pad, 0, tid, wp, xp);
    for (int b = 0; b < blocks; b++) {
        /* weights: TN rows x 4 pieces of 16 bytes; piece q of a block holds words 4q .. 4q+3 */
#pragma unroll
        for (int i = 0; i < B158_GWP; i++) {
            const int e = tid + i * B158_GT * B158_GT, r = e >> 2, q = e & 3;
            if (e < B158_GEMM_TN * 4)
                for (int l = 0; l < 4; l++)
                    wt[(r * B158_GKW + 16 * l) / 4 + q] = b158_plane_signed(wp[i], l);
        }
        /* activations: TM tokens x 16 pieces of 16 bytes */
#pragma unroll
        for (int i = 0; i < B158_GXP; i++) {
            const int e = tid + i * B158_GT * B158_GT, t = e >> 4, q = e & 15;
            if (e < B158_GEMM_TM * 16)
                xt[t * B158_GKW / 4 + q] = xp[i];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (b + 1 < blocks)
            b158_gemm_fetch(w, x, n0, m0, n_rows, m_rows, k_pad, b + 1, tid, wp, xp);
        for (int k4 = 0; k4 < 16; k4++) {
            uint4 wv[B158_GRI], xv[B158_GRJ];
#pragma unroll
            for (int i = 0; i < B158_GRI; i++)
                wv[i] = wt[(tx + B158_GT * i) * B158_GKW / 4 + k4];
#pragma unroll
            for (int j = 0; j < B158_GRJ; j++)
                xv[j] = xt[(ty + B158_GT * j) * B158_GKW / 4 + k4];
#pragma unroll
            for (int i = 0; i < B158_GRI; i++)
#pragma unroll
                for (int j = 0; j < B158_GRJ; j++) {
                    int a = b158_dot4(wv[i].x, xv[j].x, acc[i][j]);
                    a = b158_dot4(wv[i].y, xv[j].y, a);
                    a = b158_dot4(wv[i].z, xv[j].z, a);
                    acc[i][j] = b158_dot4(wv[i].w, xv[j].w, a);
                }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int i = 0; i < B158_GRI; i++) {
        const int n = n0 + tx + B158_GT * i;
#pragma unroll
        for (int j = 0; j < B158_GRJ; j++) {
            const int m = m0 + ty + B158_GT * j;
            if (n < n_rows && m < m_rows)
                b158_store(y, (size_t)m * n_rows + n, (float)acc[i][j] * w_scale[n] / x_scale[m],
                           accumulate);
        }
    }
}
