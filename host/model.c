/* Model lifetime: host memory ownership, shape checks, random models and the one-time upload
 * of weights to a device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"
#include "half.h"

void *b158_model_alloc(b158_model *m, size_t bytes)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **p = realloc(m->owned, cap * sizeof *p);
        if (!p)
            return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p)
        m->owned[m->n_owned++] = p;
    return p;
}

static void free_device(b158_model *m)
{
    if (!m->rt)
        return;
    for (int l = 0; m->dev && l < m->info.n_layer; l++) {
        struct b158_layer_dev *d = &m->dev[l];
        b158_buf_free(m->rt, &d->attn_norm);
        b158_buf_free(m->rt, &d->attn_sub_norm);
        b158_buf_free(m->rt, &d->ffn_norm);
        b158_buf_free(m->rt, &d->ffn_sub_norm);
        b158_tmat *mats[] = {&d->wqkv, &d->wo, &d->wgu, &d->wdown};
        b158_buf *dense[] = {&d->hqkv, &d->ho, &d->hgu, &d->hdown};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            b158_tmat_free(m->rt, mats[i]);
            b158_buf_free(m->rt, dense[i]);
        }
    }
    free(m->dev);
    m->dev = NULL;
    b158_buf_free(m->rt, &m->d_output_norm);
    b158_buf_free(m->rt, &m->d_tok_embd);
    b158_buf_free(m->rt, &m->d_output);
    m->rt = NULL;
}

void b158_model_unload(b158_model *m)
{
    if (m)
        free_device(m);
}

void b158_model_free(b158_model *m)
{
    if (!m)
        return;
    free_device(m);
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    if (m->file && m->file_close)
        m->file_close(m->file);
    free(m->layers);
    free(m);
}

const b158_model_info *b158_model_get_info(const b158_model *m)
{
    return m ? &m->info : NULL;
}

b158_status b158_model_check(b158_model *m)
{
    b158_model_info *h = &m->info;
    if (h->head_dim == 0 && h->n_head > 0)
        h->head_dim = h->n_embd / h->n_head;
    if (h->n_rot == 0)
        h->n_rot = h->head_dim;
    if (h->n_embd <= 0 || h->n_layer <= 0 || h->n_head <= 0 || h->n_head_kv <= 0 || h->n_ff <= 0 ||
        h->n_vocab <= 0 || h->head_dim <= 0)
        return B158_FAIL(B158_ERR_FORMAT,
                         "model shape is incomplete: n_embd %d, n_layer %d, n_head %d, "
                         "n_head_kv %d, n_ff %d, n_vocab %d",
                         h->n_embd, h->n_layer, h->n_head, h->n_head_kv, h->n_ff, h->n_vocab);
    if (h->n_head % h->n_head_kv)
        return B158_FAIL(B158_ERR_FORMAT, "n_head %d is not a multiple of n_head_kv %d", h->n_head,
                         h->n_head_kv);
    if (h->n_rot <= 0 || h->n_rot > h->head_dim || h->n_rot % 2)
        return B158_FAIL(B158_ERR_FORMAT, "rope dimension %d does not fit head dim %d", h->n_rot,
                         h->head_dim);
    /* generous bounds that keep every index below in 32 bits */
    if (h->n_embd > 65536 || h->n_ff > 262144 || h->n_layer > 1024 || h->n_vocab > 4194304 ||
        h->head_dim > 1024 || (int64_t)h->n_head * h->head_dim > 65536 ||
        (int64_t)h->n_vocab * h->n_embd > ((int64_t)1 << 40))
        return B158_FAIL(B158_ERR_UNSUPPORTED, "model dimensions are out of the supported range");
    if (!(h->rms_eps > 0.0f) || !(h->rope_base > 0.0f) || !isfinite(h->rms_eps) ||
        !isfinite(h->rope_base))
        return B158_FAIL(B158_ERR_FORMAT,
                         "rms epsilon %g and rope base %g must be positive finite numbers",
                         h->rms_eps, h->rope_base);
    const int64_t qd = (int64_t)h->n_head * h->head_dim, kvd = (int64_t)h->n_head_kv * h->head_dim;
    h->n_ternary = (uint64_t)h->n_layer * (uint64_t)(2 * qd * h->n_embd + 2 * kvd * h->n_embd +
                                                     3 * (int64_t)h->n_ff * h->n_embd);
    return B158_OK;
}

b158_status b158_model_new(const b158_model_info *info, b158_model **out)
{
    *out = NULL;
    b158_model *m = calloc(1, sizeof *m);
    if (!m)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the model");
    m->info = *info;
    b158_status st = b158_model_check(m);
    if (st != B158_OK) {
        b158_model_free(m);
        return st;
    }
    m->layers = calloc((size_t)m->info.n_layer, sizeof *m->layers);
    if (!m->layers) {
        b158_model_free(m);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the layers");
    }
    *out = m;
    return B158_OK;
}

b158_status b158_tpack_from_int8(b158_model *m, const int8_t *w, const float *scales, int n, int k,
                                 b158_tpack *t)
{
    const int k_pad = b158_ternary_k_pad(k);
    t->codes = b158_model_alloc(m, (size_t)n * k_pad / 4);
    t->scales = b158_model_alloc(m, (size_t)n * sizeof(float));
    if (!t->codes || !t->scales)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for a %d x %d matrix", n, k);
    memcpy(t->scales, scales, (size_t)n * sizeof(float));
    t->n = n;
    t->k = k;
    t->k_pad = k_pad;
    return b158_ternary_pack(w, n, k, t->codes);
}

/* ---- random models ---------------------------------------------------------------------- */

b158_status b158_model_preset(const char *name, b158_model_info *h)
{
    static const struct {
        const char *name;
        int embd, layer, head, head_kv, ff, vocab, ctx;
    } p[] = {
        {"tiny", 256, 2, 4, 2, 512, 512, 256},
        {"700M", 1536, 24, 16, 16, 4096, 32000, 2048},
        {"1.3B", 2048, 24, 32, 32, 5460, 32000, 2048},
        {"3B", 3200, 26, 32, 32, 8640, 32000, 2048},
        {"3.9B", 3200, 26, 32, 32, 11008, 32000, 2048},
        {"2B-4T", 2560, 30, 20, 5, 6912, 128256, 4096},
    };
    if (!h)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_preset: out required");
    for (size_t i = 0; name && i < sizeof p / sizeof p[0]; i++) {
        if (strcmp(name, p[i].name) == 0) {
            memset(h, 0, sizeof *h);
            h->arch = B158_ARCH_BITNET_25, h->relu2 = 1, h->sub_norms = 1;
            h->n_embd = p[i].embd, h->n_layer = p[i].layer, h->n_head = p[i].head;
            h->n_head_kv = p[i].head_kv, h->n_ff = p[i].ff, h->n_vocab = p[i].vocab;
            h->n_ctx_train = p[i].ctx, h->rms_eps = 1e-5f;
            h->rope_base = p[i].vocab == 128256 ? 500000.0f : 10000.0f;
            return B158_OK;
        }
    }
    return B158_FAIL(B158_ERR_INVALID_ARG,
                     "unknown preset '%s' (700M, 1.3B, 3B, 3.9B, 2B-4T, tiny)", name ? name : "");
}

static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float next_uniform(uint64_t *state) /* [-1, 1) */
{
    return (float)(next_u64(state) >> 40) / (float)(1ull << 23) - 1.0f;
}

/* A random ternary matrix with weights uniform over {-1, 0, +1}, drawn straight into the
 * packed layout (b158_ternary_pack's): each byte's four codes are one draw of 81 = 3^4 (32 bits
 * of the generator times 81, the high part), the codes past k then set to 1 (w = 0). */
static b158_status random_matrix(b158_model *m, uint64_t *rng, int n, int k, b158_tpack *t)
{
    const int k_pad = b158_ternary_k_pad(k);
    const size_t row = (size_t)k_pad / 4;
    t->codes = b158_model_alloc(m, (size_t)n * row);
    t->scales = b158_model_alloc(m, (size_t)n * sizeof(float));
    if (!t->codes || !t->scales)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for a %d x %d matrix", n, k);
    t->n = n, t->k = k, t->k_pad = k_pad;
    uint8_t byte_of[81];
    for (int v = 0; v < 81; v++)
        byte_of[v] = (uint8_t)(v % 3 | (v / 3 % 3) << 2 | (v / 9 % 3) << 4 | (v / 27) << 6);
    const size_t bytes = (size_t)n * row;
    for (size_t i = 0; i < bytes; i += 2) {
        const uint64_t r = next_u64(rng);
        t->codes[i] = byte_of[((r & 0xffffffffu) * 81) >> 32];
        if (i + 1 < bytes)
            t->codes[i + 1] = byte_of[((r >> 32) * 81) >> 32];
    }
    for (int r = 0; r < n; r++)
        for (int e = k; e < k_pad; e++) {
            uint8_t *b = &t->codes[(size_t)r * row + (size_t)(e / 256) * 64 + e % 64];
            const int sh = 2 * ((e % 256) / 64);
            *b = (uint8_t)((*b & ~(3 << sh)) | 1 << sh);
        }
    /* one scale per tensor, as BitNet checkpoints have; keeps unit variance through the layer.
     * Rounded to bf16 precision so every GGUF weight type (fp16 / bf16 scales) stores it
     * exactly and a saved model reloads bit for bit. */
    const float s = b158_bf16_to_f32(b158_f32_to_bf16(1.0f / sqrtf((float)k * 2.0f / 3.0f)));
    for (int i = 0; i < n; i++)
        t->scales[i] = s;
    return B158_OK;
}

static const float *random_norm(b158_model *m, uint64_t *rng, int n)
{
    float *v = b158_model_alloc(m, (size_t)n * sizeof(float));
    for (int i = 0; v && i < n; i++)
        v[i] = 1.0f + 0.2f * next_uniform(rng);
    return v;
}

b158_status b158_model_random(const b158_model_info *shape, uint64_t seed, b158_model **out)
{
    if (out)
        *out = NULL;
    if (!shape || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_random: shape and out required");
    b158_model *m;
    B158_TRY(b158_model_new(shape, &m));
    const b158_model_info *h = &m->info;
    static const char *names[] = {"bitnet-25", "bitnet", "llama"};
    snprintf(m->arch_name, sizeof m->arch_name, "%s",
             h->arch <= B158_ARCH_LLAMA ? names[h->arch] : "?");
    snprintf(m->name, sizeof m->name, "random (seed %llu)", (unsigned long long)seed);
    m->info.arch_name = m->arch_name;
    m->info.name = m->name;
    uint64_t rng = seed * 0x2545f4914f6cdd1dull + 1;
    const int qd = h->n_head * h->head_dim, kvd = h->n_head_kv * h->head_dim;
    b158_status st = B158_OK;
    for (int l = 0; l < h->n_layer && st == B158_OK; l++) {
        struct b158_layer *L = &m->layers[l];
        L->attn_norm = random_norm(m, &rng, h->n_embd);
        L->ffn_norm = random_norm(m, &rng, h->n_embd);
        L->attn_sub_norm = h->sub_norms ? random_norm(m, &rng, qd) : NULL;
        L->ffn_sub_norm = h->sub_norms ? random_norm(m, &rng, h->n_ff) : NULL;
        if (!L->attn_norm || !L->ffn_norm ||
            (h->sub_norms && (!L->attn_sub_norm || !L->ffn_sub_norm)))
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for norms");
        if (st == B158_OK)
            st = random_matrix(m, &rng, qd, h->n_embd, &L->wq);
        if (st == B158_OK)
            st = random_matrix(m, &rng, kvd, h->n_embd, &L->wk);
        if (st == B158_OK)
            st = random_matrix(m, &rng, kvd, h->n_embd, &L->wv);
        if (st == B158_OK)
            st = random_matrix(m, &rng, h->n_embd, qd, &L->wo);
        if (st == B158_OK)
            st = random_matrix(m, &rng, h->n_ff, h->n_embd, &L->wgate);
        if (st == B158_OK)
            st = random_matrix(m, &rng, h->n_ff, h->n_embd, &L->wup);
        if (st == B158_OK)
            st = random_matrix(m, &rng, h->n_embd, h->n_ff, &L->wdown);
    }
    if (st == B158_OK) {
        m->output_norm = random_norm(m, &rng, h->n_embd);
        uint16_t *e = b158_model_alloc(m, (size_t)h->n_vocab * h->n_embd * 2);
        if (!m->output_norm || !e) {
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the embedding");
        } else {
            /* unit-variance logits through the tied LM head: a random model then samples
             * varied text instead of repeating its argmax */
            const float amp = sqrtf(3.0f / (float)h->n_embd);
            for (size_t i = 0; i < (size_t)h->n_vocab * h->n_embd; i++)
                e[i] = b158_f32_to_f16(amp * next_uniform(&rng));
            m->tok_embd = m->output = e;
            m->info.tied_embedding = 1;
        }
    }
    if (st != B158_OK) {
        b158_model_free(m);
        return st;
    }
    *out = m;
    return B158_OK;
}

/* ---- upload ----------------------------------------------------------------------------- */

static b158_status upload(b158_runtime *rt, const void *data, size_t bytes, b158_buf *out)
{
    B158_TRY(b158_buf_alloc(rt, B158_MEM_WEIGHTS, bytes, out));
    return b158_buf_write(rt, out, 0, bytes, data);
}

/* Uploads the rows of n matrices of one input width, one after another, as one device matrix:
 * packed ternary, or the FP16 baseline's dense copy, as the model's mode says. */
static b158_status upload_matrix(const b158_model *m, b158_runtime *rt, const b158_tpack *const *t,
                                 int n, b158_tmat *out, b158_buf *dense)
{
    b158_tpack cat = *t[0];
    uint8_t *codes = NULL;
    float *scales = NULL;
    if (n > 1) {
        const size_t row = (size_t)cat.k_pad / 4;
        cat.n = 0;
        for (int i = 0; i < n; i++)
            cat.n += t[i]->n;
        codes = malloc((size_t)cat.n * row);
        scales = malloc((size_t)cat.n * sizeof *scales);
        if (!codes || !scales) {
            free(codes), free(scales);
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for a %d x %d matrix", cat.n,
                             cat.k);
        }
        for (int i = 0, r = 0; i < n; r += t[i]->n, i++) {
            memcpy(codes + (size_t)r * row, t[i]->codes, (size_t)t[i]->n * row);
            memcpy(scales + r, t[i]->scales, (size_t)t[i]->n * sizeof *scales);
        }
        cat.codes = codes, cat.scales = scales;
    }
    const b158_status st =
        m->dev_mode != B158_WEIGHTS_TERNARY
            ? b158_baseline_upload(rt, &cat, dense)
            : b158_tmat_upload_packed(rt, cat.codes, cat.scales, cat.n, cat.k, out);
    free(codes), free(scales);
    return st;
}

static b158_status upload_all(b158_model *m, b158_runtime *rt)
{
    const b158_model_info *h = &m->info;
    const size_t qd = (size_t)h->n_head * h->head_dim;
    m->dev = calloc((size_t)h->n_layer, sizeof *m->dev);
    if (!m->dev)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory");
    for (int l = 0; l < h->n_layer; l++) {
        const struct b158_layer *L = &m->layers[l];
        struct b158_layer_dev *d = &m->dev[l];
        B158_TRY(upload(rt, L->attn_norm, (size_t)h->n_embd * 4, &d->attn_norm));
        B158_TRY(upload(rt, L->ffn_norm, (size_t)h->n_embd * 4, &d->ffn_norm));
        if (L->attn_sub_norm)
            B158_TRY(upload(rt, L->attn_sub_norm, qd * 4, &d->attn_sub_norm));
        if (L->ffn_sub_norm)
            B158_TRY(upload(rt, L->ffn_sub_norm, (size_t)h->n_ff * 4, &d->ffn_sub_norm));
        const b158_tpack *qkv[] = {&L->wq, &L->wk, &L->wv}, *gu[] = {&L->wgate, &L->wup};
        B158_TRY(upload_matrix(m, rt, qkv, 3, &d->wqkv, &d->hqkv));
        B158_TRY(upload_matrix(m, rt, &(const b158_tpack *){&L->wo}, 1, &d->wo, &d->ho));
        B158_TRY(upload_matrix(m, rt, gu, 2, &d->wgu, &d->hgu));
        B158_TRY(upload_matrix(m, rt, &(const b158_tpack *){&L->wdown}, 1, &d->wdown, &d->hdown));
    }
    B158_TRY(upload(rt, m->output_norm, (size_t)h->n_embd * 4, &m->d_output_norm));
    const size_t ebytes = (size_t)h->n_vocab * h->n_embd * 2;
    B158_TRY(upload(rt, m->tok_embd, ebytes, &m->d_tok_embd));
    if (m->output != m->tok_embd)
        B158_TRY(upload(rt, m->output, ebytes, &m->d_output));
    return B158_OK;
}

b158_status b158_model_upload(b158_model *m, b158_runtime *rt)
{
    return b158_model_upload_as(m, rt, B158_WEIGHTS_TERNARY);
}

b158_status b158_weight_mode_check(const b158_runtime *rt, b158_weight_mode mode)
{
    if (!rt)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_weight_mode_check: runtime required");
    if (mode < B158_WEIGHTS_TERNARY || mode > B158_WEIGHTS_FP16_CLBLAST)
        return B158_FAIL(B158_ERR_INVALID_ARG, "unknown weight mode %d", (int)mode);
    return mode == B158_WEIGHTS_TERNARY ? B158_OK : b158_baseline_check(rt, mode);
}

b158_status b158_model_upload_as(b158_model *m, b158_runtime *rt, b158_weight_mode mode)
{
    if (!m || !rt)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_upload: model and runtime required");
    if (m->rt == rt && m->dev_mode == mode)
        return B158_OK;
    if (m->rt)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "the model is already on a device (or in the other weight mode)");
    B158_TRY(b158_weight_mode_check(rt, mode));
    m->rt = rt;
    m->dev_mode = mode;
    b158_status st = upload_all(m, rt);
    if (st != B158_OK)
        free_device(m);
    return st;
}
