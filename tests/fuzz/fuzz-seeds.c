/* fuzz-seeds OUT_DIR BPE_MODEL SPM_MODEL [TEXT_FILES...]: writes the seed corpora of the fuzz
 * targets into OUT_DIR/<target>/ from the repository's files: small vocabulary-only GGUFs cut
 * from the shipped model's BPE vocabulary and the SentencePiece fixture's, synthetic vocabularies
 * with chat templates and special tokens, tiny random models of every architecture and weight
 * type, and texts (lines of the tokenizer fixtures plus awkward strings). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "b158/model.h"
#include "b158/tokenizer.h"
#include "gguf-write.h"
#include "gguf.h"
#include "half.h"
#include "ops.h"
#include "quants.h"
#include "tokenizer.h"
#include "utf8.h"

static const char *out_dir;

static void die(const char *what)
{
    fprintf(stderr, "fuzz-seeds: %s: %s\n", what, b158_last_error());
    exit(1);
}

static void check(b158_status st, const char *what)
{
    if (st != B158_OK)
        die(what);
}

static void make_dir(const char *sub)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, sub);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        perror(out_dir);
        exit(1);
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
}

static const char *seed_path(const char *target, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    return path;
}

static void write_seed(const char *target, const char *name, const void *data, size_t size)
{
    FILE *f = fopen(seed_path(target, name), "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(seed_path(target, name));
        exit(1);
    }
}

/* Writes w into the given targets' corpora (a GGUF is a seed of several targets). */
static void write_gguf(b158_gguf_writer *w, const char *name, const char *const *targets)
{
    void *data = NULL;
    size_t size = 0;
    check(b158_gguf_writer_write_mem(w, &data, &size), name);
    for (size_t i = 0; targets[i]; i++)
        write_seed(targets[i], name, data, size);
    free(data);
    b158_gguf_writer_free(w);
}

static const char *const gguf_vocab[] = {"gguf", "vocab", NULL};

/* ---- vocabularies cut from the repository's models ---------------------------------------- */

/* Whether the merge "left right" joins two tokens below keep into a token below keep. */
static int merge_kept(const b158_vocab *v, b158_gguf_str m, uint64_t keep)
{
    const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
    if (!sp)
        return 0;
    const size_t ll = (size_t)(sp - m.ptr), rl = m.len - ll - 1;
    char cat[512];
    if (ll + rl > sizeof cat)
        return 0;
    memcpy(cat, m.ptr, ll);
    memcpy(cat + ll, sp + 1, rl);
    const b158_token a = b158_vocab_find(v, m.ptr, ll), b = b158_vocab_find(v, sp + 1, rl),
                     c = b158_vocab_find(v, cat, ll + rl);
    return a >= 0 && b >= 0 && c >= 0 && (uint64_t)a < keep && (uint64_t)b < keep &&
           (uint64_t)c < keep;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "fuzz-seeds: out of memory\n");
        exit(1);
    }
    return p;
}

/* Copies the keys of g that start with prefix into w (general.alignment is the writer's own).
 * With keep > 0 (v: the vocabulary of g) the per-token arrays keep their first keep entries,
 * ids past them become 0 and merges stay only where they join two kept tokens into a kept one. */
static void copy_keys(const b158_gguf *g, const char *prefix, const b158_vocab *v,
                      b158_gguf_writer *w, uint64_t keep)
{
    const size_t pl = strlen(prefix);
    for (size_t i = 0; i < b158_gguf_n_kv(g); i++) {
        const b158_gguf_str k = b158_gguf_key_at(g, i);
        if (k.len < pl || memcmp(k.ptr, prefix, pl) != 0 || k.len > 200 ||
            (k.len == 17 && memcmp(k.ptr, "general.alignment", 17) == 0))
            continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        const enum b158_gguf_vtype t = b158_gguf_kv_type(g, i);
        if (t == B158_GGUF_STRING) {
            b158_gguf_str s;
            check(b158_gguf_get_str(g, key, &s), key);
            check(b158_gguf_add_strn(w, key, s.ptr, s.len), key);
        } else if (t == B158_GGUF_BOOL) {
            int b;
            check(b158_gguf_get_bool(g, key, &b), key);
            check(b158_gguf_add_bool(w, key, b), key);
        } else if (t == B158_GGUF_F32 || t == B158_GGUF_F64) {
            float x;
            check(b158_gguf_get_f32(g, key, &x), key);
            check(b158_gguf_add_f32(w, key, x), key);
        } else if (t != B158_GGUF_ARRAY) {
            uint32_t x;
            check(b158_gguf_get_u32(g, key, &x), key);
            check(b158_gguf_add_u32(w, key, keep && x >= keep ? 0 : x), key);
        } else {
            enum b158_gguf_vtype et;
            uint64_t n;
            check(b158_gguf_get_arr_info(g, key, &et, &n), key);
            const int merges = strcmp(key, "tokenizer.ggml.merges") == 0;
            const uint64_t take = keep && !merges && n > keep ? keep : n;
            if (et != B158_GGUF_STRING) {
                const void *raw;
                check(b158_gguf_get_arr_raw(g, key, &et, &raw, &n), key);
                check(b158_gguf_add_arr(w, key, et, raw, (size_t)take), key);
                continue;
            }
            b158_gguf_str *s = xmalloc((size_t)n * sizeof *s);
            const char **p = xmalloc((size_t)n * sizeof *p);
            size_t *l = xmalloc((size_t)n * sizeof *l), m = 0;
            check(b158_gguf_get_arr_strs(g, key, s, n), key);
            for (uint64_t j = 0; j < take; j++) {
                if (merges && keep && !merge_kept(v, s[j], keep))
                    continue;
                p[m] = s[j].ptr, l[m] = s[j].len, m++;
            }
            check(b158_gguf_add_arr_str(w, key, p, l, m), key);
            free(s), free(p), free(l);
        }
    }
}

static void repository_vocab(const char *path, const char *name, uint64_t keep)
{
    b158_gguf *g = NULL;
    b158_vocab *v = NULL;
    check(b158_gguf_open(path, &g), path);
    check(b158_vocab_from_gguf(g, &v), path);
    b158_gguf_writer *w = NULL;
    check(b158_gguf_writer_create(&w), name);
    copy_keys(g, "tokenizer.", v, w, keep);
    write_gguf(w, name, gguf_vocab);
    b158_vocab_free(v);
    b158_gguf_close(g);
}

/* ---- synthetic vocabularies --------------------------------------------------------------- */

#define TINY_VOCAB 48 /* the tiny models' vocabulary size */

/* A SentencePiece vocabulary of n tokens: <unk>, <s>, </s>, byte tokens <0x00>.., pieces. */
static b158_gguf_writer *spm_vocab(int n, int with_bytes)
{
    static const char *const pieces[] = {
        "\xe2\x96\x81", "a", "b", "\xe2\x96\x81\x61", "ab", "\xe2\x96\x81the", "\n", "e", "th"};
    char(*text)[16] = xmalloc((size_t)n * sizeof *text);
    const char **ptrs = xmalloc((size_t)n * sizeof *ptrs);
    float *scores = xmalloc((size_t)n * sizeof *scores);
    int32_t *types = xmalloc((size_t)n * sizeof *types);
    const int n_bytes = with_bytes ? 32 : 0;
    for (int i = 0; i < n; i++) {
        ptrs[i] = text[i];
        scores[i] = -(float)i;
        types[i] = 1;
        if (i < 3) {
            snprintf(text[i], sizeof text[i], "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            types[i] = i == 0 ? 2 : 3;
        } else if (i < 3 + n_bytes) {
            snprintf(text[i], sizeof text[i], "<0x%02X>", (unsigned)(i - 3 + 0x20) & 0xff);
            types[i] = 6;
        } else if (i - 3 - n_bytes < (int)(sizeof pieces / sizeof pieces[0])) {
            snprintf(text[i], sizeof text[i], "%s", pieces[i - 3 - n_bytes]);
        } else {
            snprintf(text[i], sizeof text[i], "p%d", i);
        }
    }
    b158_gguf_writer *w = NULL;
    check(b158_gguf_writer_create(&w), "spm");
    check(b158_gguf_add_str(w, "tokenizer.ggml.model", "llama"), "spm");
    check(b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", ptrs, NULL, (size_t)n), "spm");
    check(b158_gguf_add_arr(w, "tokenizer.ggml.scores", B158_GGUF_F32, scores, (size_t)n), "spm");
    check(b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_I32, types, (size_t)n),
          "spm");
    check(b158_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 1), "spm");
    check(b158_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 2), "spm");
    check(b158_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0), "spm");
    free(text), free(ptrs), free(scores), free(types);
    return w;
}

/* A byte-level BPE vocabulary: the 256 byte characters, a few merges, special tokens of a chat
 * format, the given pre-tokenizer and chat template. */
static b158_gguf_writer *bpe_vocab(const char *pre, const char *const *specials,
                                   const char *chat_template)
{
    static const char *const merged[] = {"he", "ll", "hell", "hello", "\xc4\xa0w", "or"};
    static const char *const merges[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r"};
    size_t n_spec = 0;
    while (specials && specials[n_spec])
        n_spec++;
    const size_t n = 256 + 6 + n_spec;
    char(*text)[32] = xmalloc(n * sizeof *text);
    const char **ptrs = xmalloc(n * sizeof *ptrs);
    int32_t *types = xmalloc(n * sizeof *types);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = text[i];
        types[i] = 1;
        if (i < 256) {
            /* GPT-2 bytes_to_unicode: printable bytes are themselves, the others U+0100.. */
            int b = (int)i, cp, k = 0;
            if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
                cp = b;
            } else {
                for (int x = 0; x < b; x++)
                    k += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174));
                cp = 256 + k;
            }
            text[i][b158_utf8_encode((uint32_t)cp, text[i])] = '\0';
        } else if (i < 262) {
            snprintf(text[i], sizeof text[i], "%s", merged[i - 256]);
        } else {
            snprintf(text[i], sizeof text[i], "%s", specials[i - 262]);
            types[i] = 3;
        }
    }
    b158_gguf_writer *w = NULL;
    check(b158_gguf_writer_create(&w), "bpe");
    check(b158_gguf_add_str(w, "tokenizer.ggml.model", "gpt2"), "bpe");
    check(b158_gguf_add_str(w, "tokenizer.ggml.pre", pre), "bpe");
    check(b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", ptrs, NULL, n), "bpe");
    check(b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_I32, types, n), "bpe");
    check(b158_gguf_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 6), "bpe");
    if (n_spec) {
        check(b158_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 262), "bpe");
        check(b158_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n - 1)), "bpe");
        check(b158_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", 1), "bpe");
    }
    if (chat_template)
        check(b158_gguf_add_str(w, "tokenizer.chat_template", chat_template), "bpe");
    free(text), free(ptrs), free(types);
    return w;
}

/* Chat templates in the shape of the real ones (LLaMA-3, ChatML, bitnet-b1.58-2B-4T). */
static const char *const templates[] = {
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}",
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ 'System: ' + "
    "message['content'] + '<|eot_id|>' }}{% elif message['role'] == 'user' %}{{ 'User: ' + "
    "message['content'] + '<|eot_id|>' }}{% else %}{{ 'Assistant: ' + message['content'] + "
    "'<|eot_id|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% "
    "endif %}",
};

static void vocab_seeds(const char *bpe_model, const char *spm_model)
{
    repository_vocab(spm_model, "spm-fixture.gguf", 0);
    repository_vocab(bpe_model, "bpe-shakespeare-512.gguf", 512);
    write_gguf(spm_vocab(TINY_VOCAB, 1), "spm-tiny.gguf", gguf_vocab);
    write_gguf(spm_vocab(16, 0), "spm-no-bytes.gguf", gguf_vocab);
    static const char *const llama3[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                         "<|end_header_id|>", "<|eot_id|>", NULL};
    static const char *const chatml[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", NULL};
    write_gguf(bpe_vocab("llama-bpe", llama3, templates[0]), "bpe-llama3.gguf", gguf_vocab);
    write_gguf(bpe_vocab("gpt2", chatml, templates[1]), "bpe-chatml.gguf", gguf_vocab);
    write_gguf(bpe_vocab("default", NULL, templates[2]), "bpe-bitnet.gguf", gguf_vocab);
}

/* ---- tiny models ------------------------------------------------------------------------- */

/* The F16 table t converted to type emb (F32, BF16 or Q8_0), malloc'd; *bytes gets its size. */
static void *convert_table(const b158_gguf_tensor *t, uint32_t emb, size_t *bytes)
{
    const uint16_t *h = t->data;
    const size_t n = (size_t)t->n_elements;
    if (emb == B158_TT_F32 || emb == B158_TT_BF16) {
        const size_t es = emb == B158_TT_F32 ? 4 : 2;
        unsigned char *out = xmalloc(n * es);
        for (size_t i = 0; i < n; i++) {
            const float f = b158_f16_to_f32(h[i]);
            if (emb == B158_TT_F32) {
                memcpy(out + 4 * i, &f, 4);
            } else {
                const uint16_t b = b158_f32_to_bf16(f);
                memcpy(out + 2 * i, &b, 2);
            }
        }
        *bytes = n * es;
        return out;
    }
    /* Q8_0: blocks of 32, fp16 d = amax / 127, then int8 round(x / d) */
    unsigned char *out = xmalloc(n / 32 * B158_Q8_0_BYTES);
    for (size_t b = 0; b < n / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float f = b158_f16_to_f32(h[32 * b + j]);
            amax = f > amax ? f : -f > amax ? -f : amax;
        }
        const float d = amax / 127.0f;
        const uint16_t dh = b158_f32_to_f16(d);
        unsigned char *blk = out + b * B158_Q8_0_BYTES;
        memcpy(blk, &dh, 2);
        for (int j = 0; j < 32; j++) {
            const float q = d > 0.0f ? b158_f16_to_f32(h[32 * b + j]) / d : 0.0f;
            blk[2 + j] = (unsigned char)(int8_t)(q < 0 ? q - 0.5f : q + 0.5f);
        }
    }
    *bytes = n / 32 * B158_Q8_0_BYTES;
    return out;
}

#define KEEP UINT32_MAX /* retype: leave the embedding's type */

/* Rewrites the exact-ternary F16 model in data: with tq (TQ1_0, TQ2_0: 256-element blocks) its
 * matrices with 256-wide rows (q, k, v, gate, up) take that type and the others stay F16, a
 * model with TQ tensors in a third of the bytes of an all-TQ one; unless emb is KEEP the
 * embedding is stored as type emb; with untied an output.weight (the embedding in F16) follows. */
static void *retype(const void *data, size_t size, uint32_t tq, uint32_t emb, int untied,
                    size_t *out_size)
{
    b158_gguf *g = NULL;
    check(b158_gguf_open_memory(data, size, &g), "retype");
    b158_gguf_writer *w = NULL;
    check(b158_gguf_writer_create(&w), "retype");
    copy_keys(g, "", NULL, w, 0);
    const size_t nt = b158_gguf_n_tensors(g);
    void **owned = xmalloc(nt * sizeof *owned);
    for (size_t i = 0; i < nt; i++) {
        const b158_gguf_tensor *t = b158_gguf_tensor_at(g, i);
        const void *d = t->data;
        uint32_t type = t->type;
        owned[i] = NULL;
        if (tq && t->n_dims == 2 && t->ne[0] % 256 == 0 && strncmp(t->name, "blk.", 4) == 0) {
            const int64_t n = (int64_t)t->ne[1], k = (int64_t)t->ne[0];
            int8_t *q = xmalloc((size_t)(n * k));
            float *sc = xmalloc((size_t)n * sizeof *sc);
            check(b158_ternary_decode(t->type, t->data, t->n_bytes, n, k, q, sc, NULL), t->name);
            const size_t bytes = b158_ternary_encoded_size(tq, n, k);
            owned[i] = xmalloc(bytes);
            check(b158_ternary_encode(tq, q, sc, n, k, owned[i], bytes), t->name);
            free(q), free(sc);
            d = owned[i], type = tq;
        } else if (emb != KEEP && strcmp(t->name, "token_embd.weight") == 0) {
            size_t bytes;
            d = owned[i] = convert_table(t, emb, &bytes);
            type = emb;
        }
        check(b158_gguf_add_tensor(w, t->name, type, t->n_dims, t->ne, d), t->name);
    }
    if (untied) {
        const b158_gguf_tensor *e = b158_gguf_find_tensor(g, "token_embd.weight");
        check(b158_gguf_add_tensor(w, "output.weight", B158_TT_F16, 2, e->ne, e->data), "output");
    }
    void *out = NULL;
    check(b158_gguf_writer_write_mem(w, &out, out_size), "retype");
    b158_gguf_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        free(owned[i]);
    free(owned);
    b158_gguf_close(g);
    return out;
}

static void model_seeds(void)
{
    /* their vocabulary: a SentencePiece one of TINY_VOCAB tokens (models need one to save) */
    char vocab_path[4096];
    snprintf(vocab_path, sizeof vocab_path, "%s/tiny-vocab.gguf", out_dir);
    b158_gguf_writer *w = spm_vocab(TINY_VOCAB, 1);
    check(b158_gguf_writer_write_file(w, vocab_path), vocab_path);
    b158_gguf_writer_free(w);

    static const struct {
        uint32_t type;
        const char *name;
        int wide; /* TQ types: rows of 256 */
    } types[] = {{B158_TT_F32, "f32", 0},     {B158_TT_F16, "f16", 0},
                 {B158_TT_BF16, "bf16", 0},   {B158_TT_I2_S, "i2_s", 0},
                 {B158_TT_TQ2_0, "tq2_0", 1}, {B158_TT_TQ1_0, "tq1_0", 1}};
    static const char *const arch_names[] = {"bitnet-25", "bitnet", "llama"};
    static const char *const targets[] = {"gguf", "model", NULL};
    for (int a = 0; a < 3; a++) {
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            if (types[t].wide && a > 0)
                continue; /* one architecture is enough */
            b158_model_info h = {0};
            h.arch = (b158_arch)a;
            h.n_embd = types[t].wide ? 256 : 16;
            h.n_ff = types[t].wide ? 16 : 32;
            h.n_layer = types[t].type == B158_TT_I2_S ? 2 : 1;
            h.n_head = 2;
            h.head_dim = 8; /* with n_embd 256: attention.key_length in the file */
            h.n_head_kv = a == B158_ARCH_BITNET ? h.n_head : 1;
            h.n_vocab = TINY_VOCAB;
            h.n_ctx_train = 16;
            h.rms_eps = 1e-5f;
            h.rope_base = 10000.0f;
            h.relu2 = a == B158_ARCH_BITNET_25;
            h.sub_norms = a != B158_ARCH_LLAMA;
            h.rope_interleaved = a == B158_ARCH_LLAMA;
            b158_model *m = NULL;
            check(b158_model_random(&h, (uint64_t)(a * 16 + (int)t), &m), "random model");
            char tmp[4096], name[64];
            snprintf(name, sizeof name, "model-%s-%s.gguf", arch_names[a], types[t].name);
            snprintf(tmp, sizeof tmp, "%s/%s", out_dir, name);
            check(b158_model_save(m, tmp,
                                  types[t].wide ? B158_TENSOR_F16 : (b158_tensor_type)types[t].type,
                                  vocab_path),
                  name);
            b158_model_free(m);
            FILE *f = fopen(tmp, "rb");
            if (!f) {
                perror(tmp);
                exit(1);
            }
            fseek(f, 0, SEEK_END);
            size_t size = (size_t)ftell(f);
            fseek(f, 0, SEEK_SET);
            char *data = xmalloc(size);
            if (fread(data, 1, size, f) != size) {
                perror(tmp);
                exit(1);
            }
            fclose(f);
            remove(tmp);
            for (size_t i = 0; targets[i]; i++) {
                if (!types[t].wide)
                    write_seed(targets[i], name, data, size);
            }
            /* variants: the wide ones with TQ matrices, their embedding F16 or Q8_0 (rows of
             * 32); the narrow ones of two architectures with an F32 or BF16 embedding. Every
             * other one has an untied LM head. */
            const int untied = (a + (int)t) % 2;
            const uint32_t embs[2] = {types[t].wide ? KEEP
                                      : a == 0      ? B158_TT_F32
                                                    : B158_TT_BF16,
                                      B158_TT_Q8_0};
            for (int e = 0; e < (types[t].wide ? 2 : a < 2); e++) {
                size_t n = 0;
                char *v =
                    retype(data, size, types[t].wide ? types[t].type : 0, embs[e], untied, &n);
                snprintf(name, sizeof name, "model-%s-%s%s%s%s.gguf", arch_names[a], types[t].name,
                         embs[e] != KEEP ? "-emb_" : "",
                         embs[e] != KEEP ? b158_gguf_type_name(embs[e]) : "",
                         untied ? "-untied" : "");
                for (size_t i = 0; targets[i]; i++)
                    write_seed(targets[i], name, v, n);
                free(v);
            }
            free(data);
        }
    }
    remove(vocab_path);
}

/* ---- texts ------------------------------------------------------------------------------- */

static const char *const texts[] = {
    "Hello world",
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
    "   leading spaces,\ttabs\r\nand  double  spaces  ",
    "digits 1234567890 3.14159 it's we'll they've I'd",
    "caf\xc3\xa9 na\xc3\xafve \xc3\xbc\x62\x65r \xe2\x86\x92 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
    "\xf0\x9f\x99\x82 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",
    "invalid \xff\xfe \xc0\xaf \xed\xa0\x80 \xf0\x9f\x98 \x80\x80 end",
    "<s>Hello</s><unk> <|endoftext|><|im_start|>user\nhi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "\xe2\x96\x81\xe2\x96\x81 <0x41> \xc4\xa0 \xc4\x8a",
};

static void text_seed(const char *target, int index, unsigned flags, const char *text, size_t len)
{
    char name[32];
    snprintf(name, sizeof name, "text-%03d", index);
    char *buf = xmalloc(len + 1);
    buf[0] = (char)flags; /* the tokenize targets read their flags from the first byte */
    memcpy(buf + 1, text, len);
    write_seed(target, name, buf, len + 1);
    free(buf);
}

static void text_seeds(int n_files, char **files)
{
    static const char *const targets[] = {"tokenize-bpe", "tokenize-spm"};
    int index = 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++, index++)
        for (int t = 0; t < 2; t++)
            text_seed(targets[t], index, (unsigned)i & 3, texts[i], strlen(texts[i]));
    /* each line of the tokenizer fixtures (text<TAB>ids): the text */
    for (int f = 0; f < n_files; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (!fp) {
            perror(files[f]);
            exit(1);
        }
        char line[4096];
        while (fgets(line, sizeof line, fp)) {
            const size_t len = strcspn(line, "\t\n");
            for (int t = 0; t < 2; t++)
                text_seed(targets[t], index, (unsigned)index & 3, line, len);
            index++;
        }
        fclose(fp);
    }
    for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "template-%zu", i);
        write_seed("chat", name, templates[i], strlen(templates[i]));
    }
    write_seed("chat", "plain", "Hello <|im_start", 16);
}

/* b158-cl-server request bodies; the first byte picks the parser (bits 3-4: 1 /tokenize,
 * 2 /detokenize), the route (bit 0: chat) and chat format. */
static void request_seeds(void)
{
    static const char *const bodies[] = {
        "\x00{\"prompt\":\"ROMEO:\",\"max_tokens\":16,\"temperature\":0}",
        "\x00{\"model\":\"m\",\"prompt\":[\"a\\u0000b\"],\"stop\":[\"\\n\\n\",\"END\"],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"seed\":-1}",
        "\x00{\"prompt\":\"x\",\"top_k\":40,\"top_p\":0.95,\"min_p\":0.05,\"n\":1,"
        "\"repeat_penalty\":1.1,\"max_tokens\":2.0}",
        "\x01{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":"
        "\"user\",\"content\":\"Hello\"}],\"max_completion_tokens\":8}",
        "\x03{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Hi \"},{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\","
        "\"content\":null}],\"stop\":\"<|eot_id|>\"}",
        "\x05{\"messages\":[{\"role\":\"developer\",\"content\":\"<|im_end|>\"}],"
        "\"temperature\":2,\"stream\":false}",
        "\x01{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
        "\x00{\"prompt\":\"a\",\"prompt\":\"b\"}",
        "\x00{\"prompt\":\"x\",\"frequency_penalty\":0.5,\"presence_penalty\":-1,"
        "\"repeat_last_n\":-1}",
        "\x08{\"content\":\"ROMEO: <|eot_id|>\",\"with_pieces\":true,\"add_special\":true}",
        "\x08{\"content\":\"\\u00e9 \\u0000\",\"parse_special\":false}",
        "\x10{\"tokens\":[1,2,3.0,200]}",
        "\x10{\"tokens\":[]}",
        "\x00{\"prompt\":[[1,2,3]],\"max_tokens\":2}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "request-%zu", i);
        write_seed("server-request", name, bodies[i], 1 + strlen(bodies[i] + 1));
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr,
                "usage: fuzz-seeds OUT_DIR BPE_MODEL.gguf SPM_MODEL.gguf [TEXT_FILES...]\n");
        return 2;
    }
    out_dir = argv[1];
    static const char *const dirs[] = {"gguf",         "model", "vocab",         "tokenize-bpe",
                                       "tokenize-spm", "chat",  "server-request"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        make_dir(dirs[i]);
    vocab_seeds(argv[2], argv[3]);
    model_seeds();
    text_seeds(argc - 4, argv + 4);
    request_seeds();
    return 0;
}
