/* The fused decode layer (GPU variant; built after ternary.cl and attention.cl): one launch per
 * transformer block of a one-token step, instead of the five of the unfused path (each launch
 * costs the host ~10 us and the device ~5 us before its few MB count). The block's five stages
 * run in one launch of persistent work-groups, separated by grid barriers (on an H200: less than
 * half the host time of the unfused launches, a slower step: 2.1 against 1.9 ms for 2B-4T, so
 * only B158_FUSED_DECODE=1 asks for it):
 *   A  attention's norm of x, quantized; QKV rows                          -> qkv
 *   B  attention, a head (or split) per group at a time, RoPE and KV store -> att
 *   C  att (sub-normed) quantized; output projection rows, + x             -> x2
 *   D  the feed-forward's norm of x2, quantized; gate|up rows              -> gu
 *   E  act(gate) * up (sub-normed) quantized; down projection rows, + x2   -> x
 * Every group quantizes a stage's whole input itself (a few KB from L2, into its own slice of
 * q8 / qs) instead of waiting for one group to do it, then takes every groups-th block of
 * B158_GEMV_ROWS rows. The arithmetic is the unfused kernels' (the same functions, the same
 * work-group size), so the result is theirs bit for bit.
 * Grid barriers need every group resident at once: the host launches at most as many groups as
 * the device runs together (one per compute unit by default) and on CPU devices one. A barrier
 * that waits past B158_SPIN_LIMIT polls sets bar[0] (the host then redoes the step with the
 * unfused launches and keeps them); no group ever waits forever. No data a stage reads is read
 * earlier in the same launch by another stage before it changes (x is only read before E
 * writes it; the residual goes through x2), so no stale cache line is ever seen. */
#if B158_WG > 1

#define B158_SPIN_LIMIT (1 << 22)

/* The count a grid barrier polls, read with acquire semantics at device scope where the device
 * fence is PTX's fence.acq_rel (B158_DEVICE_FENCE 4: ld.acquire.gpu, which orders what follows
 * after it and invalidates L1, so no fence follows the wait), else a volatile read followed by
 * b158_fence_device once the count is complete */
#if B158_DEVICE_FENCE == 4
inline int b158_grid_count(__global volatile int *cnt)
{
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(cnt) : "memory");
    return v;
}
#define b158_fence_after_poll() ((void)0)
#else
#define b158_grid_count(cnt) (*(cnt))
#define b158_fence_after_poll() b158_fence_device()
#endif

/* All groups wait here until every one of the groups has arrived (cnt: this barrier's counter,
 * zero before the launch; err: set by a barrier that timed out, which then no longer waits):
 * CUDA's grid barrier written in OpenCL, a device-scope fence (b158_fence_device) before the
 * count, an acquire after the wait. */
/* One work-item polls *cnt until it reaches target or err is set (a poll past B158_SPIN_LIMIT
 * sets it: no group waits forever), then acquires what the others stored before their count */
inline void b158_poll_until(__global volatile int *cnt, int target, __global volatile int *err)
{
    for (int spins = 0; b158_grid_count(cnt) < target && !*err;) {
        if (++spins == B158_SPIN_LIMIT)
            atomic_xchg(err, 1);
#if B158_POLL_SLEEP /* (PTX nanosleep: fewer polls of one line in L2 from many waiting groups) */
        asm volatile("nanosleep.u32 %0;" ::"r"(B158_POLL_SLEEP));
#endif
    }
    b158_fence_after_poll();
}

inline void b158_grid_sync(__global volatile int *cnt, __global volatile int *err, int groups)
{
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        b158_fence_device();
        atomic_inc(cnt);
        b158_poll_until(cnt, groups, err);
    }
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
}

/* Stage clock (profiling runs on devices with a kernel clock; B158_STAGE_CLOCK 1: the device
 * scope clock of cl_khr_kernel_clock, 2: NVIDIA's %globaltimer in ns through inline PTX, 0:
 * none): work-item 0 of each group writes B158_STAMPS timestamps per block, at the start and
 * after each part of each stage (the host's profile takes their differences). */
#define B158_STAMPS 15 /* host/stage-profile.h's: B158_STAGE_PARTS + 1 */
#if B158_STAGE_CLOCK == 1
inline ulong b158_clock(void)
{
    return clock_read_device();
}
#elif B158_STAGE_CLOCK == 2
inline ulong b158_clock(void)
{
    ulong t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif
#if B158_STAGE_CLOCK
#define B158_STAMP(i)                                                                              \
    do {                                                                                           \
        if (get_local_id(0) == 0)                                                                  \
            stamp[i] = b158_clock();                                                               \
    } while (0)
#else
#define B158_STAMP(i) ((void)0)
#endif

/* Lane lane's partial dot products of weight rows wa and wb with x: b158_gemv_gpu_part's sums,
 * the two rows' loads issued together (twice one row's loads in flight); pa / pb hold the first
 * step's quarters (b158_gemv_gpu_part_from) */
inline int2 b158_gemv_gpu_part2_from(uint4 *pa, uint4 *pb, __global const uint4 *wa,
                                     __global const uint4 *wb, int quarters, int lane,
                                     __global const uint4 *x)
{
    int2 acc = 0;
    for (int c = lane; c < quarters; c += 8 * B158_GEMV_AHEAD) {
        if (c != lane) {
            b158_gemv_gpu_load(wa, quarters, c, 8, pa);
            b158_gemv_gpu_load(wb, quarters, c, 8, pb);
        }
        acc.x = b158_gemv_gpu_step(pa, c, 8, quarters, x, acc.x);
        acc.y = b158_gemv_gpu_step(pb, c, 8, quarters, x, acc.y);
    }
    return acc;
}

/* The first step's quarters of this work-item's rows in the group's blocks from n0 of a decode
 * GEMV (b158_decode_gemv), into pa / pb: two blocks while the group has two (rows past the end
 * of the second read its last row), else one, its second step too where the row has one (into
 * pb: a 6912-wide row's whole share), else none. The fused layer calls it before it waits for
 * the GEMV's input (a grid barrier, a norm), so the loads are on their way meanwhile;
 * b158_decode_gemv calls it for a group's next blocks before it reduces the ones it has. */
inline void b158_decode_gemv_first(__global const uint4 *w, int n_rows, int k_pad, int n0,
                                   uint4 *pa, uint4 *pb)
{
    const int quarters = k_pad / 64, lane = get_local_id(0) & 7;
    const int step = (int)get_num_groups(0) * B158_GEMV_ROWS, na = n0 + (get_local_id(0) >> 3);
    __global const uint4 *wa = w + (size_t)na * quarters;
    if (na < n_rows) /* (then n0 < n_rows too) */
        b158_gemv_gpu_load(wa, quarters, lane, 8, pa);
    if (n0 + step < n_rows)
        b158_gemv_gpu_load(w + (size_t)min(na + step, n_rows - 1) * quarters, quarters, lane, 8,
                           pb);
    else if (na < n_rows && lane + 8 * B158_GEMV_AHEAD < quarters)
        b158_gemv_gpu_load(wa, quarters, lane + 8 * B158_GEMV_AHEAD, 8, pb);
}

/* y[n] = (add ? y_in[n] : 0) + W[n] . x * w_scale[n] / x_scale over this group's blocks of rows
 * (ternary_gemv_gpu's arithmetic, so its results bit for bit): two blocks at a time while the
 * group has two (gate|up has 3-4 per group at one group per compute unit), with their loads in
 * flight together, then one. pa / pb hold the first blocks' first step, or a single block's
 * first two (b158_decode_gemv_first with the group's first block); each next one's are loaded
 * before the last one's sums are reduced. */
inline void b158_decode_gemv(__global const uint4 *w, __global const float *w_scale,
                             __global const uint4 *x, float x_scale, __global float *y,
                             __global const float *y_in, int add, int n_rows, int k_pad, uint4 *pa,
                             uint4 *pb, __local int *red)
{
    const int step = (int)get_num_groups(0) * B158_GEMV_ROWS, lid = get_local_id(0);
    const int quarters = k_pad / 64, lane = lid & 7;
    int n0 = (int)get_group_id(0) * B158_GEMV_ROWS;
    while (n0 + step < n_rows) {
        /* the first block is whole; rows past the end of the second read its last row */
        const int na = n0 + (lid >> 3), nb = na + step;
        const float2 ca = b158_gemv_gpu_row_consts(na, 8, w_scale, y_in, add, n_rows);
        const float2 cb = b158_gemv_gpu_row_consts(nb, 8, w_scale, y_in, add, n_rows);
        const int2 p =
            b158_gemv_gpu_part2_from(pa, pb, w + (size_t)na * quarters,
                                     w + (size_t)min(nb, n_rows - 1) * quarters, quarters, lane, x);
        n0 += 2 * step;
        b158_decode_gemv_first(w, n_rows, k_pad, n0, pa, pb);
        b158_gemv_gpu_finish(p.x, na, 8, ca, x_scale, y, add, n_rows, red);
        barrier(CLK_LOCAL_MEM_FENCE);
        b158_gemv_gpu_finish(p.y, nb, 8, cb, x_scale, y, add, n_rows, red);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (n0 < n_rows) { /* one block left (no more: n0 + step is past the end) */
        const int n = n0 + (lid >> 3);
        const float2 c = b158_gemv_gpu_row_consts(n, 8, w_scale, y_in, add, n_rows);
        const int part = n < n_rows ? b158_gemv_gpu_part_from(pa, pb, 1, w + (size_t)n * quarters,
                                                              quarters, lane, 8, x)
                                    : 0;
        b158_gemv_gpu_finish(part, n, 8, c, x_scale, y, add, n_rows, red);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Asks for this group's rows of a decode GEMV's matrix (b158_decode_gemv's blocks of
 * B158_GEMV_ROWS rows of k_pad / 4 bytes) to be brought into the device's L2 cache, by the
 * whole group (B158_PREFETCH 3: one PTX bulk prefetch per block, spread over the work-items; 2:
 * one PTX prefetch per 128-byte line; 1: OpenCL's prefetch()). Issued at a block's start, the
 * block's weights stream in while its first stages run, and each GEMV then finds its rows in
 * L2 rather than waiting on device memory. A block's rows start 128-byte aligned (B158_GEMV_ROWS
 * rows of a multiple of 64 bytes, B158_GEMV_ROWS even). */
#if B158_PREFETCH
inline void b158_prefetch_rows(__global const uint4 *w, int n_rows, int k_pad)
{
    const size_t row = (size_t)k_pad / 4;
    const int lid = get_local_id(0), step = (int)get_num_groups(0) * B158_GEMV_ROWS;
    int i = 0;
    for (int n0 = (int)get_group_id(0) * B158_GEMV_ROWS; n0 < n_rows; n0 += step, i++) {
        __global const uchar *p = (__global const uchar *)w + (size_t)n0 * row;
        const uint bytes = (uint)((size_t)min(B158_GEMV_ROWS, n_rows - n0) * row);
#if B158_PREFETCH == 3
        if (lid == i % B158_WG)
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((ulong)p), "r"(bytes)
                         : "memory");
#else
        for (uint o = (uint)lid * 128u; o < bytes; o += B158_WG * 128u)
#if B158_PREFETCH == 2
            asm volatile("prefetch.global.L2 [%0];" ::"l"((ulong)(p + o)));
#else
            prefetch(p + o, 128);
#endif
#endif
    }
}
#endif

/* One block of a one-token step on its residual stream x (n_embd). q8 / qs: per group, k_pad_max
 * bytes and one scale. Matrices as ternary_gemv_gpu reads them, k_pad of their inputs kp_embd,
 * kp_att, kp_ff. bar: [0] the error flag, [1 + 4 layer ..] this block's barrier counters (zero
 * before the launch). */
__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void ternary_decode_layer(
    __global float *x, __global float *x2, __global float *qkv, __global float *att,
    __global float *gu, __global char *q8, __global float *qs, int k_pad_max,
    __global const uint4 *wqkv, __global const float *sqkv, __global const uint4 *wo,
    __global const float *so, __global const uint4 *wgu, __global const float *sgu,
    __global const uint4 *wdown, __global const float *sdown, __global const float *attn_norm,
    __global const float *attn_sub_norm, __global const float *ffn_norm,
    __global const float *ffn_sub_norm, int sub_norms, int kp_embd, int kp_att, int kp_ff,
    __global half *k_cache, __global half *v_cache, __global const int2 *tok, int cache_off,
    int cache_rows, __global const float *inv_freq, int n_rot, int rope_mode, int n_embd, int n_ff,
    int n_head, int n_head_kv, int head_dim, float att_scale, float eps, int act, B158_SPLIT_PARAMS,
    __global volatile int *bar, int layer, __global ulong *stamps)
{
    __local float qh[B158_HEAD_DIM_MAX];
    __local float kcur[B158_HEAD_DIM_MAX], vcur[B158_HEAD_DIM_MAX];
    __local float ps[B158_WG];
    __local float red[B158_WG];
    __local int redi[B158_WG];
    __local float8 part[B158_WG];
    __local int last;
    const int grp = get_group_id(0), groups = get_num_groups(0);
    const int qd = n_head * head_dim, kvd = n_head_kv * head_dim, qkv_n = qd + 2 * kvd;
    __global char *qg = q8 + (size_t)grp * k_pad_max;
    __global float *sg = qs + grp;
    __global const uint4 *xg = (__global const uint4 *)qg;
    __global volatile int *cnt = bar + 1 + 4 * layer;
#if B158_STAGE_CLOCK
    __global ulong *stamp = stamps + ((size_t)layer * groups + grp) * B158_STAMPS;
#endif
    B158_STAMP(0);
#if B158_PREFETCH
    b158_prefetch_rows(wqkv, qkv_n, kp_embd);
    b158_prefetch_rows(wo, n_embd, kp_att);
    b158_prefetch_rows(wgu, 2 * n_ff, kp_embd);
    b158_prefetch_rows(wdown, n_embd, kp_ff);
#endif
    B158_STAMP(1);
    /* each GEMV's first weights are loaded before its input is waited for and normed
     * (B158_GEMV_EARLY; 0: right before the GEMV, an A/B switch) */
    uint4 pa[B158_GEMV_AHEAD], pb[B158_GEMV_AHEAD];
    const int n_first = grp * B158_GEMV_ROWS; /* the group's first block of rows */
#if B158_GEMV_EARLY
#define B158_FIRST_EARLY(w, n, kp) b158_decode_gemv_first(w, n, kp, n_first, pa, pb)
#define B158_FIRST_LATE(w, n, kp) ((void)0)
#else
#define B158_FIRST_EARLY(w, n, kp) ((void)0)
#define B158_FIRST_LATE(w, n, kp) b158_decode_gemv_first(w, n, kp, n_first, pa, pb)
#endif

    /* A: QKV */
    B158_FIRST_EARLY(wqkv, qkv_n, kp_embd);
    b158_rmsnorm_quantize_row(x, attn_norm, 1, qg, sg, n_embd, kp_embd, eps, red);
    barrier(CLK_GLOBAL_MEM_FENCE);
    B158_STAMP(2);
    B158_FIRST_LATE(wqkv, qkv_n, kp_embd);
    b158_decode_gemv(wqkv, sqkv, xg, *sg, qkv, qkv, 0, qkv_n, kp_embd, pa, pb, redi);
    B158_STAMP(3);
    b158_grid_sync(cnt + 0, bar, groups);
    B158_STAMP(4);
    /* B: attention, a head or one split of its keys per group at a time (the last split of a
     * head to finish makes its output) */
    for (int i = grp; i < n_head * splits; i += groups) {
        const int h = i / splits;
        b158_att_head(qkv, k_cache, v_cache, att, n_head, n_head_kv, head_dim, qkv_n, tok,
                      cache_off, cache_rows, att_scale, 1, inv_freq, n_rot, rope_mode, qd, qd + kvd,
                      h, 0, i % splits, splits, split_out, qh, kcur, vcur, ps, red, part);
        if (splits > 1 && b158_last_arrival(head_count + h, splits, &last))
            b158_att_combine(split_out, att, n_head, head_dim, splits, h, 0);
    }
    B158_STAMP(5);
    B158_FIRST_EARLY(wo, n_embd, kp_att);
    b158_grid_sync(cnt + 1, bar, groups);
    B158_STAMP(6);
    /* C: output projection into x2 */
    b158_rmsnorm_quantize_row(att, attn_sub_norm, sub_norms, qg, sg, qd, kp_att, eps, red);
    barrier(CLK_GLOBAL_MEM_FENCE);
    B158_STAMP(7);
    B158_FIRST_LATE(wo, n_embd, kp_att);
    b158_decode_gemv(wo, so, xg, *sg, x2, x, 1, n_embd, kp_att, pa, pb, redi);
    B158_STAMP(8);
    B158_FIRST_EARLY(wgu, 2 * n_ff, kp_embd);
    b158_grid_sync(cnt + 2, bar, groups);
    B158_STAMP(9);
    /* D: gate | up */
    b158_rmsnorm_quantize_row(x2, ffn_norm, 1, qg, sg, n_embd, kp_embd, eps, red);
    barrier(CLK_GLOBAL_MEM_FENCE);
    B158_STAMP(10);
    B158_FIRST_LATE(wgu, 2 * n_ff, kp_embd);
    b158_decode_gemv(wgu, sgu, xg, *sg, gu, gu, 0, 2 * n_ff, kp_embd, pa, pb, redi);
    B158_STAMP(11);
    B158_FIRST_EARLY(wdown, n_embd, kp_ff);
    b158_grid_sync(cnt + 3, bar, groups);
    B158_STAMP(12);
    /* E: down projection into x */
    b158_glu_norm_quantize_row(gu, gu + n_ff, 0, ffn_sub_norm, qg, sg, n_ff, kp_ff, eps, act,
                               sub_norms, red);
    barrier(CLK_GLOBAL_MEM_FENCE);
    B158_STAMP(13);
    B158_FIRST_LATE(wdown, n_embd, kp_ff);
    b158_decode_gemv(wdown, sdown, xg, *sg, x, x2, 1, n_embd, kp_ff, pa, pb, redi);
    B158_STAMP(14);
#undef B158_FIRST_EARLY
#undef B158_FIRST_LATE
}

/* Waits until the flag that an earlier stage sets when done is set, or err is, by the whole
 * group (b158_poll_until, as the grid barrier's wait) */
inline void b158_wait_flag(__global volatile int *flag, __global volatile int *err)
{
    if (get_local_id(0) == 0)
        b158_poll_until(flag, 1, err);
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
}

/* A chain of up to four decode GEMVs in one launch (B158_GEMV_CHAIN=1; GPU variant), instead of
 * a launch each: the output projection, gate|up, the down projection and the next block's q|k|v
 * of a one-token step. Stage i is ternary_gemv_gpu of matrix w_i (rows_i x kp_i / 4 bytes, scales
 * ws_i) on the int8 input q / qs into y_i (added to it with add_i), with its tail tail_i (norm
 * weights nw_i, k_pad kpo_i) writing the next stage's input over q / qs: the same functions as
 * the separate launches, so their results bit for bit. A job is one block of B158_WG >> sh_i rows
 * of a stage (1 << sh_i work-items a row, as the stage's separate launch would take), numbered
 * stage after stage. A job loads its first weights, then waits for the flag
 * that the last job of the stage before sets after its tail (sync[1 + 4 layer + i], zero before
 * the step; sync[0] the error flag of b158_wait_flag). Every stage but the last has a tail (it
 * counts the stage's jobs in counter, zero between launches). ternary_gemv_chain runs a job a
 * group (GPUs: a later group waits for earlier ones only, and groups start in order);
 * ternary_gemv_chain_seq's groups take jobs group, group + groups, ... in order (one group on
 * CPU devices never waits; its loop costs the GPU kernel 114 registers on sm_90 against 62). */
#define B158_CHAIN_STAGE(i)                                                                        \
    __global const uint4 *w##i, __global const float *ws##i, __global float *y##i, int rows##i,    \
        int kp##i, int sh##i, int add##i, int tail##i, __global const float *nw##i, int kpo##i
#define B158_CHAIN_PARAMS                                                                          \
    B158_CHAIN_STAGE(0), B158_CHAIN_STAGE(1), B158_CHAIN_STAGE(2), B158_CHAIN_STAGE(3),            \
        int stages, __global char *q, __global float *qs, float eps, int act,                      \
        __global volatile int *counter, __global volatile int *sync, int layer,                    \
        __global ulong *stamps, int stamp_jobs
#define B158_CHAIN_STAGE_ARGS(i)                                                                   \
    w##i, ws##i, y##i, rows##i, kp##i, sh##i, add##i, tail##i, nw##i, kpo##i
#define B158_CHAIN_ARGS                                                                            \
    B158_CHAIN_STAGE_ARGS(0), B158_CHAIN_STAGE_ARGS(1), B158_CHAIN_STAGE_ARGS(2),                  \
        B158_CHAIN_STAGE_ARGS(3), stages, q, qs, eps, act, counter, sync, layer, stamps,           \
        stamp_jobs
#define B158_CHAIN_JOBS(i)                                                                         \
    (stages > i ? (rows##i + (B158_WG >> sh##i) - 1) / (B158_WG >> sh##i) : 0)
#define B158_CHAIN_PICK(v) (st == 0 ? v##0 : st == 1 ? v##1 : st == 2 ? v##2 : v##3)
/* With a stage clock and stamp_jobs > 0 (a profiling run), job j of layer l writes its start,
 * the end of its wait, of its rows and of its tail (with the flag) to stamps[(l stamp_jobs + j)
 * B158_CHAIN_STAMPS ..] (host/stage-profile.h) */
#define B158_CHAIN_STAMPS 4
#if B158_STAGE_CLOCK
#define B158_CHAIN_STAMP(i)                                                                        \
    do {                                                                                           \
        if (stamp && get_local_id(0) == 0)                                                         \
            stamp[i] = b158_clock();                                                               \
    } while (0)
#else
#define B158_CHAIN_STAMP(i) ((void)0)
#endif
/* A chain job's rows: block b of B158_WG >> sh rows of w (1 << sh work-items a row; the callers
 * give a constant sh, so that the loads' offsets fold into the instructions), its first weights
 * loaded before it waits for *flag (with wait), then y (+)= W . q as ternary_gemv_gpu */
inline void b158_chain_gemv(__global const uint4 *w, __global const float *ws, __global float *y,
                            int rows, int quarters, int add, int b, int sh, int wait,
                            __global volatile int *flag, __global volatile int *err,
                            __global const uint4 *q, __global const float *qs, __local int *red,
                            __global ulong *stamp)
{
    const int lid = get_local_id(0), lanes = 1 << sh, lane = lid & (lanes - 1);
    const int n = b * (B158_WG >> sh) + (lid >> sh);
    uint4 p[B158_GEMV_AHEAD];
    if (n < rows) /* the job's first weights are on their way while it waits */
        b158_gemv_gpu_load(w + (size_t)n * quarters, quarters, lane, lanes, p);
    if (wait)
        b158_wait_flag(flag, err);
    B158_CHAIN_STAMP(1);
    /* y's rows may be the residual an earlier stage added to: read after the wait */
    const float2 c = b158_gemv_gpu_row_consts(n, lanes, ws, y, add, rows);
    const int part = n < rows ? b158_gemv_gpu_part_from(p, p, 0, w + (size_t)n * quarters, quarters,
                                                        lane, lanes, q)
                              : 0;
    b158_gemv_gpu_finish(part, n, lanes, c, qs[0], y, add, rows, red);
    B158_CHAIN_STAMP(2);
}

inline void b158_chain_job(int job, B158_CHAIN_PARAMS, __local int *red, __local float *redf,
                           __local int *last)
{
    const int lid = get_local_id(0);
    const int j0 = B158_CHAIN_JOBS(0), j1 = B158_CHAIN_JOBS(1), j2 = B158_CHAIN_JOBS(2);
    const int j3 = B158_CHAIN_JOBS(3);
    __global volatile int *flags = sync + 1 + 4 * layer;
    int st = 0, b = job;
    if (b >= j0) {
        b -= j0, st = 1;
        if (b >= j1) {
            b -= j1, st = 2;
            if (b >= j2)
                b -= j2, st = 3;
        }
    }
    __global const uint4 *w = B158_CHAIN_PICK(w);
    __global const float *ws = B158_CHAIN_PICK(ws);
    __global float *y = B158_CHAIN_PICK(y);
    const int rows = B158_CHAIN_PICK(rows), quarters = B158_CHAIN_PICK(kp) / 64;
    const int add = B158_CHAIN_PICK(add), tail = B158_CHAIN_PICK(tail), sh = B158_CHAIN_PICK(sh);
    __global volatile int *flag = flags + (st > 0 ? st - 1 : 0);
    __global const uint4 *xq = (__global const uint4 *)q;
    __global ulong *stamp =
        stamp_jobs > 0 ? stamps + ((size_t)layer * stamp_jobs + job) * B158_CHAIN_STAMPS : 0;
    B158_CHAIN_STAMP(0);
    if (sh == 5)
        b158_chain_gemv(w, ws, y, rows, quarters, add, b, 5, st > 0, flag, sync, xq, qs, red,
                        stamp);
    else if (sh == 4)
        b158_chain_gemv(w, ws, y, rows, quarters, add, b, 4, st > 0, flag, sync, xq, qs, red,
                        stamp);
    else
        b158_chain_gemv(w, ws, y, rows, quarters, add, b, 3, st > 0, flag, sync, xq, qs, red,
                        stamp);
    b158_tail_of(y, rows, B158_CHAIN_PICK(j), tail, counter, B158_CHAIN_PICK(nw), q, qs,
                 B158_CHAIN_PICK(kpo), eps, act, last, redf);
    if (tail && st + 1 < stages && *last) { /* the stage's last job: its tail is stored */
        b158_fence_device();
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (lid == 0)
            atomic_xchg(flags + st, 1);
    }
    B158_CHAIN_STAMP(3);
}

__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void
ternary_gemv_chain(B158_CHAIN_PARAMS)
{
    __local int red[B158_WG];
    __local float redf[B158_WG];
    __local int last;
    b158_chain_job(get_group_id(0), B158_CHAIN_ARGS, red, redf, &last);
}

__kernel __attribute__((reqd_work_group_size(B158_WG, 1, 1))) void
ternary_gemv_chain_seq(B158_CHAIN_PARAMS)
{
    __local int red[B158_WG];
    __local float redf[B158_WG];
    __local int last;
    const int jobs =
        B158_CHAIN_JOBS(0) + B158_CHAIN_JOBS(1) + B158_CHAIN_JOBS(2) + B158_CHAIN_JOBS(3);
    for (int job = get_group_id(0); job < jobs; job += get_num_groups(0)) {
        b158_chain_job(job, B158_CHAIN_ARGS, red, redf, &last);
        barrier(CLK_LOCAL_MEM_FENCE); /* red, redf and last are the next job's */
    }
}
#undef B158_CHAIN_PICK

#endif
