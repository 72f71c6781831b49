/* b158-cl-bench: prompt/generation speed and device memory of models, the ternary engine
 * against an FP16 baseline of the same weights. Public API only; the kernel-level timings are
 * b158-cl-kernel-bench (run by --kernels). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "b158/model.h"
#include "bench-bandwidth.h"
#include "bench-common.h"

typedef struct {
    const char *device;
    int reps;
    const char *format;   /* "md", "json" or "csv" */
    const char *model;    /* a GGUF file, or */
    const char *preset;   /* a comma-separated list of preset shapes */
    int pp, tg;           /* prompt tokens, generated tokens */
    int depth;            /* -d: tokens already in the KV cache when the tg test starts */
    const char *fp16;     /* FP16 baseline matmuls: "auto", "clblast" or "kernels" */
    const char *engine;   /* "both", "b158" (ternary only) or "fp16" (baseline only) */
    int profile;          /* --profile: device time per kernel family instead of speeds */
    b158_variant variant; /* --variant: kernel family (0 = from the device type) */
    int greedy;           /* --greedy: tg steps greedy, each fed the pick of the one before */
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-bench -m MODEL.gguf | --preset 700M,2B-4T,... [options]\n"
               "       b158-cl-bench --kernels [b158-cl-kernel-bench options]\n"
               "       b158-cl-bench --throughput [b158-cl-throughput-bench options]\n"
               "  -m FILE              time prompt processing and generation of a GGUF model\n"
               "  --preset LIST        same on random models of published shapes: 700M, 1.3B, 3B,\n"
               "                       3.9B, 2B-4T, tiny (generated in memory), or of explicit\n"
               "                       dimensions EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]]\n"
               "  -p N                 prompt tokens of the pp test (default 128)\n"
               "  -n N                 generated tokens of the tg test (default 32)\n"
               "  -d, --n-depth D      tokens of context already in the KV cache before\n"
               "                       the tg test (prefilled, not timed; default 0, as\n"
               "                       llama-bench -d)\n"
               "  -r, --reps R         repetitions of pp and tg (default 3)\n"
               "  --greedy             tg steps decode greedily, each step's token the pick of\n"
               "                       the one before, as b158-cl-run generates (4 bytes read\n"
               "                       back a step, not the logits; the next step queued ahead\n"
               "                       unless B158_SPECULATE=0)\n"
               "  --device SEL         device index or name substring\n"
               "  --variant cpu|gpu    kernel family (default: from the device type)\n"
               "  --fp16 auto|clblast|kernels\n"
               "                       FP16 baseline matmuls: CLBlast HGEMM/HGEMV (needs a\n"
               "                       build with CLBlast and cl_khr_fp16) or b158-cl's\n"
               "                       FP16-storage kernels; auto (default) takes CLBlast\n"
               "                       where both are there\n"
               "  --engine both|b158|fp16\n"
               "                       run both engines (default, with the ratios) or one\n"
               "  -o md|json|csv       output format (default md)\n"
               "  --profile            where the time of a decode step and of a pp-token prefill\n"
               "                       goes: device time, launches and GB/s per kernel family\n"
               "                       against the copy bandwidth measured in the same run, and\n"
               "                       the host time between launches (-o md|json)\n"
               "  --kernels            time the matmul kernels instead: runs b158-cl-kernel-bench\n"
               "                       (beside this program) with the other arguments\n"
               "  --throughput         the paper's throughput table instead (largest batch of\n"
               "                       sequences in a memory budget, decode tokens/s): runs\n"
               "                       b158-cl-throughput-bench (--throughput -h for its options)\n"
               "Model mode runs each model twice on one device: the ternary engine (b1.58) and\n"
               "the FP16 baseline (the same weights as dense FP16 matrices), or one of them with\n"
               "--engine. Large presets need\n"
               "more than PoCL's default device memory: POCL_MEMORY_LIMIT=<GB> raises it.\n");
}

/* --kernels and --throughput: the kernel timings and the throughput table are programs of
 * their own (b158-cl-kernel-bench, b158-cl-throughput-bench) in the folder of this one; they get
 * the same arguments. Returns only when it cannot be started. */
static int run_sibling(const char *prog, const char *flag, char **argv)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n < 0) { /* no /proc: the folder argv[0] names */
        snprintf(path, sizeof path, "%s", argv[0]);
        n = (ssize_t)strlen(path);
    }
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    const size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    snprintf(path + dir, sizeof path - dir, "%s", prog);
    argv[0] = path;
    if (dir)
        execv(path, argv);
    else
        execvp(path, argv);
    fprintf(stderr, "error: %s: cannot run %s: %s\n", flag, path, strerror(errno));
    return 1;
}

/* The bench's own last failure; "" when the library's last error says what failed. */
static char fail_msg[1024];

static b158_status fail(b158_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static b158_status fail(b158_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
    va_end(ap);
    return st;
}

static const char *last_error(void)
{
    return fail_msg[0] ? fail_msg : b158_last_error();
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){NULL, 3, "md", NULL, NULL, 128, 32, 0, "auto", "both", 0, B158_VARIANT_AUTO, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-m") == 0 && v) {
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
        } else if ((strcmp(a, "-d") == 0 || strcmp(a, "--n-depth") == 0) && v) {
            o->depth = atoi(v);
            i++;
        } else if ((strcmp(a, "--reps") == 0 || strcmp(a, "-r") == 0) && v) {
            o->reps = atoi(v);
            i++;
        } else if (strcmp(a, "--device") == 0 && v) {
            o->device = v;
            i++;
        } else if (strcmp(a, "--variant") == 0 && v) {
            if (strcmp(v, "cpu") && strcmp(v, "gpu")) {
                fprintf(stderr, "error: --variant wants cpu or gpu\n");
                return 2;
            }
            o->variant = strcmp(v, "cpu") ? B158_VARIANT_GPU : B158_VARIANT_CPU;
            i++;
        } else if (strcmp(a, "--fp16") == 0 && v) {
            o->fp16 = v;
            i++;
        } else if (strcmp(a, "--engine") == 0 && v) {
            o->engine = v;
            i++;
        } else if (strcmp(a, "-o") == 0 && v) {
            o->format = v;
            i++;
        } else if (strcmp(a, "--profile") == 0) {
            o->profile = 1;
        } else if (strcmp(a, "--greedy") == 0) {
            o->greedy = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o->preset) { /* every name is checked before the table starts */
        char list[512];
        snprintf(list, sizeof list, "%s", o->preset);
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
             name = strtok_r(NULL, ",", &save)) {
            b158_model_info h;
            if (b158_bench_shape_of(name, &h))
                return 2;
        }
    }
    if (!!o->model + !!o->preset != 1) {
        fprintf(stderr, "error: choose one of --kernels, -m FILE, --preset LIST\n");
        usage(stderr);
        return 2;
    }
    if (o->pp < 1 || o->pp > 1 << 16 || o->tg < 1 || o->tg > 1 << 16) {
        fprintf(stderr, "error: -p and -n want 1..65536\n");
        return 2;
    }
    if (o->depth < 0 || o->depth > 1 << 16) {
        fprintf(stderr, "error: -d wants 0..65536\n");
        return 2;
    }
    if (strcmp(o->fp16, "auto") && strcmp(o->fp16, "clblast") && strcmp(o->fp16, "kernels")) {
        fprintf(stderr, "error: --fp16 wants auto, clblast or kernels\n");
        return 2;
    }
    if (strcmp(o->engine, "both") && strcmp(o->engine, "b158") && strcmp(o->engine, "fp16")) {
        fprintf(stderr, "error: --engine wants both, b158 or fp16\n");
        return 2;
    }
    if (o->reps < 1 || o->reps > 256 ||
        (strcmp(o->format, "md") && strcmp(o->format, "json") && strcmp(o->format, "csv"))) {
        fprintf(stderr, "error: --reps 1..256, -o md|json|csv\n");
        return 2;
    }
    if (o->profile && !strcmp(o->format, "csv")) {
        fprintf(stderr, "error: --profile writes -o md or json\n");
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
    double tg_enqueue;                     /* ms/token the host spent inside kernel enqueues */
    double tg_launches;                    /* kernel launches a token (the engines' launch counts
                                              differ: on launch-bound GPUs that is in the ratio) */
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
                                          : rows[i] * ((cols[i] + 255) / 256 * 64) + rows[i] * 4;
    w = w * (uint64_t)h->n_layer + (uint64_t)h->n_vocab * h->n_embd * 2 +
        (uint64_t)h->n_layer * (2 * h->n_embd + qd + h->n_ff) * 4;
    const uint64_t kv = 2ull * h->n_layer * (uint64_t)n_ctx * kvd * 2;
    uint64_t width = (uint64_t)h->n_ff > qd ? (uint64_t)h->n_ff : qd;
    const uint64_t scratch =
        (uint64_t)n_batch * (width * 8 + qd * 12 + kvd * 8 + 4096) + (uint64_t)h->n_vocab * 4;
    return w + kv + scratch;
}

/* Refuses a configuration that cannot fit on the device before anything is allocated. */
static b158_status check_fits(b158_runtime *rt, const b158_model_info *h, b158_weight_mode mode,
                              int n_ctx, int n_batch)
{
    const uint64_t need = estimate_bytes(h, mode, n_ctx, n_batch);
    const b158_device_info *d = b158_runtime_device(rt);
    if (need > d->global_mem)
        return fail(B158_ERR_DEVICE_MEMORY,
                    "the %s engine needs about %.2f GiB of device memory; %s has %.2f GiB%s",
                    mode != B158_WEIGHTS_TERNARY ? "FP16" : "ternary", need / 1073741824.0, d->name,
                    d->global_mem / 1073741824.0,
                    d->is_cpu ? " (PoCL: run with POCL_MEMORY_LIMIT=<GB> to raise it)" : "");
    return B158_OK;
}

/* pp: one forward pass over pp tokens from position 0, repeated; the first run (first touches
 * of the weights) is timed apart. tg: tg single-token steps after a prompt of 1 + depth tokens
 * (tok holds max(pp, depth + 1) tokens).
 * Then N_GREEDY greedy tokens after a short prompt, for the sanity check between engines. */
/* How the tg steps ran, as JSON and CSV say it: "tokens" (given, logits read back), "greedy"
 * (--greedy: each step the pick of the one before), "greedy_ahead" (and queued ahead) */
static const char *tg_kind(const options *o)
{
    /* (a profiled session does not decode ahead: its launches wait for themselves) */
    const char *spec = getenv("B158_SPECULATE");
    if (!o->greedy)
        return "tokens";
    return o->profile || (spec && !strcmp(spec, "0")) ? "greedy" : "greedy_ahead";
}

/* The tg test's words for --greedy */
static const char *greedy_note(const options *o)
{
    return !o->greedy                      ? ""
           : !strcmp(tg_kind(o), "greedy") ? " (greedy, each its own pick)"
                                           : " (greedy, each its own pick, queued ahead)";
}

/* n tokens through s as one greedy decode call; *pick the greedy token after the last */
static b158_status greedy_decode(b158_session *s, const b158_token *tok, int n, b158_token *pick)
{
    const b158_batch b = {n, tok, NULL, NULL, 1};
    const b158_status st = b158_session_decode(s, &b);
    *pick = st == B158_OK ? b158_session_argmax(s, -1) : 0;
    return st;
}

/* Kernel launches of rt so far (CLBlast's routines count one each) */
static uint64_t launches(const b158_runtime *rt)
{
    b158_kernel_stats st[256]; /* (more than the kernels and routines there are) */
    size_t n = b158_runtime_kernel_stats(rt, st, 256);
    n = n < 256 ? n : 256;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += st[i].launches;
    return total;
}

/* One repetition of the tg test on s (of runtime rt): tg single-token steps after 1 + depth
 * tokens of prompt, the steps' tokens from tok, or with greedy each the pick of the step
 * before; the steps' wall time into *wall_s, the host's time in their enqueue calls into
 * *enqueue_ns, their launches into *n_launch */
static b158_status tg_steps(const options *o, b158_runtime *rt, b158_session *s,
                            const b158_token *tok, double *wall_s, uint64_t *enqueue_ns,
                            uint64_t *n_launch)
{
    b158_session_reset(s);
    b158_token t = 0;
    b158_status st = o->greedy ? greedy_decode(s, tok, 1 + o->depth, &t)
                               : b158_session_eval(s, tok, 1 + o->depth);
    const double t0 = now_s();
    const uint64_t e0 = b158_runtime_enqueue_ns(rt), l0 = launches(rt);
    for (int i = 0; st == B158_OK && i < o->tg; i++)
        st = o->greedy ? greedy_decode(s, &t, 1, &t)
                       : b158_session_eval(s, &tok[(i + 1) % o->pp], 1);
    *wall_s = now_s() - t0;
    *enqueue_ns = b158_runtime_enqueue_ns(rt) - e0;
    *n_launch = launches(rt) - l0;
    return st;
}

static b158_status measure(const options *o, b158_runtime *rt, b158_model *m, b158_weight_mode mode,
                           const b158_token *tok, engine_result *r)
{
    const b158_model_info *h = b158_model_get_info(m);
    const int n_ctx = (o->pp > o->depth ? o->pp : o->depth) + o->tg + N_GREEDY + 1;
    memset(r, 0, sizeof *r);
    b158_status st = check_fits(rt, h, mode, n_ctx, o->pp);
    if (st != B158_OK)
        return st;
    double pp_t[256], tg_t[256], t0 = now_s();
    b158_session *s = NULL;
    st = b158_model_upload_as(m, rt, mode);
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
    /* a one-token step at the depth, untimed: what a step first launches there (its plan, the
     * split attention's kernels) is not in rep 0's time */
    if (st == B158_OK && o->depth > 0) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, 1 + o->depth);
        if (st == B158_OK)
            st = b158_session_eval(s, &tok[1 % o->pp], 1);
    }
    for (int rep = 0; st == B158_OK && rep < o->reps; rep++) {
        double wall = 0;
        uint64_t enq = 0, nl = 0;
        st = tg_steps(o, rt, s, tok, &wall, &enq, &nl);
        tg_t[rep] = 1000.0 * wall / o->tg;
        r->tg_enqueue += 1e-6 * (double)enq / o->tg / o->reps;
        r->tg_launches += (double)nl / o->tg / o->reps;
    }
    if (st == B158_OK) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, N_GREEDY_PROMPT < o->pp ? N_GREEDY_PROMPT : o->pp);
    }
    if (st == B158_OK) {
        r->logits = malloc((size_t)h->n_vocab * sizeof *r->logits);
        if (!r->logits)
            st = fail(B158_ERR_HOST_MEMORY, "out of host memory");
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
    const int n_tok = o->pp > o->depth + 1 ? o->pp : o->depth + 1;
    b158_token *tok = malloc((size_t)n_tok * sizeof *tok);
    if (!tok)
        return fail(B158_ERR_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < n_tok; i++)
        tok[i] = (b158_token)((i * 7919u + 13u) % (unsigned)h->n_vocab);
    memset(res, 0, sizeof *res);
    snprintf(res->name, sizeof res->name, "%.120s", label);
    const int both = !strcmp(o->engine, "both");
    b158_status st = B158_OK;
    if (strcmp(o->engine, "fp16"))
        st = measure(o, rt, m, B158_WEIGHTS_TERNARY, tok, &res->tern);
    if (st == B158_OK && strcmp(o->engine, "b158"))
        st = measure(o, rt, m, fp16_mode, tok, &res->fp16);
    while (both && st == B158_OK && res->greedy_match < N_GREEDY &&
           res->fp16.greedy[res->greedy_match] == res->tern.greedy[res->greedy_match])
        res->greedy_match++;
    if (both && st == B158_OK) {
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

/* With --engine b158 or fp16: the one engine measured, and its name in reports. */
static const engine_result *single_engine(const options *o, const model_result *r,
                                          const char **label)
{
    const int tern = !strcmp(o->engine, "b158");
    *label = tern ? "b1.58" : "fp16";
    return tern ? &r->tern : &r->fp16;
}

static void print_md_single_row(const options *o, const model_result *r)
{
    const char *label;
    const engine_result *e = single_engine(o, r, &label);
    printf("| %s | %s | %.2f | %.1f | %.1f | %.1f |\n", r->name, label, total_gb(e), e->tg_mean,
           1000.0 / e->tg_mean, e->pp_mean);
    fflush(stdout);
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
           "\"tg_std\": %.3f, \"tg_launches_per_token\": %.1f, \"first_pp_s\": %.3f, "
           "\"upload_s\": %.3f, \"session_setup_s\": %.3f, \"mem_weights\": %llu, "
           "\"mem_kv_cache\": %llu, \"mem_scratch\": %llu}",
           key, e->pp_mean, e->pp_sd, e->tg_mean, e->tg_sd, e->tg_launches, e->first_pp, e->upload,
           e->compile, (unsigned long long)e->mem_w, (unsigned long long)e->mem_kv,
           (unsigned long long)e->mem_s);
}

/* ---- --profile -------------------------------------------------------------------------- */

/* Kernel families of the profile, by kernel name (fused kernels keep their family's prefix). */
enum { FAM_TERNARY, FAM_FP16, FAM_ATTENTION, FAM_SMALL, FAM_COUNT };
static const char *const family_names[FAM_COUNT] = {"ternary matmul", "FP16 matmul", "attention",
                                                    "small ops"};

static int family_of(const char *kernel)
{
    if (!strncmp(kernel, "ternary_", 8))
        return FAM_TERNARY;
    if (!strncmp(kernel, "f16_matvec", 10) || !strncmp(kernel, "f16_gemm", 8) ||
        !strncmp(kernel, "f16_gemv", 8) || !strncmp(kernel, "clblast_", 8))
        return FAM_FP16;
    if (!strncmp(kernel, "attention", 9))
        return FAM_ATTENTION;
    return FAM_SMALL;
}

#define PROF_MAX_KERNELS 64

/* One phase (decode steps or prefill passes): profiling totals summed over its steps. */
typedef struct {
    const char *phase; /* "decode" or "prefill" */
    int steps;         /* decode: tokens; prefill: passes of pp tokens */
    int tokens_per_step;
    double wall_s;           /* wall time of the steps, host and device */
    double bytes[FAM_COUNT]; /* bytes a family must move per step (0 = not counted) */
    b158_bench_bandwidth bw; /* measured right before the phase: the machine's state drifts */
    b158_kernel_stats k[PROF_MAX_KERNELS];
    size_t n_k;
    b158_kernel_stats site[PROF_MAX_KERNELS]; /* the same by site of the forward pass */
    size_t n_site;
    b158_stage_profile stage; /* inside the fused decode layer, where it has a clock */
} prof_phase;

typedef struct {
    const char *engine; /* "b1.58" or "fp16" */
    prof_phase decode, prefill;
} prof_engine;

static void stage_add(b158_session *s, prof_phase *ph)
{
    b158_stage_profile p;
    b158_session_stage_profile(s, &p);
    b158_stage_profile *t = &ph->stage;
    t->chain = p.chain, t->clock_ns = p.clock_ns, t->groups = p.groups;
    t->blocks += p.blocks, t->span += p.span, t->gap += p.gap, t->gaps += p.gaps;
    for (int i = 0; i < B158_STAGE_PARTS; i++)
        t->mean[i] += p.mean[i], t->min[i] += p.min[i], t->max[i] += p.max[i];
}

/* Adds the n totals st into the *n_sum totals sum (by name, new names at the end) */
static void stats_merge(b158_kernel_stats *sum, size_t *n_sum, const b158_kernel_stats *st,
                        size_t n)
{
    n = n < PROF_MAX_KERNELS ? n : PROF_MAX_KERNELS;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < *n_sum && strcmp(sum[j].name, st[i].name))
            j++;
        if (j == *n_sum && j == PROF_MAX_KERNELS)
            continue;
        if (j == *n_sum)
            sum[(*n_sum)++] = (b158_kernel_stats){st[i].name, 0, 0};
        sum[j].launches += st[i].launches;
        sum[j].total_ns += st[i].total_ns;
    }
}

static void prof_add(b158_runtime *rt, prof_phase *ph)
{
    b158_kernel_stats st[PROF_MAX_KERNELS];
    stats_merge(ph->k, &ph->n_k, st, b158_runtime_kernel_stats(rt, st, PROF_MAX_KERNELS));
    stats_merge(ph->site, &ph->n_site, st, b158_runtime_site_stats(rt, st, PROF_MAX_KERNELS));
}

/* Bytes of the ternary layers (2-bit codes over rows padded to 256, one f32 scale per row) and
 * of the same layers as dense FP16, as the engines upload them. */
static void layer_bytes(const b158_model_info *h, double *ternary, double *dense)
{
    const double qd = (double)h->n_head * h->head_dim, kvd = (double)h->n_head_kv * h->head_dim;
    const double rows[7] = {qd, kvd, kvd, h->n_embd, h->n_ff, h->n_ff, h->n_embd};
    const double cols[7] = {h->n_embd, h->n_embd, h->n_embd, qd, h->n_embd, h->n_embd, h->n_ff};
    *ternary = *dense = 0;
    for (int i = 0; i < 7; i++) {
        *ternary += rows[i] * (ceil(cols[i] / 256.0) * 64.0 + 4.0) * h->n_layer;
        *dense += rows[i] * cols[i] * 2.0 * h->n_layer;
    }
}

/* One engine: a warm-up pass, then reps prefill passes of pp tokens from position 0, and reps
 * rounds of tg decode steps from position 1 + depth, each phase with the profiling totals reset
 * first. The runtime records a profiling event per launch and waits for it, so launches do not
 * overlap and the wall time minus the device time is the host's share between launches. */
static b158_status profile_engine(const options *o, b158_runtime *rt, b158_model *m,
                                  b158_weight_mode mode, const b158_token *tok, prof_engine *pe)
{
    const b158_model_info *h = b158_model_get_info(m);
    const int n_ctx = (o->pp > o->depth ? o->pp : o->depth) + o->tg + 1;
    b158_status st = check_fits(rt, h, mode, n_ctx, o->pp);
    if (st != B158_OK)
        return st;
    pe->engine = mode == B158_WEIGHTS_TERNARY ? "b1.58" : "fp16";
    pe->decode = (prof_phase){.phase = "decode", .tokens_per_step = 1};
    pe->prefill = (prof_phase){.phase = "prefill", .tokens_per_step = o->pp};
    double tern, dense;
    layer_bytes(h, &tern, &dense);
    const double head = (double)h->n_vocab * h->n_embd * 2.0;
    prof_phase *ph[2] = {&pe->prefill, &pe->decode};
    for (int i = 0; i < 2; i++) {
        ph[i]->bytes[FAM_TERNARY] = mode == B158_WEIGHTS_TERNARY ? tern : 0;
        ph[i]->bytes[FAM_FP16] = head + (mode == B158_WEIGHTS_TERNARY ? 0 : dense);
    }
    /* decode at positions 1 + depth .. depth + tg reads the K and V rows of positions 0..pos */
    const double kv_row = 2.0 * h->n_layer * h->n_head_kv * h->head_dim * 2.0;
    pe->decode.bytes[FAM_ATTENTION] = kv_row * (o->depth + (o->tg + 3) / 2.0);

    b158_session *s = NULL;
    st = b158_model_upload_as(m, rt, mode);
    b158_session_params sp = b158_session_default_params();
    sp.rt = rt;
    sp.n_ctx = n_ctx;
    sp.n_batch = o->pp;
    if (st == B158_OK)
        st = b158_session_create(m, &sp, &s);
    if (st == B158_OK) /* warm-up: first launches and first touches of the weights */
        st = b158_session_eval(s, tok, o->pp);
    for (int i = 0; st == B158_OK && i < 2; i++) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, 1);
        if (st == B158_OK)
            st = b158_session_eval(s, &tok[1 % o->pp], 1);
    }
    if (st == B158_OK && b158_bench_bandwidth_measure(rt, 9, &pe->prefill.bw))
        st = fail(B158_ERR_OPENCL, "measuring the copy bandwidth: %s", b158_last_error());
    for (int rep = 0; st == B158_OK && rep < o->reps; rep++) {
        b158_session_reset(s);
        b158_runtime_kernel_stats_reset(rt);
        const double t0 = now_s();
        st = b158_session_eval(s, tok, o->pp);
        pe->prefill.wall_s += now_s() - t0;
        pe->prefill.steps++;
        prof_add(rt, &pe->prefill);
    }
    if (st == B158_OK && b158_bench_bandwidth_measure(rt, 9, &pe->decode.bw))
        st = fail(B158_ERR_OPENCL, "measuring the copy bandwidth: %s", b158_last_error());
    for (int rep = 0; st == B158_OK && rep < o->reps; rep++) {
        b158_session_reset(s);
        st = b158_session_eval(s, tok, 1 + o->depth);
        b158_runtime_kernel_stats_reset(rt);
        b158_session_stage_reset(s);
        const double t0 = now_s();
        for (int i = 0; st == B158_OK && i < o->tg; i++)
            st = b158_session_eval(s, &tok[(i + 1) % o->pp], 1);
        pe->decode.wall_s += now_s() - t0;
        pe->decode.steps += o->tg;
        prof_add(rt, &pe->decode);
        stage_add(s, &pe->decode);
    }
    b158_session_free(s);
    b158_model_unload(m);
    return st;
}

/* Per step: device ms of each family and of all, launches, wall and host ms. */
typedef struct {
    double ms[FAM_COUNT], launches[FAM_COUNT], dev_ms, all_launches, wall_ms, host_ms;
} prof_sums;

static prof_sums prof_sum(const prof_phase *ph)
{
    prof_sums r = {{0}, {0}, 0, 0, 0, 0};
    for (size_t i = 0; i < ph->n_k; i++) {
        const int f = family_of(ph->k[i].name);
        r.ms[f] += ph->k[i].total_ns * 1e-6 / ph->steps;
        r.launches[f] += (double)ph->k[i].launches / ph->steps;
    }
    for (int f = 0; f < FAM_COUNT; f++)
        r.dev_ms += r.ms[f], r.all_launches += r.launches[f];
    r.wall_ms = ph->wall_s * 1e3 / ph->steps;
    r.host_ms = r.wall_ms - r.dev_ms;
    return r;
}

/* The profiling totals in a phase of the kernel its stage profile timed from the inside, the
 * fused decode layer or the GEMV chain (NULL: it did not run) */
static const b158_kernel_stats *fused_stats(const prof_phase *ph)
{
    for (size_t k = 0; k < ph->n_k; k++)
        if (ph->stage.chain ? !strncmp(ph->k[k].name, "ternary_gemv_chain", 18)
                            : !strcmp(ph->k[k].name, "ternary_decode_layer"))
            return &ph->k[k];
    return NULL;
}

/* The parts of a stage profile */
static int stage_parts(const b158_stage_profile *p)
{
    return p->chain ? B158_CHAIN_PARTS : B158_STAGE_PARTS;
}

/* Nanoseconds per tick of a stage profile's clock: 1 where it counts nanoseconds, else the
 * fused kernel's profiling-event time over the timestamps' span (0: neither known). */
static double stage_ns_per_tick(const prof_phase *ph)
{
    const b158_kernel_stats *k = fused_stats(ph);
    if (ph->stage.clock_ns)
        return 1.0;
    return k && ph->stage.span > 0 ? (double)k->total_ns / ph->stage.span : 0.0;
}

/* The fused decode layer from the inside: each part's time per block (mean, fastest and
 * slowest group), the launch's span and the gap between launches; or the GEMV chain's: each
 * stage's critical path (and its fastest and slowest job's own share) */
static void print_stage_md(const prof_phase *ph)
{
    const b158_stage_profile *p = &ph->stage;
    const double ns = stage_ns_per_tick(ph);
    if (!p->blocks || ns <= 0)
        return;
    const double us = ns * 1e-3 / (double)p->blocks;
    const b158_kernel_stats *k = fused_stats(ph);
    const double event_us = k ? k->total_ns * 1e-3 / (double)k->launches : 0.0;
    printf("\n%s, inside one launch (%d %s; timestamps of each %s first work-item, %s; %llu "
           "launches): us per launch\n\n",
           p->chain ? "GEMV chain" : "fused decode layer", p->groups,
           p->chain ? "jobs" : "work-groups", p->chain ? "job's" : "group's",
           p->clock_ns ? "device clock in ns" : "device ticks scaled to the event time",
           (unsigned long long)p->blocks);
    printf(p->chain ? "| part | critical path | fastest job | slowest job |\n|---|---:|---:|---:|\n"
                    : "| part | mean | fastest group | slowest group |\n|---|---:|---:|---:|\n");
    double total = 0;
    for (int i = 0; i < stage_parts(p); i++) {
        printf("| %s | %.2f | %.2f | %.2f |\n", b158_stage_part_name(p->chain, i), p->mean[i] * us,
               p->min[i] * us, p->max[i] * us);
        total += p->mean[i] * us;
    }
    printf("| all parts | %.2f | | |\n| first start to last end | %.2f | | |\n", total,
           p->span * us);
    printf("| profiling event of the launch | %.2f | | |\n", event_us);
    if (p->gaps)
        printf("| gap to the next launch | %.2f | | |\n", p->gap * ns * 1e-3 / (double)p->gaps);
}

/* A phase's device time by site of the forward pass (a site: one part of a block, or the
 * embedding, final norm, LM head; one or more kernels a launch) */
static void print_sites_md(const prof_phase *ph, double dev_ms)
{
    if (!ph->n_site)
        return;
    printf("\n%s by site (device time of each site's launches):\n\n| site | launches/step | us "
           "per launch | ms/step | %% of device |\n|---|---:|---:|---:|---:|\n",
           ph->phase);
    for (size_t i = 0; i < ph->n_site; i++) {
        const b158_kernel_stats *k = &ph->site[i];
        const double ms = k->total_ns * 1e-6 / ph->steps;
        printf("| ");
        for (const char *c = k->name; *c; c++) { /* "q|k|v" in a table cell */
            if (*c == '|')
                putchar('\\');
            putchar(*c);
        }
        printf(" | %.1f | %.2f | %.3f | %.1f%% |\n", (double)k->launches / ph->steps,
               k->launches ? k->total_ns * 1e-3 / (double)k->launches : 0.0, ms,
               dev_ms > 0 ? 100.0 * ms / dev_ms : 0.0);
    }
}

static void print_profile_md(const char *model, const prof_engine *pe)
{
    const prof_phase *ph[2] = {&pe->decode, &pe->prefill};
    for (int i = 0; i < 2; i++) {
        const prof_sums r = prof_sum(ph[i]);
        const double copy_gbs = ph[i]->bw.copy_gbs;
        printf("\n%s, %s engine, %s: %s; %.1f ms wall per step (%.1f tokens/s), mean of %d "
               "steps; copy bandwidth just before: %.1f GB/s (clEnqueueCopyBuffer %.1f, copy "
               "kernel %.1f)\n\n",
               model, pe->engine, ph[i]->phase,
               i ? "one pass over the prompt from position 0" : "one token per step", r.wall_ms,
               ph[i]->tokens_per_step * 1e3 / r.wall_ms, ph[i]->steps, copy_gbs,
               ph[i]->bw.copy_api_gbs, ph[i]->bw.copy_kernel_gbs);
        printf("| part | kernels (ms/step) | launches/step | ms/step | %% of device | %% of wall "
               "| GB/s | %% of copy |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
        for (int f = 0; f < FAM_COUNT; f++) {
            if (!r.launches[f])
                continue;
            printf("| %s | ", family_names[f]);
            for (size_t k = 0, n = 0; k < ph[i]->n_k; k++)
                if (family_of(ph[i]->k[k].name) == f)
                    printf("%s%s %.2f", n++ ? ", " : "", ph[i]->k[k].name,
                           ph[i]->k[k].total_ns * 1e-6 / ph[i]->steps);
            printf(" | %.1f | %.2f | %.1f%% | %.1f%% |", r.launches[f], r.ms[f],
                   100.0 * r.ms[f] / r.dev_ms, 100.0 * r.ms[f] / r.wall_ms);
            const double gbs = ph[i]->bytes[f] / (r.ms[f] * 1e6);
            if (ph[i]->bytes[f] > 0 && r.ms[f] > 0)
                printf(" %.1f | %.0f%% |\n", gbs, 100.0 * gbs / copy_gbs);
            else
                printf(" - | - |\n");
        }
        printf("| device, all parts | | %.1f | %.2f | 100%% | %.1f%% | | |\n", r.all_launches,
               r.dev_ms, 100.0 * r.dev_ms / r.wall_ms);
        printf("| host between launches | wall - device | %.1f | %.2f | | %.1f%% | | |\n",
               r.all_launches, r.host_ms, 100.0 * r.host_ms / r.wall_ms);
        printf("\nhost time between launches: %.1f us per launch\n",
               r.all_launches > 0 ? 1e3 * r.host_ms / r.all_launches : 0.0);
        print_sites_md(ph[i], r.dev_ms);
        print_stage_md(ph[i]);
    }
}

static void print_profile_json(const prof_engine *pe)
{
    const prof_phase *ph[2] = {&pe->decode, &pe->prefill};
    printf("{\"engine\": \"%s\", \"phases\": [", pe->engine);
    for (int i = 0; i < 2; i++) {
        const prof_sums r = prof_sum(ph[i]);
        const double copy_gbs = ph[i]->bw.copy_gbs;
        printf(
            "%s\n    {\"phase\": \"%s\", \"steps\": %d, \"tokens_per_step\": %d, "
            "\"wall_ms_per_step\": %.4f, \"device_ms_per_step\": %.4f, \"host_ms_per_step\": "
            "%.4f, \"launches_per_step\": %.2f, \"host_us_per_launch\": %.3f, \"copy_gbs\": %.2f, "
            "\"copy_api_gbs\": %.2f, \"copy_kernel_gbs\": %.2f, \"families\": [",
            i ? "," : "", ph[i]->phase, ph[i]->steps, ph[i]->tokens_per_step, r.wall_ms, r.dev_ms,
            r.host_ms, r.all_launches, r.all_launches > 0 ? 1e3 * r.host_ms / r.all_launches : 0.0,
            copy_gbs, ph[i]->bw.copy_api_gbs, ph[i]->bw.copy_kernel_gbs);
        for (int f = 0, n = 0; f < FAM_COUNT; f++) {
            if (!r.launches[f])
                continue;
            const double gbs =
                ph[i]->bytes[f] > 0 && r.ms[f] > 0 ? ph[i]->bytes[f] / (r.ms[f] * 1e6) : 0.0;
            printf("%s{\"family\": \"%s\", \"launches_per_step\": %.2f, \"ms_per_step\": %.4f, "
                   "\"device_share\": %.4f, \"bytes_per_step\": %.0f, \"gbs\": %.2f, "
                   "\"copy_fraction\": %.4f}",
                   n++ ? ", " : "", family_names[f], r.launches[f], r.ms[f], r.ms[f] / r.dev_ms,
                   ph[i]->bytes[f], gbs, copy_gbs > 0 ? gbs / copy_gbs : 0.0);
        }
        printf("], \"kernels\": [");
        for (size_t k = 0; k < ph[i]->n_k; k++)
            printf("%s{\"name\": \"%s\", \"family\": \"%s\", \"launches_per_step\": %.2f, "
                   "\"ms_per_step\": %.4f}",
                   k ? ", " : "", ph[i]->k[k].name, family_names[family_of(ph[i]->k[k].name)],
                   (double)ph[i]->k[k].launches / ph[i]->steps,
                   ph[i]->k[k].total_ns * 1e-6 / ph[i]->steps);
        printf("], \"sites\": [");
        for (size_t k = 0; k < ph[i]->n_site; k++)
            printf("%s{\"site\": \"%s\", \"launches_per_step\": %.2f, \"ms_per_step\": %.4f}",
                   k ? ", " : "", ph[i]->site[k].name,
                   (double)ph[i]->site[k].launches / ph[i]->steps,
                   ph[i]->site[k].total_ns * 1e-6 / ph[i]->steps);
        printf("]");
        const b158_stage_profile *p = &ph[i]->stage;
        const double ns = stage_ns_per_tick(ph[i]);
        if (p->blocks && ns > 0) {
            const double us = ns * 1e-3 / (double)p->blocks;
            printf(", \"%s\": {\"groups\": %d, \"launches\": %llu, \"clock_ns\": %d, "
                   "\"span_us\": %.3f, \"gap_us\": %.3f, \"parts\": [",
                   p->chain ? "gemv_chain" : "fused_layer", p->groups,
                   (unsigned long long)p->blocks, p->clock_ns, p->span * us,
                   p->gaps ? p->gap * ns * 1e-3 / (double)p->gaps : 0.0);
            for (int j = 0; j < stage_parts(p); j++)
                printf("%s{\"part\": \"%s\", \"mean_us\": %.3f, \"min_us\": %.3f, "
                       "\"max_us\": %.3f}",
                       j ? ", " : "", b158_stage_part_name(p->chain, j), p->mean[j] * us,
                       p->min[j] * us, p->max[j] * us);
            printf("]}");
        }
        printf("}");
    }
    printf("]}");
}

/* A model by name: a GGUF file with -m, else a preset shape with random weights. */
static b158_status open_model(const options *o, const char *name, b158_model **m)
{
    b158_model_info h;
    if (o->model)
        return b158_model_load(name, m);
    if (b158_bench_shape_of(name, &h))
        return fail(B158_ERR_INVALID_ARG, "unknown preset '%s'", name);
    return b158_model_random(&h, 1, m);
}

static int run_profile(const options *o)
{
    b158_runtime_params rp = b158_runtime_default_params();
    rp.device = o->device;
    rp.variant = o->variant;
    rp.profile = 1;
    b158_runtime *rt = NULL;
    if (b158_runtime_create(&rp, &rt) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    const b158_device_info *d = b158_runtime_device(rt);
    const int blas = (!strcmp(o->fp16, "clblast") ||
                      (!strcmp(o->fp16, "auto") &&
                       b158_weight_mode_check(rt, B158_WEIGHTS_FP16_CLBLAST) == B158_OK));
    const b158_weight_mode fp16_mode = blas ? B158_WEIGHTS_FP16_CLBLAST : B158_WEIGHTS_FP16;
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    const int md = !strcmp(o->format, "md");
    if (md)
        printf("device: %s (%s, driver %s), b158-cl %s, %s\n"
               "profile: pp %d (one prefill pass) and tg %d (decode steps from position %d), %d "
               "repetitions; device times from profiling events, launches serialized\n"
               "GB/s = bytes the part must move per step (weights; decode attention: the K and V "
               "rows it reads) / its device time; copy bandwidth = read + written bytes of a "
               "256 MiB copy, the better of clEnqueueCopyBuffer and a copy kernel, median of 9, "
               "measured right before each phase\n",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date, o->pp, o->tg,
               1 + o->depth, o->reps);
    else
        printf("{\"device\": \"%s\", \"platform\": \"%s\", \"driver\": \"%s\", \"build\": \"%s\", "
               "\"date\": \"%s\", \"pp\": %d, \"tg\": %d, \"depth\": %d, \"reps\": %d, "
               "\"models\": [",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date, o->pp, o->tg, o->depth,
               o->reps);
    char list[512];
    snprintf(list, sizeof list, "%s", o->model ? o->model : o->preset);
    int rc = 0;
    char *save = NULL;
    for (char *name = o->model ? list : strtok_r(list, ",", &save); name && !rc;
         name = o->model ? NULL : strtok_r(NULL, ",", &save)) {
        b158_model *m = NULL;
        const int n_tok = o->pp > o->depth + 1 ? o->pp : o->depth + 1;
        b158_token *tok = malloc((size_t)n_tok * sizeof *tok);
        b158_status st =
            tok ? open_model(o, name, &m) : fail(B158_ERR_HOST_MEMORY, "out of memory");
        const b158_weight_mode modes[2] = {B158_WEIGHTS_TERNARY, fp16_mode};
        const int ran[2] = {strcmp(o->engine, "fp16") != 0, strcmp(o->engine, "b158") != 0};
        if (!md && st == B158_OK)
            printf("%s\n  {\"name\": \"%s\", \"engines\": [", name == list ? "" : ",", name);
        for (int i = 0, n = 0; st == B158_OK && i < 2; i++) {
            if (!ran[i])
                continue;
            const b158_model_info *h = b158_model_get_info(m);
            for (int t = 0; t < n_tok; t++)
                tok[t] = (b158_token)((t * 7919u + 13u) % (unsigned)h->n_vocab);
            prof_engine pe;
            st = profile_engine(o, rt, m, modes[i], tok, &pe);
            if (st == B158_OK && md)
                print_profile_md(name, &pe);
            else if (st == B158_OK) {
                printf("%s\n    ", n++ ? "," : "");
                print_profile_json(&pe);
            }
        }
        if (!md && st == B158_OK)
            printf("]}");
        fflush(stdout);
        b158_model_free(m);
        free(tok);
        if (st != B158_OK) {
            fprintf(stderr, "error: %s: %s\n", name, last_error());
            rc = 1;
        }
    }
    if (!md)
        printf("\n]}\n");
    b158_runtime_free(rt);
    return rc;
}

static int run_models(const options *o)
{
    b158_runtime_params rp = b158_runtime_default_params();
    rp.device = o->device;
    rp.variant = o->variant;
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
    const int both = !strcmp(o->engine, "both");
    if (!strcmp(o->format, "md") && !both)
        printf("device: %s (%s, driver %s), b158-cl %s, %s\n"
               "engine: %s%s\n"
               "pp %d / tg %d tokens%s after %d of context, mean of %d repetitions; memory = "
               "device bytes allocated (weights + KV cache + scratch)\n\n"
               "| model | engine | memory GB | latency ms/token | tg tokens/s | pp tokens/s |\n"
               "|---|---|---:|---:|---:|---:|\n",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date,
               strcmp(o->engine, "b158") ? "FP16 baseline, matmuls: " : "b1.58 (ternary)",
               strcmp(o->engine, "b158") ? fp16_path : "", o->pp, o->tg, greedy_note(o),
               1 + o->depth, o->reps);
    else if (!strcmp(o->format, "md"))
        printf("device: %s (%s, driver %s), b158-cl %s, %s\n"
               "FP16 baseline matmuls: %s%s\n"
               "pp %d / tg %d tokens%s after %d of context, mean of %d repetitions; memory = "
               "device bytes allocated (weights + KV cache + scratch)\n\n"
               "| model | memory GB FP16 | b1.58 | ratio | latency ms/token FP16 | b1.58 | ratio "
               "| pp tokens/s FP16 | b1.58 | greedy |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date, fp16_path,
               blas && d->is_cpu ? " (on CPU devices CLBlast's FP16 kernels measure far slower "
                                   "than b158-cl's FP16-storage kernels: --fp16 kernels is the "
                                   "stronger baseline)"
                                 : "",
               o->pp, o->tg, greedy_note(o), 1 + o->depth, o->reps);
    else if (!strcmp(o->format, "csv"))
        printf(
            "model,device,driver,build,date,pp,tg,depth,reps,engine,pp_tokens_per_s,pp_std,"
            "tg_ms_per_token,tg_std,mem_weights,mem_kv_cache,mem_scratch,greedy_match,tg_steps\n");
    else
        printf("{\"device\": \"%s\", \"platform\": \"%s\", \"driver\": \"%s\", \"build\": \"%s\", "
               "\"date\": \"%s\", \"engine\": \"%s\", \"fp16_matmul\": \"%s\", \"fp16_path\": "
               "\"%s\", \"pp\": %d, "
               "\"tg\": %d, \"depth\": %d, \"reps\": %d, \"tg_steps\": \"%s\", "
               "\"models\": [",
               d->name, d->platform, d->driver, B158_VERSION_STRING, date, o->engine,
               blas ? "clblast" : "kernels", fp16_path, o->pp, o->tg, o->depth, o->reps,
               tg_kind(o));
    char list[512];
    snprintf(list, sizeof list, "%s", o->model ? o->model : o->preset);
    int rc = 0, first = 1;
    char *save = NULL;
    for (char *name = o->model ? list : strtok_r(list, ",", &save); name && !rc;
         name = o->model ? NULL : strtok_r(NULL, ",", &save)) {
        b158_model *m = NULL;
        b158_status st = open_model(o, name, &m);
        model_result r;
        if (st == B158_OK)
            st = bench_model(o, rt, fp16_mode, name, m, &r);
        b158_model_free(m);
        if (st != B158_OK) {
            fprintf(stderr, "error: %s: %s\n", name, last_error());
            rc = 1;
            break;
        }
        const engine_result *e[2] = {&r.fp16, &r.tern};
        const int ran[2] = {strcmp(o->engine, "b158") != 0, strcmp(o->engine, "fp16") != 0};
        for (int i = 0; i < 2; i++)
            if (ran[i])
                fprintf(stderr,
                        "%s: %s setup apart from the timings: upload %.2f s, session and kernel "
                        "builds %.2f s, first pp %.2f s; tg: %.1f kernel launches and %.3f "
                        "ms of host time inside kernel enqueues a token\n",
                        r.name, i ? "b1.58" : "FP16", e[i]->upload, e[i]->compile, e[i]->first_pp,
                        e[i]->tg_launches, e[i]->tg_enqueue);
        if (!strcmp(o->format, "md")) {
            if (both)
                print_md_row(&r);
            else
                print_md_single_row(o, &r);
        } else if (!strcmp(o->format, "csv")) {
            for (int i = 0; i < 2; i++)
                if (ran[i])
                    printf(
                        "%s,%s,%s,%s,%s,%d,%d,%d,%d,%s,%.3f,%.3f,%.3f,%.3f,%llu,%llu,%llu,%d,%s\n",
                        r.name, d->name, d->driver, B158_VERSION_STRING, date, o->pp, o->tg,
                        o->depth, o->reps, i ? "b1.58" : "fp16", e[i]->pp_mean, e[i]->pp_sd,
                        e[i]->tg_mean, e[i]->tg_sd, (unsigned long long)e[i]->mem_w,
                        (unsigned long long)e[i]->mem_kv, (unsigned long long)e[i]->mem_s,
                        r.greedy_match, tg_kind(o));
        } else {
            printf("%s\n  {\"name\": \"%s\"", first ? "" : ",", r.name);
            for (int i = 0; i < 2; i++)
                if (ran[i]) {
                    printf(", ");
                    print_engine_json(i ? "ternary" : "fp16", e[i]);
                }
            if (both)
                printf(", \"memory_ratio\": %.4f, \"latency_ratio\": %.4f, "
                       "\"greedy_same_tokens\": %d, \"greedy_tokens\": %d, \"logits_nerr\": %.3e",
                       total_gb(&r.fp16) / total_gb(&r.tern), r.fp16.tg_mean / r.tern.tg_mean,
                       r.greedy_match, N_GREEDY, r.logit_nerr);
            printf("}");
        }
        first = 0;
    }
    if (!strcmp(o->format, "json"))
        printf("\n], \"host_peak_rss_bytes\": %llu}\n", host_peak_rss());
    else if (!strcmp(o->format, "md") && !rc && !both)
        printf("\nhost peak RSS: %.2f GB\n", host_peak_rss() / 1e9);
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
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--kernels") == 0)
            return run_sibling("b158-cl-kernel-bench", "--kernels", argv);
        else if (strcmp(argv[i], "--throughput") == 0)
            return run_sibling("b158-cl-throughput-bench", "--throughput", argv);
    options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    return o.profile ? run_profile(&o) : run_models(&o);
}
