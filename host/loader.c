/* GGUF model loader: architecture and hyperparameters from metadata, every tensor checked for
 * shape and type, ternary weights decoded (TQ2_0, TQ1_0, I2_S, exact or latent float) and packed
 * into the device layout; the FP16 embedding is used in place from the mapping when possible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "quants.h"

struct load_ctx {
    b158_gguf *g;
    b158_model *m;
    char arch[32];   /* general.architecture */
    char name[128];  /* general.name, or "" */
    char prefix[40]; /* "<arch>." */
    int8_t *tmp_w;   /* decode buffer of the largest ternary tensor */
    float *tmp_s;
    size_t tmp_cap;
    int n_ternarized;
};

static b158_status get_u32_default(struct load_ctx *c, const char *key, uint32_t def, int *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", c->prefix, key);
    uint32_t v = def;
    if (b158_gguf_has_key(c->g, full)) {
        enum b158_gguf_vtype t;
        uint64_t n;
        if (b158_gguf_get_arr_info(c->g, full, &t, &n) == B158_OK)
            return B158_FAIL(B158_ERR_UNSUPPORTED,
                             "%s: per-layer values (an array) are not supported", full);
        B158_TRY(b158_gguf_get_u32(c->g, full, &v));
    } else if (def == 0) {
        return B158_FAIL(B158_ERR_FORMAT, "%s: required key %s is missing", b158_gguf_path(c->g),
                         full);
    }
    if (v > (uint32_t)INT32_MAX)
        return B158_FAIL(B158_ERR_FORMAT, "%s = %u is out of range", full, v);
    *out = (int)v;
    return B158_OK;
}

static b158_status get_f32_default(struct load_ctx *c, const char *key, float def, float *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", c->prefix, key);
    *out = def;
    if (b158_gguf_has_key(c->g, full))
        B158_TRY(b158_gguf_get_f32(c->g, full, out));
    if (!(*out > 0.0f) || !isfinite(*out))
        return B158_FAIL(B158_ERR_FORMAT, "%s: %s = %g; it must be a positive finite number",
                         b158_gguf_path(c->g), full, *out);
    return B158_OK;
}

/* The tensor name, checked for its shape ({ne0, ne1}; ne1 0 for a vector). Missing is an error
 * unless optional, in which case *out is NULL. */
static b158_status tensor(struct load_ctx *c, const char *name, uint64_t ne0, uint64_t ne1,
                          int optional, const b158_gguf_tensor **out)
{
    const b158_gguf_tensor *t = b158_gguf_find_tensor(c->g, name);
    *out = t;
    if (!t) {
        if (optional)
            return B158_OK;
        return B158_FAIL(B158_ERR_FORMAT, "%s: tensor %s is missing", b158_gguf_path(c->g), name);
    }
    const uint64_t want1 = ne1 ? ne1 : 1;
    int ok = t->ne[0] == ne0 && t->ne[1] == want1 && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: tensor %s has shape {%llu, %llu, %llu, %llu}, expected {%llu, %llu}",
                         b158_gguf_path(c->g), name, (unsigned long long)t->ne[0],
                         (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                         (unsigned long long)t->ne[3], (unsigned long long)ne0,
                         (unsigned long long)want1);
    return B158_OK;
}

static b158_status load_f32(struct load_ctx *c, const char *name, int n, int optional,
                            const float **out)
{
    const b158_gguf_tensor *t;
    *out = NULL;
    B158_TRY(tensor(c, name, (uint64_t)n, 0, optional, &t));
    if (!t)
        return B158_OK;
    float *v = b158_model_alloc(c->m, (size_t)n * sizeof(float));
    if (!v)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory loading %s", name);
    b158_status st = b158_tensor_to_f32(t->type, t->data, t->n_bytes, 1, n, v);
    if (st != B158_OK)
        return B158_FAIL(st, "%s: tensor %s: %s", b158_gguf_path(c->g), name, b158_last_error());
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return B158_FAIL(B158_ERR_FORMAT,
                             "%s: tensor %s holds %g at element %d; weights must be finite (the "
                             "file is corrupt)",
                             b158_gguf_path(c->g), name, v[i], i);
    *out = v;
    return B158_OK;
}

/* Decodes blk.<l>.<name>.weight ({k, n}) into a packed ternary matrix; an optional
 * blk.<l>.<name>.scale tensor (llama.cpp's bitnet conversions) multiplies every row scale. */
static b158_status load_ternary(struct load_ctx *c, int l, const char *name, int n, int k,
                                b158_tpack *out)
{
    char wname[96], sname[96];
    snprintf(wname, sizeof wname, "blk.%d.%s.weight", l, name);
    snprintf(sname, sizeof sname, "blk.%d.%s.scale", l, name);
    const b158_gguf_tensor *t, *ts;
    B158_TRY(tensor(c, wname, (uint64_t)k, (uint64_t)n, 0, &t));
    const size_t count = (size_t)n * (size_t)k;
    if (count > c->tmp_cap) {
        free(c->tmp_w);
        free(c->tmp_s);
        c->tmp_w = malloc(count);
        c->tmp_s = malloc(count * sizeof(float)); /* >= n floats */
        c->tmp_cap = c->tmp_w && c->tmp_s ? count : 0;
        if (!c->tmp_cap)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory decoding %s", wname);
    }
    b158_ternary_info info;
    b158_status st =
        b158_ternary_decode(t->type, t->data, t->n_bytes, n, k, c->tmp_w, c->tmp_s, &info);
    if (st != B158_OK)
        return B158_FAIL(st, "%s: tensor %s (%s): %s", b158_gguf_path(c->g), wname,
                         b158_tensor_type_name(t->type), b158_last_error());
    c->n_ternarized += info.ternarized;
    B158_TRY(tensor(c, sname, 1, 0, 1, &ts));
    if (ts) {
        float extra;
        st = b158_tensor_to_f32(ts->type, ts->data, ts->n_bytes, 1, 1, &extra);
        if (st != B158_OK || !isfinite(extra))
            return B158_FAIL(B158_ERR_FORMAT, "%s: tensor %s is not a finite scale",
                             b158_gguf_path(c->g), sname);
        for (int i = 0; i < n; i++)
            c->tmp_s[i] *= extra;
    }
    for (int i = 0; i < n; i++)
        if (!isfinite(c->tmp_s[i]))
            return B158_FAIL(B158_ERR_FORMAT,
                             "%s: tensor %s: the scale of row %d is not finite (%g); the file is "
                             "corrupt",
                             b158_gguf_path(c->g), ts ? sname : wname, i, c->tmp_s[i]);
    return b158_tpack_from_int8(c->m, c->tmp_w, c->tmp_s, n, k, out);
}

static b158_status load_embedding(struct load_ctx *c, const char *name, int optional,
                                  const uint16_t **out)
{
    const b158_model_info *h = &c->m->info;
    const b158_gguf_tensor *t;
    *out = NULL;
    B158_TRY(tensor(c, name, (uint64_t)h->n_embd, (uint64_t)h->n_vocab, optional, &t));
    if (!t)
        return B158_OK;
    const size_t count = (size_t)h->n_vocab * h->n_embd;
    const uint16_t *e;
    if (t->type == B158_TT_F16 && ((uintptr_t)t->data % 2) == 0) {
        e = t->data; /* used in place: the mapping lives as long as the model */
    } else {
        uint16_t *conv = b158_model_alloc(c->m, count * 2);
        if (!conv)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %s", name);
        b158_status st =
            b158_tensor_to_f16(t->type, t->data, t->n_bytes, h->n_vocab, h->n_embd, conv);
        if (st != B158_OK)
            return B158_FAIL(st, "%s: tensor %s (%s): %s", b158_gguf_path(c->g), name,
                             b158_tensor_type_name(t->type), b158_last_error());
        e = conv;
    }
    /* FP16 exponent all ones: infinity or NaN (also a float beyond 65504 converted) */
    for (size_t i = 0; i < count; i++)
        if ((e[i] & 0x7c00u) == 0x7c00u)
            return B158_FAIL(
                B158_ERR_FORMAT,
                "%s: tensor %s holds a value that is not finite in FP16 (NaN, "
                "infinity or beyond 65504) at row %zu, column %zu; the file is corrupt",
                b158_gguf_path(c->g), name, i / (size_t)h->n_embd, i % (size_t)h->n_embd);
    *out = e;
    return B158_OK;
}

static b158_status read_hparams(struct load_ctx *c, b158_model_info *h)
{
    b158_gguf *g = c->g;
    char *arch = c->arch;
    if (!b158_gguf_has_key(g, "general.architecture"))
        return B158_FAIL(B158_ERR_FORMAT, "%s: general.architecture is missing; not a model file",
                         b158_gguf_path(g));
    if (b158_gguf_copy_str(g, "general.architecture", arch, sizeof c->arch) != B158_OK)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "%s: unsupported architecture (name too long)",
                         b158_gguf_path(g));
    memset(h, 0, sizeof *h);
    if (strcmp(arch, "bitnet-25") == 0 || strcmp(arch, "bitnet-b1.58") == 0) {
        h->arch = B158_ARCH_BITNET_25;
        h->relu2 = 1;
        h->sub_norms = 1;
    } else if (strcmp(arch, "bitnet") == 0) {
        h->arch = B158_ARCH_BITNET;
        h->sub_norms = 1;
    } else if (strcmp(arch, "llama") == 0) {
        h->arch = B158_ARCH_LLAMA;
        h->rope_interleaved = 1; /* llama.cpp's LLaMA graph: adjacent pairs (Q/K permuted) */
    } else {
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "%s: unsupported architecture '%s' (b158-cl runs bitnet-25, bitnet and "
                         "llama with ternary weights)",
                         b158_gguf_path(g), arch);
    }
    snprintf(c->prefix, sizeof c->prefix, "%s.", arch);
    if (b158_gguf_has_key(g, "general.name") &&
        b158_gguf_copy_str(g, "general.name", c->name, sizeof c->name) != B158_OK)
        c->name[0] = '\0'; /* a name too long for the summary line is not worth failing for */

    int head_dim = 0;
    B158_TRY(get_u32_default(c, "embedding_length", 0, &h->n_embd));
    B158_TRY(get_u32_default(c, "block_count", 0, &h->n_layer));
    B158_TRY(get_u32_default(c, "feed_forward_length", 0, &h->n_ff));
    B158_TRY(get_u32_default(c, "attention.head_count", 0, &h->n_head));
    B158_TRY(get_u32_default(c, "attention.head_count_kv", (uint32_t)h->n_head, &h->n_head_kv));
    B158_TRY(get_u32_default(c, "context_length", 2048, &h->n_ctx_train));
    const struct {
        const char *key;
        int value;
    } sizes[] = {{"embedding_length", h->n_embd},
                 {"block_count", h->n_layer},
                 {"feed_forward_length", h->n_ff},
                 {"attention.head_count", h->n_head},
                 {"attention.head_count_kv", h->n_head_kv}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value == 0)
            return B158_FAIL(B158_ERR_FORMAT, "%s: %s%s is 0; it must be positive",
                             b158_gguf_path(g), c->prefix, sizes[i].key);
    if (h->n_embd % h->n_head == 0) /* else the file must say (attention.key_length) */
        head_dim = h->n_embd / h->n_head;
    B158_TRY(get_u32_default(c, "attention.key_length", head_dim ? (uint32_t)head_dim : 0,
                             &h->head_dim));
    B158_TRY(get_u32_default(c, "rope.dimension_count", (uint32_t)h->head_dim, &h->n_rot));
    B158_TRY(get_f32_default(c, "attention.layer_norm_rms_epsilon", 1e-5f, &h->rms_eps));
    B158_TRY(get_f32_default(c, "rope.freq_base", 10000.0f, &h->rope_base));
    if (h->arch == B158_ARCH_BITNET && b158_gguf_has_key(g, "bitnet.hidden_activation")) {
        char act[32];
        B158_TRY(b158_gguf_copy_str(g, "bitnet.hidden_activation", act, sizeof act));
        if (strcmp(act, "relu2") == 0 || strcmp(act, "relu_squared") == 0)
            h->relu2 = 1;
        else if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
            return B158_FAIL(B158_ERR_UNSUPPORTED,
                             "bitnet.hidden_activation '%s' is not "
                             "supported (silu, relu2)",
                             act);
    }
    const b158_gguf_tensor *emb = b158_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return B158_FAIL(B158_ERR_FORMAT, "%s: tensor token_embd.weight is missing",
                         b158_gguf_path(g));
    if (emb->ne[1] > (uint64_t)INT32_MAX)
        return B158_FAIL(B158_ERR_FORMAT, "token_embd.weight has %llu rows",
                         (unsigned long long)emb->ne[1]);
    h->n_vocab = (int)emb->ne[1];
    return B158_OK;
}

static b158_status load_weights(struct load_ctx *c)
{
    b158_model *m = c->m;
    const b158_model_info *h = &m->info;
    const int qd = h->n_head * h->head_dim, kvd = h->n_head_kv * h->head_dim;
    for (int l = 0; l < h->n_layer; l++) {
        struct b158_layer *L = &m->layers[l];
        char name[96];
#define NORM(field, tname, width, opt)                                                             \
    snprintf(name, sizeof name, "blk.%d." tname ".weight", l);                                     \
    B158_TRY(load_f32(c, name, (width), (opt), &L->field));
        NORM(attn_norm, "attn_norm", h->n_embd, 0);
        NORM(ffn_norm, "ffn_norm", h->n_embd, 0);
        if (h->sub_norms) {
            NORM(attn_sub_norm, "attn_sub_norm", qd, 0);
            NORM(ffn_sub_norm, "ffn_sub_norm", h->n_ff, 0);
        }
#undef NORM
        B158_TRY(load_ternary(c, l, "attn_q", qd, h->n_embd, &L->wq));
        B158_TRY(load_ternary(c, l, "attn_k", kvd, h->n_embd, &L->wk));
        B158_TRY(load_ternary(c, l, "attn_v", kvd, h->n_embd, &L->wv));
        B158_TRY(load_ternary(c, l, "attn_output", h->n_embd, qd, &L->wo));
        B158_TRY(load_ternary(c, l, "ffn_gate", h->n_ff, h->n_embd, &L->wgate));
        B158_TRY(load_ternary(c, l, "ffn_up", h->n_ff, h->n_embd, &L->wup));
        B158_TRY(load_ternary(c, l, "ffn_down", h->n_embd, h->n_ff, &L->wdown));
    }
    B158_TRY(load_f32(c, "output_norm.weight", h->n_embd, 0, &m->output_norm));
    B158_TRY(load_embedding(c, "token_embd.weight", 0, &m->tok_embd));
    B158_TRY(load_embedding(c, "output.weight", 1, &m->output));
    m->info.tied_embedding = m->output == NULL;
    if (!m->output)
        m->output = m->tok_embd;
    return B158_OK;
}

static void close_file(void *g)
{
    b158_gguf_close(g);
}

b158_status b158_model_from_gguf(b158_gguf *g, b158_model **out)
{
    if (!out) {
        b158_gguf_close(g);
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_from_gguf: out required");
    }
    *out = NULL;
    if (!g)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_from_gguf: no file");
    struct load_ctx c = {0};
    c.g = g;
    b158_model_info h;
    b158_status st = read_hparams(&c, &h);
    if (st == B158_OK)
        st = b158_model_new(&h, &c.m);
    if (st != B158_OK) {
        b158_gguf_close(c.g);
        return st;
    }
    b158_model *m = c.m;
    snprintf(m->arch_name, sizeof m->arch_name, "%s", c.arch);
    snprintf(m->name, sizeof m->name, "%s", c.name);
    m->info.arch_name = m->arch_name;
    m->info.name = m->name;
    m->file = c.g;
    m->file_close = close_file;
    st = load_weights(&c);
    free(c.tmp_w);
    free(c.tmp_s);
    if (st == B158_OK && c.n_ternarized)
        b158_log(B158_LOG_WARN,
                 "%s: %d tensors held latent float weights and were ternarized with absmean",
                 b158_gguf_path(g), c.n_ternarized);
    if (st != B158_OK) {
        b158_model_free(m);
        return st;
    }
    *out = m;
    return B158_OK;
}

b158_status b158_model_load(const char *path, b158_model **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_load: path and out required");
    b158_gguf *g = NULL;
    B158_TRY(b158_gguf_open(path, &g));
    return b158_model_from_gguf(g, out);
}
