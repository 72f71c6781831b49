/* GGUF model loading: every architecture and weight type reloads bit for bit what was saved,
 * the same model in every weight type generates the same greedy tokens on OpenCL, and broken
 * files are rejected with an error, never a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "b158/model.h"
#include "gguf-write.h"
#include "gguf.h"
#include "half.h"
#include "model.h"
#include "test-common.h"

static const b158_tensor_type types[] = {B158_TENSOR_TQ2_0, B158_TENSOR_TQ1_0, B158_TENSOR_I2_S,
                                         B158_TENSOR_F16,   B158_TENSOR_BF16,  B158_TENSOR_F32};
static const char *type_names[] = {"TQ2_0", "TQ1_0", "I2_S", "F16", "BF16", "F32"};
#define N_TYPES 6

static char tmpdir[64];

static const char *tmp_path(const char *name)
{
    static char buf[8][128];
    static int i;
    i = (i + 1) % 8;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/b158-loader-XXXXXX");
        if (!mkdtemp(tmpdir))
            snprintf(tmpdir, sizeof tmpdir, "/tmp");
    }
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static b158_model_info shape(b158_arch arch)
{
    b158_model_info h = {0};
    h.arch = arch;
    h.n_embd = 256, h.n_layer = 2, h.n_head = 4, h.n_head_kv = arch == B158_ARCH_BITNET ? 4 : 2;
    h.n_ff = 512, h.n_vocab = 300 + b158_test_randint(0, 20), h.n_ctx_train = 64;
    h.rms_eps = 1e-5f, h.rope_base = arch == B158_ARCH_BITNET_25 ? 500000.0f : 10000.0f;
    h.relu2 = arch == B158_ARCH_BITNET_25;
    h.sub_norms = arch != B158_ARCH_LLAMA;
    h.rope_interleaved = arch == B158_ARCH_LLAMA;
    return h;
}

static int same_tpack(const b158_tpack *a, const b158_tpack *b)
{
    return a->n == b->n && a->k == b->k &&
           memcmp(a->codes, b->codes, (size_t)a->n * a->k_pad / 4) == 0 &&
           memcmp(a->scales, b->scales, (size_t)a->n * 4) == 0;
}

static int same_weights(const b158_model *a, const b158_model *b)
{
    const b158_model_info *h = &a->info;
    const size_t qd = (size_t)h->n_head * h->head_dim;
    int ok = memcmp(&a->info.n_vocab, &b->info.n_vocab, sizeof(int)) == 0 &&
             a->info.n_layer == b->info.n_layer && a->info.relu2 == b->info.relu2 &&
             a->info.sub_norms == b->info.sub_norms &&
             a->info.rope_interleaved == b->info.rope_interleaved &&
             a->info.rope_base == b->info.rope_base && a->info.rms_eps == b->info.rms_eps;
    ok = ok && memcmp(a->tok_embd, b->tok_embd, (size_t)h->n_vocab * h->n_embd * 2) == 0;
    ok = ok && memcmp(a->output_norm, b->output_norm, (size_t)h->n_embd * 4) == 0;
    for (int l = 0; ok && l < h->n_layer; l++) {
        const struct b158_layer *x = &a->layers[l], *y = &b->layers[l];
        ok = same_tpack(&x->wq, &y->wq) && same_tpack(&x->wk, &y->wk) &&
             same_tpack(&x->wv, &y->wv) && same_tpack(&x->wo, &y->wo) &&
             same_tpack(&x->wgate, &y->wgate) && same_tpack(&x->wup, &y->wup) &&
             same_tpack(&x->wdown, &y->wdown) &&
             memcmp(x->attn_norm, y->attn_norm, (size_t)h->n_embd * 4) == 0 &&
             memcmp(x->ffn_norm, y->ffn_norm, (size_t)h->n_embd * 4) == 0;
        if (ok && h->sub_norms)
            ok = memcmp(x->attn_sub_norm, y->attn_sub_norm, qd * 4) == 0 &&
                 memcmp(x->ffn_sub_norm, y->ffn_sub_norm, (size_t)h->n_ff * 4) == 0;
    }
    return ok;
}

static b158_model *load_ok(const char *path)
{
    b158_model *m = NULL;
    b158_status st = b158_model_load(path, &m);
    if (st != B158_OK)
        fprintf(stderr, "\nload %s: %s\n", path, b158_last_error());
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    return m;
}

static void test_roundtrip(void)
{
    for (int a = 0; a < 3; a++) {
        b158_model_info h = shape((b158_arch)a);
        b158_model *orig = NULL;
        CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, b158_test_rand(), &orig), B158_OK);
        for (int t = 0; t < N_TYPES; t++) {
            if (a > 0 && t > 0 && t != 2)
                continue; /* other architectures: TQ2_0 and I2_S */
            const char *path = tmp_path("roundtrip.gguf");
            b158_status st = b158_model_save(orig, path, types[t], NULL);
            if (st != B158_OK)
                fprintf(stderr, "\nsave %s: %s\n", type_names[t], b158_last_error());
            CU_ASSERT_EQUAL_FATAL(st, B158_OK);
            b158_model *m = load_ok(path);
            const int same = same_weights(orig, m);
            if (!same)
                fprintf(stderr, "\narch %d type %s: weights differ after reload\n", a,
                        type_names[t]);
            CU_ASSERT(same);
            CU_ASSERT_STRING_EQUAL(b158_model_get_info(m)->arch_name, orig->arch_name);
            CU_ASSERT_EQUAL(b158_model_get_info(m)->tied_embedding, 1);
            b158_model_free(m);
            unlink(path);
        }
        b158_model_free(orig);
    }
}

static void greedy(b158_model *m, b158_runtime *rt, const b158_token *prompt, int n_prompt,
                   b158_token *out, int n_out)
{
    b158_session_params p = b158_session_default_params();
    p.rt = rt;
    p.n_ctx = 64;
    b158_session *s = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_session_create(m, &p, &s), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_session_eval(s, prompt, n_prompt), B158_OK);
    const int nv = b158_model_get_info(m)->n_vocab;
    for (int i = 0; i < n_out; i++) {
        const float *l = b158_session_logits(s, -1);
        int best = 0;
        for (int j = 1; j < nv; j++)
            if (l[j] > l[best])
                best = j;
        out[i] = best;
        CU_ASSERT_EQUAL_FATAL(b158_session_eval(s, &out[i], 1), B158_OK);
    }
    b158_session_free(s);
}

static void test_greedy_across_types(void)
{
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    if (!rt)
        return;
    b158_model_info h = shape(B158_ARCH_BITNET_25);
    b158_model *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, b158_test_rand(), &orig), B158_OK);
    b158_token prompt[6], first[16], now[16];
    for (int i = 0; i < 6; i++)
        prompt[i] = b158_test_randint(0, h.n_vocab - 1);
    for (int t = 0; t < N_TYPES; t++) {
        const char *path = tmp_path("greedy.gguf");
        CU_ASSERT_EQUAL_FATAL(b158_model_save(orig, path, types[t], NULL), B158_OK);
        b158_model *m = load_ok(path);
        CU_ASSERT_EQUAL_FATAL(b158_model_upload(m, rt), B158_OK);
        greedy(m, rt, prompt, 6, t == 0 ? first : now, 16);
        if (t > 0) {
            int same = memcmp(first, now, sizeof now) == 0;
            if (!same)
                fprintf(stderr, "\n%s generates other tokens than TQ2_0\n", type_names[t]);
            CU_ASSERT(same);
        }
        b158_model_free(m);
        unlink(path);
    }
    b158_model_free(orig);
}

/* ---- malformed files -------------------------------------------------------------------- */

static void write_all(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_FATAL(fwrite(data, 1, size, f) == size);
    fclose(f);
}

static void expect_error(const char *path, b158_status want, const char *needle)
{
    b158_model *m = NULL;
    b158_status st = b158_model_load(path, &m);
    if (st != want || (needle && !strstr(b158_last_error(), needle)))
        fprintf(stderr, "\nexpected %s containing '%s', got %s: %s\n", b158_status_str(want),
                needle ? needle : "", b158_status_str(st), b158_last_error());
    CU_ASSERT_EQUAL(st, want);
    if (needle)
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), needle));
    CU_ASSERT_PTR_NULL(m);
    b158_model_free(m);
}

/* Replaces the first occurrence of a byte string of the same length. */
static int patch(unsigned char *buf, size_t size, const char *from, const char *to)
{
    size_t n = strlen(from);
    for (size_t i = 0; i + n <= size; i++) {
        if (memcmp(buf + i, from, n) == 0) {
            memcpy(buf + i, to, n);
            return 1;
        }
    }
    return 0;
}

/* One change for rewrite_edit to make on the way. */
typedef struct edit {
    const char *tensor; /* this tensor gets new_type, new_ne1 (unless 0), new_data (unless NULL) */
    uint32_t new_type;
    uint64_t new_ne1;
    const void *new_data;
    const char *extra_name; /* an added F32 {1} tensor (llama.cpp's bitnet .scale tensors) */
    const float *extra_value;
    const char *key; /* "<arch>.<key>" set to value: a u32 for the sizes, else an f32 */
    double key_value;
} edit;

/* Rewrites a valid model file through the writer with the hyperparameters it needs, its tensors
 * and the one change e. */
static void rewrite_edit(const char *src, const char *dst, const edit *e)
{
    b158_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_open(src, &g), B158_OK);
    b158_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w), B158_OK);
    char arch[32];
    CU_ASSERT_EQUAL_FATAL(b158_gguf_copy_str(g, "general.architecture", arch, sizeof arch),
                          B158_OK);
    b158_gguf_add_str(w, "general.architecture", arch);
    const char *keys[] = {"context_length",      "embedding_length",     "block_count",
                          "feed_forward_length", "attention.head_count", "attention.head_count_kv"};
    int replaced = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char k[96];
        uint32_t v;
        snprintf(k, sizeof k, "%s.%s", arch, keys[i]);
        CU_ASSERT_EQUAL_FATAL(b158_gguf_get_u32(g, k, &v), B158_OK);
        if (e->key && strcmp(e->key, keys[i]) == 0)
            v = (uint32_t)e->key_value, replaced = 1;
        b158_gguf_add_u32(w, k, v);
    }
    if (e->key && !replaced) {
        char k[96];
        snprintf(k, sizeof k, "%s.%s", arch, e->key);
        b158_gguf_add_f32(w, k, (float)e->key_value);
    }
    for (size_t i = 0; i < b158_gguf_n_tensors(g); i++) {
        const b158_gguf_tensor *t = b158_gguf_tensor_at(g, i);
        uint64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        uint32_t type = t->type, n_dims = t->n_dims;
        const void *data = t->data;
        if (e->tensor && strcmp(t->name, e->tensor) == 0) {
            type = e->new_type;
            if (e->new_ne1)
                ne[1] = e->new_ne1, n_dims = n_dims < 2 ? 2 : n_dims;
            if (e->new_data)
                data = e->new_data;
        }
        CU_ASSERT_EQUAL_FATAL(b158_gguf_add_tensor(w, t->name, type, n_dims, ne, data), B158_OK);
    }
    if (e->extra_name) {
        const uint64_t one = 1;
        CU_ASSERT_EQUAL_FATAL(
            b158_gguf_add_tensor(w, e->extra_name, B158_TT_F32, 1, &one, e->extra_value), B158_OK);
    }
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_write_file(w, dst), B158_OK);
    b158_gguf_writer_free(w);
    b158_gguf_close(g);
}

static void rewrite_ex(const char *src, const char *dst, const char *tensor, uint32_t new_type,
                       uint64_t new_ne1, const char *extra_name, const float *extra_value)
{
    const edit e = {.tensor = tensor,
                    .new_type = new_type,
                    .new_ne1 = new_ne1,
                    .extra_name = extra_name,
                    .extra_value = extra_value};
    rewrite_edit(src, dst, &e);
}

static void rewrite(const char *src, const char *dst, const char *tensor, uint32_t new_type,
                    uint64_t new_ne1)
{
    rewrite_ex(src, dst, tensor, new_type, new_ne1, NULL, NULL);
}

/* blk.N.<name>.scale (shape {1}) multiplies the rows of that matrix, as in llama.cpp's bitnet
 * graph; a non-finite one is an error. */
static void test_scale_tensors(void)
{
    b158_model_info h = shape(B158_ARCH_BITNET);
    b158_model *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, 5, &orig), B158_OK);
    const char *good = tmp_path("scale-good.gguf"), *with = tmp_path("scale-with.gguf");
    CU_ASSERT_EQUAL_FATAL(b158_model_save(orig, good, B158_TENSOR_TQ2_0, NULL), B158_OK);
    const float factor = 2.5f;
    rewrite_ex(good, with, "", 0, 0, "blk.1.ffn_down.scale", &factor);
    b158_model *m = load_ok(with);
    const b158_tpack *a = &orig->layers[1].wdown, *b = &m->layers[1].wdown;
    int scaled = 1;
    for (int r = 0; r < a->n; r++)
        scaled &= b->scales[r] == a->scales[r] * factor;
    CU_ASSERT(scaled);
    CU_ASSERT_EQUAL(memcmp(a->codes, b->codes, (size_t)a->n * a->k_pad / 4), 0);
    CU_ASSERT_EQUAL(
        memcmp(orig->layers[1].wup.scales, m->layers[1].wup.scales, (size_t)m->layers[1].wup.n * 4),
        0); /* others untouched */
    b158_model_free(m);
    const float bad = (float)NAN;
    rewrite_ex(good, with, "", 0, 0, "blk.0.attn_q.scale", &bad);
    expect_error(with, B158_ERR_FORMAT, "blk.0.attn_q.scale");
    b158_model_free(orig);
    unlink(good);
    unlink(with);
}

static void test_malformed(void)
{
    b158_model_info h = shape(B158_ARCH_BITNET_25);
    b158_model *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, 3, &orig), B158_OK);
    const char *good = tmp_path("good.gguf"), *bad = tmp_path("bad.gguf");
    CU_ASSERT_EQUAL_FATAL(b158_model_save(orig, good, B158_TENSOR_TQ2_0, NULL), B158_OK);
    b158_model_free(orig);
    size_t size;
    unsigned char *buf = (unsigned char *)b158_test_read_file(good, &size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);

    /* truncated anywhere: header, metadata, tensor infos, data */
    const size_t cuts[] = {0,    3,    4,        8,        20,        100,
                           1000, 5000, size / 3, size / 2, size - 33, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(bad, buf, cuts[i]);
        b158_model *m = NULL;
        b158_status st = b158_model_load(bad, &m);
        CU_ASSERT(st == B158_ERR_FORMAT || st == B158_ERR_IO);
        CU_ASSERT_PTR_NULL(m);
    }
    expect_error(tmp_path("does-not-exist.gguf"), B158_ERR_IO, NULL);

    unsigned char *copy = malloc(size);
    memcpy(copy, buf, size);
    CU_ASSERT_FATAL(patch(copy, size, "bitnet-25", "bitnet-99"));
    write_all(bad, copy, size);
    expect_error(bad, B158_ERR_UNSUPPORTED, "unsupported architecture 'bitnet-99'");

    memcpy(copy, buf, size);
    CU_ASSERT_FATAL(patch(copy, size, "blk.1.ffn_up.weight", "blk.1.ffn_uq.weight"));
    write_all(bad, copy, size);
    expect_error(bad, B158_ERR_FORMAT, "blk.1.ffn_up.weight is missing");

    memcpy(copy, buf, size);
    CU_ASSERT_FATAL(patch(copy, size, "general.architecture", "general.architectur_"));
    write_all(bad, copy, size);
    expect_error(bad, B158_ERR_FORMAT, "general.architecture is missing");

    /* shape and type mismatches, written by the writer so the file itself is valid */
    rewrite(good, bad, "blk.0.attn_q.weight", B158_TT_TQ2_0, 128);
    expect_error(bad, B158_ERR_FORMAT, "blk.0.attn_q.weight has shape");
    uint16_t norm16[256];
    for (int i = 0; i < h.n_embd; i++)
        norm16[i] = b158_f32_to_f16(b158_test_uniform(0.5f, 1.5f));
    rewrite_edit(
        good, bad,
        &(edit){.tensor = "blk.1.attn_norm.weight", .new_type = B158_TT_F16, .new_data = norm16});
    b158_model *m = load_ok(bad); /* an F16 norm is fine */
    b158_model_free(m);
    rewrite(good, bad, "blk.0.ffn_gate.weight", 8 /* Q8_0 */, 0);
    expect_error(bad, B158_ERR_UNSUPPORTED, "blk.0.ffn_gate.weight");
    rewrite(good, bad, "output_norm.weight", B158_TT_TQ2_0, 0);
    expect_error(bad, B158_ERR_UNSUPPORTED, "output_norm.weight");

    /* a vocabulary-only file (llama.cpp's carry general.architecture "gpt2") is not a model */
    expect_error(b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"), B158_ERR_UNSUPPORTED,
                 "unsupported architecture 'gpt2'");
    free(copy);
    free(buf);
    unlink(good);
    unlink(bad);
}

/* NaN and infinite weights or hyperparameters are refused at load, naming the tensor or key:
 * they would run to garbage without a word (a NaN attn_norm made every activation NaN). */
static void test_non_finite(void)
{
    b158_model_info h = shape(B158_ARCH_BITNET_25);
    b158_model *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, b158_test_rand(), &orig), B158_OK);
    const char *good = tmp_path("finite.gguf"), *bad = tmp_path("non-finite.gguf");
    CU_ASSERT_EQUAL_FATAL(b158_model_save(orig, good, B158_TENSOR_TQ2_0, NULL), B158_OK);
    const float specials[] = {NAN, INFINITY, -INFINITY};

    /* one poisoned element at a random place of a norm (F32) */
    const char *norms[] = {"blk.0.attn_norm.weight", "blk.1.ffn_norm.weight",
                           "blk.0.attn_sub_norm.weight", "blk.1.ffn_sub_norm.weight",
                           "output_norm.weight"};
    const int widths[] = {h.n_embd, h.n_embd, h.n_embd, h.n_ff, h.n_embd};
    float *v = malloc((size_t)h.n_ff * sizeof *v);
    for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
        for (int j = 0; j < widths[i]; j++)
            v[j] = b158_test_uniform(0.5f, 1.5f);
        v[b158_test_randint(0, widths[i] - 1)] = specials[i % 3];
        rewrite_edit(good, bad,
                     &(edit){.tensor = norms[i], .new_type = B158_TT_F32, .new_data = v});
        expect_error(bad, B158_ERR_FORMAT, norms[i]);
    }
    free(v);

    /* the embedding: an FP16 infinity or NaN in place, and an F32 value beyond FP16's range */
    const size_t n_emb = (size_t)orig->info.n_vocab * h.n_embd;
    uint16_t *e16 = malloc(n_emb * 2);
    memcpy(e16, orig->tok_embd, n_emb * 2);
    e16[b158_test_randint(0, (int)n_emb - 1)] = b158_test_rand() & 1 ? 0x7c00 : 0xfe01;
    rewrite_edit(good, bad,
                 &(edit){.tensor = "token_embd.weight", .new_type = B158_TT_F16, .new_data = e16});
    expect_error(bad, B158_ERR_FORMAT, "token_embd.weight holds a value that is not finite");
    float *e32 = malloc(n_emb * 4);
    for (size_t i = 0; i < n_emb; i++)
        e32[i] = b158_f16_to_f32(orig->tok_embd[i]);
    e32[b158_test_randint(0, (int)n_emb - 1)] = 1e6f;
    rewrite_edit(good, bad,
                 &(edit){.tensor = "token_embd.weight", .new_type = B158_TT_F32, .new_data = e32});
    expect_error(bad, B158_ERR_FORMAT, "token_embd.weight holds a value that is not finite");
    free(e16);
    free(e32);

    /* an infinite .scale (NaN: test_scale_tensors) */
    rewrite_ex(good, bad, "", 0, 0, "blk.1.attn_v.scale", &specials[1 + b158_test_randint(0, 1)]);
    expect_error(bad, B158_ERR_FORMAT, "blk.1.attn_v.scale");

    /* hyperparameters */
    const char *fkeys[] = {"attention.layer_norm_rms_epsilon", "rope.freq_base"};
    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < 4; j++) {
            const double x = j < 3 ? (double)specials[j] : 0.0;
            rewrite_edit(good, bad, &(edit){.key = fkeys[i], .key_value = x});
            expect_error(bad, B158_ERR_FORMAT, fkeys[i]);
        }
    }
    b158_model_free(orig);
    unlink(good);
    unlink(bad);
}

/* A size of 0 is reported as itself, not as whatever it breaks next (head_count 0 was reported
 * as a missing attention.key_length). */
static void test_zero_sizes(void)
{
    b158_model_info h = shape(B158_ARCH_LLAMA);
    b158_model *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, b158_test_rand(), &orig), B158_OK);
    const char *good = tmp_path("sizes.gguf"), *bad = tmp_path("zero.gguf");
    CU_ASSERT_EQUAL_FATAL(b158_model_save(orig, good, B158_TENSOR_I2_S, NULL), B158_OK);
    const char *keys[] = {"embedding_length", "block_count", "feed_forward_length",
                          "attention.head_count", "attention.head_count_kv"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        rewrite_edit(good, bad, &(edit){.key = keys[i], .key_value = 0});
        char want[128];
        snprintf(want, sizeof want, "llama.%s is 0", keys[i]);
        expect_error(bad, B158_ERR_FORMAT, want);
    }
    /* heads that do not divide the width need the head size from the file */
    rewrite_edit(good, bad, &(edit){.key = "attention.head_count", .key_value = 3});
    expect_error(bad, B158_ERR_FORMAT, "attention.key_length is missing");
    b158_model_free(orig);
    unlink(good);
    unlink(bad);
}

/* NULL arguments of the model API get an error or a defined value, never a crash. */
static void test_null_args(void)
{
    b158_model *m = (b158_model *)1;
    b158_model_info h = shape(B158_ARCH_BITNET_25);
    CU_ASSERT_EQUAL(b158_model_random(NULL, 1, &m), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(b158_model_random(&h, 1, NULL), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_model_save(NULL, tmp_path("null.gguf"), B158_TENSOR_TQ2_0, NULL),
                    B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(access(tmp_path("null.gguf"), F_OK), -1);
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, 1, &m), B158_OK);
    CU_ASSERT_EQUAL(b158_model_save(m, NULL, B158_TENSOR_TQ2_0, NULL), B158_ERR_INVALID_ARG);
    b158_model_free(m);
    m = (b158_model *)1;
    CU_ASSERT_EQUAL(b158_model_load(NULL, &m), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(b158_model_preset("tiny", NULL), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(b158_model_get_info(NULL));
    b158_model_free(NULL);
    /* the internal entry of the fuzz target owns the file it is given, also on failure */
    CU_ASSERT_EQUAL(b158_model_from_gguf(NULL, &m), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(m);
}

/* Random models (benchmark presets) are drawn straight into the packed layout: every code a
 * ternary one, the codes past k of a row 1 (w = 0) as b158_ternary_pack writes them, and the
 * weights about a third each of -1, 0 and +1; widths not a multiple of 256. */
static void test_random_packed(void)
{
    b158_model_info h = shape(B158_ARCH_BITNET);
    h.n_embd = 320, h.n_head = 4, h.n_head_kv = 2, h.n_ff = 700;
    b158_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_model_random(&h, b158_test_rand(), &m), B158_OK);
    size_t count[4] = {0}, bad_pad = 0, weights = 0;
    for (int l = 0; l < h.n_layer; l++) {
        const b158_tpack *ts[] = {&m->layers[l].wq,   &m->layers[l].wk,    &m->layers[l].wv,
                                  &m->layers[l].wo,   &m->layers[l].wgate, &m->layers[l].wup,
                                  &m->layers[l].wdown};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            const b158_tpack *t = ts[i];
            for (int r = 0; r < t->n; r++)
                for (int e = 0; e < t->k_pad; e++) {
                    const uint8_t b =
                        t->codes[(size_t)r * (t->k_pad / 4) + (e / 256) * 64 + e % 64];
                    const int c = (b >> (2 * ((e % 256) / 64))) & 3;
                    if (e >= t->k)
                        bad_pad += c != 1;
                    else
                        count[c]++, weights++;
                }
        }
    }
    fprintf(stderr, "\nrandom model: %zu weights, -1 / 0 / +1: %zu / %zu / %zu, %zu bad pad codes",
            weights, count[0], count[1], count[2], bad_pad);
    CU_ASSERT_EQUAL(count[3], 0);
    CU_ASSERT_EQUAL(bad_pad, 0);
    for (int c = 0; c < 3; c++)
        CU_ASSERT(count[c] > weights * 31 / 100 && count[c] < weights * 36 / 100);
    b158_model_free(m);
}

static void add_suites(void)
{
    b158_test_suite("roundtrip", (b158_test_case[]){{"arch_x_type", test_roundtrip}, {NULL, NULL}});
    b158_test_suite("greedy_across_types",
                    (b158_test_case[]){{"same_tokens", test_greedy_across_types}, {NULL, NULL}});
    b158_test_suite("malformed", (b158_test_case[]){{"rejected", test_malformed},
                                                    {"non_finite", test_non_finite},
                                                    {"zero_sizes", test_zero_sizes},
                                                    {"null_args", test_null_args},
                                                    {NULL, NULL}});
    b158_test_suite("scale_tensors",
                    (b158_test_case[]){{"multiply_rows", test_scale_tensors}, {NULL, NULL}});
    b158_test_suite("random_model",
                    (b158_test_case[]){{"packed_draws", test_random_packed}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    int rc = b158_test_main(argc, argv, add_suites);
    if (tmpdir[0] && strcmp(tmpdir, "/tmp"))
        rmdir(tmpdir);
    return rc;
}
