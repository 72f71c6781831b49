/* Greedy argmax of rows of logits on the device: out[m] = the lowest index of the largest value
 * of row m of x (n wide; NaN never counts, a row of NaN gives 0), so a greedy token costs the
 * host 4 bytes read back instead of the whole row. groups work-groups per row each take a
 * contiguous share of ceil(n / groups) values (work-item l the values l, l + B158_WG, ...),
 * write their best (value, index) to part[m * groups + group], and the last of a row's groups to
 * finish (count[m], kept at zero) reduces those. With B158_WG == 1 (CPU) a group is one
 * work-item and there are no reductions. */

/* (v, i) comes before (bv, bi): larger, or as large at a lower index (NaN: never) */
inline int b158_before(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

/* The group's best of every work-item's (*bv, *bi), into all of them */
inline void b158_best_of_group(float *bv, int *bi, __local float *rv, __local int *ri)
{
#if B158_WG > 1
    const int lid = get_local_id(0);
    rv[lid] = *bv;
    ri[lid] = *bi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = B158_WG / 2; s > 0; s >>= 1) {
        if (lid < s && b158_before(rv[lid + s], ri[lid + s], rv[lid], ri[lid]))
            rv[lid] = rv[lid + s], ri[lid] = ri[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *bv = rv[0];
    *bi = ri[0];
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
}

__kernel void argmax_rows(__global const float *x, int n, int m_rows, __global int2 *part,
                          __global volatile int *count, __global int *out)
{
    __local float rv[B158_WG];
    __local int ri[B158_WG];
    __local int last;
    const int lid = get_local_id(0), g = get_group_id(0), groups = get_num_groups(0);
    const int m = get_group_id(1);
    const int chunk = (n + groups - 1) / groups, i0 = min(n, g * chunk), i1 = min(n, i0 + chunk);
    __global const float *xr = x + (size_t)m * n;
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int i = i0 + lid; i < i1; i += B158_WG) {
        const float v = xr[i];
        if (b158_before(v, i, bv, bi))
            bv = v, bi = i;
    }
    b158_best_of_group(&bv, &bi, rv, ri);
    __global int2 *pr = part + (size_t)m * groups;
    if (lid == 0)
        pr[g] = (int2)(as_int(bv), bi);
    if (b158_last_arrival(count + m, groups, &last)) {
        bv = -INFINITY, bi = INT_MAX;
        for (int j = lid; j < groups; j += B158_WG) {
            const int2 p = pr[j];
            if (b158_before(as_float(p.x), p.y, bv, bi))
                bv = as_float(p.x), bi = p.y;
        }
        b158_best_of_group(&bv, &bi, rv, ri);
        if (lid == 0)
            out[m] = bi == INT_MAX ? 0 : bi;
    }
}
