/* b158-cl-bench: prompt/generation speed and device memory of models, and kernel-level latency
 * of the ternary and FP16 matmuls on both kernel variants. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <math.h>
#include <sys/resource.h>

#include "b158/model.h"
#include "blas.h"
#include "half.h"
#include "ops.h"

#define MAX_SHAPES 16

typedef struct {
    int n, k;
} shape;

typedef struct {
    const char *device;
    shape shapes[MAX_SHAPES];
    int n_shapes;
    int tokens; /* M of the GEMM rows */
    int reps;
    const char *format; /* "md" or "json" */
    int kernels;        /* kernel mode */
    const char *model;  /* model mode: a GGUF file, or */
    const char *preset; /* a comma-separated list of preset shapes */
    int pp, tg;         /* prompt tokens, generated tokens */
    const char *fp16;   /* FP16 baseline matmuls: "auto", "clblast" or "kernels" */
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-bench --kernels [options]\n"
               "       b158-cl-bench -m MODEL.gguf | --preset 700M,2B-4T,... [options]\n"
               "  --kernels            time the matmul kernels (with --preset: at its shapes)\n"
               "  -m FILE              time prompt processing and generation of a GGUF model\n"
               "  --preset LIST        same on random models of published shapes: 700M, 1.3B, 3B,\n"
               "                       3.9B, 2B-4T, tiny (generated in memory), or of explicit\n"
               "                       dimensions EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]]\n"
               "  -p N                 prompt tokens of the pp test (default 128)\n"
               "  -n N                 generated tokens of the tg test (default 32)\n"
               "  -r, --reps R         repetitions of pp and tg (default 3)\n"
               "  --shape NxK          output rows N, input width K (repeatable; default "
               "6912x2560 and 2560x6912)\n"
               "  --tokens M           tokens of the GEMM rows (default 128)\n"
               "  --reps R             timed repetitions, median reported (default 20)\n"
               "  --device SEL         device index or name substring\n"
               "  --fp16 auto|clblast|kernels\n"
               "                       FP16 baseline matmuls: CLBlast HGEMM/HGEMV (needs a\n"
               "                       build with CLBlast and cl_khr_fp16) or b158-cl's\n"
               "                       FP16-storage kernels; auto (default) takes CLBlast\n"
               "                       where both are there\n"
               "  -o md|json|csv       output format (default md; csv for models only)\n"
               "Model mode runs each model twice on one device: the ternary engine (b1.58) and\n"
               "the FP16 baseline (the same weights as dense FP16 matrices). Large presets need\n"
               "more than PoCL's default device memory: POCL_MEMORY_LIMIT=<GB> raises it.\n");
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
    int n, k, m;
    double us, gbs;
} result;

static b158_status time_op(b158_runtime *rt, const char *kname, int reps, double bytes, int n,
                           int k, int m, b158_status (*op)(b158_runtime *, void *), void *ctx,
                           result *out)
{
    uint64_t prev = 0, t[256];
    B158_TRY(op(rt, ctx)); /* warm-up: first launch compiles */
    last_ns(rt, kname, &prev);
    for (int r = 0; r < reps; r++) {
        B158_TRY(op(rt, ctx));
        t[r] = last_ns(rt, kname, &prev);
    }
    double us = (double)median(t, reps) / 1000.0;
    *out = (result){b158_runtime_variant(rt) == B158_VARIANT_GPU ? "gpu" : "cpu",
                    kname,
                    n,
                    k,
                    m,
                    us,
                    bytes / (us * 1e3)};
    return B158_OK;
}

struct mm_ctx {
    b158_tmat w;
    b158_buf q, s, y, wf16, xf;
    b158_buf xh, yh, temp; /* CLBlast: FP16 input (m, k), FP16 output (m, n), HGEMM temp */
    int m;
    int gemm;
};

static b158_status run_ternary(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    return c->gemm ? b158_op_ternary_gemm(rt, &c->w, &c->q, &c->s, &c->y, c->m, 0)
                   : b158_op_ternary_matmul(rt, &c->w, &c->q, &c->s, &c->y, 1, 0);
}

static b158_status run_f16(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    return b158_op_f16_matvec(rt, &c->wf16, &c->xf, &c->y, c->w.n, c->w.k, 1);
}

static b158_status run_hgemm(b158_runtime *rt, void *p)
{
    struct mm_ctx *c = p;
    return b158_op_hgemm(rt, &c->wf16, &c->xh, &c->yh, c->w.n, c->w.k, c->gemm ? c->m : 1,
                         &c->temp);
}

/* CLBlast's HGEMV and HGEMM at the shape (devices with fp16): the FP16 baseline's matmuls. */
static b158_status bench_clblast(b158_runtime *rt, struct mm_ctx *c, const options *o, result *res,
                                 int *nres)
{
    const int n = c->w.n, k = c->w.k, m = c->m;
    size_t temp = 0;
    B158_TRY(b158_hgemm_temp_bytes(rt, n, k, m, &temp));
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * k * 2, &c->xh));
    B158_TRY(b158_buf_fill(rt, &c->xh, 0x3c)); /* 0x3c3c: 1.06 */
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * n * 2, &c->yh));
    if (temp)
        B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, temp, &c->temp));
    c->gemm = 0;
    B158_TRY(time_op(rt, "clblast_hgemv", o->reps, (double)n * k * 2 + k * 2 + n * 2, n, k, 1,
                     run_hgemm, c, &res[*nres]));
    res[(*nres)++].variant = "-";
    c->gemm = 1;
    B158_TRY(time_op(rt, "clblast_hgemm", o->reps, (double)n * k * 2 + (double)m * (k + n) * 2, n,
                     k, m, run_hgemm, c, &res[*nres]));
    res[(*nres)++].variant = "-";
    return B158_OK;
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
    float *xf = malloc((size_t)k * 4);
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
    for (int i = 0; i < k; i++)
        xf[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    c.m = m;
#define T(x)                                                                                       \
    if ((st = (x)) != B158_OK)                                                                     \
        goto done;
    T(b158_tmat_upload(rt, w, ones, n, k, &c.w));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * kp, &c.q));
    T(b158_buf_write(rt, &c.q, 0, (size_t)m * kp, q));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * 4, &c.s));
    T(b158_buf_write(rt, &c.s, 0, (size_t)m * 4, ones));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)m * n * 4, &c.y));
    T(b158_buf_alloc(rt, B158_MEM_WEIGHTS, (size_t)n * k * 2, &c.wf16));
    T(b158_buf_write(rt, &c.wf16, 0, (size_t)n * k * 2, wh));
    T(b158_buf_alloc(rt, B158_MEM_SCRATCH, (size_t)k * 4, &c.xf));
    T(b158_buf_write(rt, &c.xf, 0, (size_t)k * 4, xf));
    const double tbytes = (double)n * kp / 4 + kp + (double)n * 8;
    c.gemm = 0;
    T(time_op(
        rt, b158_runtime_variant(rt) == B158_VARIANT_GPU ? "ternary_gemv_gpu" : "ternary_gemv_cpu",
        o->reps, tbytes, n, k, 1, run_ternary, &c, &res[(*nres)++]));
    c.gemm = 1;
    T(time_op(
        rt, b158_runtime_variant(rt) == B158_VARIANT_GPU ? "ternary_gemm_gpu" : "ternary_gemm_cpu",
        o->reps, tbytes + (double)(m - 1) * (kp + n * 4), n, k, m, run_ternary, &c,
        &res[(*nres)++]));
    T(time_op(rt, "f16_matvec", o->reps, (double)n * k * 2 + k * 4 + n * 4, n, k, 1, run_f16, &c,
              &res[(*nres)++]));
    if (b158_weight_mode_check(rt, B158_WEIGHTS_FP16_CLBLAST) == B158_OK &&
        b158_runtime_variant(rt) == B158_VARIANT_CPU)
        T(bench_clblast(rt, &c, o, res, nres));
#undef T
done:
    b158_tmat_free(rt, &c.w);
    b158_buf_free(rt, &c.q);
    b158_buf_free(rt, &c.s);
    b158_buf_free(rt, &c.y);
    b158_buf_free(rt, &c.wf16);
    b158_buf_free(rt, &c.xf);
    b158_buf_free(rt, &c.xh);
    b158_buf_free(rt, &c.yh);
    b158_buf_free(rt, &c.temp);
    free(w), free(ones), free(q), free(wh), free(xf);
    return st;
}

/* Device copy bandwidth (read + write bytes / time) of a 256 MiB buffer copy, for context. */
static double copy_gbs(b158_runtime *rt)
{
    const size_t bytes = 256u << 20;
    b158_buf a, b;
    if (b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &a) != B158_OK)
        return 0;
    if (b158_buf_alloc(rt, B158_MEM_SCRATCH, bytes, &b) != B158_OK) {
        b158_buf_free(rt, &a);
        return 0;
    }
    b158_buf_fill(rt, &a, 1);
    b158_buf_fill(rt, &b, 2);
    uint64_t t[7];
    for (int r = 0; r < 7; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        clEnqueueCopyBuffer(rt->queue, a.mem, b.mem, 0, 0, bytes, 0, NULL, NULL);
        clFinish(rt->queue);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        t[r] =
            (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
    }
    b158_buf_free(rt, &a);
    b158_buf_free(rt, &b);
    return 2.0 * (double)bytes / (double)median(t, 7);
}

/* A preset name, or explicit dimensions EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]] built like the
 * presets (bitnet-25 graph; KV heads default to HEADS, vocabulary to 32000). Prints why not and
 * returns 2 for anything else. */
static int shape_of(const char *name, b158_model_info *h)
{
    if (b158_model_preset(name, h) == B158_OK)
        return 0;
    long v[6] = {0, 0, 0, 0, 0, 32000};
    const long max[6] = {1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 21};
    int n = 0;
    const char *p = name;
    while (n < 6 && *p >= '0' && *p <= '9') {
        char *end;
        v[n] = strtol(p, &end, 10);
        n++;
        p = end;
        if (*p != 'x')
            break;
        p++;
    }
    int ok = *p == '\0' && n >= 4;
    if (ok && n == 4)
        v[4] = v[3];
    for (int i = 0; ok && i < 6; i++)
        ok = v[i] > 0 && v[i] <= max[i];
    ok = ok && v[0] % v[3] == 0 && (v[0] / v[3]) % 2 == 0 && v[3] % v[4] == 0;
    if (!ok) {
        fprintf(stderr,
                "error: unknown preset '%s' (700M, 1.3B, 3B, 3.9B, 2B-4T, tiny, or "
                "EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]] with EMBD a multiple of 2 * HEADS and "
                "HEADS of KV_HEADS)\n",
                name);
        return 2;
    }
    b158_model_preset("700M", h); /* the presets' graph, eps, RoPE and context */
    h->n_embd = (int)v[0], h->n_ff = (int)v[1], h->n_layer = (int)v[2];
    h->n_head = (int)v[3], h->n_head_kv = (int)v[4], h->n_vocab = (int)v[5];
    return 0;
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){NULL,  {{6912, 2560}, {2560, 6912}}, 2, 128, 0, "md", 0, NULL, NULL, 128, 32,
                   "auto"};
    int custom = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--kernels") == 0) {
            o->kernels = 1;
        } else if (strcmp(a, "-m") == 0 && v) {
            o->model = v;
            i++;
        } else if (strcmp(a, "--preset") == 0 && v) {
            o->preset = v;
            i++;
        } else if (strcmp(a, "-p") == 0 && v) {
            o->pp = atoi(v);
            i++;
        } else if (strcmp(a, "-n") == 0 && v) {
            o->tg = atoi(v);
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
        } else if (strcmp(a, "--fp16") == 0 && v) {
            o->fp16 = v;
            i++;
        } else if (strcmp(a, "-o") == 0 && v) {
            o->format = v;
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
    if (o->kernels && o->preset && !custom) {
        /* kernel timings at the distinct matrix shapes of the named presets */
        char list[256];
        snprintf(list, sizeof list, "%s", o->preset);
        o->n_shapes = 0;
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
             name = strtok_r(NULL, ",", &save)) {
            b158_model_info h;
            if (shape_of(name, &h))
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
        o->preset = NULL;
    }
    if (o->preset) { /* every name is checked before the table starts */
        char list[512];
        snprintf(list, sizeof list, "%s", o->preset);
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
             name = strtok_r(NULL, ",", &save)) {
            b158_model_info h;
            if (shape_of(name, &h))
                return 2;
        }
    }
    if (o->kernels + !!o->model + !!o->preset != 1) {
        fprintf(stderr, "error: choose one of --kernels, -m FILE, --preset LIST\n");
        usage(stderr);
        return 2;
    }
    if (!o->reps)
        o->reps = o->kernels ? 20 : 3;
    if (o->pp < 1 || o->pp > 1 << 16 || o->tg < 1 || o->tg > 1 << 16) {
        fprintf(stderr, "error: -p and -n want 1..65536\n");
        return 2;
    }
    if (strcmp(o->fp16, "auto") && strcmp(o->fp16, "clblast") && strcmp(o->fp16, "kernels")) {
        fprintf(stderr, "error: --fp16 wants auto, clblast or kernels\n");
        return 2;
    }
    if (o->tokens < 1 || o->tokens > 4096 || o->reps < 1 || o->reps > 256 ||
        (strcmp(o->format, "md") && strcmp(o->format, "json") &&
         (strcmp(o->format, "csv") || o->kernels))) {
        fprintf(stderr, "error: --tokens 1..4096, --reps 1..256, -o md|json|csv (csv: models)\n");
        return 2;
    }
    return 0;
}

/* ---- model mode ------------------------------------------------------------------------- */

static void mean_std(const double *v, int n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0.0;
}

static unsigned long long host_peak_rss(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (unsigned long long)ru.ru_maxrss * 1024ull : 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct {
    double pp_mean, pp_sd, tg_mean, tg_sd; /* tokens/s; ms/token */
    double first_pp, upload, compile;      /* seconds: first pp, weight upload, kernel builds */
    uint64_t mem_w, mem_kv, mem_s;         /* device bytes by category */
    b158_token greedy[16];
    float *logits; /* (n_vocab) after the greedy test's prompt, for the comparison */
} engine_result;

#define N_GREEDY 16
#define N_GREEDY_PROMPT 8

/* Device bytes an engine will allocate: weights (2-bit codes + row scales, or dense FP16),
 * norms and the FP16 embedding, the KV cache and the session scratch. Lets the bench refuse a
 * configuration that cannot fit before allocating anything. */
static uint64_t estimate_bytes(const b158_model_info *h, b158_weight_mode mode, int n_ctx,
                               int n_batch)
{
    const uint64_t qd = (uint64_t)h->n_head * h->head_dim,
                   kvd = (uint64_t)h->n_head_kv * h->head_dim;
    const uint64_t rows[7] = {qd,
                              kvd,
                              kvd,
                              (uint64_t)h->n_embd,
                              (uint64_t)h->n_ff,
                              (uint64_t)h->n_ff,
                              (uint64_t)h->n_embd};
    const uint64_t cols[7] = {(uint64_t)h->n_embd, (uint64_t)h->n_embd, (uint64_t)h->n_embd, qd,
                              (uint64_t)h->n_embd, (uint64_t)h->n_embd, (uint64_t)h->n_ff};
    uint64_t w = 0;
    for (int i = 0; i < 7; i++)
        w += mode != B158_WEIGHTS_TERNARY ? rows[i] * cols[i] * 2
                                          : rows[i] * ((cols[i] + 63) / 64 * 16) + rows[i] * 4;
    w = w * (uint64_t)h->n_layer + (uint64_t)h->n_vocab * h->n_embd * 2 +
        (uint64_t)h->n_layer * (2 * h->n_embd + qd + h->n_ff) * 4;
    const uint64_t kv = 2ull * h->n_layer * (uint64_t)n_ctx * kvd * 2;
    uint64_t width = (uint64_t)h->n_ff > qd ? (uint64_t)h->n_ff : qd;
    const uint64_t scratch =
        (uint64_t)n_batch * (width * 8 + qd * 12 + kvd * 8 + 4096) + (uint64_t)h->n_vocab * 4;
    return w + kv + scratch;
}

/* pp: one forward pass over pp tokens from position 0, repeated; the first run (first touches
 * of the weights) is timed apart. tg: tg single-token steps after a one-token prompt.
 * Then N_GREEDY greedy tokens after a short prompt, for the sanity check between engines. */
static b158_status measure(const options *o, b158_runtime *rt, b158_model *m, b158_weight_mode mode,
                           const b158_token *tok, engine_result *r)
{
    const b158_model_info *h = b158_model_get_info(m);
    const int n_ctx = o->pp + o->tg + N_GREEDY + 1;
    memset(r, 0, sizeof *r);
    const uint64_t need = estimate_bytes(h, mode, n_ctx, o->pp);
    const b158_device_info *d = b158_runtime_device(rt);
    if (need > d->global_mem)
        return B158_FAIL(B158_ERR_DEVICE_MEMORY,
                         "the %s engine needs about %.2f GiB of device memory; %s has %.2f GiB%s",
                         mode != B158_WEIGHTS_TERNARY ? "FP16" : "ternary", need / 1073741824.0,
                         d->name, d->global_mem / 1073741824.0,
                         d->is_cpu ? " (PoCL: run with POCL_MEMORY_LIMIT=<GB> to raise it)" : "");
    double pp_t[256], tg_t[256], t0 = now_s();
    b158_session *s = NULL;
    b158_status st = b158_model_upload_as(m, rt, mode);
    r->upload = now_s() - t0;
    b158_session_params sp = b158_session_default_params();
    sp.rt = rt;
    sp.n_ctx = n_ctx;
    sp.n_batch = o->pp;
    t0 = now_s();
    if (st == B158_OK)
        st = b158_session_create(m, &sp, &s); /* builds (or loads) every kernel */
    r->compile = now_s() - t0;
    for (int rep = -1; st == B158_OK && rep < o->reps; rep++) {
        b158_session_reset(s);
        t0 = now_s();
        st = b158_session_eval(s, tok, o->pp);
        if (rep < 0)
            r->first_pp = now_s() - t0;
        else
            pp_t[rep] = o->pp / (now_s() - t0);
    }
    for (int rep = 0; st == B158_OK && rep < o->reps; rep++) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, 1);
        t0 = now_s();
        for (int i = 0; st == B158_OK && i < o->tg; i++)
            st = b158_session_eval(s, &tok[(i + 1) % o->pp], 1);
        tg_t[rep] = 1000.0 * (now_s() - t0) / o->tg;
    }
    if (st == B158_OK) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, N_GREEDY_PROMPT < o->pp ? N_GREEDY_PROMPT : o->pp);
    }
    if (st == B158_OK) {
        r->logits = malloc((size_t)h->n_vocab * sizeof *r->logits);
        if (!r->logits)
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory");
        else
            memcpy(r->logits, b158_session_logits(s, -1), (size_t)h->n_vocab * sizeof *r->logits);
    }
    for (int i = 0; st == B158_OK && i < N_GREEDY; i++) {
        const float *l = b158_session_logits(s, -1);
        int best = 0;
        for (int j = 1; j < h->n_vocab; j++)
            best = l[j] > l[best] ? j : best;
        r->greedy[i] = best;
        st = b158_session_eval(s, &r->greedy[i], 1);
    }
    if (st == B158_OK) {
        mean_std(pp_t, o->reps, &r->pp_mean, &r->pp_sd);
        mean_std(tg_t, o->reps, &r->tg_mean, &r->tg_sd);
        r->mem_w = b158_runtime_mem_bytes(rt, B158_MEM_WEIGHTS);
        r->mem_kv = b158_runtime_mem_bytes(rt, B158_MEM_KV_CACHE);
        r->mem_s = b158_runtime_mem_bytes(rt, B158_MEM_SCRATCH);
    }
    b158_session_free(s);
    b158_model_unload(m);
    return st;
}

typedef struct {
    char name[128];
    engine_result fp16, tern;
    int greedy_match;  /* tokens equal before the first difference (N_GREEDY = all) */
    double logit_nerr; /* max|fp16 - b1.58| / max|b1.58| over the logits after the prompt */
} model_result;

static double total_gb(const engine_result *r)
{
    return (double)(r->mem_w + r->mem_kv + r->mem_s) / 1e9;
}

static b158_status bench_model(const options *o, b158_runtime *rt, b158_weight_mode fp16_mode,
                               const char *label, b158_model *m, model_result *res)
{
    const b158_model_info *h = b158_model_get_info(m);
    b158_token *tok = malloc((size_t)o->pp * sizeof *tok);
    if (!tok)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < o->pp; i++)
        tok[i] = (b158_token)((i * 7919u + 13u) % (unsigned)h->n_vocab);
    memset(res, 0, sizeof *res);
    snprintf(res->name, sizeof res->name, "%.120s", label);
    b158_status st = measure(o, rt, m, B158_WEIGHTS_TERNARY, tok, &res->tern);
    if (st == B158_OK)
        st = measure(o, rt, m, fp16_mode, tok, &res->fp16);
    while (st == B158_OK && res->greedy_match < N_GREEDY &&
           res->fp16.greedy[res->greedy_match] == res->tern.greedy[res->greedy_match])
        res->greedy_match++;
    if (st == B158_OK) {
        double d = 0, mx = 0;
        for (int i = 0; i < h->n_vocab; i++) {
            d = fmax(d, fabs((double)res->fp16.logits[i] - res->tern.logits[i]));
            mx = fmax(mx, fabs((double)res->tern.logits[i]));
        }
        res->logit_nerr = d / fmax(mx, 1e-30);
    }
    free(res->fp16.logits), free(res->tern.logits);
    res->fp16.logits = res->tern.logits = NULL;
    free(tok);
    return st;
}

static void print_md_row(const model_result *r)
{
    const engine_result *f = &r->fp16, *t = &r->tern;
    printf("| %s | %.2f | %.2f | %.2fx | %.1f | %.1f | %.2fx | %.1f | %.1f | %d/%d%s, logits %.1e "
           "|\n",
           r->name, total_gb(f), total_gb(t), total_gb(f) / total_gb(t), f->tg_mean, t->tg_mean,
           f->tg_mean / t->tg_mean, f->pp_mean, t->pp_mean, r->greedy_match, N_GREEDY,
           r->greedy_match == N_GREEDY ? " same" : " then differ", r->logit_nerr);
    fflush(stdout);
}

static void print_engine_json(const char *key, const engine_result *e)
{
    printf("\"%s\": {\"pp_tokens_per_s\": %.3f, \"pp_std\": %.3f, \"tg_ms_per_token\": %.3f, "
           "\"tg_std\": %.3f, \"first_pp_s\": %.3f, \"upload_s\": %.3f, \"session_setup_s\": %.3f, "
           "\"mem_weights\": %llu, "
           "\"mem_kv_cache\": %llu, \"mem_scratch\": %llu}",
           key, e->pp_mean, e->pp_sd, e->tg_mean, e->tg_sd, e->first_pp, e->upload, e->compile,
           (unsigned long long)e->mem_w, (unsigned long long)e->mem_kv,
           (unsigned long long)e->mem_s);
}

static int run_models(const options *o)
{
    b158_runtime_params rp = b158_runtime_default_params();
    rp.device = o->device;
    b158_runtime *rt = NULL;
    if (b158_runtime_create(&rp, &rt) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    const b158_device_info *d = b158_runtime_device(rt);
    const int blas_ok = b158_weight_mode_check(rt, B158_WEIGHTS_FP16_CLBLAST) == B158_OK;
    const int blas = !strcmp(o->fp16, "clblast") || (!strcmp(o->fp16, "auto") && blas_ok);
    if (blas && !blas_ok) {
        fprintf(stderr, "error: --fp16 clblast (else use --fp16 kernels): %s\n", b158_last_error());
        b158_runtime_free(rt);
        return 1;
    }
    const b158_weight_mode fp16_mode = blas ? B158_WEIGHTS_FP16_CLBLAST : B158_WEIGHTS_FP16;
    const char *fp16_path = blas ? "CLBlast HGEMM (prompt) / HGEMV (generation), FP16 arithmetic"
                                 : "b158-cl FP16-storage kernels (vload_half, FP32 arithmetic)";
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    if (!strcmp(o->format, "md"))
        printf("device: %s (%s, driver %s), b158-cl %s, %s\n"
               "FP16 baseline matmuls: %s%s\n"
               "pp %d / tg %d tokens, mean of %d repetitions; memory = device bytes allocated "
               "(weights + KV cache + scratch)\n\n"
               "| model | memory GB FP16 | b1.58 | ratio | latency ms/token FP16 | b1.58 | ratio "
               "| pp tokens/s FP16 | b1.58 | greedy |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date, fp16_path,
               blas && d->is_cpu ? " (on CPU devices CLBlast's FP16 kernels measure far slower "
                                   "than b158-cl's FP16-storage kernels: --fp16 kernels is the "
                                   "stronger baseline)"
                                 : "",
               o->pp, o->tg, o->reps);
    else if (!strcmp(o->format, "csv"))
        printf("model,device,driver,build,date,pp,tg,reps,engine,pp_tokens_per_s,pp_std,"
               "tg_ms_per_token,tg_std,mem_weights,mem_kv_cache,mem_scratch,greedy_match\n");
    else
        printf("{\"device\": \"%s\", \"platform\": \"%s\", \"driver\": \"%s\", \"build\": \"%s\", "
               "\"date\": \"%s\", \"fp16_matmul\": \"%s\", \"fp16_path\": \"%s\", \"pp\": %d, "
               "\"tg\": %d, \"reps\": %d, "
               "\"models\": [",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date,
               blas ? "clblast" : "kernels", fp16_path, o->pp, o->tg, o->reps);
    char list[512];
    snprintf(list, sizeof list, "%s", o->model ? o->model : o->preset);
    int rc = 0, first = 1;
    char *save = NULL;
    for (char *name = o->model ? list : strtok_r(list, ",", &save); name && !rc;
         name = o->model ? NULL : strtok_r(NULL, ",", &save)) {
        b158_model *m = NULL;
        b158_model_info h;
        b158_status st;
        if (o->model) {
            st = b158_model_load(name, &m);
        } else if (shape_of(name, &h) == 0) {
            st = b158_model_random(&h, 1, &m);
        } else {
            rc = 2;
            break;
        }
        model_result r;
        if (st == B158_OK)
            st = bench_model(o, rt, fp16_mode, name, m, &r);
        b158_model_free(m);
        if (st != B158_OK) {
            fprintf(stderr, "error: %s: %s\n", name, b158_last_error());
            rc = 1;
            break;
        }
        fprintf(stderr,
                "%s: setup apart from the timings: FP16 upload %.2f s, session and kernel "
                "builds %.2f s, first pp %.2f s; b1.58 upload %.2f s, session and kernel "
                "builds %.2f s, first pp %.2f s\n",
                r.name, r.fp16.upload, r.fp16.compile, r.fp16.first_pp, r.tern.upload,
                r.tern.compile, r.tern.first_pp);
        if (!strcmp(o->format, "md")) {
            print_md_row(&r);
        } else if (!strcmp(o->format, "csv")) {
            const engine_result *e[2] = {&r.fp16, &r.tern};
            for (int i = 0; i < 2; i++)
                printf("%s,%s,%s,%s,%s,%d,%d,%d,%s,%.3f,%.3f,%.3f,%.3f,%llu,%llu,%llu,%d\n", r.name,
                       d->name, d->driver, B158_VERSION_STRING, date, o->pp, o->tg, o->reps,
                       i ? "b1.58" : "fp16", e[i]->pp_mean, e[i]->pp_sd, e[i]->tg_mean, e[i]->tg_sd,
                       (unsigned long long)e[i]->mem_w, (unsigned long long)e[i]->mem_kv,
                       (unsigned long long)e[i]->mem_s, r.greedy_match);
        } else {
            printf("%s\n  {\"name\": \"%s\", ", first ? "" : ",", r.name);
            print_engine_json("fp16", &r.fp16);
            printf(", ");
            print_engine_json("ternary", &r.tern);
            printf(", \"memory_ratio\": %.4f, \"latency_ratio\": %.4f, \"greedy_same_tokens\": %d, "
                   "\"greedy_tokens\": %d, \"logits_nerr\": %.3e}",
                   total_gb(&r.fp16) / total_gb(&r.tern), r.fp16.tg_mean / r.tern.tg_mean,
                   r.greedy_match, N_GREEDY, r.logit_nerr);
        }
        first = 0;
    }
    if (!strcmp(o->format, "json"))
        printf("\n], \"host_peak_rss_bytes\": %llu}\n", host_peak_rss());
    else if (!strcmp(o->format, "md") && !rc)
        printf("\nhost peak RSS: %.2f GB. greedy: how many of the two engines' first %d greedy "
               "tokens after an %d-token prompt agree before the first difference (random "
               "weights have near-tied logits, so float summation order can flip one); logits: "
               "max |FP16 - b1.58| / max |b1.58| of the logits after that prompt.\n",
               host_peak_rss() / 1e9, N_GREEDY, N_GREEDY_PROMPT);
    b158_runtime_free(rt);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.kernels)
        return run_models(&o);
    result res[2 * MAX_SHAPES * 5];
    int nres = 0;
    char devname[256] = "", driver[160] = "";
    double bw = 0;
    for (int v = B158_VARIANT_CPU; v <= B158_VARIANT_GPU; v++) {
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
        if (v == B158_VARIANT_CPU)
            bw = copy_gbs(rt);
        for (int s = 0; s < o.n_shapes; s++) {
            if (bench_shape(rt, o.shapes[s], &o, res, &nres) != B158_OK) {
                fprintf(stderr, "error: %s\n", b158_last_error());
                b158_runtime_free(rt);
                return 1;
            }
        }
        b158_runtime_free(rt);
    }
    if (strcmp(o.format, "json") == 0) {
        printf("{\"device\": \"%s\", \"driver\": \"%s\", \"build\": \"%s\", \"copy_gbs\": %.2f, "
               "\"reps\": %d, \"results\": [",
               devname, driver, B158_VERSION_STRING, bw / 1e0, o.reps);
        for (int i = 0; i < nres; i++)
            printf("%s\n  {\"variant\": \"%s\", \"kernel\": \"%s\", \"n\": %d, \"k\": %d, "
                   "\"m\": %d, \"median_us\": %.2f, \"gbs\": %.2f}",
                   i ? "," : "", res[i].variant, res[i].kernel, res[i].n, res[i].k, res[i].m,
                   res[i].us, res[i].gbs);
        printf("\n]}\n");
        return 0;
    }
    printf("device: %s (driver %s), b158-cl %s, median of %d runs (profiling events)\n"
           "device copy bandwidth: %.1f GB/s\n\n",
           devname, driver, B158_VERSION_STRING, o.reps, bw);
    printf("| variant | kernel | N (out) | K (in) | M (tokens) | median us | GB/s | %% of copy |\n"
           "|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++)
        printf("| %s | %s | %d | %d | %d | %.1f | %.1f | %.0f%% |\n", res[i].variant, res[i].kernel,
               res[i].n, res[i].k, res[i].m, res[i].us, res[i].gbs,
               bw > 0 ? 100.0 * res[i].gbs / bw : 0.0);
    return 0;
}
