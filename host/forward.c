/* Sessions and the forward pass: the OpenCL path (GEMM kernels for steps of several tokens,
 * GEMV kernels for one, FP16 KV cache on the device) and the plain-C reference path, step for
 * step the same computation (REFERENCE.md s.1). A step may hold tokens of several sequences:
 * the matmuls read the weights once for all of them, and RoPE, the KV store and attention take
 * each token's position and its sequence's slot of the cache from a table of pairs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"
#include "ref.h"
#include "stage-profile.h"

/* Host scratch of the CPU reference path; shapes in comments ((rows, cols) row-major). */
struct cpu_state {
    float *x;          /* (n_batch, n_embd) residual stream */
    float *xn;         /* (n_batch, max(n_embd, qd, n_ff)) normed input of a BitLinear */
    float *q, *k, *v;  /* (n_batch, qd), (n_batch, kvd) x2 */
    float *att;        /* (n_batch, qd) */
    float *gate, *up;  /* (n_batch, n_ff) */
    int8_t *q8;        /* (n_batch, max width) int8 activations */
    float *s;          /* (n_batch) activation scales */
    uint16_t *k_cache; /* (n_layer, n_seq * n_ctx, kvd) FP16 */
    uint16_t *v_cache;
};

/* Device scratch of the OpenCL path, same shapes. */
struct dev_state {
    b158_buf ids, tok, x, xn, att, q8, s;
    b158_buf qkv;    /* (n_batch, qd + 2 kvd) [q | k | v] rows of the fused QKV matrix */
    b158_buf gu;     /* (n_batch, 2 n_ff) [gate | up] rows */
    b158_buf last;   /* (out_rows, n_embd) final-normed rows that asked for logits */
    b158_buf logits; /* (out_rows, n_vocab) */
    b158_buf k_cache, v_cache;
    b158_buf inv_freq;  /* (n_rot / 2) RoPE inverse frequencies */
    b158_buf counter;   /* one int32, zero between launches: the decode GEMVs' norm tail */
    b158_buf att_count; /* (n_batch) int32, zero between launches: attention's sub-norm tail */
    /* one-token steps' attention split over the keys (att_splits > 1): partial results, and
     * int32 counters per head kept at zero */
    b158_buf att_part, att_hcount;
    /* greedy steps' argmax of each logits row (out_rows): partial results, counters kept at
     * zero, the tokens */
    b158_buf amax_part, amax_count, amax_out;
    /* the fused decode layer's (where it runs): the residual between its stages, a quantized
     * input and scale per work-group, and int32 [error flag | 4 barrier counters per layer],
     * zeroed before each step; the GEMV chain's (where it runs) [error flag | 4 flags per
     * layer] in bar */
    b158_buf x2, q8g, qsg, bar;
    b158_buf stamps;    /* its timestamps (a stage clock: B158_STAMPS per group and block), or
                           the chain's (B158_CHAIN_STAMPS per job, chain_stride jobs a block) */
    b158_baseline base; /* the FP16 baseline's scratch, in its weight modes only */
};

struct b158_session {
    b158_model *m;
    b158_runtime *rt;
    int n_ctx, n_batch, all_logits, n_seq;
    int *seq_pos;   /* (n_seq) tokens each sequence holds */
    int *seq_count; /* (n_seq) scratch of decode: tokens per sequence in a batch, then the
                       batch index of each sequence's last token */
    int32_t *tok;   /* (n_batch, 2) {position, cache row of position 0} of a step's tokens */
    int *sel;       /* (n_batch) rows of a step that asked for logits */
    int last_n;     /* tokens in the last decode call */
    int last_out;   /* index of the last token of that call that asked for logits, or -1 */
    int *out_row;   /* (out_cap) row of logits of each token of the last call, or -1 */
    int out_cap;
    float *inv_freq; /* (n_rot / 2) RoPE inverse frequencies, both paths */
    float *logits;   /* (logits_rows, n_vocab) host copy of the rows asked for: in logits_pin
                        on a device (page-locked where the runtime gives it), else malloc'd */
    b158_host_mem logits_pin;
    int32_t *picks; /* (logits_rows) their argmax, in a greedy call */
    int greedy;     /* the last call was greedy: picks, no logits */
    int logits_rows;
    int out_rows;  /* rows of the device's LM head output buffer */
    int width_max; /* widest BitLinear input */
    /* the launches of a one-token step with its logits (a decode step), recorded on the first
     * such step of the ternary engine and run again for the others: no kernel argument is set
     * after that (PLAN_OFF where it could not be recorded); the same for a greedy step's
     * one-row argmax (dev_argmax) */
    b158_plan plan, argmax_plan;
    enum plan_state { PLAN_NONE, PLAN_READY, PLAN_OFF } plan_state, argmax_state;
    int att_splits;     /* most splits of the attention's keys in one-token steps; 1 = none */
    int att_split_keys; /* the fewest keys a step splits its attention over (step_splits) */
    int step_splits;    /* the splits of this step's attention */
    int plan_splits;    /* and those of the recorded plan's */
    int fused_groups;   /* work-groups of the fused decode layer; 0: one-token steps unfused */
    int chain;          /* one-token steps chain a block's GEMVs (b158_op_gemv_chain) */
    int chain_groups;   /* and their work-groups (0: one a block of rows) */
    int chain_jobs[B158_CHAIN_STAGES]; /* jobs of each stage of the last chain recorded */
    int chain_stride;                  /* jobs a block in dev.stamps (with a stage clock) */
    int32_t fused_err;                 /* the fused step's error flag, read back after it */
    /* greedy decoding ahead (spec_queue): with spec_on, a greedy step of sequence 0 queues the
     * one-token step after it, whose token is its own pick, copied on the device before the
     * host has read it; the next call runs that step if it asks for it (the same token at the
     * same position), else it is dropped. spec_slot's tok / pick / err are the queued step's
     * host memory (two, so that the step queued while one is taken has its own). Only a call's
     * last chunk (spec_final) queues one. */
    int spec_on, spec_here, spec_active, spec_pos, spec_slot, spec_final;
    b158_token spec_input; /* the queued step's token, once the host has read it */
    cl_event spec_done;    /* its pick's read */
    int32_t spec_tok[2][2], spec_pick[2], spec_err[2];
    uint64_t *stamps; /* host copy of dev.stamps, where the runtime has a stage clock */
    b158_stage_profile stage;
    struct cpu_state cpu;
    struct dev_state dev;
};

b158_session_params b158_session_default_params(void)
{
    return (b158_session_params){0, 0, 0, NULL, 0};
}

int b158_session_n_ctx(const b158_session *s)
{
    return s ? s->n_ctx : 0;
}

int b158_session_n_seq(const b158_session *s)
{
    return s ? s->n_seq : 0;
}

int b158_session_seq_pos(const b158_session *s, b158_seq_id seq)
{
    return s && seq >= 0 && seq < s->n_seq ? s->seq_pos[seq] : -1;
}

void b158_session_stage_profile(const b158_session *s, b158_stage_profile *out)
{
    *out = s ? s->stage : (b158_stage_profile){0};
    out->clock_ns = s && s->rt && s->rt->tune.stage_clock == 2;
}

void b158_session_stage_reset(b158_session *s)
{
    if (s)
        s->stage = (b158_stage_profile){0};
}

int b158_session_pos(const b158_session *s)
{
    return s ? s->seq_pos[0] : 0;
}

static b158_status fused_gave_up(b158_session *s);

/* Forgets the step queued ahead, once the device has done it (its cache row lies past the
 * sequence's end, never read; a step at that position writes it again). Where its chain or
 * fused layer gave up, the tails' shared counter is left wrong and the session stops using
 * them (fused_gave_up), as after a step of its own that gave up. */
static b158_status spec_drop(b158_session *s)
{
    if (!s->spec_active)
        return B158_OK;
    s->spec_active = 0;
    const b158_status st = b158_rt_finish(s->rt);
    clReleaseEvent(s->spec_done);
    B158_TRY(st);
    return s->spec_err[s->spec_slot] ? fused_gave_up(s) : B158_OK;
}

int b158_session_ahead(const b158_session *s)
{
    return s && s->spec_active;
}

int b158_session_planned(const b158_session *s)
{
    return s ? (s->plan_state == PLAN_READY) | (s->argmax_state == PLAN_READY) << 1 : 0;
}

b158_status b158_session_seq_clear(b158_session *s, b158_seq_id seq)
{
    if (!s || seq < 0 || seq >= s->n_seq)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_session_seq_clear: sequence %d outside [0, %d)", (int)seq,
                         s ? s->n_seq : 0);
    /* attention reads a sequence's rows only up to its own position, and every row is written
     * before it is read: resetting the position is enough */
    B158_TRY(spec_drop(s));
    s->seq_pos[seq] = 0;
    return B158_OK;
}

void b158_session_reset(b158_session *s)
{
    if (!s)
        return;
    (void)spec_drop(s);
    for (int i = 0; i < s->n_seq; i++)
        s->seq_pos[i] = 0;
    s->last_n = 0;
    s->last_out = -1;
}

/* The output row of token i (< 0: the last that asked) of the last call, or -1 */
static int out_row(const b158_session *s, int i)
{
    if (!s || s->last_n == 0)
        return -1;
    if (i < 0)
        i = s->last_out;
    return i < 0 || i >= s->last_n ? -1 : s->out_row[i];
}

const float *b158_session_logits(const b158_session *s, int i)
{
    const int r = out_row(s, i);
    return r < 0 || s->greedy ? NULL : s->logits + (size_t)r * s->m->info.n_vocab;
}

b158_token b158_session_argmax(const b158_session *s, int i)
{
    const int r = out_row(s, i);
    if (r < 0)
        return -1;
    const int nv = s->m->info.n_vocab;
    return s->greedy ? s->picks[r] : b158_ref_argmax(s->logits + (size_t)r * nv, nv);
}

void b158_session_free(b158_session *s)
{
    if (!s)
        return;
    (void)spec_drop(s);
    if (s->rt) /* nothing the device still does writes into the session's memory */
        (void)clFinish(s->rt->queue);
    free(s->inv_freq);
    free(s->seq_pos);
    free(s->seq_count);
    free(s->tok);
    free(s->sel);
    free(s->out_row);
    free(s->picks);
    free(s->stamps);
    if (s->logits_pin.mem)
        b158_host_free(s->rt, &s->logits_pin);
    else
        free(s->logits);
    struct cpu_state *c = &s->cpu;
    void *host[] = {c->x,    c->xn, c->q,  c->k, c->v,       c->att,
                    c->gate, c->up, c->q8, c->s, c->k_cache, c->v_cache};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
    if (s->rt) {
        struct dev_state *d = &s->dev;
        b158_buf *bufs[] = {
            &d->ids,      &d->tok,      &d->x,        &d->xn,         &d->qkv,       &d->att,
            &d->gu,       &d->q8,       &d->s,        &d->last,       &d->logits,    &d->k_cache,
            &d->v_cache,  &d->inv_freq, &d->counter,  &d->att_count,  &d->x2,        &d->q8g,
            &d->qsg,      &d->bar,      &d->att_part, &d->att_hcount, &d->amax_part, &d->amax_count,
            &d->amax_out, &d->stamps};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b158_buf_free(s->rt, bufs[i]);
        b158_baseline_free(s->rt, &d->base);
        b158_plan_free(&s->plan);
        b158_plan_free(&s->argmax_plan);
    }
    free(s);
}

static b158_status alloc_cpu(b158_session *s)
{
    const b158_model_info *h = &s->m->info;
    const size_t B = (size_t)s->n_batch, qd = (size_t)h->n_head * h->head_dim,
                 kvd = (size_t)h->n_head_kv * h->head_dim, W = (size_t)s->width_max;
    struct cpu_state *c = &s->cpu;
    const size_t cache = (size_t)h->n_layer * s->n_seq * s->n_ctx * kvd;
    c->x = malloc(B * h->n_embd * 4);
    c->xn = malloc(B * W * 4);
    c->q = malloc(B * qd * 4);
    c->k = malloc(B * kvd * 4);
    c->v = malloc(B * kvd * 4);
    c->att = malloc(B * qd * 4);
    c->gate = malloc(B * h->n_ff * 4);
    c->up = malloc(B * h->n_ff * 4);
    c->q8 = malloc(B * W);
    c->s = malloc(B * 4);
    c->k_cache = malloc(cache * 2);
    c->v_cache = malloc(cache * 2);
    if (!c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->gate || !c->up || !c->q8 ||
        !c->s || !c->k_cache || !c->v_cache)
        return B158_FAIL(B158_ERR_HOST_MEMORY,
                         "out of host memory for the CPU reference session (KV cache %.1f MiB); "
                         "try a smaller context (-c)",
                         cache * 4.0 / 1048576.0);
    return B158_OK;
}

/* Most splits of the attention's keys in a one-token step (b158_att_split): on GPUs enough for a
 * work-group per compute unit, where one per head would leave most of them idle (20 heads on
 * 132 units: 6 splits), but no more than the context has 32-key pieces; 1 on other devices,
 * whose few cores the heads keep busy, and on the CPU variant. B158_ATT_SPLITS sets the count
 * on the GPU variant (tuning, tests). A step splits its keys only from att_split_keys keys on
 * (step_splits): 768 on GPUs, else 1 (B158_ATT_SPLIT_KEYS sets it). On an H200 (2B-4T) one split
 * a head decoded 3-5% faster than 6 at 512-640 keys, whose partial results and combining cost
 * more than the split saves there, but 20% slower at 1536-1664 keys (394 against 494 tokens/s),
 * where 3 splits gave 440, and at 4096 keys 4 splits 375 against 6 splits' 432: so no split
 * or the most, the change between those two points put near 700 keys. */
static int att_splits(b158_session *s)
{
    const b158_runtime *rt = s->rt;
    s->att_split_keys =
        b158_env_int("B158_ATT_SPLIT_KEYS", 1, 1 << 20, 0, rt->info.is_gpu ? 768 : 1);
    if (!rt->tune.gpu)
        return 1;
    int n = rt->info.is_gpu ? (int)rt->info.compute_units / s->m->info.n_head : 1;
    if (n > (s->n_ctx + 31) / 32)
        n = (s->n_ctx + 31) / 32;
    if (n > 64)
        n = 64;
    return b158_env_int("B158_ATT_SPLITS", 1, 256, 0, n > 1 ? n : 1);
}

/* The splits of a one-token step's attention over n_keys keys: none below att_split_keys, else
 * att_splits */
static int step_splits(const b158_session *s, int n_keys)
{
    return n_keys < s->att_split_keys ? 1 : s->att_splits;
}

int b158_session_step_splits(const b158_session *s, int n_keys)
{
    return s->rt ? step_splits(s, n_keys) : 1;
}

static b158_status alloc_dev(b158_session *s)
{
    const b158_model_info *h = &s->m->info;
    b158_runtime *rt = s->rt;
    const size_t B = (size_t)s->n_batch, qd = (size_t)h->n_head * h->head_dim,
                 kvd = (size_t)h->n_head_kv * h->head_dim, W = (size_t)s->width_max;
    const size_t cache = (size_t)h->n_layer * s->n_seq * s->n_ctx * kvd;
    if (cache > (size_t)INT32_MAX)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "KV cache of %zu elements per tensor exceeds 2^31; use a smaller "
                         "context (-c) or fewer sequences",
                         cache);
    struct dev_state *d = &s->dev;
    const b158_mem_category S = B158_MEM_SCRATCH;
    B158_TRY(b158_buf_alloc(rt, B158_MEM_KV_CACHE, cache * 2, &d->k_cache));
    B158_TRY(b158_buf_alloc(rt, B158_MEM_KV_CACHE, cache * 2, &d->v_cache));
    B158_TRY(b158_buf_alloc(rt, S, B * 4, &d->ids));
    B158_TRY(b158_buf_alloc(rt, S, B * 8, &d->tok));
    B158_TRY(b158_buf_alloc(rt, S, B * h->n_embd * 4, &d->x));
    B158_TRY(b158_buf_alloc(rt, S, B * W * 4, &d->xn));
    B158_TRY(b158_buf_alloc(rt, S, B * (qd + 2 * kvd) * 4, &d->qkv));
    B158_TRY(b158_buf_alloc(rt, S, B * qd * 4, &d->att));
    B158_TRY(b158_buf_alloc(rt, S, B * 2 * h->n_ff * 4, &d->gu));
    B158_TRY(b158_buf_alloc(rt, S, B * b158_ternary_k_pad((int)W), &d->q8));
    B158_TRY(b158_buf_alloc(rt, S, B * 4, &d->s));
    B158_TRY(b158_buf_alloc(rt, S, (size_t)s->out_rows * h->n_embd * 4, &d->last));
    B158_TRY(b158_buf_alloc(rt, S, (size_t)s->out_rows * h->n_vocab * 4, &d->logits));
    B158_TRY(b158_buf_alloc(rt, S, (size_t)h->n_rot / 2 * 4, &d->inv_freq));
    B158_TRY(b158_buf_write(rt, &d->inv_freq, 0, (size_t)h->n_rot / 2 * 4, s->inv_freq));
    B158_TRY(b158_buf_alloc(rt, S, 4, &d->counter));
    B158_TRY(b158_buf_write(rt, &d->counter, 0, 4, &(int32_t){0}));
    B158_TRY(b158_buf_alloc(rt, S, B * 4, &d->att_count));
    B158_TRY(b158_buf_fill(rt, &d->att_count, 0));
    const size_t rows = (size_t)s->out_rows;
    B158_TRY(b158_buf_alloc(rt, S, rows * B158_ARGMAX_GROUPS * 8, &d->amax_part));
    B158_TRY(b158_buf_alloc(rt, S, rows * 4, &d->amax_count));
    B158_TRY(b158_buf_fill(rt, &d->amax_count, 0));
    B158_TRY(b158_buf_alloc(rt, S, rows * 4, &d->amax_out));
    s->att_splits = att_splits(s);
    if (s->att_splits > 1) {
        const size_t parts = (size_t)h->n_head * s->att_splits * (h->head_dim + 2);
        B158_TRY(b158_buf_alloc(rt, S, parts * 4, &d->att_part));
        B158_TRY(b158_buf_alloc(rt, S, (size_t)h->n_head * 4, &d->att_hcount));
        B158_TRY(b158_buf_fill(rt, &d->att_hcount, 0));
    }
    return B158_OK;
}

/* Work-groups of the fused decode layer, 0 for the unfused launches. Off unless
 * B158_FUSED_DECODE=1 asks for it: on an H200 (driver 580) the unfused launches took a 2B-4T step
 * in 1.9 ms against its 2.1 (2.3 against 2.8 with 3584 keys in the cache), though with twice its
 * host time. With it on: one group per compute unit (4 per unit were slower: more groups redo
 * each stage's norm and wait at each barrier) on any device of the GPU variant, one group where
 * the device is not a GPU (its grid barriers need every group running at once, which no CPU
 * runtime promises), never on PoCL, whose work-group compiler gets this kernel wrong (its result
 * differs from the unfused launches'). B158_DECODE_GROUPS sets the count (tuning). */
static int fused_groups(const b158_session *s)
{
    const b158_runtime *rt = s->rt;
    const char *want = getenv("B158_FUSED_DECODE");
    const int on = want && *want && strcmp(want, "0") != 0;
    if (!on || !rt->tune.gpu || s->m->dev_mode != B158_WEIGHTS_TERNARY ||
        strstr(rt->info.platform, "Portable Computing Language"))
        return 0;
    const int g = rt->info.is_gpu ? (int)rt->info.compute_units : 1;
    return b158_env_int("B158_DECODE_GROUPS", 1, 65536, 0, g > 0 ? g : 1);
}

/* The fused decode layer's kernel and buffers, or s->fused_groups 0 (with a warning when its
 * kernel does not build or run here: the unfused launches then do the work). */
static b158_status alloc_fused(b158_session *s)
{
    b158_runtime *rt = s->rt;
    struct dev_state *d = &s->dev;
    const b158_model_info *h = &s->m->info;
    s->fused_groups = fused_groups(s);
    if (!s->fused_groups)
        return B158_OK;
    cl_kernel k;
    size_t max_wg = 0;
    const int built = b158_rt_kernel(rt, B158_K_DECODE_LAYER, &k) == B158_OK;
    if (built)
        clGetKernelWorkGroupInfo(k, rt->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof max_wg, &max_wg,
                                 NULL);
    if (max_wg < (size_t)rt->tune.wg) {
        b158_log(B158_LOG_WARN, "fused decode layer unavailable on %s (%s); decoding unfused",
                 rt->info.name, built ? "work-group too large" : b158_last_error());
        s->fused_groups = 0;
        return B158_OK;
    }
    const b158_mem_category S = B158_MEM_SCRATCH;
    const size_t g = (size_t)s->fused_groups;
    B158_TRY(b158_buf_alloc(rt, S, (size_t)h->n_embd * 4, &d->x2));
    B158_TRY(b158_buf_alloc(rt, S, g * b158_ternary_k_pad(s->width_max), &d->q8g));
    B158_TRY(b158_buf_alloc(rt, S, g * 4, &d->qsg));
    B158_TRY(b158_buf_alloc(rt, S, (1 + 4 * (size_t)h->n_layer) * 4, &d->bar));
    if (rt->tune.stage_clock) {
        const size_t stamps = (size_t)h->n_layer * g * B158_STAMPS;
        B158_TRY(b158_buf_alloc(rt, S, stamps * 8, &d->stamps));
        s->stamps = malloc(stamps * 8);
        if (!s->stamps)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %zu timestamps", stamps);
    }
    return B158_OK;
}

/* The GEMV chain of one-token steps (s->chain), where B158_GEMV_CHAIN=1 asks for it (an A/B
 * for a GPU sitting: a 2B-4T step of 154 launches takes 65 with it) and the fused layer does not
 * run: on the GPU variant of the ternary engine, with one group a block of rows on GPUs, one
 * group taking them in order on other devices (no CPU runtime promises that groups start in
 * order), never on PoCL (test-forward's chain sessions there ran past 5 minutes without
 * finishing). B158_CHAIN_GROUPS sets the count (tests). */
static b158_status alloc_chain(b158_session *s)
{
    b158_runtime *rt = s->rt;
    const char *want = getenv("B158_GEMV_CHAIN");
    s->chain = want && *want && strcmp(want, "0") != 0 && !s->fused_groups && rt->tune.gpu &&
               s->m->dev_mode == B158_WEIGHTS_TERNARY &&
               !strstr(rt->info.platform, "Portable Computing Language");
    if (!s->chain)
        return B158_OK;
    s->chain_groups = b158_env_int("B158_CHAIN_GROUPS", 0, 65536, 0, rt->info.is_gpu ? 0 : 1);
    cl_kernel k;
    if (b158_rt_kernel(rt, s->chain_groups ? B158_K_GEMV_CHAIN_SEQ : B158_K_GEMV_CHAIN, &k) !=
        B158_OK) {
        b158_log(B158_LOG_WARN, "GEMV chain unavailable on %s (%s); decoding without it",
                 rt->info.name, b158_last_error());
        s->chain = 0;
        return B158_OK;
    }
    const size_t layers = (size_t)s->m->info.n_layer;
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, (1 + 4 * layers) * 4, &s->dev.bar));
    if (!rt->tune.stage_clock)
        return B158_OK;
    const struct b158_layer_dev *L = &s->m->dev[0]; /* every block's shapes */
    s->chain_stride = b158_op_gemv_jobs(rt, &L->wo) + b158_op_gemv_jobs(rt, &L->wgu) +
                      b158_op_gemv_jobs(rt, &L->wdown) + b158_op_gemv_jobs(rt, &L->wqkv);
    const size_t stamps = layers * (size_t)s->chain_stride * B158_CHAIN_STAMPS;
    B158_TRY(b158_buf_alloc(rt, B158_MEM_SCRATCH, stamps * 8, &s->dev.stamps));
    s->stamps = malloc(stamps * 8);
    if (!s->stamps)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %zu timestamps", stamps);
    return B158_OK;
}

/* Room for rows of logits and for the output index of n_tokens batch tokens; grows only, so a
 * server's steps stop allocating once the largest batch has been seen. */
static b158_status reserve_outputs(b158_session *s, int rows, int n_tokens)
{
    const size_t nv = (size_t)s->m->info.n_vocab;
    if (rows > s->logits_rows) {
        /* nothing of the old rows is kept: they belong to a call that is over */
        const size_t bytes = (size_t)rows * nv * sizeof(float);
        b158_host_mem pin = {NULL, NULL};
        float *l =
            s->rt && b158_host_alloc(s->rt, bytes, &pin) == B158_OK ? pin.ptr : malloc(bytes);
        if (l) {
            if (s->logits_pin.mem)
                b158_host_free(s->rt, &s->logits_pin);
            else
                free(s->logits);
            s->logits = l;
            s->logits_pin = pin;
        }
        int32_t *p = l ? realloc(s->picks, (size_t)rows * sizeof *p) : NULL;
        if (!p)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %d rows of logits",
                             rows);
        s->picks = p;
        s->logits_rows = rows;
    }
    if (n_tokens > s->out_cap) {
        int *o = realloc(s->out_row, (size_t)n_tokens * sizeof *o);
        if (!o)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for a batch of %d tokens",
                             n_tokens);
        s->out_row = o;
        s->out_cap = n_tokens;
    }
    return B158_OK;
}

b158_status b158_session_create(b158_model *m, const b158_session_params *params,
                                b158_session **out)
{
    if (!m || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_session_create: model and out required");
    *out = NULL;
    b158_session_params p = params ? *params : b158_session_default_params();
    const b158_model_info *h = &m->info;
    if (p.rt && m->rt != p.rt)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "the model is not uploaded to this runtime (call b158_model_upload)");
    b158_session *s = calloc(1, sizeof *s);
    if (!s)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the session");
    s->m = m;
    s->rt = p.rt;
    s->n_ctx = p.n_ctx > 0 ? p.n_ctx : (h->n_ctx_train > 0 ? h->n_ctx_train : 2048);
    s->n_batch = p.n_batch > 0 ? p.n_batch : 256;
    if (s->n_batch > s->n_ctx)
        s->n_batch = s->n_ctx;
    s->all_logits = p.all_logits != 0;
    s->n_seq = p.n_seq > 0 ? p.n_seq : 1;
    s->last_out = -1;
    /* greedy decoding ahead: one sequence on a device, not under profiling (whose launches
     * wait for themselves); B158_SPECULATE=0 turns it off */
    s->spec_on =
        s->rt && s->n_seq == 1 && !s->rt->profile && b158_env_int("B158_SPECULATE", 0, 1, 0, 1);
    /* the LM head runs on this many gathered rows at a time: every row of a step for
     * perplexity, else one per sequence (decode), more in turns */
    s->out_rows = s->all_logits ? s->n_batch : (s->n_seq < s->n_batch ? s->n_seq : s->n_batch);
    int w = h->n_embd;
    if (h->n_head * h->head_dim > w)
        w = h->n_head * h->head_dim;
    if (h->n_ff > w)
        w = h->n_ff;
    s->width_max = w;
    b158_status st = B158_OK;
    if (s->n_ctx > (1 << 24))
        st = B158_FAIL(B158_ERR_UNSUPPORTED, "context of %d tokens is too large", s->n_ctx);
    else if ((int64_t)s->n_seq * s->n_ctx > (1 << 24))
        st = B158_FAIL(B158_ERR_UNSUPPORTED, "%d sequences of %d tokens are too many", s->n_seq,
                       s->n_ctx);
    if (st == B158_OK) {
        s->seq_pos = calloc((size_t)s->n_seq, sizeof *s->seq_pos);
        s->seq_count = calloc((size_t)s->n_seq, sizeof *s->seq_count);
        s->tok = malloc((size_t)s->n_batch * 2 * sizeof *s->tok);
        s->sel = malloc((size_t)s->n_batch * sizeof *s->sel);
        if (!s->seq_pos || !s->seq_count || !s->tok || !s->sel)
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %d sequences", s->n_seq);
    }
    if (st == B158_OK)
        st = reserve_outputs(s, s->all_logits ? s->n_ctx : s->n_seq, s->n_batch);
    if (st == B158_OK) {
        s->inv_freq = malloc((size_t)h->n_rot / 2 * sizeof(float));
        if (s->inv_freq)
            b158_rope_inv_freq(s->inv_freq, h->n_rot, h->rope_base);
        else
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory");
    }
    if (st == B158_OK)
        st = s->rt ? alloc_dev(s) : alloc_cpu(s);
    /* compile every kernel of the forward pass now, so the first token is not the one that
     * pays for it (and the timings of prompt processing do not include it) */
    static const enum b158_kernel_id used[] = {
        B158_K_QUANTIZE_ROWS, B158_K_RMSNORM_QUANTIZE, B158_K_RMSNORM,
        B158_K_ROPE_KV_STORE, B158_K_ATTENTION,        B158_K_GLU_NORM_QUANTIZE,
        B158_K_EMBED,         B158_K_F16_MATVEC,       B158_K_ARGMAX_ROWS};
    for (size_t i = 0; s->rt && st == B158_OK && i < sizeof used / sizeof used[0]; i++) {
        cl_kernel k;
        st = b158_rt_kernel(s->rt, used[i], &k);
    }
    if (s->rt && st == B158_OK) {
        cl_kernel k;
        st = b158_rt_kernel(s->rt, b158_op_ternary_gemv_kernel(s->rt), &k);
        if (st == B158_OK)
            st = b158_rt_kernel(s->rt, b158_op_ternary_gemm_kernel(s->rt), &k);
        if (st == B158_OK && !s->rt->tune.gpu) /* LM head over several rows, CPU variant */
            st = b158_rt_kernel(s->rt, B158_K_F16_GEMM, &k);
        if (st == B158_OK && m->dev_mode != B158_WEIGHTS_TERNARY)
            st = b158_baseline_create(s->rt, m, s->n_batch, s->width_max, &s->dev.base);
        if (st == B158_OK)
            st = alloc_fused(s);
        if (st == B158_OK)
            st = alloc_chain(s);
    }
    if (st != B158_OK) {
        b158_session_free(s);
        return st;
    }
    *out = s;
    return B158_OK;
}

/* ---- device forward --------------------------------------------------------------------- */

/* One BitLinear input: xn (n rows of width k) quantized into q8 / s, which the matmuls that
 * share the input read; the FP16 baseline converts it to its own input once here. */
static b158_status dev_quantize(b158_session *s, const b158_buf *x, int k, int n)
{
    struct dev_state *d = &s->dev;
    B158_TRY(b158_op_quantize(s->rt, x, &d->q8, &d->s, k, b158_ternary_k_pad(k), n));
    if (s->m->dev_mode == B158_WEIGHTS_TERNARY)
        return B158_OK;
    return b158_baseline_input(s->rt, &d->base, &d->q8, &d->s, k, n);
}

/* The quantized input of the BitLinears that follow an RMSNorm: norm and quantization in one
 * launch (the normed rows are not stored). */
static b158_status dev_norm_quantize(b158_session *s, const b158_buf *x, const b158_buf *w, int k,
                                     int n)
{
    struct dev_state *d = &s->dev;
    B158_TRY(b158_op_rmsnorm_quantize(s->rt, x, w, &d->q8, &d->s, k, b158_ternary_k_pad(k), n,
                                      s->m->info.rms_eps));
    if (s->m->dev_mode == B158_WEIGHTS_TERNARY)
        return B158_OK;
    return b158_baseline_input(s->rt, &d->base, &d->q8, &d->s, k, n);
}

/* y (+)= W . the quantized input of width k: the ternary kernels, or the FP16 baseline's
 * dense matrix; with norm (one token, where dev_tails) the GEMV's tail follows. */
static b158_status dev_linear(b158_session *s, const b158_tmat *t, const b158_buf *dense, int k,
                              const b158_buf *y, int n, int accumulate, const b158_gemv_norm *norm)
{
    struct dev_state *d = &s->dev;
    if (s->m->dev_mode == B158_WEIGHTS_TERNARY)
        return norm ? b158_op_ternary_gemv(s->rt, t, &d->q8, &d->s, y, accumulate, norm)
                    : b158_op_ternary_matmul(s->rt, t, &d->q8, &d->s, y, n, accumulate);
    return b158_baseline_linear(s->rt, &d->base, dense, k, &d->q8, &d->s, y, n, accumulate, norm);
}

/* Whether a matmul over n rows can end in a tail (b158_gemv_norm): one token on the ternary
 * engine, or on the FP16 baseline's FP16-storage kernels */
static int dev_tails(const b158_session *s, int n)
{
    return n == 1 &&
           (s->m->dev_mode == B158_WEIGHTS_TERNARY || b158_baseline_reads_q8(&s->dev.base, n));
}

/* The tail of a one-token GEMV (b158_gemv_norm) that makes the next BitLinears' int8 input from
 * its output row (width wide): RMSNorm with weights norm_w, quantized into d->q8 / d->s */
static b158_gemv_norm norm_tail(const b158_session *s, const b158_buf *norm_w, int width)
{
    const b158_model_info *h = &s->m->info;
    const struct dev_state *d = &s->dev;
    return (b158_gemv_norm){.norm_w = norm_w,
                            .q = &d->q8,
                            .s = &d->s,
                            .counter = &d->counter,
                            .k_pad = b158_ternary_k_pad(width),
                            .eps = h->rms_eps,
                            .act = h->relu2 ? B158_ACT_RELU2 : B158_ACT_SILU};
}

/* The gate|up GEMV's tail of block L: act(gate) * up, sub-normed where the model has the norm */
static b158_gemv_norm glu_tail(const b158_session *s, const struct b158_layer_dev *L)
{
    const b158_model_info *h = &s->m->info;
    b158_gemv_norm glu = norm_tail(s, h->sub_norms ? &L->ffn_sub_norm : NULL, h->n_ff);
    glu.glu = 1;
    return glu;
}

/* y (+)= W . the quantized input (k wide), then the input of the next BitLinears: RMSNorm of
 * y's n rows (width wide) with weights norm_w, quantized. One token (dev_tails) does both in one
 * launch (the GEMV's last work-group takes the norm); else two. */
static b158_status dev_linear_norm(b158_session *s, const b158_tmat *t, const b158_buf *dense,
                                   int k, const b158_buf *y, int width, int n, int accumulate,
                                   const b158_buf *norm_w)
{
    if (dev_tails(s, n)) {
        const b158_gemv_norm norm = norm_tail(s, norm_w, width);
        return dev_linear(s, t, dense, k, y, 1, accumulate, &norm);
    }
    B158_TRY(dev_linear(s, t, dense, k, y, n, accumulate, NULL));
    return dev_norm_quantize(s, y, norm_w, width, n);
}

/* The feed-forward's gate|up matmul and then the input of its down projection: act(gate) * up,
 * sub-normed where the model has the norm, quantized. One token (dev_tails) does both in one
 * launch (the GEMV's last work-group takes the GLU); else two. */
static b158_status dev_linear_glu(b158_session *s, const struct b158_layer_dev *L, int n)
{
    struct dev_state *d = &s->dev;
    const b158_model_info *h = &s->m->info;
    const b158_buf *sub = h->sub_norms ? &L->ffn_sub_norm : NULL;
    const enum b158_act act = h->relu2 ? B158_ACT_RELU2 : B158_ACT_SILU;
    const int k_pad = b158_ternary_k_pad(h->n_ff);
    if (dev_tails(s, n)) {
        const b158_gemv_norm glu = glu_tail(s, L);
        return dev_linear(s, &L->wgu, &L->hgu, h->n_embd, &d->gu, 1, 0, &glu);
    }
    B158_TRY(dev_linear(s, &L->wgu, &L->hgu, h->n_embd, &d->gu, n, 0, NULL));
    B158_TRY(b158_op_glu_norm_quantize(s->rt, &d->gu, &d->gu, h->n_ff, 2 * h->n_ff, sub, &d->q8,
                                       &d->s, h->n_ff, k_pad, n, h->rms_eps, act));
    if (s->m->dev_mode != B158_WEIGHTS_TERNARY)
        B158_TRY(b158_baseline_input(s->rt, &d->base, &d->q8, &d->s, h->n_ff, n));
    return B158_OK;
}

/* The first rows of the device's logits into dst, or with picks (a greedy step) only their
 * argmax, computed on the device: 4 bytes a row read back instead of n_vocab floats. */
static b158_status spec_queue(b158_session *s);

/* With s->spec_here the step ahead into the queue (spec_queue), then the wait for done (a
 * pick's read); on an error of either nothing stays queued ahead */
static b158_status ahead_then_wait(b158_session *s, cl_event done)
{
    const b158_status q = s->spec_here ? spec_queue(s) : B158_OK, w = b158_rt_wait(s->rt, done);
    if (q == B158_OK && w == B158_OK)
        return B158_OK;
    (void)spec_drop(s);
    /* a step ahead whose queueing failed midway may still write into the session's slots */
    (void)clFinish(s->rt->queue);
    return q != B158_OK ? q : w;
}

/* launches(s), recorded into plan on its first run and replayed after (*state). A plan that
 * could not be had (out of memory, a command other than a launch) is off for the session:
 * launches runs as such; a run that failed is recorded again the next time. */
static b158_status planned(b158_session *s, b158_plan *plan, enum plan_state *state,
                           b158_status (*launches)(b158_session *))
{
    if (*state == PLAN_OFF)
        return launches(s);
    if (*state == PLAN_READY)
        return b158_rt_plan_run(s->rt, plan);
    b158_rt_plan_begin(s->rt, plan);
    const b158_status st = launches(s);
    b158_rt_plan_end(s->rt);
    *state = plan->failed ? PLAN_OFF : st == B158_OK ? PLAN_READY : PLAN_NONE;
    if (*state != PLAN_READY)
        b158_plan_free(plan);
    return st;
}

static b158_status argmax_rows(b158_session *s, int rows)
{
    struct dev_state *d = &s->dev;
    return b158_op_argmax(s->rt, &d->logits, s->m->info.n_vocab, rows, &d->amax_part,
                          &d->amax_count, &d->amax_out);
}

static b158_status argmax_one(b158_session *s)
{
    return argmax_rows(s, 1);
}

/* The argmax of the first rows of d->logits into d->amax_out; one row's launch planned, as a
 * step's (no argument set per token) */
static b158_status dev_argmax(b158_session *s, int rows)
{
    b158_rt_site(s->rt, "argmax");
    return rows == 1 ? planned(s, &s->argmax_plan, &s->argmax_state, argmax_one)
                     : argmax_rows(s, rows);
}

static b158_status read_logits(b158_session *s, int rows, float *dst, int32_t *picks)
{
    struct dev_state *d = &s->dev;
    const int nv = s->m->info.n_vocab;
    if (!picks)
        return b158_buf_read(s->rt, &d->logits, 0, (size_t)rows * nv * 4, dst);
    B158_TRY(dev_argmax(s, rows));
    if (!s->spec_here)
        return b158_buf_read(s->rt, &d->amax_out, 0, (size_t)rows * 4, picks);
    /* the step after this one into the queue before this one's pick is waited for */
    cl_event done;
    B158_TRY(b158_buf_read_event(s->rt, &d->amax_out, 0, 4, picks, &done));
    B158_TRY(ahead_then_wait(s, done));
    s->spec_input = picks[0];
    return B158_OK;
}

/* Logits of the n_sel rows sel[] of the final-normed d->xn into dst (n_sel rows), or with
 * picks their argmax: the LM head straight on xn when every row asked, else on rows gathered
 * into d->last, out_rows at a time. */
static b158_status dev_logits(b158_session *s, const b158_buf *head, int n, const int *sel,
                              int n_sel, float *dst, int32_t *picks)
{
    b158_runtime *rt = s->rt;
    struct dev_state *d = &s->dev;
    const b158_model_info *h = &s->m->info;
    const size_t row = (size_t)h->n_embd * 4;
    b158_rt_site(rt, "LM head");
    if (n_sel == n && n <= s->out_rows) {
        B158_TRY(b158_op_f16_matvec(rt, head, &d->xn, &d->logits, h->n_vocab, h->n_embd, n));
        return read_logits(s, n, dst, picks);
    }
    for (int g = 0; g < n_sel; g += s->out_rows) {
        const int rows = n_sel - g < s->out_rows ? n_sel - g : s->out_rows;
        for (int r = 0; r < rows;) {
            int run = 1; /* rows that follow each other in xn are one copy */
            while (r + run < rows && sel[g + r + run] == sel[g + r] + run)
                run++;
            B158_TRY(b158_buf_copy(rt, &d->xn, (size_t)sel[g + r] * row, &d->last, (size_t)r * row,
                                   (size_t)run * row));
            r += run;
        }
        b158_rt_site(rt, "LM head");
        B158_TRY(b158_op_f16_matvec(rt, head, &d->last, &d->logits, h->n_vocab, h->n_embd, rows));
        B158_TRY(read_logits(s, rows, dst + (size_t)g * h->n_vocab, picks ? picks + g : NULL));
    }
    return B158_OK;
}

/* dev_layers' blocks for one token on the fused decode layer (x holds the embedding): one
 * launch per block, then with final set the final norm into d->xn. */
static b158_status dev_blocks_fused(b158_session *s, int final)
{
    b158_runtime *rt = s->rt;
    b158_model *m = s->m;
    const b158_model_info *h = &m->info;
    struct dev_state *d = &s->dev;
    const int kvd = h->n_head_kv * h->head_dim, cache_rows = s->n_seq * s->n_ctx;
    const enum b158_rope_mode rope = h->rope_interleaved ? B158_ROPE_INTERLEAVED : B158_ROPE_NEOX;
    const float att_scale = 1.0f / sqrtf((float)h->head_dim);
    const b158_decode_step step = {.x = &d->x,
                                   .x2 = &d->x2,
                                   .qkv = &d->qkv,
                                   .att = &d->att,
                                   .gu = &d->gu,
                                   .q8 = &d->q8g,
                                   .qs = &d->qsg,
                                   .k_cache = &d->k_cache,
                                   .v_cache = &d->v_cache,
                                   .tok = &d->tok,
                                   .inv_freq = &d->inv_freq,
                                   .bar = &d->bar,
                                   .stamps = &d->stamps,
                                   .split = {s->step_splits, &d->att_part, &d->att_hcount},
                                   .k_pad_max = b158_ternary_k_pad(s->width_max),
                                   .groups = s->fused_groups,
                                   .n_embd = h->n_embd,
                                   .n_ff = h->n_ff,
                                   .n_head = h->n_head,
                                   .n_head_kv = h->n_head_kv,
                                   .head_dim = h->head_dim,
                                   .n_rot = h->n_rot,
                                   .cache_rows = cache_rows,
                                   .sub_norms = h->sub_norms,
                                   .rope_mode = rope,
                                   .act = h->relu2 ? B158_ACT_RELU2 : B158_ACT_SILU,
                                   .att_scale = att_scale,
                                   .eps = h->rms_eps};
    for (int l = 0; l < h->n_layer; l++) {
        const struct b158_layer_dev *L = &m->dev[l];
        const b158_decode_weights w = {&L->wqkv,     &L->wo,          &L->wgu,
                                       &L->wdown,    &L->attn_norm,   &L->attn_sub_norm,
                                       &L->ffn_norm, &L->ffn_sub_norm};
        b158_rt_site(rt, "fused layer");
        B158_TRY(b158_op_decode_layer(rt, &step, &w, l, (size_t)l * cache_rows * kvd));
    }
    b158_rt_site(rt, "final norm");
    return final ? b158_op_rmsnorm(rt, &d->x, &m->d_output_norm, &d->xn, h->n_embd, 1, h->rms_eps)
                 : B158_OK;
}

/* A one-token step's GEMVs of block l after its attention, in one launch (s->chain): the output
 * projection, gate|up and the down projection with their tails (dev_linear_norm, dev_linear_glu),
 * then the next block's q|k|v. */
static b158_status dev_chain(b158_session *s, int l)
{
    const b158_model_info *h = &s->m->info;
    struct dev_state *d = &s->dev;
    const struct b158_layer_dev *L = &s->m->dev[l];
    const int last = l + 1 == h->n_layer;
    const b158_gemv_norm ffn = norm_tail(s, &L->ffn_norm, h->n_embd), glu = glu_tail(s, L);
    /* the next block's attention norm (none after the last block) */
    const b158_gemv_norm attn = norm_tail(s, &s->m->dev[last ? l : l + 1].attn_norm, h->n_embd);
    const b158_chain_stage st[4] = {{&L->wo, &d->x, 1, &ffn},
                                    {&L->wgu, &d->gu, 0, &glu},
                                    {&L->wdown, &d->x, 1, last ? NULL : &attn},
                                    {last ? NULL : &s->m->dev[l + 1].wqkv, &d->qkv, 0, NULL}};
    const int stages = last ? 3 : 4;
    int jobs = 0; /* with a stage clock, the jobs' timestamps where the block's jobs fit */
    for (int i = 0; i < stages; i++) {
        s->chain_jobs[i] = b158_op_gemv_jobs(s->rt, st[i].w); /* (the same in every block) */
        jobs += s->chain_jobs[i];
    }
    const int stamp_jobs = s->stamps && jobs <= s->chain_stride ? s->chain_stride : 0;
    b158_rt_site(s->rt, "output, gate|up, down, q|k|v (chain)");
    return b158_op_gemv_chain(s->rt, st, stages, &d->q8, &d->s, &d->bar, l, s->chain_groups,
                              &d->stamps, stamp_jobs);
}

/* The launches of one step of n tokens (ids and {position, cache row} pairs already in d->ids
 * and d->tok): embedding, the blocks, and with final set the final norm into d->xn. */
static b158_status dev_layers(b158_session *s, int n, int final)
{
    b158_runtime *rt = s->rt;
    b158_model *m = s->m;
    const b158_model_info *h = &m->info;
    struct dev_state *d = &s->dev;
    b158_rt_site(rt, "embedding");
    B158_TRY(b158_op_embed(rt, &m->d_tok_embd, &d->ids, &d->x, h->n_embd, h->n_vocab, n));
    if (n == 1 && s->fused_groups)
        return dev_blocks_fused(s, final);
    const int qd = h->n_head * h->head_dim, kvd = h->n_head_kv * h->head_dim;
    const int cache_rows = s->n_seq * s->n_ctx;
    const enum b158_rope_mode rope = h->rope_interleaved ? B158_ROPE_INTERLEAVED : B158_ROPE_NEOX;
    const float att_scale = 1.0f / sqrtf((float)h->head_dim);
    const int qkv = qd + 2 * kvd;
    const b158_rope_kv rope_kv = {.q = &d->qkv,
                                  .k = &d->qkv,
                                  .v = &d->qkv,
                                  .inv_freq = &d->inv_freq,
                                  .k_cache = &d->k_cache,
                                  .v_cache = &d->v_cache,
                                  .q_stride = qkv,
                                  .kv_stride = qkv,
                                  .n_head = h->n_head,
                                  .n_head_kv = h->n_head_kv,
                                  .head_dim = h->head_dim,
                                  .n_rot = h->n_rot,
                                  .mode = rope,
                                  .k_off = qd,
                                  .v_off = qd + kvd};

    const b158_att_rope att_rope = {
        .inv_freq = &d->inv_freq, .n_rot = h->n_rot, .mode = rope, .k_off = qd, .v_off = qd + kvd};
    const b158_att_split split = {s->step_splits, &d->att_part, &d->att_hcount};

    /* attention's norm and one int8 quantization shared by q, k and v: here for the first
     * layer, after the down projection of the one before for the others */
    b158_rt_site(rt, "norm + quantize");
    B158_TRY(dev_norm_quantize(s, &d->x, &m->dev[0].attn_norm, h->n_embd, n));
    const int chain = n == 1 && s->chain;
    for (int l = 0; l < h->n_layer; l++) {
        const struct b158_layer_dev *L = &m->dev[l];
        const size_t cache_off = (size_t)l * cache_rows * kvd;
        b158_rt_site(rt, "q|k|v");
        if (!chain || l == 0) /* else the chain of the block before did it */
            B158_TRY(dev_linear(s, &L->wqkv, &L->hqkv, h->n_embd, &d->qkv, n, 0, NULL));
        /* one token: its RoPE and KV store inside the attention (one launch fewer per layer) */
        b158_rt_site(rt, "RoPE + KV store");
        if (n > 1)
            B158_TRY(b158_op_rope_kv_store(rt, &rope_kv, &d->tok, n, cache_off, cache_rows));
        /* the sub-norm and quantization of the output projection's input: in the attention's
         * tail on the ternary engine and where the baseline reads that input itself (one launch
         * fewer per layer) */
        const int fused = h->sub_norms && (m->dev_mode == B158_WEIGHTS_TERNARY ||
                                           b158_baseline_reads_q8(&d->base, n));
        const b158_gemv_norm sub = {.norm_w = &L->attn_sub_norm,
                                    .q = &d->q8,
                                    .s = &d->s,
                                    .counter = &d->att_count,
                                    .k_pad = b158_ternary_k_pad(qd),
                                    .eps = h->rms_eps};
        b158_rt_site(rt, n == 1 ? "attention (+ RoPE, KV store, sub-norm)" : "attention");
        B158_TRY(b158_op_attention(rt, &d->qkv, &d->k_cache, &d->v_cache, &d->att, h->n_head,
                                   h->n_head_kv, h->head_dim, qkv, n, &d->tok, cache_off,
                                   cache_rows, att_scale, n == 1 ? &att_rope : NULL,
                                   fused ? &sub : NULL, n == 1 ? &split : NULL));
        b158_rt_site(rt, "sub-norm + quantize");
        if (!fused)
            B158_TRY(h->sub_norms ? dev_norm_quantize(s, &d->att, &L->attn_sub_norm, qd, n)
                                  : dev_quantize(s, &d->att, qd, n));
        if (chain) {
            B158_TRY(dev_chain(s, l));
            continue;
        }
        /* output projection added straight into the residual stream, then the feed-forward's
         * norm and quantization */
        b158_rt_site(rt, "output (+ norm)");
        B158_TRY(dev_linear_norm(s, &L->wo, &L->ho, qd, &d->x, h->n_embd, n, 1, &L->ffn_norm));
        b158_rt_site(rt, "gate|up (+ GLU, sub-norm)");
        B158_TRY(dev_linear_glu(s, L, n));
        b158_rt_site(rt, "down (+ norm)");
        if (l + 1 < h->n_layer)
            B158_TRY(dev_linear_norm(s, &L->wdown, &L->hdown, h->n_ff, &d->x, h->n_embd, n, 1,
                                     &m->dev[l + 1].attn_norm));
        else
            B158_TRY(dev_linear(s, &L->wdown, &L->hdown, h->n_ff, &d->x, n, 1, NULL));
    }
    /* final norm, for the rows that ask for logits */
    b158_rt_site(rt, "final norm");
    if (!final)
        return B158_OK;
    return b158_op_rmsnorm(rt, &d->x, &m->d_output_norm, &d->xn, h->n_embd, n, h->rms_eps);
}

/* A decode step's launches, logits into d->logits: the blocks, then the LM head on its row. */
static b158_status dev_step_one(b158_session *s)
{
    const b158_model *m = s->m;
    const b158_buf *head = m->output != m->tok_embd ? &m->d_output : &m->d_tok_embd;
    B158_TRY(dev_layers(s, 1, 1));
    b158_rt_site(s->rt, "LM head");
    return b158_op_f16_matvec(s->rt, head, &s->dev.xn, &s->dev.logits, m->info.n_vocab,
                              m->info.n_embd, 1);
}

/* Whether a one-token step can be recorded into a plan: all its commands the engine's launches
 * (CLBlast's routines enqueue their own) */
static int step_plannable(const b158_session *s)
{
    return s->m->dev_mode != B158_WEIGHTS_FP16_CLBLAST;
}

/* A one-token step's launches with its logits into d->logits: the session's recorded plan
 * (recorded on the first such step, again when the context grew into another split count),
 * else dev_step_one's */
static b158_status step_launches(b158_session *s)
{
    if (!step_plannable(s))
        return dev_step_one(s);
    if (s->plan_state == PLAN_READY && s->plan_splits != s->step_splits) {
        b158_plan_free(&s->plan);
        s->plan_state = PLAN_NONE;
    }
    if (s->plan_state == PLAN_NONE)
        s->plan_splits = s->step_splits; /* (those of the plan about to be recorded) */
    return planned(s, &s->plan, &s->plan_state, dev_step_one);
}

/* The fused step's error flag on its way back into s->fused_err (a one-token step) */
static b158_status fused_err_read(b158_session *s, int n)
{
    if (n != 1 || (!s->fused_groups && !s->chain))
        return B158_OK;
    return b158_buf_read_async(s->rt, &s->dev.bar, 0, 4, &s->fused_err);
}

/* dev_forward after the step's ids and positions are on their way to the device */
static b158_status dev_step(b158_session *s, int n, const int *sel, int n_sel, float *dst,
                            int32_t *picks)
{
    const b158_model *m = s->m;
    if (step_plannable(s) && n == 1 && n_sel == 1 && s->plan_state != PLAN_OFF) {
        B158_TRY(step_launches(s));
        B158_TRY(fused_err_read(s, n));
        return read_logits(s, 1, dst, picks);
    }
    B158_TRY(dev_layers(s, n, n_sel > 0));
    B158_TRY(fused_err_read(s, n));
    if (n_sel == 0)
        return B158_OK;
    const b158_buf *head = m->output != m->tok_embd ? &m->d_output : &m->d_tok_embd;
    return dev_logits(s, head, n, sel, n_sel, dst, picks);
}

/* Whether a step of n tokens (positions in s->tok) whose rows sel[0..n_sel) ask for picks
 * queues the one-token step after it (spec_queue): the call's last chunk, greedy, one row, the
 * sequence's last token, room for one more */
static int spec_wanted(const b158_session *s, int n, const int *sel, int n_sel,
                       const int32_t *picks)
{
    return s->spec_on && s->spec_final && picks && n_sel == 1 && sel[0] == n - 1 &&
           s->tok[2 * (n - 1)] + 1 == s->seq_pos[0] && s->seq_pos[0] < s->n_ctx;
}

/* Queues the one-token step of sequence 0 at its next position whose token is the pick of the
 * step queued just before it (d->amax_out, copied on the device), with its pick on its way into
 * s->spec_pick and its error flag into s->spec_err (the slot the step queued before does not
 * use). */
static b158_status spec_queue(b158_session *s)
{
    b158_runtime *rt = s->rt;
    struct dev_state *d = &s->dev;
    const int pos = s->seq_pos[0], slot = s->spec_slot ^ 1;
    const int fused = s->fused_groups || s->chain;
    s->spec_tok[slot][0] = pos, s->spec_tok[slot][1] = 0, s->spec_err[slot] = 0;
    s->step_splits = step_splits(s, pos + 1);
    B158_TRY(b158_buf_copy(rt, &d->amax_out, 0, &d->ids, 0, 4));
    B158_TRY(b158_buf_write_async(rt, &d->tok, 0, 8, s->spec_tok[slot]));
    if (fused)
        B158_TRY(b158_buf_fill(rt, &d->bar, 0));
    B158_TRY(step_launches(s));
    if (fused)
        B158_TRY(b158_buf_read_async(rt, &d->bar, 0, 4, &s->spec_err[slot]));
    B158_TRY(dev_argmax(s, 1));
    B158_TRY(b158_buf_read_event(rt, &d->amax_out, 0, 4, &s->spec_pick[slot], &s->spec_done));
    b158_rt_site(rt, NULL);
    s->spec_slot = slot, s->spec_pos = pos, s->spec_active = 1;
    return b158_rt_flush(rt);
}

/* A grid barrier or a chain's wait timed out (the step's error flag): the device did not run
 * every group at once, or not in order. The step is to be done again without them (it rewrites
 * the same cache rows), and so are the ones after. */
static b158_status fused_gave_up(b158_session *s)
{
    b158_runtime *rt = s->rt;
    if (s->fused_groups)
        b158_log(B158_LOG_WARN,
                 "fused decode layer: %d work-groups did not all run at once on %s; decoding "
                 "unfused (B158_DECODE_GROUPS sets fewer)",
                 s->fused_groups, rt->info.name);
    else if (s->chain) /* (not again for a step queued ahead with it) */
        b158_log(B158_LOG_WARN,
                 "GEMV chain: a work-group waited too long on %s; decoding without it",
                 rt->info.name);
    s->fused_groups = 0;
    s->chain = 0;
    /* a chain whose waits gave up ran its stages out of order, their tails' shared counter
     * with them: it is zero again for the launches that redo the step */
    B158_TRY(b158_buf_fill(rt, &s->dev.counter, 0));
    b158_plan_free(&s->plan);
    s->plan_state = PLAN_NONE;
    return B158_OK;
}

static b158_status dev_forward(b158_session *s, const b158_token *tokens, int n, const int *sel,
                               int n_sel, float *dst, int32_t *picks);

/* The one-token greedy step the last call queued ahead, for the call that asks for it (its
 * token at its position): the step after it into the queue, then its pick. Where its chain or
 * fused layer gave up, the step is done again by dev_forward. */
static b158_status spec_take(b158_session *s, const b158_token *token, float *dst, int32_t *picks)
{
    const int slot = s->spec_slot;
    cl_event done = s->spec_done;
    s->spec_active = 0;
    s->spec_here = spec_wanted(s, 1, s->sel, 1, picks);
    B158_TRY(ahead_then_wait(s, done));
    if (s->spec_err[slot]) {
        B158_TRY(spec_drop(s)); /* the step after it took its pick */
        B158_TRY(fused_gave_up(s));
        return dev_forward(s, token, 1, s->sel, 1, dst, picks);
    }
    picks[0] = s->spec_pick[slot];
    if (s->spec_active)
        s->spec_input = picks[0];
    return B158_OK;
}

/* One step of n tokens whose {position, cache row} pairs are in s->tok; logits of the rows
 * sel[0..n_sel) into dst. A one-token step with logits (not on CLBlast) runs the
 * session's recorded plan (recording it the first time). The token ids and positions go up
 * without a wait of their own; the step ends waiting for its logits, or for the queue when it
 * has none or fails, so the caller's tokens and s->tok are free again on return. */
static b158_status dev_forward(b158_session *s, const b158_token *tokens, int n, const int *sel,
                               int n_sel, float *dst, int32_t *picks)
{
    b158_runtime *rt = s->rt;
    struct dev_state *d = &s->dev;
    const int fused = n == 1 && (s->fused_groups || s->chain);
    s->fused_err = 0;
    s->step_splits = n == 1 ? step_splits(s, s->tok[0] + 1) : 1;
    s->spec_here = spec_wanted(s, n, sel, n_sel, picks);
    b158_status st = b158_buf_write_async(rt, &d->ids, 0, (size_t)n * 4, tokens);
    if (st == B158_OK)
        st = b158_buf_write_async(rt, &d->tok, 0, (size_t)n * 8, s->tok);
    if (st == B158_OK && fused)
        st = b158_buf_fill(rt, &d->bar, 0);
    if (st == B158_OK)
        st = dev_step(s, n, sel, n_sel, dst, picks);
    b158_rt_site(rt, NULL); /* launches after the step are none of its sites */
    if (st != B158_OK)
        (void)clFinish(rt->queue); /* keeps the step's error as the last one */
    else if (n_sel == 0)
        st = b158_rt_finish(rt);
    if (st == B158_OK && fused && s->fused_err) {
        B158_TRY(spec_drop(s)); /* a step queued after it took its pick */
        B158_TRY(fused_gave_up(s));
        return dev_forward(s, tokens, n, sel, n_sel, dst, picks);
    }
    if (st == B158_OK && fused && s->stamps) {
        st = b158_buf_read(rt, &d->stamps, 0, d->stamps.bytes, s->stamps);
        if (st == B158_OK && s->chain)
            b158_chain_stage_add(&s->stage, s->stamps, s->m->info.n_layer, s->chain_stride,
                                 s->chain_jobs, 3);
        else if (st == B158_OK)
            b158_stage_add(&s->stage, s->stamps, s->m->info.n_layer, s->fused_groups);
    }
    return st;
}

/* ---- CPU reference forward -------------------------------------------------------------- */

static void cpu_bitlinear(b158_session *s, const b158_tpack *w, const float *x, int n, float *y,
                          int accumulate)
{
    b158_ref_quantize(x, w->k, n, s->cpu.q8, s->cpu.s);
    b158_ref_ternary_matmul_packed(w, s->cpu.q8, s->cpu.s, n, y, accumulate);
}

static b158_status cpu_forward(b158_session *s, const b158_token *tokens, int n, const int *sel,
                               int n_sel, float *dst, int32_t *picks)
{
    const b158_model *m = s->m;
    const b158_model_info *h = &m->info;
    struct cpu_state *c = &s->cpu;
    const int qd = h->n_head * h->head_dim, kvd = h->n_head_kv * h->head_dim;
    const int cache_rows = s->n_seq * s->n_ctx;
    const enum b158_rope_mode rope = h->rope_interleaved ? B158_ROPE_INTERLEAVED : B158_ROPE_NEOX;
    const float att_scale = 1.0f / sqrtf((float)h->head_dim);

    b158_ref_embed(m->tok_embd, tokens, c->x, h->n_embd, h->n_vocab, n);
    for (int l = 0; l < h->n_layer; l++) {
        const struct b158_layer *L = &m->layers[l];
        uint16_t *kc = c->k_cache + (size_t)l * cache_rows * kvd;
        uint16_t *vc = c->v_cache + (size_t)l * cache_rows * kvd;
        /* attention (q, k, v share the quantized input, as on the device) */
        b158_ref_rmsnorm(c->x, L->attn_norm, c->xn, h->n_embd, n, h->rms_eps);
        b158_ref_quantize(c->xn, h->n_embd, n, c->q8, c->s);
        b158_ref_ternary_matmul_packed(&L->wq, c->q8, c->s, n, c->q, 0);
        b158_ref_ternary_matmul_packed(&L->wk, c->q8, c->s, n, c->k, 0);
        b158_ref_ternary_matmul_packed(&L->wv, c->q8, c->s, n, c->v, 0);
        b158_ref_rope(c->q, s->inv_freq, qd, h->n_head, h->head_dim, h->n_rot, n, s->tok, rope);
        b158_ref_rope(c->k, s->inv_freq, kvd, h->n_head_kv, h->head_dim, h->n_rot, n, s->tok, rope);
        b158_ref_kv_store(c->k, c->v, kc, vc, kvd, kvd, n, s->tok, cache_rows);
        b158_ref_attention(c->q, kc, vc, c->att, h->n_head, h->n_head_kv, h->head_dim, qd, n,
                           s->tok, cache_rows, att_scale);
        if (h->sub_norms)
            b158_ref_rmsnorm(c->att, L->attn_sub_norm, c->att, qd, n, h->rms_eps);
        cpu_bitlinear(s, &L->wo, c->att, n, c->x, 1);
        /* feed-forward */
        b158_ref_rmsnorm(c->x, L->ffn_norm, c->xn, h->n_embd, n, h->rms_eps);
        b158_ref_quantize(c->xn, h->n_embd, n, c->q8, c->s);
        b158_ref_ternary_matmul_packed(&L->wgate, c->q8, c->s, n, c->gate, 0);
        b158_ref_ternary_matmul_packed(&L->wup, c->q8, c->s, n, c->up, 0);
        b158_ref_glu(c->gate, c->up, c->gate, n * h->n_ff,
                     h->relu2 ? B158_ACT_RELU2 : B158_ACT_SILU);
        if (h->sub_norms)
            b158_ref_rmsnorm(c->gate, L->ffn_sub_norm, c->gate, h->n_ff, n, h->rms_eps);
        cpu_bitlinear(s, &L->wdown, c->gate, n, c->x, 1);
    }
    b158_ref_rmsnorm(c->x, m->output_norm, c->xn, h->n_embd, n, h->rms_eps);
    for (int i = 0; i < n_sel; i++) {
        float *l = dst + (size_t)i * h->n_vocab;
        b158_ref_f16_matvec(m->output, c->xn + (size_t)sel[i] * h->n_embd, l, h->n_vocab, h->n_embd,
                            1);
        if (picks)
            picks[i] = b158_ref_argmax(l, h->n_vocab);
    }
    return B158_OK;
}

/* ---- decode ------------------------------------------------------------------------------ */

/* Checks a batch before anything runs: token ids, sequence ids, room in every sequence. Leaves
 * in s->seq_count the batch index of each sequence's last token (-1 when absent). */
static b158_status check_batch(b158_session *s, const b158_batch *b)
{
    const int n_vocab = s->m->info.n_vocab;
    for (int q = 0; q < s->n_seq; q++)
        s->seq_count[q] = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        const b158_seq_id q = b->seq_id ? b->seq_id[i] : 0;
        if (q < 0 || q >= s->n_seq)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "sequence id %d of token %d is outside [0, %d) (n_seq)", (int)q, i,
                             s->n_seq);
        if (b->token[i] < 0 || b->token[i] >= n_vocab)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "token id %d at %d is outside the vocabulary of %d", b->token[i], i,
                             n_vocab);
        s->seq_count[q]++;
    }
    for (int q = 0; q < s->n_seq; q++) {
        if ((int64_t)s->seq_pos[q] + s->seq_count[q] <= s->n_ctx)
            continue;
        if (s->n_seq == 1)
            return B158_FAIL(B158_ERR_CONTEXT_FULL,
                             "%d tokens at position %d exceed the context of %d tokens; use a "
                             "larger context (-c) or a shorter prompt",
                             s->seq_count[q], s->seq_pos[q], s->n_ctx);
        return B158_FAIL(B158_ERR_CONTEXT_FULL,
                         "sequence %d: %d tokens at position %d exceed its context of %d tokens", q,
                         s->seq_count[q], s->seq_pos[q], s->n_ctx);
    }
    for (int q = 0; q < s->n_seq; q++)
        s->seq_count[q] = -1;
    for (int i = 0; i < b->n_tokens; i++)
        s->seq_count[b->seq_id ? b->seq_id[i] : 0] = i;
    return B158_OK;
}

/* b158_session_decode, with every token asking for logits when all is set. */
static b158_status decode(b158_session *s, const b158_batch *b, int all)
{
    if (!s || !b || b->n_tokens < 0 || (!b->token && b->n_tokens > 0))
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_session_decode: bad arguments");
    if (b->n_tokens == 0)
        return B158_OK;
    /* the step the last call queued ahead (spec_queue): this call's if it asks for that token
     * at that position, greedily, else dropped */
    const int take = s->spec_active && b->n_tokens == 1 && b->greedy && !all &&
                     (!b->seq_id || b->seq_id[0] == 0) && (!b->logits || b->logits[0]) &&
                     b->token[0] == s->spec_input && s->seq_pos[0] == s->spec_pos;
    if (!take)
        B158_TRY(spec_drop(s));
    B158_TRY(check_batch(s, b));
    const int n = b->n_tokens, n_vocab = s->m->info.n_vocab;
    B158_TRY(reserve_outputs(s, 0, n));
    int n_out = 0;
    s->last_out = -1;
    s->greedy = b->greedy != 0;
    for (int i = 0; i < n; i++) {
        const b158_seq_id q = b->seq_id ? b->seq_id[i] : 0;
        const int want = all || (b->logits ? b->logits[i] != 0 : s->seq_count[q] == i);
        s->out_row[i] = want ? n_out++ : -1;
        if (want)
            s->last_out = i;
    }
    B158_TRY(reserve_outputs(s, n_out, n));
    s->last_n = 0;
    for (int i = 0; i < n; i += s->n_batch) {
        const int chunk = n - i < s->n_batch ? n - i : s->n_batch;
        int n_sel = 0, first = 0;
        for (int j = 0; j < chunk; j++) {
            const b158_seq_id q = b->seq_id ? b->seq_id[i + j] : 0;
            s->tok[2 * j] = s->seq_pos[q]++;
            s->tok[2 * j + 1] = q * s->n_ctx;
            if (s->out_row[i + j] >= 0) {
                if (n_sel == 0)
                    first = s->out_row[i + j];
                s->sel[n_sel++] = j;
            }
        }
        float *dst = s->logits + (size_t)first * n_vocab;
        int32_t *picks = s->greedy ? s->picks + first : NULL;
        s->spec_final = i + chunk == n;
        B158_TRY(!s->rt ? cpu_forward(s, b->token + i, chunk, s->sel, n_sel, dst, picks)
                 : take ? spec_take(s, b->token + i, dst, picks)
                        : dev_forward(s, b->token + i, chunk, s->sel, n_sel, dst, picks));
    }
    s->last_n = n;
    return B158_OK;
}

b158_status b158_session_decode(b158_session *s, const b158_batch *batch)
{
    return decode(s, batch, 0);
}

b158_status b158_session_eval(b158_session *s, const b158_token *tokens, int n)
{
    if (!s || (!tokens && n > 0) || n < 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_session_eval: bad arguments");
    const b158_batch b = {n, tokens, NULL, NULL, 0};
    return decode(s, &b, s->all_logits);
}
