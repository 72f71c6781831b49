/* b158-cl-throughput-bench: the paper's throughput table (BitNet b1.58 Table 3) on one device.
 * For a device-memory budget and a context length per sequence, the largest batch of
 * sequences each engine (FP16 baseline, ternary) fits beside its weights, and the aggregate
 * decode tokens/s of that batch through the batch API. Public API only; b158-cl-bench
 * --throughput runs it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b158/model.h"
#include "bench-common.h"

typedef struct {
    const char *device, *model, *preset, *format, *fp16;
    double budget_gib; /* 0 = half the device's global memory */
    int n_ctx;         /* context of each sequence */
    int n_prompt;      /* prompt tokens per sequence before the timed steps */
    int n_steps;       /* timed decode steps */
    int max_batch;     /* 0 = no cap beyond memory */
} options;

/* One engine on one model. Bytes from the runtime's allocation counter. */
typedef struct {
    uint64_t weights;       /* the uploaded model */
    uint64_t base, per_seq; /* a session of k sequences (n_batch = k): base + k * per_seq */
    int max_batch;          /* largest batch within the budget */
    const char *bound;      /* what stops the batch from growing */
    int batch;              /* the batch timed (max_batch unless capped) */
    uint64_t total;         /* device bytes while the timed batch ran */
    double tokens_s, ms_step;
} engine_result;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: b158-cl-bench --throughput -m MODEL.gguf | --preset 700M,2B-4T,... [options]\n"
            "  -m FILE              a GGUF model\n"
            "  --preset LIST        random models of published shapes (see b158-cl-bench -h)\n"
            "  --budget GIB         device memory for weights, KV cache and scratch (default:\n"
            "                       half the device's global memory)\n"
            "  -c, --ctx-size N     context of every sequence, reserved in full (default 512)\n"
            "  -p N                 prompt tokens of each sequence before timing (default 8)\n"
            "  -n N                 decode steps timed, one token per sequence each (default 8)\n"
            "  --max-batch N        time at most N sequences (default: the largest that fits)\n"
            "  --device SEL         device index or name substring\n"
            "  --fp16 auto|clblast|kernels   FP16 baseline matmuls (as b158-cl-bench)\n"
            "  -o md|json|csv       output format (default md)\n"
            "Each engine gets the budget alone: weights, then as many sequences as fit, each\n"
            "with its own n_ctx of KV cache. The paper's Table 3 (70B on two A100 80GB): LLaMA\n"
            "batch 16, 333 tokens/s; BitNet b1.58 batch 176 (11x), 2977 tokens/s (8.9x).\n");
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){NULL, NULL, NULL, "md", "auto", 0.0, 512, 8, 8, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (strcmp(a, "--throughput") == 0) {
            used = 0; /* b158-cl-bench --throughput passes its arguments on */
        } else if (strcmp(a, "-m") == 0 && v) {
            o->model = v;
        } else if (strcmp(a, "--preset") == 0 && v) {
            o->preset = v;
        } else if (strcmp(a, "--budget") == 0 && v) {
            o->budget_gib = atof(v);
            if (!(o->budget_gib > 0 && o->budget_gib < 1 << 20))
                return fprintf(stderr, "error: --budget wants GiB > 0\n"), 2;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0) && v) {
            o->n_ctx = atoi(v);
        } else if (strcmp(a, "-p") == 0 && v) {
            o->n_prompt = atoi(v);
        } else if (strcmp(a, "-n") == 0 && v) {
            o->n_steps = atoi(v);
        } else if (strcmp(a, "--max-batch") == 0 && v) {
            o->max_batch = atoi(v);
        } else if (strcmp(a, "--device") == 0 && v) {
            o->device = v;
        } else if (strcmp(a, "--fp16") == 0 && v) {
            o->fp16 = v;
        } else if (strcmp(a, "-o") == 0 && v) {
            o->format = v;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i += used;
    }
    if (!o->model == !o->preset)
        return fprintf(stderr, "error: choose one of -m FILE, --preset LIST\n"), 2;
    if (o->n_ctx < 2 || o->n_ctx > 1 << 20 || o->n_prompt < 1 || o->n_steps < 1 ||
        o->n_prompt + o->n_steps + 1 > o->n_ctx || o->max_batch < 0)
        return fprintf(stderr, "error: want 1 <= -p, 1 <= -n, -p + -n < -c, --max-batch >= 0\n"), 2;
    if (strcmp(o->format, "md") && strcmp(o->format, "json") && strcmp(o->format, "csv"))
        return fprintf(stderr, "error: -o md|json|csv\n"), 2;
    if (strcmp(o->fp16, "auto") && strcmp(o->fp16, "clblast") && strcmp(o->fp16, "kernels"))
        return fprintf(stderr, "error: --fp16 wants auto, clblast or kernels\n"), 2;
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static b158_session *open_session(b158_model *m, b158_runtime *rt, int n_ctx, int k,
                                  b158_status *st)
{
    b158_session_params p = b158_session_default_params();
    p.rt = rt, p.n_ctx = n_ctx, p.n_seq = k, p.n_batch = k;
    b158_session *s = NULL;
    *st = b158_session_create(m, &p, &s);
    return s;
}

/* Session bytes at k sequences, or 0 when it cannot be made (st says why). */
static uint64_t session_bytes(b158_model *m, b158_runtime *rt, int n_ctx, int k, b158_status *st)
{
    const uint64_t before = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    b158_session *s = open_session(m, rt, n_ctx, k, st);
    const uint64_t bytes = s ? b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT) - before : 0;
    b158_session_free(s);
    return bytes;
}

/* Every sequence gets n_prompt tokens in one decode call (steps of k tokens), then one
 * untimed step and n_steps timed ones of one token per sequence, the logits of every
 * sequence read back each step as a server would sample them. */
static b158_status time_batch(const options *o, b158_model *m, b158_runtime *rt, int k,
                              engine_result *r)
{
    const int nv = b158_model_get_info(m)->n_vocab;
    b158_status st;
    b158_session *s = open_session(m, rt, o->n_ctx, k, &st);
    if (!s)
        return st;
    r->total = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    const size_t n = (size_t)k * o->n_prompt;
    b158_token *tok = malloc(n * sizeof *tok);
    b158_seq_id *seq = malloc(n * sizeof *seq);
    if (!tok || !seq) {
        free(tok), free(seq), b158_session_free(s);
        return B158_ERR_HOST_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        seq[i] = (b158_seq_id)(i % (size_t)k);
        tok[i] = (b158_token)((i * 7919u + 13u) % (unsigned)nv);
    }
    st = b158_session_decode(s, &(b158_batch){(int)n, tok, seq, NULL, 0});
    double t0 = 0;
    for (int step = 0; step <= o->n_steps && st == B158_OK; step++) {
        if (step == 1)
            t0 = now_s();
        for (int q = 0; q < k; q++)
            tok[q] = (b158_token)(((unsigned)q * 31u + (unsigned)step * 7u + 5u) % (unsigned)nv);
        st = b158_session_decode(s, &(b158_batch){k, tok, seq, NULL, 0});
    }
    const double dt = now_s() - t0;
    r->batch = k;
    r->tokens_s = (double)k * o->n_steps / dt;
    r->ms_step = dt * 1e3 / o->n_steps;
    free(tok), free(seq);
    b158_session_free(s);
    return st;
}

static b158_status run_engine(const options *o, b158_model *m, b158_runtime *rt,
                              b158_weight_mode mode, uint64_t budget, engine_result *r)
{
    memset(r, 0, sizeof *r);
    const uint64_t w0 = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT);
    b158_status st = b158_model_upload_as(m, rt, mode);
    if (st != B158_OK)
        return st;
    r->weights = b158_runtime_mem_bytes(rt, B158_MEM_CATEGORY_COUNT) - w0;
    /* sessions grow linearly with k (KV slots, scratch rows, logits rows): two probes give
     * the line, and the batch that fits is checked against the counter before timing */
    const uint64_t b1 = session_bytes(m, rt, o->n_ctx, 1, &st);
    const uint64_t b2 = b1 ? session_bytes(m, rt, o->n_ctx, 2, &st) : 0;
    if (!b1 || !b2)
        return st;
    r->per_seq = b2 - b1;
    r->base = b1 > r->per_seq ? b1 - r->per_seq : 0;
    if (r->weights + r->base + r->per_seq > budget) {
        r->bound = "weights";
        return B158_OK; /* not even one sequence fits */
    }
    int k = (int)((budget - r->weights - r->base) / r->per_seq);
    r->bound = "memory";
    /* the engine's own limits: KV cache elements per tensor (int32 offsets), one device
     * allocation per cache tensor */
    const b158_model_info *h = b158_model_get_info(m);
    const uint64_t kv_elems = (uint64_t)h->n_layer * o->n_ctx * h->n_head_kv * h->head_dim;
    const uint64_t max_alloc = b158_runtime_device(rt)->max_alloc;
    if ((uint64_t)k * kv_elems > (uint64_t)INT32_MAX) {
        k = (int)((uint64_t)INT32_MAX / kv_elems);
        r->bound = "KV index (2^31 elements per cache tensor)";
    }
    if ((uint64_t)k * kv_elems * 2 > max_alloc) {
        k = (int)(max_alloc / (kv_elems * 2));
        r->bound = "device max allocation";
    }
    r->max_batch = k;
    if (k < 1)
        return B158_OK;
    if (o->max_batch && k > o->max_batch)
        k = o->max_batch;
    st = time_batch(o, m, rt, k, r);
    if (st == B158_OK && r->total - w0 > budget && k == r->max_batch)
        fprintf(stderr, "warning: %d sequences took %.3f GiB, past the budget's %.3f\n", k,
                (r->total - w0) / 1073741824.0, budget / 1073741824.0);
    return st;
}

static b158_status load(const options *o, const char *name, b158_model **m)
{
    if (o->model)
        return b158_model_load(o->model, m);
    b158_model_info h;
    if (b158_bench_shape_of(name, &h))
        return B158_ERR_INVALID_ARG;
    return b158_model_random(&h, 1, m);
}

typedef struct {
    char name[128];
    engine_result e[2]; /* FP16 baseline, ternary */
} model_result;

/* a / b as a table cell ("2.50x"), or as a JSON number; "-" and null where b is 0 (the FP16
 * baseline fitted no sequence in the budget: no ratio to give) */
static const char *ratio(double a, double b, int json, char *buf, size_t size)
{
    if (b > 0)
        snprintf(buf, size, json ? "%.4f" : "%.2fx", a / b);
    else
        snprintf(buf, size, "%s", json ? "null" : "-");
    return buf;
}

static void print_md(const options *o, const model_result *r, int n, const char *device,
                     double budget_gib, const char *fp16_path)
{
    printf("device: %s; budget %.2f GiB per engine; context %d tokens per sequence, reserved in "
           "full; decode after a %d-token prompt, %d steps timed; FP16 baseline: %s\n\n",
           device, budget_gib, o->n_ctx, o->n_prompt, o->n_steps, fp16_path);
    printf("| model | engine | weights GiB | MiB per sequence | max batch | bound by | batch timed "
           "| tokens/s | ms/step |\n|---|---|---:|---:|---:|---|---:|---:|---:|\n");
    for (int i = 0; i < n; i++)
        for (int e = 0; e < 2; e++) {
            const engine_result *x = &r[i].e[e];
            printf("| %s | %s | %.2f | %.1f | %d | %s | %d | %.1f | %.0f |\n", r[i].name,
                   e ? "b1.58 (ternary)" : "FP16", x->weights / 1073741824.0,
                   x->per_seq / 1048576.0, x->max_batch, x->bound ? x->bound : "-", x->batch,
                   x->tokens_s, x->ms_step);
        }
    printf("\n| model | batch ratio | throughput ratio |\n|---|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        char b[32], t[32];
        printf("| %s | %s | %s |\n", r[i].name,
               ratio(r[i].e[1].max_batch, r[i].e[0].max_batch, 0, b, sizeof b),
               ratio(r[i].e[1].tokens_s, r[i].e[0].tokens_s, 0, t, sizeof t));
    }
    printf("| paper, 70B on 2x A100 80GB (LLaMA 16 / 333 tok/s, BitNet b1.58 176 / 2977 tok/s) "
           "| 11x | 8.9x |\n");
}

static void print_json(const options *o, const model_result *r, int n, const char *device,
                       double budget_gib)
{
    printf("{\"device\": \"%s\", \"budget_gib\": %.3f, \"n_ctx\": %d, \"n_prompt\": %d, "
           "\"n_steps\": %d, \"models\": [",
           device, budget_gib, o->n_ctx, o->n_prompt, o->n_steps);
    for (int i = 0; i < n; i++) {
        printf("%s{\"model\": \"%s\"", i ? ", " : "", r[i].name);
        for (int e = 0; e < 2; e++) {
            const engine_result *x = &r[i].e[e];
            printf(", \"%s\": {\"weights_bytes\": %llu, \"bytes_per_seq\": %llu, "
                   "\"max_batch\": %d, \"bound\": \"%s\", \"batch\": %d, \"tokens_s\": %.3f, "
                   "\"ms_step\": %.3f}",
                   e ? "ternary" : "fp16", (unsigned long long)x->weights,
                   (unsigned long long)x->per_seq, x->max_batch, x->bound ? x->bound : "", x->batch,
                   x->tokens_s, x->ms_step);
        }
        char b[32], t[32];
        printf(", \"batch_ratio\": %s, \"throughput_ratio\": %s}",
               ratio(r[i].e[1].max_batch, r[i].e[0].max_batch, 1, b, sizeof b),
               ratio(r[i].e[1].tokens_s, r[i].e[0].tokens_s, 1, t, sizeof t));
    }
    printf("], \"paper_70b\": {\"batch_ratio\": 11, \"throughput_ratio\": 8.9}}\n");
}

static void print_csv(const model_result *r, int n)
{
    printf("model,engine,weights_bytes,bytes_per_seq,max_batch,bound,batch,tokens_s,ms_step\n");
    for (int i = 0; i < n; i++)
        for (int e = 0; e < 2; e++) {
            const engine_result *x = &r[i].e[e];
            printf("%s,%s,%llu,%llu,%d,\"%s\",%d,%.3f,%.3f\n", r[i].name, e ? "ternary" : "fp16",
                   (unsigned long long)x->weights, (unsigned long long)x->per_seq, x->max_batch,
                   x->bound ? x->bound : "", x->batch, x->tokens_s, x->ms_step);
        }
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    b158_runtime_params rp = b158_runtime_default_params();
    rp.device = o.device;
    b158_runtime *rt = NULL;
    if (b158_runtime_create(&rp, &rt) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    const b158_device_info *d = b158_runtime_device(rt);
    const int blas_ok = b158_weight_mode_check(rt, B158_WEIGHTS_FP16_CLBLAST) == B158_OK;
    const int blas = !strcmp(o.fp16, "clblast") || (!strcmp(o.fp16, "auto") && blas_ok);
    if (blas && !blas_ok) {
        fprintf(stderr, "error: --fp16 clblast: %s\n", b158_last_error());
        b158_runtime_free(rt);
        return 1;
    }
    const b158_weight_mode modes[2] = {blas ? B158_WEIGHTS_FP16_CLBLAST : B158_WEIGHTS_FP16,
                                       B158_WEIGHTS_TERNARY};
    const double budget_gib = o.budget_gib > 0 ? o.budget_gib : d->global_mem / 2.0 / 1073741824.0;
    const uint64_t budget = (uint64_t)(budget_gib * 1073741824.0);
    char list[1024];
    snprintf(list, sizeof list, "%s", o.model ? o.model : o.preset);
    model_result res[16];
    int n = 0;
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name && n < 16 && rc == 0;
         name = strtok_r(NULL, ",", &save)) {
        const char *base = strrchr(name, '/');
        snprintf(res[n].name, sizeof res[n].name, "%s", base ? base + 1 : name);
        for (int e = 0; e < 2 && rc == 0; e++) {
            b158_model *m = NULL;
            b158_status st = load(&o, name, &m);
            if (st == B158_OK)
                st = run_engine(&o, m, rt, modes[e], budget, &res[n].e[e]);
            if (st != B158_OK) {
                fprintf(stderr, "error: %s, %s engine: %s\n", name, e ? "ternary" : "FP16",
                        b158_last_error());
                rc = 1;
            }
            b158_model_free(m);
        }
        n++;
    }
    char device[512];
    snprintf(device, sizeof device, "%s (%s, driver %s), b158-cl %s", d->name, d->platform,
             d->driver, B158_VERSION_STRING);
    const char *fp16_path = blas ? "CLBlast" : "b158-cl FP16-storage kernels";
    if (rc == 0 && !strcmp(o.format, "md"))
        print_md(&o, res, n, device, budget_gib, fp16_path);
    else if (rc == 0 && !strcmp(o.format, "json"))
        print_json(&o, res, n, device, budget_gib);
    else if (rc == 0)
        print_csv(res, n);
    b158_runtime_free(rt);
    return rc;
}
