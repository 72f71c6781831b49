/* b158-cl-kernel-bench: device latency of the ternary and FP16 matmul kernels (and CLBlast's
 * HGEMV / HGEMM where the build and device have them) on both kernel variants, at chosen
 * shapes. An internal program: it drives the launch wrappers of host/ops.h directly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b158/model.h"
#include "bench-bandwidth.h"
#include "bench-common.h"
#include "blas.h"
#include "half.h"
#include "ops.h"

#define MAX_SHAPES 16
#define MAX_BLOCKS 8

typedef struct {
    int n, k;
} shape;

typedef struct {
    const char *device;
    shape shapes[MAX_SHAPES];
    int n_shapes;
    int tokens; /* M of the GEMM rows */
    int reps;
    const char *format;             /* "md" or "json" */
    int variant;                    /* 0 = both kernel variants, else B158_VARIANT_CPU or _GPU */
    const char *blocks[MAX_BLOCKS]; /* models whose decode block's GEMVs are timed (--block) */
    b158_model_info block_info[MAX_BLOCKS];
    int n_blocks;
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-kernel-bench [options]   (also: b158-cl-bench --kernels [options])\n"
               "  --shape NxK          output rows N, input width K (repeatable; default "
               "6912x2560 and 2560x6912)\n"
               "  --preset LIST        the distinct matrix shapes of these models: 700M, 1.3B,\n"
               "                       3B, 3.9B, 2B-4T, tiny, or EMBDxFFxLAYERSxHEADS[xKV_HEADS\n"
               "                       [xVOCAB]]\n"
               "  --block LIST         also a decode block of these models (names as --preset):\n"
               "                       its four one-token GEMVs with their tails, as four\n"
               "                       launches and (GPU variant) as one GEMV chain launch\n"
               "  --tokens M           tokens of the GEMM rows (default 128)\n"
               "  -r, --reps R         timed repetitions, median reported (default 20)\n"
               "  --device SEL         device index or name substring\n"
               "  --variant cpu|gpu    one kernel variant (default both)\n"
               "  -o md|json           output format (default md)\n");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Device time of the last launch of kernel id, from the runtime's profiling totals. */
static uint64_t last_ns(b158_runtime *rt, const char *name, uint64_t *prev)
{
    b158_kernel_stats st[B158_KERNEL_COUNT + B158_RT_MAX_ROUTINES];
    size_t n = b158_runtime_kernel_stats(rt, st, B158_KERNEL_COUNT + B158_RT_MAX_ROUTINES);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st[i].name, name) == 0) {
            uint64_t d = st[i].total_ns - *prev;
            *prev = st[i].total_ns;
            return d;
        }
    }
    return 0;
}

typedef struct {
    const char *variant, *kernel;
    const char *k_text; /* K where it is several widths (a block's rows), else NULL */
    int n, k, m;
    double us, gbs, gflops;
    double queued_us, queued_gbs; /* a launch among reps queued back to back (time_op) */
} result;

static b158_status time_op(b158_runtime *rt, const char *kname, int reps, double bytes, int n,
                           int k, int m, b158_status (*op)(b158_runtime *, void *), void *ctx,
                           int queued, result *out)
{
    uint64_t prev = 0, t[256];
    B158_TRY(op(rt, ctx)); /* warm-up: first launch compiles */
    last_ns(rt, kname, &prev);
    for (int r = 0; r < reps; r++) {
        B158_TRY(op(rt, ctx));
        t[r] = last_ns(rt, kname, &prev);
    }
    double us = (double)median(t, reps) / 1000.0;
    if (us <= 0.0) /* the op launched another kernel: no row of zeros and infinities */
        return B158_FAIL(B158_ERR_UNSUPPORTED, "%s took no time at %dx%d, %d tokens: not launched",
                         kname, n, k, m);
    /* then the same reps launches queued behind a gate and let go together: the device's time
     * per launch when launches follow each other as in a decode step, without the host's
     * enqueue cost or the wait after each (the first one's start to the last one's end) */
    double qus = 0;
    if (queued) {             /* (CLBlast's routines wait for the queue themselves) */
        cl_event ev[4 * 256]; /* (a block is four launches) */
        int launched = 0;
        uint64_t span = 0, busy = 0;
        B158_TRY(b158_rt_queued_begin(rt, ev, 4 * 256));
        b158_status st = B158_OK;
        for (int r = 0; r < reps && st == B158_OK; r++)
            st = op(rt, ctx);
        const b158_status end = b158_rt_queued_end(rt, &launched, &span, &busy);
        B158_TRY(st);
        B158_TRY(end);
        qus = (double)span / 1000.0 / reps;
    }
    *out = (result){b158_runtime_variant(rt) == B158_VARIANT_GPU ? "gpu" : "cpu",
                    kname,
                    NULL,
                    n,
                    k,
                    m,
                    us,
                    bytes / (us * 1e3),
                    2.0 * n * k * m / (us * 1e3),
                    qus,
                    qus > 0 ? bytes / (qus * 1e3) : 0.0};
    return B158_OK;
}

/* Copies of each weight matrix the timed runs rotate through, so that a run finds its weights
 * in device memory rather than in a cache (a GPU's L2 holds tens of MB: whole 2B-4T matrices,
 * and not every driver reports it: NVIDIA's gives the 4 MiB L1) */
#define MAX_COPIES 128
#define FLOOR_WIDTH 256
#define COPIES_MIN_BYTES (256.0 * (1 << 20))

struct mm_ctx {
    b158_tmat wc[MAX_COPIES];
    b158_buf q, s, y, xf, wf16c[MAX_COPIES];
    int copies, copies_f16, next; /* copies of each kind; launches so far */
    b158_buf xh, yh, temp;        /* CLBlast: FP16 input (m, k), FP16 output (m, n), HGEMM temp */
    int m;
    int gemm;
};

static b158_status run_ternary(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    const b158_tmat *w = &c->wc[c->next++ % c->copies];
    return c->gemm ? b158_op_ternary_gemm(rt, w, &c->q, &c->s, &c->y, c->m, 0)
                   : b158_op_ternary_matmul(rt, w, &c->q, &c->s, &c->y, 1, 0);
}

static b158_status run_f16(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    const b158_buf *w = &c->wf16c[c->next++ % c->copies_f16];
    return b158_op_f16_matvec(rt, w, &c->xf, &c->y, c->wc[0].n, c->wc[0].k, c->gemm ? c->m : 1);
}

/* The FP16 baseline's decode GEMV: the same weights on the int8 input of the ternary GEMV */
static b158_status run_f16_q8(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    const b158_buf *w = &c->wf16c[c->next++ % c->copies_f16];
    return b158_op_f16_gemv_q8(rt, w, c->wc[0].n, c->wc[0].k, &c->q, &c->s, &c->y, 0, NULL);
}

/* How many copies of a matrix of this size fill four times the device's cache or 256 MiB,
 * whichever is more (at most MAX_COPIES, at least one) */
static int copies_for(b158_runtime *rt, double bytes)
{
    const double cache4 = 4.0 * (double)b158_runtime_device(rt)->cache_bytes;
    const double want = (cache4 > COPIES_MIN_BYTES ? cache4 : COPIES_MIN_BYTES) / bytes;
    return want < 1 ? 1 : want > MAX_COPIES ? MAX_COPIES : (int)want + 1;
}

static b158_status run_hgemm(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    return b158_op_hgemm(rt, &c->wf16c[0], &c->xh, &c->yh, c->wc[0].n, c->wc[0].k,
                         c->gemm ? c->m : 1, &c->temp);
}

/* CLBlast's HGEMV and HGEMM at the shape (devices with fp16): the FP16 baseline's matmuls. */
static b158_status bench_clblast(b158_runtime *rt, struct mm_ctx *c, const options *o, result *res,
                                 int *nres)
{
    const int n = c->wc[0].n, k = c->wc[0].k, m = c->m;
    size_t temp = 0;
    B158_TRY(b158_hgemm_temp_bytes(rt, n, k, m, &temp));
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * k * 2, &c->xh));
    B158_TRY(b158_buf_fill(rt, &c->xh, 0x3c)); /* 0x3c3c: 1.06 */
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * n * 2, &c->yh));
    if (temp)
        B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, temp, &c->temp));
    c->gemm = 0;
    B158_TRY(time_op(rt, "clblast_hgemv", o->reps, (double)n * k * 2 + k * 2 + n * 2, n, k, 1,
                     run_hgemm, c, 0, &res[*nres]));
    res[(*nres)++].variant = "-";
    if (m == 1) /* (one token is HGEMV's) */
        return B158_OK;
    c->gemm = 1;
    B158_TRY(time_op(rt, "clblast_hgemm", o->reps, (double)n * k * 2 + (double)m * (k + n) * 2, n,
                     k, m, run_hgemm, c, 0, &res[*nres]));
    res[(*nres)++].variant = "-";
    return B158_OK;
}

/* The launch floor: embed_rows of one 256-wide row (1.5 KB moved), the least a launch costs in
 * the device's event timestamps and, queued, between launches that follow each other */
struct floor_ctx {
    b158_buf table, ids, out;
};

static b158_status run_floor(b158_runtime *rt, void *p)
{
    struct floor_ctx *c = p;
    return b158_op_embed(rt, &c->table, &c->ids, &c->out, FLOOR_WIDTH, 1, 1);
}

static b158_status bench_floor(b158_runtime *rt, const options *o, result *res, int *nres)
{
    struct floor_ctx c = {0};
    const uint16_t zeros[FLOOR_WIDTH] = {0};
    b158_status st = b158_buf_alloc(rt, B158_MEM_SCRATCH, FLOOR_WIDTH * 2, &c.table);
    if (st == B158_OK)
        st = b158_buf_write(rt, &c.table, 0, sizeof zeros, zeros);
    if (st == B158_OK)
        st = b158_buf_alloc(rt, B158_MEM_SCRATCH, 4, &c.ids);
    if (st == B158_OK)
        st = b158_buf_write(rt, &c.ids, 0, 4, &(int32_t){0});
    if (st == B158_OK)
        st = b158_buf_alloc(rt, B158_MEM_SCRATCH, FLOOR_WIDTH * 4, &c.out);
    if (st == B158_OK)
        st = time_op(rt, "embed_rows", o->reps, FLOOR_WIDTH * 6.0 + 4, 1, FLOOR_WIDTH, 1, run_floor,
                     &c, 1, &res[*nres]);
    if (st == B158_OK) {
        result *r = &res[(*nres)++];
        r->kernel = "embed_rows (launch floor)";
        r->gbs = r->gflops = r->queued_gbs = 0;
    }
    b158_buf_free(rt, &c.table);
    b158_buf_free(rt, &c.ids);
    b158_buf_free(rt, &c.out);
    return st;
}

static b158_status bench_shape(b158_runtime *rt, shape sh, const options *o, result *res, int *nres)
{
    const int n = sh.n, k = sh.k, kp = b158_ternary_k_pad(k), m = o->tokens;
    b158_status st = B158_OK;
    struct mm_ctx c = {0};
    int8_t *w = malloc((size_t)n * k);
    float *ones = malloc((size_t)(n > m ? n : m) * 4);
    int8_t *q = calloc((size_t)m * kp, 1);
    uint16_t *wh = malloc((size_t)n * k * 2);
    float *xf = malloc((size_t)m * k * 4);
    if (!w || !ones || !q || !wh || !xf) {
        st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for shape %dx%d", n, k);
        goto done;
    }
    srand(1);
    for (size_t i = 0; i < (size_t)n * k; i++) {
        w[i] = (int8_t)(rand() % 3 - 1);
        wh[i] = b158_f32_to_f16((float)w[i] * 0.05f);
    }
    for (int i = 0; i < (n > m ? n : m); i++)
        ones[i] = 1.0f;
    for (size_t i = 0; i < (size_t)m * kp; i++)
        q[i] = (int8_t)(rand() % 255 - 127);
    for (size_t i = 0; i < (size_t)m * k; i++)
        xf[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    c.m = m;
#define T(x)                                                                                       \
    if ((st = (x)) != B158_OK)                                                                     \
        goto done;
    c.copies = copies_for(rt, (double)n * kp / 4);
    c.copies_f16 = copies_for(rt, (double)n * k * 2);
    for (int i = 0; i < c.copies; i++)
        T(b158_tmat_upload(rt, w, ones, n, k, &c.wc[i]));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * kp, &c.q));
    T(b158_buf_write(rt, &c.q, 0, (size_t)m * kp, q));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * 4, &c.s));
    T(b158_buf_write(rt, &c.s, 0, (size_t)m * 4, ones));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * n * 4, &c.y));
    for (int i = 0; i < c.copies_f16; i++) {
        T(b158_buf_alloc(rt, B158_MEM_WEIGHTS, (size_t)n * k * 2, &c.wf16c[i]));
        T(b158_buf_write(rt, &c.wf16c[i], 0, (size_t)n * k * 2, wh));
    }
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * k * 4, &c.xf));
    T(b158_buf_write(rt, &c.xf, 0, (size_t)m * k * 4, xf));
    const double tbytes = (double)n * kp / 4 + kp + (double)n * 8;
    c.gemm = 0;
    T(time_op(rt, b158_kernel_name(b158_op_ternary_gemv_kernel(rt)), o->reps, tbytes, n, k, 1,
              run_ternary, &c, 1, &res[(*nres)++]));
    /* the GEMMs at more than one token (one token is the GEMV's: f16_matvec runs then) */
    c.gemm = 1;
    if (m > 1)
        T(time_op(rt, b158_kernel_name(b158_op_ternary_gemm_kernel(rt)), o->reps,
                  tbytes + (double)(m - 1) * (kp + n * 4), n, k, m, run_ternary, &c, 1,
                  &res[(*nres)++]));
    c.gemm = 0;
    T(time_op(rt, "f16_matvec", o->reps, (double)n * k * 2 + k * 4 + n * 4, n, k, 1, run_f16, &c, 1,
              &res[(*nres)++]));
    T(time_op(rt, "f16_gemv_q8", o->reps, (double)n * k * 2 + k + n * 4 + 4, n, k, 1, run_f16_q8,
              &c, 1, &res[(*nres)++]));
    c.gemm = 1;
    if (m > 1)
        T(time_op(rt, "f16_gemm", o->reps, (double)n * k * 2 + (double)m * (k + n) * 4, n, k, m,
                  run_f16, &c, 1, &res[(*nres)++]));
    if (b158_weight_mode_check(rt, B158_WEIGHTS_FP16_CLBLAST) == B158_OK &&
        b158_runtime_variant(rt) == B158_VARIANT_CPU)
        T(bench_clblast(rt, &c, o, res, nres));
#undef T
done:
    for (int i = 0; i < MAX_COPIES; i++) {
        b158_tmat_free(rt, &c.wc[i]);
        b158_buf_free(rt, &c.wf16c[i]);
    }
    b158_buf_free(rt, &c.q);
    b158_buf_free(rt, &c.s);
    b158_buf_free(rt, &c.y);
    b158_buf_free(rt, &c.xf);
    b158_buf_free(rt, &c.xh);
    b158_buf_free(rt, &c.yh);
    b158_buf_free(rt, &c.temp);
    free(w), free(ones), free(q), free(wh), free(xf);
    return st;
}

/* A decode block's one-token GEMVs after its attention, as the ternary engine runs them: the
 * output projection added into x with the feed-forward's norm and quantization after it, gate|up
 * with the GLU, sub-norm and quantization after it, the down projection added into x with the
 * next block's attention norm after it, the next block's q|k|v; each tail writes the next GEMV's
 * int8 input over q / s. Timed as four launches of the GEMV kernel and, where the session would
 * chain them (GPU variant, not PoCL), as one ternary_gemv_chain launch: what the GEMVs cost with
 * and without a launch between them. Random weights, unit scales and norm weights. */
struct block_ctx {
    b158_tmat w[MAX_COPIES][4]; /* output, gate|up, down, q|k|v of each copy of the block */
    b158_buf q, s, x, gu, qkv, norm_w, counter, sync;
    b158_gemv_norm tail[3]; /* after output, gate|up, down */
    int copies, next, groups;
};

static b158_status run_block(b158_runtime *rt, void *p)
{
    struct block_ctx *c = p;
    const b158_tmat *w = c->w[c->next++ % c->copies];
    B158_TRY(b158_op_ternary_gemv(rt, &w[0], &c->q, &c->s, &c->x, 1, &c->tail[0]));
    B158_TRY(b158_op_ternary_gemv(rt, &w[1], &c->q, &c->s, &c->gu, 0, &c->tail[1]));
    B158_TRY(b158_op_ternary_gemv(rt, &w[2], &c->q, &c->s, &c->x, 1, &c->tail[2]));
    return b158_op_ternary_gemv(rt, &w[3], &c->q, &c->s, &c->qkv, 0, NULL);
}

/* the same as one chain launch; each launch takes the flags of its own "layer" (the sync buffer
 * has room for every launch of the run, zeroed once) */
static b158_status run_block_chain(b158_runtime *rt, void *p)
{
    struct block_ctx *c = p;
    const int launch = c->next++;
    const b158_tmat *w = c->w[launch % c->copies];
    const b158_chain_stage st[4] = {{&w[0], &c->x, 1, &c->tail[0]},
                                    {&w[1], &c->gu, 0, &c->tail[1]},
                                    {&w[2], &c->x, 1, &c->tail[2]},
                                    {&w[3], &c->qkv, 0, NULL}};
    return b158_op_gemv_chain(rt, st, 4, &c->q, &c->s, &c->sync, launch, c->groups, NULL, 0);
}

static b158_status bench_block(b158_runtime *rt, const char *name, const b158_model_info *h,
                               const options *o, result *res, int *nres)
{
    const int embd = h->n_embd, ff = h->n_ff;
    const int qkv = embd + 2 * (embd / h->n_head * h->n_head_kv);
    const int n[4] = {embd, 2 * ff, embd, qkv}, k[4] = {embd, embd, ff, embd};
    const b158_device_info *dev = b158_runtime_device(rt);
    const int chained = b158_runtime_variant(rt) == B158_VARIANT_GPU &&
                        !strstr(dev->platform, "Portable Computing Language");
    const int launches = 2 * o->reps + 2; /* chain launches: warm-up, timed, queued */
    const int kp_embd = b158_ternary_k_pad(embd), kp_ff = b158_ternary_k_pad(ff);
    const int kp_max = kp_embd > kp_ff ? kp_embd : kp_ff, wide = qkv > 2 * ff ? qkv : 2 * ff;
    struct block_ctx *c = calloc(1, sizeof *c);
    int8_t *w = malloc((size_t)wide * kp_max);
    float *ones = malloc((size_t)wide * 4);
    int8_t *q = malloc((size_t)kp_max);
    b158_status st = B158_OK;
    if (!c || !w || !ones || !q) {
        st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the %s block", name);
        goto done;
    }
    double bytes = 0, flops = 0;
    int rows = 0;
    for (int i = 0; i < 4; i++) {
        const int kp = b158_ternary_k_pad(k[i]);
        bytes += (double)n[i] * kp / 4 + kp + (double)n[i] * 8;
        flops += 2.0 * n[i] * k[i];
        rows += n[i];
    }
    srand(2);
    for (int i = 0; i < wide; i++)
        ones[i] = 1.0f;
    for (int i = 0; i < kp_max; i++)
        q[i] = (int8_t)(i < embd ? rand() % 255 - 127 : 0);
    for (size_t e = 0; e < (size_t)wide * kp_max; e++) /* each matrix takes the first n x k */
        w[e] = (int8_t)(rand() % 3 - 1);
#define T(x)                                                                                       \
    if ((st = (x)) != B158_OK)                                                                     \
        goto done;
    c->copies = copies_for(rt, bytes);
    for (int j = 0; j < c->copies; j++)
        for (int i = 0; i < 4; i++)
            T(b158_tmat_upload(rt, w, ones, n[i], k[i], &c->w[j][i]));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)kp_max, &c->q));
    T(b158_buf_write(rt, &c->q, 0, (size_t)kp_max, q));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, 4, &c->s));
    T(b158_buf_write(rt, &c->s, 0, 4, ones));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)embd * 4, &c->x));
    T(b158_buf_write(rt, &c->x, 0, (size_t)embd * 4, ones));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)2 * ff * 4, &c->gu));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)qkv * 4, &c->qkv));
    T(b158_buf_alloc(rt, B158_MEM_WEIGHTS, (size_t)wide * 4, &c->norm_w));
    T(b158_buf_write(rt, &c->norm_w, 0, (size_t)wide * 4, ones));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, 4, &c->counter));
    T(b158_buf_fill(rt, &c->counter, 0));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (1 + 4 * (size_t)launches) * 4, &c->sync));
    T(b158_buf_fill(rt, &c->sync, 0));
    const b158_gemv_norm norm = {.norm_w = &c->norm_w,
                                 .q = &c->q,
                                 .s = &c->s,
                                 .counter = &c->counter,
                                 .k_pad = kp_embd,
                                 .eps = 1e-5f,
                                 .act = B158_ACT_RELU2};
    c->tail[0] = c->tail[2] = norm;
    c->tail[1] = norm;
    c->tail[1].glu = 1, c->tail[1].k_pad = kp_ff;
    /* the session's groups: one a job on GPUs, else one taking the jobs in order (no CPU runtime
     * promises that groups start in order); B158_CHAIN_GROUPS sets the count there too */
    c->groups = b158_env_int("B158_CHAIN_GROUPS", 0, 65536, 0, dev->is_gpu ? 0 : 1);
    static char labels[2 * MAX_BLOCKS][96], widths[MAX_BLOCKS][32];
    static int used;
    const int u = used++ % MAX_BLOCKS;
    snprintf(widths[u], sizeof widths[u], "%d, %d", embd, ff);
    const char *gemv = b158_kernel_name(b158_op_ternary_gemv_kernel(rt));
    snprintf(labels[2 * u], sizeof labels[2 * u], "%s block: 4 x %s + tails", name, gemv);
    T(time_op(rt, gemv, o->reps, bytes, rows, embd, 1, run_block, c, 1, &res[*nres]));
    res[*nres].kernel = labels[2 * u], res[*nres].k_text = widths[u];
    res[*nres].gflops = flops / (res[*nres].us * 1e3);
    ++*nres;
    if (chained) {
        const char *chain = b158_kernel_name(c->groups ? B158_K_GEMV_CHAIN_SEQ : B158_K_GEMV_CHAIN);
        snprintf(labels[2 * u + 1], sizeof labels[2 * u + 1], "%s block: 1 x %s", name, chain);
        c->next = 0;
        T(time_op(rt, chain, o->reps, bytes, rows, embd, 1, run_block_chain, c, 1, &res[*nres]));
        res[*nres].kernel = labels[2 * u + 1], res[*nres].k_text = widths[u];
        res[*nres].gflops = flops / (res[*nres].us * 1e3);
        ++*nres;
        int32_t err = 0; /* a wait that gave up: the groups did not run as the chain needs */
        T(b158_buf_read(rt, &c->sync, 0, 4, &err));
        if (err)
            st = B158_FAIL(B158_ERR_UNSUPPORTED,
                           "%s block: a GEMV chain wait timed out on %s (its work-groups did not "
                           "start in order); its time is not the chain's",
                           name, dev->name);
    }
#undef T
done:
    if (c) {
        for (int j = 0; j < MAX_COPIES; j++)
            for (int i = 0; i < 4; i++)
                b158_tmat_free(rt, &c->w[j][i]);
        b158_buf_free(rt, &c->q);
        b158_buf_free(rt, &c->s);
        b158_buf_free(rt, &c->x);
        b158_buf_free(rt, &c->gu);
        b158_buf_free(rt, &c->qkv);
        b158_buf_free(rt, &c->norm_w);
        b158_buf_free(rt, &c->counter);
        b158_buf_free(rt, &c->sync);
    }
    free(c), free(w), free(ones), free(q);
    return st;
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.shapes = {{6912, 2560}, {2560, 6912}},
                   .n_shapes = 2,
                   .tokens = 128,
                   .reps = 20,
                   .format = "md"};
    const char *preset = NULL;
    int custom = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--kernels") == 0) {
            /* b158-cl-bench --kernels runs this program with its arguments */
        } else if (strcmp(a, "--preset") == 0 && v) {
            preset = v;
            i++;
        } else if (strcmp(a, "--block") == 0 && v) {
            static char blocks[256];
            snprintf(blocks, sizeof blocks, "%s", v);
            o->n_blocks = 0;
            for (char *save = NULL, *name = strtok_r(blocks, ",", &save); name;
                 name = strtok_r(NULL, ",", &save)) {
                if (o->n_blocks == MAX_BLOCKS) {
                    fprintf(stderr, "error: at most %d --block models\n", MAX_BLOCKS);
                    return 2;
                }
                if (b158_bench_shape_of(name, &o->block_info[o->n_blocks]))
                    return 2;
                o->blocks[o->n_blocks++] = name;
            }
            i++;
        } else if (strcmp(a, "--shape") == 0 && v) {
            if (!custom)
                o->n_shapes = 0;
            custom = 1;
            if (o->n_shapes == MAX_SHAPES ||
                sscanf(v, "%dx%d", &o->shapes[o->n_shapes].n, &o->shapes[o->n_shapes].k) != 2 ||
                o->shapes[o->n_shapes].n <= 0 || o->shapes[o->n_shapes].k <= 0) {
                fprintf(stderr, "error: bad --shape '%s' (want NxK, e.g. 6912x2560)\n", v);
                return 2;
            }
            o->n_shapes++;
            i++;
        } else if (strcmp(a, "--tokens") == 0 && v) {
            o->tokens = atoi(v);
            i++;
        } else if ((strcmp(a, "--reps") == 0 || strcmp(a, "-r") == 0) && v) {
            o->reps = atoi(v);
            i++;
        } else if (strcmp(a, "--device") == 0 && v) {
            o->device = v;
            i++;
        } else if (strcmp(a, "-o") == 0 && v) {
            o->format = v;
            i++;
        } else if (strcmp(a, "--variant") == 0 && v && (!strcmp(v, "cpu") || !strcmp(v, "gpu"))) {
            o->variant = strcmp(v, "cpu") ? B158_VARIANT_GPU : B158_VARIANT_CPU;
            i++;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (preset && !custom) {
        /* kernel timings at the distinct matrix shapes of the named presets */
        char list[256];
        snprintf(list, sizeof list, "%s", preset);
        o->n_shapes = 0;
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
             name = strtok_r(NULL, ",", &save)) {
            b158_model_info h;
            if (b158_bench_shape_of(name, &h))
                return 2;
            const int qd = h.n_embd, kvd = h.n_embd / h.n_head * h.n_head_kv;
            const shape all[] = {
                {qd, h.n_embd}, {kvd, h.n_embd}, {h.n_ff, h.n_embd}, {h.n_embd, h.n_ff}};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
                int dup = 0;
                for (int j = 0; j < o->n_shapes; j++)
                    dup |= o->shapes[j].n == all[i].n && o->shapes[j].k == all[i].k;
                if (!dup && o->n_shapes < MAX_SHAPES)
                    o->shapes[o->n_shapes++] = all[i];
            }
        }
    }
    if (o->tokens < 1 || o->tokens > 4096 || o->reps < 1 || o->reps > 256 ||
        (strcmp(o->format, "md") && strcmp(o->format, "json"))) {
        fprintf(stderr, "error: --tokens 1..4096, --reps 1..256, -o md|json\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    result res[2 * (MAX_SHAPES * 5 + 1 + 2 * MAX_BLOCKS)];
    int nres = 0;
    char devname[256] = "", driver[160] = "";
    b158_bench_bandwidth bw = {0};
    double cache_mib = 0;
    for (int v = B158_VARIANT_CPU; v <= B158_VARIANT_GPU; v++) {
        if (o.variant && v != o.variant)
            continue;
        b158_runtime_params p = b158_runtime_default_params();
        p.device = o.device;
        p.variant = (b158_variant)v;
        p.profile = 1;
        b158_runtime *rt = NULL;
        if (b158_runtime_create(&p, &rt) != B158_OK) {
            fprintf(stderr, "error: %s\n", b158_last_error());
            return 1;
        }
        snprintf(devname, sizeof devname, "%s", b158_runtime_device(rt)->name);
        snprintf(driver, sizeof driver, "%s", b158_runtime_device(rt)->driver);
        cache_mib = (double)b158_runtime_device(rt)->cache_bytes / (1 << 20);
        if (bw.copy_gbs == 0 && b158_bench_bandwidth_measure(rt, 7, &bw))
            fprintf(stderr, "warning: no bandwidth measurement: %s\n", b158_last_error());
        if (bench_floor(rt, &o, res, &nres) != B158_OK) {
            fprintf(stderr, "error: %s\n", b158_last_error());
            b158_runtime_free(rt);
            return 1;
        }
        for (int s = 0; s < o.n_shapes + o.n_blocks; s++) {
            const b158_status st = s < o.n_shapes
                                       ? bench_shape(rt, o.shapes[s], &o, res, &nres)
                                       : bench_block(rt, o.blocks[s - o.n_shapes],
                                                     &o.block_info[s - o.n_shapes], &o, res, &nres);
            if (st != B158_OK) {
                fprintf(stderr, "error: %s\n", b158_last_error());
                b158_runtime_free(rt);
                return 1;
            }
        }
        b158_runtime_free(rt);
    }
    if (strcmp(o.format, "json") == 0) {
        printf("{\"device\": \"%s\", \"driver\": \"%s\", \"build\": \"%s\", \"copy_gbs\": %.2f, "
               "\"copy_api_gbs\": %.2f, \"copy_kernel_gbs\": %.2f, "
               "\"reps\": %d, \"results\": [",
               devname, driver, B158_VERSION_STRING, bw.copy_gbs, bw.copy_api_gbs,
               bw.copy_kernel_gbs, o.reps);
        for (int i = 0; i < nres; i++)
            printf("%s\n  {\"variant\": \"%s\", \"kernel\": \"%s\", \"n\": %d, \"k\": %d, "
                   "%s%s%s\"m\": %d, \"median_us\": %.2f, \"gbs\": %.2f, \"gflops\": %.2f, "
                   "\"queued_us\": %.2f, \"queued_gbs\": %.2f}",
                   i ? "," : "", res[i].variant, res[i].kernel, res[i].n, res[i].k,
                   res[i].k_text ? "\"widths\": \"" : "", res[i].k_text ? res[i].k_text : "",
                   res[i].k_text ? "\", " : "", res[i].m, res[i].us, res[i].gbs, res[i].gflops,
                   res[i].queued_us, res[i].queued_gbs);
        printf("\n]}\n");
        return 0;
    }
    printf("device: %s (driver %s), b158-cl %s, median of %d runs (profiling events)\n"
           "device copy bandwidth: %.1f GB/s (read + written bytes of 256 MiB; clEnqueueCopyBuffer "
           "%.1f, copy kernel %.1f); each run reads weights out of cache (copies over "
           "256 MiB and 4x the device's %.0f MiB cache, up to %d)\n"
           "queued: the %d runs again, enqueued while the queue waits and then let go together, "
           "the first one's start to the last one's end / %d (launches back to back, as in a "
           "decode step)\n\n",
           devname, driver, B158_VERSION_STRING, o.reps, bw.copy_gbs, bw.copy_api_gbs,
           bw.copy_kernel_gbs, cache_mib, MAX_COPIES, o.reps, o.reps);
    if (o.n_blocks)
        printf("block: a decode block's one-token GEMVs with their tails (output + norm, gate|up + "
               "GLU, down + norm, q|k|v; N their rows, K the model's width and FFN width), as "
               "four launches (median us: the sum of their four events) and as one chain "
               "launch\n\n");
    printf("| variant | kernel | N (out) | K (in) | M (tokens) | median us | GB/s | %% of copy | "
           "GFLOP/s | queued us | queued GB/s | %% of copy |\n"
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    const double copy = bw.copy_gbs > 0 ? bw.copy_gbs : 1e300; /* no measurement: 0% */
    for (int i = 0; i < nres; i++) {
        if (res[i].gflops == 0) { /* the launch floor: its bytes and flops are nothing */
            printf("| %s | %s | - | - | - | %.1f | - | - | - | %.1f | - | - |\n", res[i].variant,
                   res[i].kernel, res[i].us, res[i].queued_us);
            continue;
        }
        char k[32];
        snprintf(k, sizeof k, "%d", res[i].k);
        printf("| %s | %s | %d | %s | %d | %.1f | %.1f | %.0f%% | %.1f |", res[i].variant,
               res[i].kernel, res[i].n, res[i].k_text ? res[i].k_text : k, res[i].m, res[i].us,
               res[i].gbs, 100.0 * res[i].gbs / copy, res[i].gflops);
        if (res[i].queued_us > 0)
            printf(" %.1f | %.1f | %.0f%% |\n", res[i].queued_us, res[i].queued_gbs,
                   100.0 * res[i].queued_gbs / copy);
        else
            printf(" - | - | - |\n"); /* CLBlast's routines wait for the queue themselves */
    }
    return 0;
}
