/* Writes a model as a GGUF file in llama.cpp's conventions (names, keys, types), with its
 * ternary weights in a chosen format; used by the random-model generator and the loader tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf-write.h"
#include "gguf.h"
#include "model.h"
#include "quants.h"

struct save_tensor {
    const b158_tpack *tern; /* ternary matrix, or */
    const float *f32;       /* a norm vector, or */
    const uint16_t *f16;    /* an FP16 table */
    size_t n_bytes;
};

struct save_ctx {
    uint32_t type;
    struct save_tensor *t;
};

static b158_status fill(void *user, size_t index, void *dst, size_t n_bytes)
{
    struct save_ctx *c = user;
    const struct save_tensor *t = &c->t[index];
    if (t->f32) {
        memcpy(dst, t->f32, n_bytes);
        return B158_OK;
    }
    if (t->f16) {
        memcpy(dst, t->f16, n_bytes);
        return B158_OK;
    }
    const b158_tpack *p = t->tern;
    int8_t *w = malloc((size_t)p->n * p->k);
    if (!w)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory writing a tensor");
    for (int r = 0; r < p->n; r++)
        for (int e = 0; e < p->k; e++)
            w[(size_t)r * p->k + e] = (int8_t)b158_tpack_get(p, r, e);
    /* row scales for TQ types; one tensor scale for the others (checked by the caller) */
    b158_status st = b158_ternary_encode(c->type, w, p->scales, p->n, p->k, dst, n_bytes);
    free(w);
    return st;
}

/* Copies the tokenizer.* keys of another GGUF (a vocab-only file or a model). */
static b158_status copy_tokenizer(b158_gguf_writer *w, const char *path, int n_vocab)
{
    b158_gguf *g;
    B158_TRY(b158_gguf_open(path, &g));
    b158_status st = B158_OK;
    uint64_t n_tok = 0;
    enum b158_gguf_vtype et;
    if (b158_gguf_get_arr_info(g, "tokenizer.ggml.tokens", &et, &n_tok) != B158_OK ||
        n_tok != (uint64_t)n_vocab)
        st = B158_FAIL(B158_ERR_INVALID_ARG, "%s: its vocabulary has %llu tokens, the model %d",
                       path, (unsigned long long)n_tok, n_vocab);
    for (size_t i = 0; st == B158_OK && i < b158_gguf_n_kv(g); i++) {
        b158_gguf_str k = b158_gguf_key_at(g, i);
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0)
            continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        enum b158_gguf_vtype t = b158_gguf_kv_type(g, i);
        if (t == B158_GGUF_STRING) {
            b158_gguf_str v;
            st = b158_gguf_get_str(g, key, &v);
            if (st == B158_OK)
                st = b158_gguf_add_strn(w, key, v.ptr, v.len);
        } else if (t == B158_GGUF_ARRAY) {
            uint64_t n;
            st = b158_gguf_get_arr_info(g, key, &et, &n);
            if (st == B158_OK && et == B158_GGUF_STRING) {
                b158_gguf_str *strs = malloc((size_t)n * sizeof *strs);
                const char **ptrs = malloc((size_t)n * sizeof *ptrs);
                size_t *lens = malloc((size_t)n * sizeof *lens);
                if (!strs || !ptrs || !lens)
                    st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory copying %s", key);
                if (st == B158_OK)
                    st = b158_gguf_get_arr_strs(g, key, strs, n);
                for (uint64_t j = 0; st == B158_OK && j < n; j++)
                    ptrs[j] = strs[j].ptr, lens[j] = strs[j].len;
                if (st == B158_OK)
                    st = b158_gguf_add_arr_str(w, key, ptrs, lens, (size_t)n);
                free(strs), free(ptrs), free(lens);
            } else if (st == B158_OK) {
                const void *data;
                st = b158_gguf_get_arr_raw(g, key, &et, &data, &n);
                if (st == B158_OK)
                    st = b158_gguf_add_arr(w, key, et, data, (size_t)n);
            }
        } else if (t == B158_GGUF_BOOL) {
            int v;
            st = b158_gguf_get_bool(g, key, &v);
            if (st == B158_OK)
                st = b158_gguf_add_bool(w, key, v);
        } else if (t == B158_GGUF_F32 || t == B158_GGUF_F64) {
            double v;
            st = b158_gguf_get_f64(g, key, &v);
            if (st == B158_OK)
                st = b158_gguf_add_f32(w, key, (float)v);
        } else {
            uint32_t v;
            st = b158_gguf_get_u32(g, key, &v);
            if (st == B158_OK)
                st = b158_gguf_add_u32(w, key, v);
        }
    }
    b158_gguf_close(g);
    return st;
}

/* A byte-level GPT-2 style vocabulary without merges: the 256 byte tokens (GPT-2's
 * byte-to-unicode alphabet), an end-of-text token, then filler tokens up to n_vocab. */
static b158_status synthetic_tokenizer(b158_gguf_writer *w, int n_vocab)
{
    if (n_vocab < 257)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "a synthetic vocabulary needs at least 257 tokens "
                         "(got %d)",
                         n_vocab);
    char(*text)[24] = malloc((size_t)n_vocab * sizeof *text);
    const char **ptrs = malloc((size_t)n_vocab * sizeof *ptrs);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    b158_status st = B158_OK;
    if (!text || !ptrs || !types)
        st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the vocabulary");
    for (int i = 0; st == B158_OK && i < n_vocab; i++) {
        ptrs[i] = text[i];
        types[i] = 1;
        if (i < 256) {
            /* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to
             * U+0100 + n in byte order */
            int b = i, cp;
            if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
                cp = b;
            } else {
                int n = 0;
                for (int x = 0; x < b; x++)
                    n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) ||
                           (x >= 174 && x <= 255));
                cp = 256 + n;
            }
            if (cp < 0x80) {
                text[i][0] = (char)cp, text[i][1] = 0;
            } else {
                text[i][0] = (char)(0xc0 | (cp >> 6)), text[i][1] = (char)(0x80 | (cp & 0x3f));
                text[i][2] = 0;
            }
        } else if (i == 256) {
            snprintf(text[i], sizeof text[i], "<|endoftext|>");
            types[i] = 3;
        } else {
            snprintf(text[i], sizeof text[i], "<|filler_%d|>", i);
            types[i] = 4;
        }
    }
    if (st == B158_OK)
        st = b158_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (st == B158_OK)
        st = b158_gguf_add_str(w, "tokenizer.ggml.pre", "gpt-2"); /* llama.cpp's spelling */
    if (st == B158_OK)
        st = b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", ptrs, NULL, (size_t)n_vocab);
    if (st == B158_OK)
        st = b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_I32, types,
                               (size_t)n_vocab);
    if (st == B158_OK)
        st = b158_gguf_add_arr_str(w, "tokenizer.ggml.merges", ptrs, NULL, 0);
    if (st == B158_OK)
        st = b158_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 256);
    if (st == B158_OK)
        st = b158_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 256);
    if (st == B158_OK)
        st = b158_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", 0);
    free(text), free(ptrs), free(types);
    return st;
}

static b158_status add_hparams(b158_gguf_writer *w, const b158_model *m)
{
    const b158_model_info *h = &m->info;
    char key[96];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, m->arch_name), key)
    B158_TRY(b158_gguf_add_str(w, "general.architecture", m->arch_name));
    B158_TRY(b158_gguf_add_str(w, "general.name", m->name[0] ? m->name : "b158-cl model"));
    B158_TRY(b158_gguf_add_u32(w, KEY("context_length"), (uint32_t)h->n_ctx_train));
    B158_TRY(b158_gguf_add_u32(w, KEY("embedding_length"), (uint32_t)h->n_embd));
    B158_TRY(b158_gguf_add_u32(w, KEY("block_count"), (uint32_t)h->n_layer));
    B158_TRY(b158_gguf_add_u32(w, KEY("feed_forward_length"), (uint32_t)h->n_ff));
    B158_TRY(b158_gguf_add_u32(w, KEY("attention.head_count"), (uint32_t)h->n_head));
    B158_TRY(b158_gguf_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)h->n_head_kv));
    if (h->head_dim * h->n_head != h->n_embd)
        B158_TRY(b158_gguf_add_u32(w, KEY("attention.key_length"), (uint32_t)h->head_dim));
    B158_TRY(b158_gguf_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), h->rms_eps));
    B158_TRY(b158_gguf_add_f32(w, KEY("rope.freq_base"), h->rope_base));
    B158_TRY(b158_gguf_add_u32(w, KEY("rope.dimension_count"), (uint32_t)h->n_rot));
    B158_TRY(b158_gguf_add_u32(w, KEY("vocab_size"), (uint32_t)h->n_vocab));
    if (h->arch == B158_ARCH_BITNET)
        B158_TRY(b158_gguf_add_str(w, "bitnet.hidden_activation", h->relu2 ? "relu2" : "silu"));
#undef KEY
    return B158_OK;
}

/* The public tensor types are GGUF's ids. */
_Static_assert(B158_TENSOR_F32 == (int)B158_TT_F32 && B158_TENSOR_F16 == (int)B158_TT_F16 &&
                   B158_TENSOR_BF16 == (int)B158_TT_BF16 &&
                   B158_TENSOR_TQ1_0 == (int)B158_TT_TQ1_0 &&
                   B158_TENSOR_TQ2_0 == (int)B158_TT_TQ2_0 && B158_TENSOR_I2_S == (int)B158_TT_I2_S,
               "b158_tensor_type must use GGUF's tensor type ids");

b158_status b158_model_save(const b158_model *m, const char *path, b158_tensor_type tensor_type,
                            const char *vocab_from)
{
    if (!m || !path)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_model_save: model and path required");
    const uint32_t ternary_type = (uint32_t)tensor_type; /* a GGUF type id */
    const b158_model_info *h = &m->info;
    if (h->arch == B158_ARCH_LLAMA ? h->rope_interleaved == 0 : h->rope_interleaved != 0)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "the GGUF conventions fix the RoPE pairing of %s; "
                         "this model uses the other one",
                         m->arch_name);
    if (h->arch != B158_ARCH_BITNET && h->relu2 != (h->arch == B158_ARCH_BITNET_25))
        return B158_FAIL(B158_ERR_UNSUPPORTED, "architecture %s fixes the FFN activation",
                         m->arch_name);
    if (h->sub_norms != (h->arch != B158_ARCH_LLAMA))
        return B158_FAIL(B158_ERR_UNSUPPORTED, "architecture %s fixes whether sub-norms exist",
                         m->arch_name);
    const int n_tensors = 2 + h->n_layer * (h->sub_norms ? 11 : 9) + (m->output != m->tok_embd);
    struct save_tensor *ts = calloc((size_t)n_tensors, sizeof *ts);
    b158_gguf_writer *w = NULL;
    b158_status st =
        ts ? b158_gguf_writer_create(&w) : B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory");
    struct save_ctx ctx = {ternary_type, ts};
    int nt = 0;
    const int per_row = ternary_type == B158_TT_TQ1_0 || ternary_type == B158_TT_TQ2_0;
#define ADD(name_, type_, ne0_, ne1_, field_, ptr_, bytes_)                                        \
    do {                                                                                           \
        if (st != B158_OK)                                                                         \
            break;                                                                                 \
        uint64_t ne_[2] = {(uint64_t)(ne0_), (uint64_t)(ne1_)};                                    \
        ts[nt].field_ = (ptr_);                                                                    \
        ts[nt].n_bytes = (bytes_);                                                                 \
        st = b158_gguf_add_tensor(w, (name_), (type_), ne_[1] > 1 ? 2 : 1, ne_, NULL);             \
        nt++;                                                                                      \
    } while (0)
    if (st == B158_OK)
        st = add_hparams(w, m);
    if (st == B158_OK)
        st = vocab_from ? copy_tokenizer(w, vocab_from, h->n_vocab)
                        : synthetic_tokenizer(w, h->n_vocab);
    const size_t emb = (size_t)h->n_vocab * h->n_embd * 2;
    ADD("token_embd.weight", B158_TT_F16, h->n_embd, h->n_vocab, f16, m->tok_embd, emb);
    for (int l = 0; l < h->n_layer && st == B158_OK; l++) {
        const struct b158_layer *L = &m->layers[l];
        const int qd = h->n_head * h->head_dim;
        char name[96];
#define NORM(tname, ptr, width)                                                                    \
    snprintf(name, sizeof name, "blk.%d." tname ".weight", l);                                     \
    ADD(name, B158_TT_F32, (width), 1, f32, (ptr), (size_t)(width)*4);
        NORM("attn_norm", L->attn_norm, h->n_embd);
        const b158_tpack *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown};
        const char *mnames[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                "ffn_gate", "ffn_up", "ffn_down"};
        for (int i = 0; i < 7 && st == B158_OK; i++) {
            const b158_tpack *p = mats[i];
            for (int r = 1; !per_row && r < p->n; r++)
                if (p->scales[r] != p->scales[0])
                    st = B158_FAIL(B158_ERR_UNSUPPORTED,
                                   "%s holds one scale per tensor; layer %d %s has per-row "
                                   "scales",
                                   b158_gguf_type_name(ternary_type), l, mnames[i]);
            size_t bytes = b158_ternary_encoded_size(ternary_type, p->n, p->k);
            if (st == B158_OK && bytes == 0)
                st = B158_FAIL(B158_ERR_INVALID_ARG,
                               "layer %d %s (%d x %d) cannot be stored as "
                               "%s: %s",
                               l, mnames[i], p->n, p->k, b158_gguf_type_name(ternary_type),
                               b158_last_error());
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, mnames[i]);
            ADD(name, ternary_type, p->k, p->n, tern, p, bytes);
            if (i == 3 && h->sub_norms) { /* keep llama.cpp's order: sub-norm after attention */
                NORM("attn_sub_norm", L->attn_sub_norm, qd);
            }
            if (i == 3) {
                NORM("ffn_norm", L->ffn_norm, h->n_embd);
            }
        }
        if (h->sub_norms) {
            NORM("ffn_sub_norm", L->ffn_sub_norm, h->n_ff);
        }
#undef NORM
    }
    ADD("output_norm.weight", B158_TT_F32, h->n_embd, 1, f32, m->output_norm,
        (size_t)h->n_embd * 4);
    if (m->output != m->tok_embd)
        ADD("output.weight", B158_TT_F16, h->n_embd, h->n_vocab, f16, m->output, emb);
#undef ADD
    if (st == B158_OK) {
        b158_gguf_writer_set_fill(w, fill, &ctx);
        st = b158_gguf_writer_write_file(w, path);
    }
    b158_gguf_writer_free(w);
    free(ts);
    return st;
}
