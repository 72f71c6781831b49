/* b158-gen-model: writes a GGUF model with random ternary weights at any shape, architecture
 * and weight type (tests, benchmarks, and files to try b158-cl-run on). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "b158/model.h"
#include "b158/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-gen-model -o FILE [options]\n"
               "  --arch A          bitnet-25 (default), bitnet or llama\n"
               "  --preset P        2B-4T, 700M, 1.3B, 3B, 3.9B or tiny (default tiny)\n"
               "  --n-embd N --n-layer N --n-head N --n-head-kv N --n-ff N --n-vocab N\n"
               "  --head-dim N --ctx N  override the preset's shape\n"
               "  --type T          tq2_0 (default), tq1_0, i2_s, f16, bf16, f32 (exact ternary)\n"
               "  --vocab FILE      copy the tokenizer of this GGUF (n_vocab follows it)\n"
               "  --seed S          random seed (default 1)\n");
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v <= 0 || v > (1L << 30))
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    b158_model_info h = {0};
    b158_model_preset("tiny", &h);
    h.arch = B158_ARCH_BITNET_25;
    h.rms_eps = 1e-5f;
    const char *out = NULL, *vocab = NULL, *arch = "bitnet-25";
    b158_tensor_type type = B158_TENSOR_TQ2_0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *field = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--vocab")) {
            vocab = v;
        } else if (!strcmp(a, "--arch")) {
            arch = v;
        } else if (!strcmp(a, "--seed")) {
            seed = strtoull(v, NULL, 0);
        } else if (!strcmp(a, "--preset")) {
            if (b158_model_preset(v, &h) != B158_OK) {
                fprintf(stderr, "error: %s\n", b158_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--type")) {
            static const struct {
                const char *n;
                b158_tensor_type t;
            } types[] = {{"tq2_0", B158_TENSOR_TQ2_0}, {"tq1_0", B158_TENSOR_TQ1_0},
                         {"i2_s", B158_TENSOR_I2_S},   {"f16", B158_TENSOR_F16},
                         {"bf16", B158_TENSOR_BF16},   {"f32", B158_TENSOR_F32}};
            size_t t = 0;
            while (t < sizeof types / sizeof types[0] && strcasecmp(v, types[t].n))
                t++;
            if (t == sizeof types / sizeof types[0]) {
                fprintf(stderr, "error: unknown --type '%s'\n", v);
                return 2;
            }
            type = types[t].t;
        } else if (!strcmp(a, "--n-embd")) {
            field = &h.n_embd;
        } else if (!strcmp(a, "--n-layer")) {
            field = &h.n_layer;
        } else if (!strcmp(a, "--n-head")) {
            field = &h.n_head;
        } else if (!strcmp(a, "--n-head-kv")) {
            field = &h.n_head_kv;
        } else if (!strcmp(a, "--n-ff")) {
            field = &h.n_ff;
        } else if (!strcmp(a, "--n-vocab")) {
            field = &h.n_vocab;
        } else if (!strcmp(a, "--head-dim")) {
            field = &h.head_dim;
        } else if (!strcmp(a, "--ctx")) {
            field = &h.n_ctx_train;
        } else {
            fprintf(stderr, "error: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (field && parse_int(v, field)) {
            fprintf(stderr, "error: %s wants a positive integer, got '%s'\n", a, v);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "error: -o FILE is required\n");
        usage(stderr);
        return 2;
    }
    if (!strcmp(arch, "bitnet-25")) {
        h.arch = B158_ARCH_BITNET_25, h.relu2 = 1, h.sub_norms = 1, h.rope_base = 500000.0f;
    } else if (!strcmp(arch, "bitnet")) {
        h.arch = B158_ARCH_BITNET, h.relu2 = 0, h.sub_norms = 1, h.rope_base = 10000.0f;
    } else if (!strcmp(arch, "llama")) {
        h.arch = B158_ARCH_LLAMA, h.relu2 = 0, h.sub_norms = 0, h.rope_base = 10000.0f;
        h.rope_interleaved = 1;
    } else {
        fprintf(stderr, "error: unknown --arch '%s' (bitnet-25, bitnet, llama)\n", arch);
        return 2;
    }
    if (vocab) { /* the tokenizer decides the vocabulary size */
        b158_vocab *v = NULL;
        if (b158_vocab_load(vocab, &v) != B158_OK) {
            fprintf(stderr, "error: %s\n", b158_last_error());
            return 1;
        }
        h.n_vocab = b158_vocab_n_tokens(v);
        b158_vocab_free(v);
    }
    b158_model *m = NULL;
    if (b158_model_random(&h, seed, &m) != B158_OK ||
        b158_model_save(m, out, type, vocab) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        b158_model_free(m);
        return 1;
    }
    const b158_model_info *i = b158_model_get_info(m);
    fprintf(stderr,
            "wrote %s: %s, %d layers, n_embd %d, heads %d/%d, n_ff %d, vocab %d, "
            "%.2fG ternary weights\n",
            out, arch, i->n_layer, i->n_embd, i->n_head, i->n_head_kv, i->n_ff, i->n_vocab,
            (double)i->n_ternary / 1e9);
    b158_model_free(m);
    return 0;
}
