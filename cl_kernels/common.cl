/* Helpers shared by every kernel file; the generated prelude (B158_* defines) comes before. */

#ifndef B158_WG
#error "the b158 prelude must define B158_WG"
#endif

/* Work-group reductions over B158_WG work-items (a power of two). With B158_WG == 1 (the CPU
 * variant) they compile to nothing, so CPU kernels have no barriers. red holds B158_WG values;
 * every work-item of the group must call these (uniform control flow). */
#if B158_WG == 1
#define B158_WG_REDUCE(name, type, combine)                                                        \
    inline type name(type v, __local type *red)                                                    \
    {                                                                                              \
        return v;                                                                                  \
    }
#else
#define B158_WG_REDUCE(name, type, combine)                                                        \
    inline type name(type v, __local type *red)                                                    \
    {                                                                                              \
        const int lid = get_local_id(0);                                                           \
        red[lid] = v;                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        for (int s = B158_WG / 2; s > 0; s >>= 1) {                                                \
            if (lid < s)                                                                           \
                red[lid] = combine(red[lid], red[lid + s]);                                        \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        }                                                                                          \
        const type r = red[0];                                                                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        return r;                                                                                  \
    }
#endif
#define B158_ADD(a, b) ((a) + (b))
B158_WG_REDUCE(b158_wg_sum, float, B158_ADD)
B158_WG_REDUCE(b158_wg_max, float, fmax)
B158_WG_REDUCE(b158_wg_sum_int, int, B158_ADD)

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
