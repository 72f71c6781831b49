/* Launch wrappers: check shapes and buffer sizes, then enqueue the kernel of the runtime's
 * variant with its work-group geometry. Nothing here allocates or builds after first use. */
#include "ops.h"

#include "stage-profile.h"

#define ELEMWISE_WG 64 /* work-group of the one-item-per-element kernels */
#define CPU_ROWS_WG 16 /* rows per work-group of the CPU one-row-per-item kernels */
/* The tile of a CPU f16_gemm work-item: B158_F16_GEMM_R and _T of cl_kernels/f16-matmul.cl */
#define F16_GEMM_ROWS 6
#define F16_GEMM_TOKENS 4

static size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* The device must never index past a buffer: every wrapper checks what its kernel touches. */
static b158_status need(const b158_buf *b, size_t bytes, const char *op, const char *what)
{
    if (!b || !b->mem)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: buffer %s is missing", op, what);
    if (b->bytes < bytes)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: buffer %s holds %zu bytes, needs %zu", op, what,
                         b->bytes, bytes);
    return B158_OK;
}

static b158_status positive(int v, const char *op, const char *what)
{
    if (v <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: %s = %d must be positive", op, what, v);
    return B158_OK;
}

b158_status b158_op_quantize(b158_runtime *rt, const b158_buf *x, const b158_buf *q,
                             const b158_buf *s, int k, int k_pad, int m_rows)
{
    B158_TRY(positive(k, "quantize", "k"));
    B158_TRY(positive(m_rows, "quantize", "rows"));
    if (k_pad < k || k_pad % 64)
        return B158_FAIL(B158_ERR_INVALID_ARG, "quantize: k_pad %d for k %d", k_pad, k);
    B158_TRY(need(x, (size_t)m_rows * k * 4, "quantize", "x"));
    B158_TRY(need(q, (size_t)m_rows * k_pad, "quantize", "q"));
    B158_TRY(need(s, (size_t)m_rows * 4, "quantize", "s"));
    const size_t wg = (size_t)rt->tune.wg;
    return B158_LAUNCH(rt, B158_K_QUANTIZE_ROWS, 2, ((size_t[]){wg, (size_t)m_rows}),
                       ((size_t[]){wg, 1}), B158_ARG_MEM(x), B158_ARG_MEM(q), B158_ARG_MEM(s),
                       B158_ARG(k), B158_ARG(k_pad), B158_ARG(m_rows));
}

/* int8 rows back to the values they stand for, as FP32 (elem 4) or FP16 (elem 2) */
static b158_status dequantize(b158_runtime *rt, enum b158_kernel_id id, size_t elem,
                              const b158_buf *q, const b158_buf *s, const b158_buf *x, int k,
                              int k_pad, int m_rows)
{
    const char *op = elem == 2 ? "dequantize half" : "dequantize";
    B158_TRY(positive(k, op, "k"));
    B158_TRY(positive(m_rows, op, "rows"));
    if (k_pad < k)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: k_pad %d < k %d", op, k_pad, k);
    B158_TRY(need(q, (size_t)m_rows * k_pad, op, "q"));
    B158_TRY(need(s, (size_t)m_rows * 4, op, "s"));
    B158_TRY(need(x, (size_t)m_rows * k * elem, op, "x"));
    return B158_LAUNCH(rt, id, 2, ((size_t[]){round_up((size_t)k, ELEMWISE_WG), (size_t)m_rows}),
                       ((size_t[]){ELEMWISE_WG, 1}), B158_ARG_MEM(q), B158_ARG_MEM(s),
                       B158_ARG_MEM(x), B158_ARG(k), B158_ARG(k_pad), B158_ARG(m_rows));
}

b158_status b158_op_dequantize(b158_runtime *rt, const b158_buf *q, const b158_buf *s,
                               const b158_buf *x, int k, int k_pad, int m_rows)
{
    return dequantize(rt, B158_K_DEQUANTIZE_ROWS, 4, q, s, x, k, k_pad, m_rows);
}

b158_status b158_op_dequantize_half(b158_runtime *rt, const b158_buf *q, const b158_buf *s,
                                    const b158_buf *xh, int k, int k_pad, int m_rows)
{
    return dequantize(rt, B158_K_DEQUANTIZE_ROWS_HALF, 2, q, s, xh, k, k_pad, m_rows);
}

b158_status b158_op_f16_to_f32(b158_runtime *rt, const b158_buf *h, const b158_buf *y, int count,
                               int accumulate)
{
    B158_TRY(positive(count, "f16 to f32", "count"));
    B158_TRY(need(h, (size_t)count * 2, "f16 to f32", "h"));
    B158_TRY(need(y, (size_t)count * 4, "f16 to f32", "y"));
    const int acc = accumulate != 0;
    return B158_LAUNCH(rt, B158_K_F16_TO_F32, 1, ((size_t[]){round_up((size_t)count, ELEMWISE_WG)}),
                       ((size_t[]){ELEMWISE_WG}), B158_ARG_MEM(h), B158_ARG_MEM(y), B158_ARG(count),
                       B158_ARG(acc));
}

static b158_status check_matmul(const b158_tmat *w, const b158_buf *q, const b158_buf *s,
                                const b158_buf *y, int m_rows)
{
    B158_TRY(positive(m_rows, "ternary matmul", "rows"));
    if (!w || w->n <= 0 || w->k_pad % 256)
        return B158_FAIL(B158_ERR_INVALID_ARG, "ternary matmul: matrix not uploaded");
    B158_TRY(need(&w->codes, (size_t)w->n * w->k_pad / 4, "ternary matmul", "codes"));
    B158_TRY(need(&w->scales, (size_t)w->n * 4, "ternary matmul", "scales"));
    B158_TRY(need(q, (size_t)m_rows * w->k_pad, "ternary matmul", "q"));
    B158_TRY(need(s, (size_t)m_rows * 4, "ternary matmul", "s"));
    B158_TRY(need(y, (size_t)m_rows * w->n * 4, "ternary matmul", "y"));
    return B158_OK;
}

/* Stands in for the buffer arguments a launch does not use */
static const b158_buf none = {0};

/* Rows per work-item of the CPU ternary kernels: several for the AVX-512 ones, one else. */
static size_t cpu_rows(const b158_runtime *rt)
{
    return rt->tune.x86_avx512bw ? (size_t)rt->tune.avx512_rows : 1; /* VNNI implies it */
}

enum b158_kernel_id b158_op_ternary_gemm_kernel(const b158_runtime *rt)
{
    return rt->tune.gpu            ? B158_K_TERNARY_GEMM_GPU
           : rt->tune.x86_vnni     ? B158_K_TERNARY_GEMM_VNNI
           : rt->tune.x86_avx512bw ? B158_K_TERNARY_GEMM_AVX512
                                   : B158_K_TERNARY_GEMM_CPU;
}

b158_status b158_op_ternary_gemm(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                 const b158_buf *s, const b158_buf *y, int m_rows, int accumulate)
{
    B158_TRY(check_matmul(w, q, s, y, m_rows));
    if (rt->tune.gpu) {
        const size_t gx = round_up((size_t)w->n, (size_t)rt->tune.gemm_tn) / rt->tune.gemm_tn * 16;
        const size_t gy =
            round_up((size_t)m_rows, (size_t)rt->tune.gemm_tm) / rt->tune.gemm_tm * 16;
        return B158_LAUNCH(rt, B158_K_TERNARY_GEMM_GPU, 2, ((size_t[]){gx, gy}),
                           ((size_t[]){16, 16}), B158_ARG_MEM(&w->codes), B158_ARG_MEM(&w->scales),
                           B158_ARG_MEM(q), B158_ARG_MEM(s), B158_ARG_MEM(y), B158_ARG(w->n),
                           B158_ARG(w->k_pad), B158_ARG(m_rows), B158_ARG(accumulate));
    }
    const size_t gy = (size_t)(m_rows + rt->tune.gemm_cpu_m - 1) / rt->tune.gemm_cpu_m;
    const size_t rows = cpu_rows(rt);
    const size_t gx = ((size_t)w->n + rows - 1) / rows;
    return B158_LAUNCH(rt, b158_op_ternary_gemm_kernel(rt), 2, ((size_t[]){gx, gy}),
                       ((size_t[]){CPU_ROWS_WG, 1}), B158_ARG_MEM(&w->codes),
                       B158_ARG_MEM(&w->scales), B158_ARG_MEM(q), B158_ARG_MEM(s), B158_ARG_MEM(y),
                       B158_ARG(w->n), B158_ARG(w->k_pad), B158_ARG(m_rows), B158_ARG(accumulate));
}

enum b158_kernel_id b158_op_ternary_gemv_kernel(const b158_runtime *rt)
{
    return rt->tune.gpu            ? B158_K_TERNARY_GEMV_GPU
           : rt->tune.x86_avx512bw ? B158_K_TERNARY_GEMV_AVX512
                                   : B158_K_TERNARY_GEMV_CPU;
}

/* log2 of the work-items the GPU GEMV (and a chain stage) gives each row of k_pad weights: 8,
 * doubled (to 32, and the work-group size, at most) while a work-item's share of the row would
 * take more than one round of B158_GEMV_AHEAD 16-byte loads: the loads of a round wait for the
 * one before, so a 6912-wide row (2B-4T's down projection: 108 quarters) takes one round trip to
 * memory at 32 a row instead of three at 8, in four times the work-groups. rt->tune.gemv_lanes
 * (B158_GEMV_LANES) fixes the count. */
int b158_op_gemv_shift(const b158_runtime *rt, int k_pad)
{
    const int quarters = k_pad / 64;
    int shift = 3;
    while (shift < 5 && (2 << shift) <= rt->tune.wg &&
           (rt->tune.gemv_lanes ? (1 << shift) < rt->tune.gemv_lanes
                                : quarters > (1 << shift) * rt->tune.gemv_ahead))
        shift++;
    return shift;
}

int b158_op_gemv_jobs(const b158_runtime *rt, const b158_tmat *w)
{
    const int rows = rt->tune.wg >> b158_op_gemv_shift(rt, w->k_pad);
    return (w->n + rows - 1) / rows;
}

/* A one-token GEMV's tail (B158_TAIL_PARAMS of cl_kernels/common.cl) from norm (NULL: none)
 * for n output rows, checked: the kind (0 none, 1 RMSNorm, 2 GLU + sub-norm, 3 GLU), the int8
 * row's stride, eps, activation and buffers (&none where unused). */
struct gemv_tail {
    int tail, k_pad_out, act;
    float eps;
    const b158_buf *nw, *qo, *so, *cnt;
};

static b158_status gemv_tail(const b158_gemv_norm *norm, int n, const char *op, struct gemv_tail *t)
{
    const int tail = !norm ? 0 : !norm->glu ? 1 : norm->norm_w ? 2 : 3;
    *t = (struct gemv_tail){.tail = tail, .nw = &none, .qo = &none, .so = &none, .cnt = &none};
    if (!tail)
        return B158_OK;
    const int width = tail >= 2 ? n / 2 : n; /* of the quantized row */
    if (norm->k_pad < width || norm->k_pad % 64 || (tail >= 2 && n % 2))
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: k_pad %d for %d rows%s", op, norm->k_pad, n,
                         tail >= 2 ? " of gate and up" : "");
    if (tail != 3)
        B158_TRY(need(norm->norm_w, (size_t)width * 4, op, "norm weights"));
    B158_TRY(need(norm->q, (size_t)norm->k_pad, op, "q out"));
    B158_TRY(need(norm->s, 4, op, "s out"));
    B158_TRY(need(norm->counter, 4, op, "counter"));
    t->k_pad_out = norm->k_pad, t->act = (int)norm->act, t->eps = norm->eps;
    t->nw = norm->norm_w ? norm->norm_w : &none;
    t->qo = norm->q, t->so = norm->s, t->cnt = norm->counter;
    return B158_OK;
}

/* The launch arguments of a struct gemv_tail t, in B158_TAIL_PARAMS' order */
#define TAIL_ARGS(t)                                                                               \
    B158_ARG((t).tail), B158_ARG_MEM((t).cnt), B158_ARG_MEM((t).nw), B158_ARG_MEM((t).qo),         \
        B158_ARG_MEM((t).so), B158_ARG((t).k_pad_out), B158_ARG((t).eps), B158_ARG((t).act)

b158_status b158_op_ternary_gemv(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                 const b158_buf *s, const b158_buf *y, int accumulate,
                                 const b158_gemv_norm *norm)
{
    B158_TRY(check_matmul(w, q, s, y, 1));
    struct gemv_tail t;
    B158_TRY(gemv_tail(norm, w->n, "ternary gemv", &t));
    /* the arguments every GEMV kernel takes after its matrix, input and output; the GPU one
     * has the work-items a row (log2) between */
#define GEMV_HEAD                                                                                  \
    B158_ARG_MEM(&w->codes), B158_ARG_MEM(&w->scales), B158_ARG_MEM(q), B158_ARG_MEM(s),           \
        B158_ARG_MEM(y), B158_ARG(w->n), B158_ARG(w->k_pad)
    b158_status st;
    if (rt->tune.gpu) {
        const int shift = b158_op_gemv_shift(rt, w->k_pad), rows = rt->tune.wg >> shift;
        const size_t local = (size_t)rt->tune.wg, global = (size_t)(w->n + rows - 1) / rows * local;
        st = B158_LAUNCH(rt, B158_K_TERNARY_GEMV_GPU, 1, ((size_t[]){global}), ((size_t[]){local}),
                         GEMV_HEAD, B158_ARG(shift), B158_ARG(accumulate), TAIL_ARGS(t));
    } else {
        /* the AVX-512 GEMV: rows / 2 from each half of the matrix per work-item */
        const size_t rows = cpu_rows(rt), per = rows > 1 ? rows / 2 : 1;
        const size_t global = rows > 1 ? ((size_t)w->n + 2 * per - 1) / (2 * per) : (size_t)w->n;
        st = B158_LAUNCH(rt, b158_op_ternary_gemv_kernel(rt), 1, ((size_t[]){global}),
                         ((size_t[]){CPU_ROWS_WG}), GEMV_HEAD, B158_ARG(accumulate), TAIL_ARGS(t));
    }
#undef GEMV_HEAD
    return st;
}

b158_status b158_op_gemv_chain(b158_runtime *rt, const b158_chain_stage *stage, int stages,
                               const b158_buf *q, const b158_buf *s, const b158_buf *sync,
                               int layer, int groups, const b158_buf *stamps, int stamp_jobs)
{
    const char *op = "gemv chain";
    if (!rt->tune.gpu)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "%s: GPU kernel variant only", op);
    if (stages < 1 || stages > 4 || layer < 0 || groups < 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: %d stages, layer %d, %d groups", op, stages,
                         layer, groups);
    B158_TRY(need(sync, ((size_t)layer + 1) * 16 + 4, op, "flags"));
    struct {
        const b158_buf *codes, *scales, *y, *nw;
        int rows, k_pad, shift, add, tail, k_pad_out;
    } a[4];
    const b158_gemv_norm *first = NULL;
    size_t jobs = 0;
    for (int i = 0; i < 4; i++) {
        const b158_chain_stage *c = &stage[i < stages ? i : 0];
        const b158_gemv_norm *norm = c->norm;
        B158_TRY(check_matmul(c->w, q, s, c->y, 1));
        struct gemv_tail t;
        B158_TRY(gemv_tail(norm, c->w->n, op, &t));
        if (i < stages && !t.tail && i + 1 < stages)
            return B158_FAIL(B158_ERR_INVALID_ARG, "%s: stage %d of %d has no tail", op, i, stages);
        if (t.tail) {
            if (norm->q != q || norm->s != s ||
                (first && (norm->counter != first->counter || norm->act != first->act ||
                           norm->eps != first->eps)))
                return B158_FAIL(B158_ERR_INVALID_ARG,
                                 "%s: the stages' tails share the chain's input, counter, act "
                                 "and eps",
                                 op);
            first = first ? first : norm;
        }
        a[i].codes = &c->w->codes, a[i].scales = &c->w->scales, a[i].y = c->y, a[i].nw = t.nw;
        a[i].rows = c->w->n, a[i].k_pad = c->w->k_pad, a[i].add = c->add, a[i].tail = t.tail;
        a[i].shift = b158_op_gemv_shift(rt, c->w->k_pad), a[i].k_pad_out = t.k_pad_out;
        if (i < stages)
            jobs += (size_t)b158_op_gemv_jobs(rt, c->w);
    }
    const b158_buf *cnt = first ? first->counter : &none;
    if (!stamps || !rt->tune.stage_clock)
        stamps = &none, stamp_jobs = 0;
    if (stamp_jobs) {
        if ((size_t)stamp_jobs < jobs)
            return B158_FAIL(B158_ERR_INVALID_ARG, "%s: %zu jobs, room for %d stamps", op, jobs,
                             stamp_jobs);
        B158_TRY(
            need(stamps, ((size_t)layer + 1) * stamp_jobs * B158_CHAIN_STAMPS * 8, op, "stamps"));
    }
    const float eps = first ? first->eps : 0.0f;
    const int act = first ? (int)first->act : 0;
    const size_t wg = (size_t)rt->tune.wg, g = groups ? (size_t)groups : jobs;
#define CHAIN_ARGS(i)                                                                              \
    B158_ARG_MEM(a[i].codes), B158_ARG_MEM(a[i].scales), B158_ARG_MEM(a[i].y),                     \
        B158_ARG(a[i].rows), B158_ARG(a[i].k_pad), B158_ARG(a[i].shift), B158_ARG(a[i].add),       \
        B158_ARG(a[i].tail), B158_ARG_MEM(a[i].nw), B158_ARG(a[i].k_pad_out)
    const enum b158_kernel_id id = groups ? B158_K_GEMV_CHAIN_SEQ : B158_K_GEMV_CHAIN;
    return B158_LAUNCH(rt, id, 1, ((size_t[]){g * wg}), ((size_t[]){wg}), CHAIN_ARGS(0),
                       CHAIN_ARGS(1), CHAIN_ARGS(2), CHAIN_ARGS(3), B158_ARG(stages),
                       B158_ARG_MEM(q), B158_ARG_MEM(s), B158_ARG(eps), B158_ARG(act),
                       B158_ARG_MEM(cnt), B158_ARG_MEM(sync), B158_ARG(layer), B158_ARG_MEM(stamps),
                       B158_ARG(stamp_jobs));
#undef CHAIN_ARGS
}

b158_status b158_op_ternary_matmul(b158_runtime *rt, const b158_tmat *w, const b158_buf *q,
                                   const b158_buf *s, const b158_buf *y, int m_rows, int accumulate)
{
    if (m_rows != 1)
        return b158_op_ternary_gemm(rt, w, q, s, y, m_rows, accumulate);
    return b158_op_ternary_gemv(rt, w, q, s, y, accumulate, NULL);
}

b158_status b158_op_rmsnorm(b158_runtime *rt, const b158_buf *x, const b158_buf *w,
                            const b158_buf *out, int n, int m_rows, float eps)
{
    B158_TRY(positive(n, "rmsnorm", "n"));
    B158_TRY(positive(m_rows, "rmsnorm", "rows"));
    B158_TRY(need(x, (size_t)m_rows * n * 4, "rmsnorm", "x"));
    B158_TRY(need(w, (size_t)n * 4, "rmsnorm", "weight"));
    B158_TRY(need(out, (size_t)m_rows * n * 4, "rmsnorm", "out"));
    const size_t wg = (size_t)rt->tune.wg;
    return B158_LAUNCH(rt, B158_K_RMSNORM, 2, ((size_t[]){wg, (size_t)m_rows}), ((size_t[]){wg, 1}),
                       B158_ARG_MEM(x), B158_ARG_MEM(w), B158_ARG_MEM(out), B158_ARG(n),
                       B158_ARG(m_rows), B158_ARG(eps));
}

b158_status b158_op_rmsnorm_quantize(b158_runtime *rt, const b158_buf *x, const b158_buf *w,
                                     const b158_buf *q, const b158_buf *s, int n, int k_pad,
                                     int m_rows, float eps)
{
    B158_TRY(positive(n, "rmsnorm_quantize", "n"));
    B158_TRY(positive(m_rows, "rmsnorm_quantize", "rows"));
    if (k_pad < n || k_pad % 64)
        return B158_FAIL(B158_ERR_INVALID_ARG, "rmsnorm_quantize: k_pad %d for n %d", k_pad, n);
    B158_TRY(need(x, (size_t)m_rows * n * 4, "rmsnorm_quantize", "x"));
    B158_TRY(need(w, (size_t)n * 4, "rmsnorm_quantize", "weight"));
    B158_TRY(need(q, (size_t)m_rows * k_pad, "rmsnorm_quantize", "q"));
    B158_TRY(need(s, (size_t)m_rows * 4, "rmsnorm_quantize", "s"));
    const size_t wg = (size_t)rt->tune.wg;
    return B158_LAUNCH(rt, B158_K_RMSNORM_QUANTIZE, 2, ((size_t[]){wg, (size_t)m_rows}),
                       ((size_t[]){wg, 1}), B158_ARG_MEM(x), B158_ARG_MEM(w), B158_ARG_MEM(q),
                       B158_ARG_MEM(s), B158_ARG(n), B158_ARG(k_pad), B158_ARG(m_rows),
                       B158_ARG(eps));
}

/* The cache region of one layer: cache_rows rows of row_elems halves from element cache_off. */
static b158_status cache_region(const b158_buf *k_cache, const b158_buf *v_cache, size_t cache_off,
                                int cache_rows, int row_elems, const char *op)
{
    const size_t end = cache_off + (size_t)cache_rows * row_elems;
    if (cache_rows <= 0 || end > (size_t)INT32_MAX)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: cache of %d rows at element %zu", op,
                         cache_rows, cache_off);
    B158_TRY(need(k_cache, end * 2, op, "k cache"));
    return need(v_cache, end * 2, op, "v cache");
}

b158_status b158_op_rope_kv_store(b158_runtime *rt, const b158_rope_kv *a, const b158_buf *tok,
                                  int m_rows, size_t cache_off, int cache_rows)
{
    const char *op = "rope_kv_store";
    B158_TRY(positive(m_rows, op, "rows"));
    if (a->n_head < 0 || a->n_head_kv < 0 || a->n_head + a->n_head_kv == 0 || a->head_dim <= 0 ||
        a->head_dim % 2 || a->n_rot < 0 || a->n_rot % 2 || a->n_rot > a->head_dim ||
        a->q_stride < a->n_head * a->head_dim || a->kv_stride < a->n_head_kv * a->head_dim)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: %d + %d heads of %d, n_rot %d, strides %d / %d",
                         op, a->n_head, a->n_head_kv, a->head_dim, a->n_rot, a->q_stride,
                         a->kv_stride);
    const size_t last = (size_t)(m_rows - 1);
    if (a->n_head)
        B158_TRY(need(a->q, (last * a->q_stride + (size_t)a->n_head * a->head_dim) * 4, op, "q"));
    if (a->k_off < 0 || a->v_off < 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: k at %d, v at %d", op, a->k_off, a->v_off);
    if (a->n_head_kv) {
        const size_t kv = last * a->kv_stride + (size_t)a->n_head_kv * a->head_dim;
        B158_TRY(need(a->k, (kv + (size_t)a->k_off) * 4, op, "k"));
        B158_TRY(need(a->v, (kv + (size_t)a->v_off) * 4, op, "v"));
        B158_TRY(cache_region(a->k_cache, a->v_cache, cache_off, cache_rows,
                              a->n_head_kv * a->head_dim, op));
    }
    if (a->n_rot)
        B158_TRY(need(a->inv_freq, (size_t)a->n_rot / 2 * 4, op, "inv_freq"));
    B158_TRY(need(tok, (size_t)m_rows * 8, op, "token positions"));
    /* the kernel takes every buffer; the ones a call does not use stand in for each other */
    const b158_buf *any = a->n_head ? a->q : a->k;
    const b158_buf *q = a->n_head ? a->q : any, *k = a->n_head_kv ? a->k : any;
    const b158_buf *v = a->n_head_kv ? a->v : any, *kc = a->n_head_kv ? a->k_cache : any;
    const b158_buf *vc = a->n_head_kv ? a->v_cache : any, *inv = a->n_rot ? a->inv_freq : any;
    const int off = a->n_head_kv ? (int)cache_off : 0, rows = a->n_head_kv ? cache_rows : 0;
    const int mode = a->mode, k_off = a->n_head_kv ? a->k_off : 0;
    const int v_off = a->n_head_kv ? a->v_off : 0;
    return B158_LAUNCH(rt, B158_K_ROPE_KV_STORE, 2,
                       ((size_t[]){(size_t)a->head_dim / 2, (size_t)m_rows}), NULL, B158_ARG_MEM(q),
                       B158_ARG_MEM(k), B158_ARG_MEM(v), B158_ARG(k_off), B158_ARG(v_off),
                       B158_ARG_MEM(inv), B158_ARG_MEM(kc), B158_ARG_MEM(vc), B158_ARG(a->q_stride),
                       B158_ARG(a->kv_stride), B158_ARG(a->n_head), B158_ARG(a->n_head_kv),
                       B158_ARG(a->head_dim), B158_ARG(a->n_rot), B158_ARG(m_rows),
                       B158_ARG_MEM(tok), B158_ARG(off), B158_ARG(rows), B158_ARG(mode));
}

b158_status b158_op_rope(b158_runtime *rt, const b158_buf *x, const b158_buf *inv_freq,
                         int row_stride, int n_heads, int head_dim, int n_rot, int m_rows,
                         const b158_buf *tok, enum b158_rope_mode mode)
{
    if (n_heads <= 0 || n_rot <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "rope: %d heads, n_rot %d", n_heads, n_rot);
    const b158_rope_kv a = {.q = x,
                            .inv_freq = inv_freq,
                            .q_stride = row_stride,
                            .n_head = n_heads,
                            .head_dim = head_dim,
                            .n_rot = n_rot,
                            .mode = mode};
    return b158_op_rope_kv_store(rt, &a, tok, m_rows, 0, 0);
}

b158_status b158_op_kv_store(b158_runtime *rt, const b158_buf *k, const b158_buf *v,
                             const b158_buf *k_cache, const b158_buf *v_cache, int kv_dim,
                             int row_stride, int m_rows, const b158_buf *tok, size_t cache_off,
                             int cache_rows)
{
    const b158_rope_kv a = {.k = k,
                            .v = v,
                            .k_cache = k_cache,
                            .v_cache = v_cache,
                            .kv_stride = row_stride,
                            .n_head_kv = 1,
                            .head_dim = kv_dim};
    return b158_op_rope_kv_store(rt, &a, tok, m_rows, cache_off, cache_rows);
}

/* A split of the attention's keys that its launch can take (NULL or 1 split: none) */
static b158_status check_split(const b158_runtime *rt, const b158_att_split *split, int n_head,
                               int head_dim, int m_rows, const char *op)
{
    if (!split || split->splits == 1)
        return B158_OK;
    if (split->splits < 1 || split->splits > 4096 || !rt->tune.gpu)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: %d splits of the keys (1 to 4096, GPU variant)",
                         op, split->splits);
    const size_t heads = (size_t)m_rows * n_head;
    B158_TRY(
        need(split->part, heads * split->splits * ((size_t)head_dim + 2) * 4, op, "split results"));
    return need(split->counter, heads * 4, op, "split counters");
}

b158_status b158_op_attention(b158_runtime *rt, const b158_buf *q, const b158_buf *k_cache,
                              const b158_buf *v_cache, const b158_buf *out, int n_head,
                              int n_head_kv, int head_dim, int q_stride, int m_rows,
                              const b158_buf *tok, size_t cache_off, int cache_rows, float scale,
                              const b158_att_rope *rope, const b158_gemv_norm *norm,
                              const b158_att_split *split)
{
    B158_TRY(positive(n_head_kv, "attention", "kv heads"));
    B158_TRY(positive(m_rows, "attention", "rows"));
    if (n_head <= 0 || n_head % n_head_kv || head_dim <= 0 || head_dim > rt->tune.head_dim_max ||
        q_stride < n_head * head_dim)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "attention: %d heads / %d kv heads of dim %d (max %d), q stride %d",
                         n_head, n_head_kv, head_dim, rt->tune.head_dim_max, q_stride);
    B158_TRY(need(q, ((size_t)(m_rows - 1) * q_stride + (size_t)n_head * head_dim) * 4, "attention",
                  "q"));
    B158_TRY(need(tok, (size_t)m_rows * 8, "attention", "token positions"));
    B158_TRY(
        cache_region(k_cache, v_cache, cache_off, cache_rows, n_head_kv * head_dim, "attention"));
    B158_TRY(need(out, (size_t)m_rows * n_head * head_dim * 4, "attention", "out"));
    const int width = n_head * head_dim, tail = norm ? 1 : 0, act = 0;
    const int k_pad_out = tail ? norm->k_pad : 0;
    const float eps = tail ? norm->eps : 0.0f;
    if (tail) {
        if (norm->glu || !norm->norm_w || k_pad_out < width || k_pad_out % 64)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "attention: a norm tail needs norm weights, no GLU, k_pad %d >= %d",
                             k_pad_out, width);
        B158_TRY(need(norm->norm_w, (size_t)width * 4, "attention", "norm weights"));
        B158_TRY(need(norm->q, (size_t)m_rows * k_pad_out, "attention", "q out"));
        B158_TRY(need(norm->s, (size_t)m_rows * 4, "attention", "s out"));
        B158_TRY(need(norm->counter, (size_t)m_rows * 4, "attention", "counters"));
    }
    const b158_buf *nw = tail ? norm->norm_w : &none, *qo = tail ? norm->q : &none,
                   *so = tail ? norm->s : &none, *cnt = tail ? norm->counter : &none;
    const int rope_store = rope != NULL, n_rot = rope ? rope->n_rot : 0;
    const int mode = rope ? (int)rope->mode : 0, k_off = rope ? rope->k_off : 0;
    const int v_off = rope ? rope->v_off : 0, kv_dim = n_head_kv * head_dim;
    if (rope) {
        if (n_rot < 0 || n_rot % 2 || n_rot > head_dim || k_off < 0 || v_off < 0 ||
            (size_t)k_off + kv_dim > (size_t)q_stride || (size_t)v_off + kv_dim > (size_t)q_stride)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "attention: rope over %d of %d dims, k at %d, v at %d, row %d", n_rot,
                             head_dim, k_off, v_off, q_stride);
        if (n_rot)
            B158_TRY(need(rope->inv_freq, (size_t)n_rot / 2 * 4, "attention", "inv_freq"));
        const size_t kv_end = (size_t)(k_off > v_off ? k_off : v_off) + kv_dim;
        B158_TRY(need(q, ((size_t)(m_rows - 1) * q_stride + kv_end) * 4, "attention", "k and v"));
    }
    const b158_buf *inv = rope && n_rot ? rope->inv_freq : &none;
    const int splits = split ? split->splits : 1;
    B158_TRY(check_split(rt, split, n_head, head_dim, m_rows, "attention"));
    const b158_buf *part = splits > 1 ? split->part : &none;
    const b158_buf *hcnt = splits > 1 ? split->counter : &none;
    const size_t wg = (size_t)rt->tune.wg;
    const int off = (int)cache_off;
    return B158_LAUNCH(
        rt, B158_K_ATTENTION, 2, ((size_t[]){(size_t)n_head * splits * wg, (size_t)m_rows}),
        ((size_t[]){wg, 1}), B158_ARG_MEM(q), B158_ARG_MEM(k_cache), B158_ARG_MEM(v_cache),
        B158_ARG_MEM(out), B158_ARG(n_head), B158_ARG(n_head_kv), B158_ARG(head_dim),
        B158_ARG(q_stride), B158_ARG(m_rows), B158_ARG_MEM(tok), B158_ARG(off),
        B158_ARG(cache_rows), B158_ARG(scale), B158_ARG(rope_store), B158_ARG_MEM(inv),
        B158_ARG(n_rot), B158_ARG(mode), B158_ARG(k_off), B158_ARG(v_off), B158_ARG(splits),
        B158_ARG_MEM(part), B158_ARG_MEM(hcnt), B158_ARG(tail), B158_ARG_MEM(cnt), B158_ARG_MEM(nw),
        B158_ARG_MEM(qo), B158_ARG_MEM(so), B158_ARG(k_pad_out), B158_ARG(eps), B158_ARG(act));
}

/* A matrix of n x k as the fused decode layer reads it, its input at most k_pad_max wide */
static b158_status decode_matrix(const b158_tmat *w, int n, int k, int k_pad_max, const char *what)
{
    if (!w || w->n != n || w->k != k || w->k_pad > k_pad_max)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "decode layer: %s is %d x %d (k_pad %d), want %d x %d, k_pad <= %d", what,
                         w ? w->n : 0, w ? w->k : 0, w ? w->k_pad : 0, n, k, k_pad_max);
    B158_TRY(need(&w->codes, (size_t)w->n * w->k_pad / 4, "decode layer", what));
    return need(&w->scales, (size_t)w->n * 4, "decode layer", what);
}

b158_status b158_op_decode_layer(b158_runtime *rt, const b158_decode_step *a,
                                 const b158_decode_weights *w, int layer, size_t cache_off)
{
    const char *op = "decode layer";
    if (!rt->tune.gpu)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "%s: GPU kernel variant only", op);
    const int qd = a->n_head * a->head_dim, kvd = a->n_head_kv * a->head_dim;
    if (a->n_embd <= 0 || a->n_ff <= 0 || a->n_head_kv <= 0 || a->n_head <= 0 ||
        a->n_head % a->n_head_kv || a->head_dim <= 0 || a->head_dim % 2 ||
        a->head_dim > rt->tune.head_dim_max || a->n_rot < 0 || a->n_rot % 2 ||
        a->n_rot > a->head_dim || a->groups <= 0 || layer < 0 || a->k_pad_max % 64)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "%s: %d x %d, %d / %d heads of %d (max %d), n_rot %d, %d groups, layer %d",
                         op, a->n_embd, a->n_ff, a->n_head, a->n_head_kv, a->head_dim,
                         rt->tune.head_dim_max, a->n_rot, a->groups, layer);
    B158_TRY(decode_matrix(w->wqkv, qd + 2 * kvd, a->n_embd, a->k_pad_max, "QKV"));
    B158_TRY(decode_matrix(w->wo, a->n_embd, qd, a->k_pad_max, "output projection"));
    B158_TRY(decode_matrix(w->wgu, 2 * a->n_ff, a->n_embd, a->k_pad_max, "gate|up"));
    B158_TRY(decode_matrix(w->wdown, a->n_embd, a->n_ff, a->k_pad_max, "down projection"));
    const size_t embd = (size_t)a->n_embd * 4;
    B158_TRY(need(a->x, embd, op, "x"));
    B158_TRY(need(a->x2, embd, op, "x2"));
    B158_TRY(need(a->qkv, (size_t)(qd + 2 * kvd) * 4, op, "qkv"));
    B158_TRY(need(a->att, (size_t)qd * 4, op, "att"));
    B158_TRY(need(a->gu, (size_t)a->n_ff * 8, op, "gate|up"));
    B158_TRY(need(a->q8, (size_t)a->groups * a->k_pad_max, op, "q8"));
    B158_TRY(need(a->qs, (size_t)a->groups * 4, op, "scales"));
    B158_TRY(need(a->tok, 8, op, "token position"));
    B158_TRY(need(a->bar, ((size_t)layer + 1) * 16 + 4, op, "barrier counters"));
    const b158_buf *stamps = rt->tune.stage_clock ? a->stamps : &none;
    if (rt->tune.stage_clock)
        B158_TRY(need(stamps, ((size_t)layer + 1) * a->groups * B158_STAMPS * 8, op, "stamps"));
    B158_TRY(need(w->attn_norm, embd, op, "attention norm"));
    B158_TRY(need(w->ffn_norm, embd, op, "feed-forward norm"));
    if (a->sub_norms) {
        B158_TRY(need(w->attn_sub_norm, (size_t)qd * 4, op, "attention sub-norm"));
        B158_TRY(need(w->ffn_sub_norm, (size_t)a->n_ff * 4, op, "feed-forward sub-norm"));
    }
    if (a->n_rot)
        B158_TRY(need(a->inv_freq, (size_t)a->n_rot / 2 * 4, op, "inv_freq"));
    B158_TRY(cache_region(a->k_cache, a->v_cache, cache_off, a->cache_rows, kvd, op));
    const b158_buf *asn = a->sub_norms ? w->attn_sub_norm : &none;
    const b158_buf *fsn = a->sub_norms ? w->ffn_sub_norm : &none;
    const b158_buf *inv = a->n_rot ? a->inv_freq : &none;
    const b158_att_split *sp = &a->split;
    B158_TRY(check_split(rt, sp, a->n_head, a->head_dim, 1, op));
    const b158_buf *part = sp->splits > 1 ? sp->part : &none;
    const b158_buf *hcnt = sp->splits > 1 ? sp->counter : &none;
    const int sub = a->sub_norms != 0, off = (int)cache_off, mode = a->rope_mode, act = a->act;
    const size_t wg = (size_t)rt->tune.wg;
    return B158_LAUNCH(
        rt, B158_K_DECODE_LAYER, 1, ((size_t[]){(size_t)a->groups * wg}), ((size_t[]){wg}),
        B158_ARG_MEM(a->x), B158_ARG_MEM(a->x2), B158_ARG_MEM(a->qkv), B158_ARG_MEM(a->att),
        B158_ARG_MEM(a->gu), B158_ARG_MEM(a->q8), B158_ARG_MEM(a->qs), B158_ARG(a->k_pad_max),
        B158_ARG_MEM(&w->wqkv->codes), B158_ARG_MEM(&w->wqkv->scales), B158_ARG_MEM(&w->wo->codes),
        B158_ARG_MEM(&w->wo->scales), B158_ARG_MEM(&w->wgu->codes), B158_ARG_MEM(&w->wgu->scales),
        B158_ARG_MEM(&w->wdown->codes), B158_ARG_MEM(&w->wdown->scales), B158_ARG_MEM(w->attn_norm),
        B158_ARG_MEM(asn), B158_ARG_MEM(w->ffn_norm), B158_ARG_MEM(fsn), B158_ARG(sub),
        B158_ARG(w->wqkv->k_pad), B158_ARG(w->wo->k_pad), B158_ARG(w->wdown->k_pad),
        B158_ARG_MEM(a->k_cache), B158_ARG_MEM(a->v_cache), B158_ARG_MEM(a->tok), B158_ARG(off),
        B158_ARG(a->cache_rows), B158_ARG_MEM(inv), B158_ARG(a->n_rot), B158_ARG(mode),
        B158_ARG(a->n_embd), B158_ARG(a->n_ff), B158_ARG(a->n_head), B158_ARG(a->n_head_kv),
        B158_ARG(a->head_dim), B158_ARG(a->att_scale), B158_ARG(a->eps), B158_ARG(act),
        B158_ARG(sp->splits), B158_ARG_MEM(part), B158_ARG_MEM(hcnt), B158_ARG_MEM(a->bar),
        B158_ARG(layer), B158_ARG_MEM(stamps));
}

b158_status b158_op_glu_norm_quantize(b158_runtime *rt, const b158_buf *gate, const b158_buf *up,
                                      int up_off, int stride, const b158_buf *norm_w,
                                      const b158_buf *q, const b158_buf *s, int n, int k_pad,
                                      int m_rows, float eps, enum b158_act act)
{
    const char *op = "glu_norm_quantize";
    B158_TRY(positive(n, op, "n"));
    B158_TRY(positive(m_rows, op, "rows"));
    if (k_pad < n || k_pad % 64 || stride < n || up_off < 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s: n %d, k_pad %d, stride %d, up at %d", op, n,
                         k_pad, stride, up_off);
    const size_t rows = (size_t)(m_rows - 1) * stride + n;
    B158_TRY(need(gate, rows * 4, op, "gate"));
    B158_TRY(need(up, (rows + (size_t)up_off) * 4, op, "up"));
    if (norm_w)
        B158_TRY(need(norm_w, (size_t)n * 4, op, "norm weight"));
    B158_TRY(need(q, (size_t)m_rows * k_pad, op, "q"));
    B158_TRY(need(s, (size_t)m_rows * 4, op, "s"));
    const b158_buf *w = norm_w ? norm_w : gate; /* not read without a norm */
    const int iact = act, norm = norm_w != NULL;
    const size_t wg = (size_t)rt->tune.wg;
    return B158_LAUNCH(rt, B158_K_GLU_NORM_QUANTIZE, 2, ((size_t[]){wg, (size_t)m_rows}),
                       ((size_t[]){wg, 1}), B158_ARG_MEM(gate), B158_ARG_MEM(up), B158_ARG(up_off),
                       B158_ARG(stride), B158_ARG_MEM(w), B158_ARG_MEM(q), B158_ARG_MEM(s),
                       B158_ARG(n), B158_ARG(k_pad), B158_ARG(m_rows), B158_ARG(eps),
                       B158_ARG(iact), B158_ARG(norm));
}

b158_status b158_op_embed(b158_runtime *rt, const b158_buf *table, const b158_buf *ids,
                          const b158_buf *out, int n_embd, int n_vocab, int m_rows)
{
    B158_TRY(positive(n_embd, "embed", "n_embd"));
    B158_TRY(positive(n_vocab, "embed", "n_vocab"));
    B158_TRY(positive(m_rows, "embed", "rows"));
    B158_TRY(need(table, (size_t)n_vocab * n_embd * 2, "embed", "table"));
    B158_TRY(need(ids, (size_t)m_rows * 4, "embed", "ids"));
    B158_TRY(need(out, (size_t)m_rows * n_embd * 4, "embed", "out"));
    return B158_LAUNCH(rt, B158_K_EMBED, 2,
                       ((size_t[]){round_up((size_t)n_embd, ELEMWISE_WG), (size_t)m_rows}),
                       ((size_t[]){ELEMWISE_WG, 1}), B158_ARG_MEM(table), B158_ARG_MEM(ids),
                       B158_ARG_MEM(out), B158_ARG(n_embd), B158_ARG(n_vocab), B158_ARG(m_rows));
}

b158_status b158_op_argmax(b158_runtime *rt, const b158_buf *x, int n, int m_rows,
                           const b158_buf *part, const b158_buf *counter, const b158_buf *out)
{
    B158_TRY(positive(n, "argmax", "n"));
    B158_TRY(positive(m_rows, "argmax", "rows"));
    B158_TRY(need(x, (size_t)m_rows * n * 4, "argmax", "x"));
    B158_TRY(need(part, (size_t)m_rows * B158_ARGMAX_GROUPS * 8, "argmax", "partial results"));
    B158_TRY(need(counter, (size_t)m_rows * 4, "argmax", "counters"));
    B158_TRY(need(out, (size_t)m_rows * 4, "argmax", "out"));
    /* about 16 values a work-item, at most B158_ARGMAX_GROUPS groups a row */
    const size_t wg = (size_t)rt->tune.wg;
    size_t groups = ((size_t)n + wg * 16 - 1) / (wg * 16);
    if (groups > B158_ARGMAX_GROUPS)
        groups = B158_ARGMAX_GROUPS;
    return B158_LAUNCH(rt, B158_K_ARGMAX_ROWS, 2, ((size_t[]){groups * wg, (size_t)m_rows}),
                       ((size_t[]){wg, 1}), B158_ARG_MEM(x), B158_ARG(n), B158_ARG(m_rows),
                       B158_ARG_MEM(part), B158_ARG_MEM(counter), B158_ARG_MEM(out));
}

b158_status b158_op_f16_matvec(b158_runtime *rt, const b158_buf *w, const b158_buf *x,
                               const b158_buf *y, int n_rows, int k, int m_rows)
{
    return b158_op_f16_matmul(rt, w, x, y, n_rows, k, m_rows, 0);
}

b158_status b158_op_f16_gemv_q8(b158_runtime *rt, const b158_buf *w, int n_rows, int k,
                                const b158_buf *q, const b158_buf *s, const b158_buf *y,
                                int accumulate, const b158_gemv_norm *norm)
{
    const char *op = "f16 gemv q8";
    const int acc = accumulate != 0;
    B158_TRY(positive(n_rows, op, "rows"));
    B158_TRY(positive(k, op, "k"));
    B158_TRY(need(w, (size_t)n_rows * k * 2, op, "weights"));
    B158_TRY(need(q, (size_t)k, op, "q"));
    B158_TRY(need(s, 4, op, "s"));
    B158_TRY(need(y, (size_t)n_rows * 4, op, "y"));
    struct gemv_tail t;
    B158_TRY(gemv_tail(norm, n_rows, op, &t));
    /* GPU: 32 work-items a row (B158_FL of f16-matmul.cl), whole work-groups; CPU: one
     * work-item per two rows, n and n + (n_rows + 1) / 2 */
    const size_t wg = rt->tune.wg > 1 ? (size_t)rt->tune.wg : CPU_ROWS_WG;
    const size_t rows = rt->tune.wg > 1 ? wg / (wg < 32 ? wg : 32) : 1;
    const size_t global =
        rt->tune.wg > 1 ? ((size_t)n_rows + rows - 1) / rows * wg : (size_t)(n_rows + 1) / 2;
    return B158_LAUNCH(rt, B158_K_F16_GEMV_Q8, 1, ((size_t[]){global}), ((size_t[]){wg}),
                       B158_ARG_MEM(w), B158_ARG_MEM(q), B158_ARG_MEM(s), B158_ARG_MEM(y),
                       B158_ARG(n_rows), B158_ARG(k), B158_ARG(acc), TAIL_ARGS(t));
}

b158_status b158_op_f16_matmul(b158_runtime *rt, const b158_buf *w, const b158_buf *x,
                               const b158_buf *y, int n_rows, int k, int m_rows, int accumulate)
{
    const int acc = accumulate != 0;
    B158_TRY(positive(n_rows, "f16 matvec", "rows"));
    B158_TRY(positive(k, "f16 matvec", "k"));
    B158_TRY(positive(m_rows, "f16 matvec", "tokens"));
    B158_TRY(need(w, (size_t)n_rows * k * 2, "f16 matvec", "weights"));
    B158_TRY(need(x, (size_t)m_rows * k * 4, "f16 matvec", "x"));
    B158_TRY(need(y, (size_t)m_rows * n_rows * 4, "f16 matvec", "y"));
    if (rt->tune.wg > 1 && m_rows > 1) {
        /* GPU prefill: 16 x 16 work-groups, each a tile of 64 rows x 64 tokens */
        const size_t gx = round_up((size_t)n_rows, 64) / 64 * 16;
        const size_t gy = round_up((size_t)m_rows, 64) / 64 * 16;
        return B158_LAUNCH(rt, B158_K_F16_GEMM, 2, ((size_t[]){gx, gy}), ((size_t[]){16, 16}),
                           B158_ARG_MEM(w), B158_ARG_MEM(x), B158_ARG_MEM(y), B158_ARG(n_rows),
                           B158_ARG(k), B158_ARG(m_rows), B158_ARG(acc));
    }
    if (rt->tune.wg == 1 && m_rows > 1) {
        /* CPU prefill: a work-group is one tile of rows over all tiles of tokens */
        const size_t tiles_m = (size_t)(m_rows + F16_GEMM_TOKENS - 1) / F16_GEMM_TOKENS;
        const size_t tiles_n = (size_t)(n_rows + F16_GEMM_ROWS - 1) / F16_GEMM_ROWS;
        return B158_LAUNCH(rt, B158_K_F16_GEMM, 2, ((size_t[]){tiles_m, tiles_n}),
                           ((size_t[]){tiles_m, 1}), B158_ARG_MEM(w), B158_ARG_MEM(x),
                           B158_ARG_MEM(y), B158_ARG(n_rows), B158_ARG(k), B158_ARG(m_rows),
                           B158_ARG(acc));
    }
    /* GPU: at most 64 work-items a row (B158_MV_WG of f16-matmul.cl) */
    const size_t wg = rt->tune.wg > 1 ? (size_t)(rt->tune.wg < 64 ? rt->tune.wg : 64) : CPU_ROWS_WG;
    /* CPU: one work-item per two rows, n and n + (n_rows + 1) / 2 */
    const size_t global = rt->tune.wg > 1 ? (size_t)n_rows * wg : (size_t)(n_rows + 1) / 2;
    return B158_LAUNCH(rt, B158_K_F16_MATVEC, 1, ((size_t[]){global}), ((size_t[]){wg}),
                       B158_ARG_MEM(w), B158_ARG_MEM(x), B158_ARG_MEM(y), B158_ARG(n_rows),
                       B158_ARG(k), B158_ARG(m_rows), B158_ARG(acc));
}
