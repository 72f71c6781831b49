/* b158-vocab-from-tiktoken: builds a vocab-only LLaMA-3 BPE GGUF from a tiktoken model file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf-write.h"
#include "tokenizer-map.h"
#include "tokenizer.h"

#define N_SPECIAL 256

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-vocab-from-tiktoken -i TIKTOKEN.model -o VOCAB.gguf\n"
               "\n"
               "Converts a tiktoken BPE file (\"base64(token bytes) rank\" per line, e.g.\n"
               "llama3-tiktoken.model) into a vocab-only GGUF with LLaMA-3's 256 special\n"
               "tokens, merges derived from the ranks (every split of a token into two tokens,\n"
               "in rank order) and tokenizer.ggml.pre = llama-bpe.\n");
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes n base64 characters into out (room for 3n/4 bytes); returns the length or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *out)
{
    while (n > 0 && s[n - 1] == '=')
        n--;
    unsigned acc = 0, bits = 0;
    long len = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return len;
}

typedef struct tokens {
    unsigned char *bytes; /* all token bytes back to back */
    size_t *off, *len;    /* by rank */
    size_t n;
} tokens;

static int read_tiktoken(const char *path, tokens *t)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "error: %s: cannot read\n", path);
        fclose(f);
        free(text);
        return 1;
    }
    fclose(f);
    text[size] = '\0';
    size_t lines = 0;
    for (long i = 0; i < size; i++)
        lines += text[i] == '\n';
    lines++;
    t->bytes = malloc((size_t)size);
    t->off = malloc(lines * sizeof *t->off);
    t->len = malloc(lines * sizeof *t->len);
    char *seen = calloc(lines, 1);
    size_t pos = 0, lineno = 0;
    int rc = 0;
    t->n = 0;
    for (char *p = text; *p && rc == 0; lineno++) {
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol && eol > p && eol[-1] == '\r')
            eol--;
        size_t ll = (size_t)((eol ? eol : next) - p);
        if (ll == 0) {
            p = next;
            continue;
        }
        char *sp = memchr(p, ' ', ll);
        char *end = NULL;
        unsigned long rank = sp ? strtoul(sp + 1, &end, 10) : 0;
        long n = sp ? b64_decode(p, (size_t)(sp - p), t->bytes + pos) : -1;
        if (!sp || end == sp + 1 || n <= 0 || rank >= lines || seen[rank]) {
            fprintf(stderr, "error: %s:%zu: expected \"base64 rank\" with a new rank below %zu\n",
                    path, lineno + 1, lines);
            rc = 1;
            break;
        }
        seen[rank] = 1;
        t->off[rank] = pos;
        t->len[rank] = (size_t)n;
        pos += (size_t)n;
        t->n++;
        p = next;
    }
    for (size_t r = 0; r < t->n && rc == 0; r++)
        if (!seen[r]) {
            fprintf(stderr, "error: %s: ranks are not 0..%zu (rank %zu missing)\n", path, t->n - 1,
                    r);
            rc = 1;
        }
    free(seen);
    free(text);
    return rc;
}

/* Token bytes in GPT-2's byte alphabet. */
static size_t gpt2_encode(const unsigned char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += b158_utf8_encode(b158_gpt2_byte_to_cp(s[i]), out + k);
    return k;
}

/* Merges that create token `rank`: every split into two tokens, ordered by the ranks of the
 * halves. Applying merges by the rank of their result is exactly tiktoken's BPE (which joins
 * any adjacent pair forming a token, lowest result rank first), so all splits are needed, not
 * only the one a lower-rank BPE run ends with: 678 LLaMA-3 tokens have no such single split.
 * This is what Hugging Face's TikTokenConverter writes (280147 merges for LLaMA-3). */
typedef struct split {
    int32_t left_rank, right_rank;
    size_t at;
} split;

static int cmp_split(const void *a, const void *b)
{
    const split *x = a, *y = b;
    if (x->left_rank != y->left_rank)
        return x->left_rank < y->left_rank ? -1 : 1;
    return (x->right_rank > y->right_rank) - (x->right_rank < y->right_rank);
}

static size_t token_splits(const tokens *t, const b158_strmap *ranks, size_t rank, split *out)
{
    const char *tok = (const char *)t->bytes + t->off[rank];
    size_t n = t->len[rank], k = 0;
    for (size_t at = 1; at < n; at++) {
        int32_t l = b158_strmap_get(ranks, tok, at);
        int32_t r = b158_strmap_get(ranks, tok + at, n - at);
        if (l >= 0 && r >= 0)
            out[k++] = (split){l, r, at};
    }
    qsort(out, k, sizeof *out, cmp_split);
    return k;
}

/* LLaMA 3.1's special tokens 128000..128255 (tokenizer.json of Meta-Llama-3.1). */
static void special_name(int i, char *buf, size_t cap)
{
    static const char *const named[] = {
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    };
    if (i < 11)
        snprintf(buf, cap, "%s", named[i]);
    else
        snprintf(buf, cap, "<|reserved_special_token_%d|>", i - 11 + 3);
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-i") == 0 && i + 1 < argc) {
            in = argv[++i];
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }

    tokens t = {0};
    if (read_tiktoken(in, &t) != 0)
        return 1;
    size_t n_vocab = t.n + N_SPECIAL;
    b158_strmap ranks;
    if (b158_strmap_init(&ranks, t.n) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    size_t max_len = 0;
    for (size_t r = 0; r < t.n; r++) {
        if (b158_strmap_put(&ranks, (const char *)t.bytes + t.off[r], t.len[r], (int32_t)r, NULL) !=
            1) {
            fprintf(stderr, "error: %s: token of rank %zu appears twice\n", in, r);
            return 1;
        }
        if (t.len[r] > max_len)
            max_len = t.len[r];
    }

    /* token texts: GPT-2 alphabet (<= 2 bytes per byte), then the specials */
    char **texts = malloc(n_vocab * sizeof *texts);
    size_t *lens = malloc(n_vocab * sizeof *lens);
    int32_t *types = malloc(n_vocab * sizeof *types);
    split *splits = malloc((max_len + 1) * sizeof *splits);
    char **merges = NULL;
    size_t n_merges = 0, cap_merges = 0;
    for (size_t r = 0; r < t.n; r++) {
        texts[r] = malloc(2 * t.len[r] + 1);
        lens[r] = gpt2_encode(t.bytes + t.off[r], t.len[r], texts[r]);
        types[r] = B158_TOKEN_NORMAL;
        if (t.len[r] < 2)
            continue;
        size_t ns = token_splits(&t, &ranks, r, splits);
        if (ns == 0) {
            fprintf(stderr,
                    "error: %s: token of rank %zu is not two shorter tokens joined: "
                    "not a BPE vocabulary\n",
                    in, r);
            return 1;
        }
        const unsigned char *tok = t.bytes + t.off[r];
        for (size_t i = 0; i < ns; i++) {
            if (n_merges == cap_merges) {
                cap_merges = cap_merges ? 2 * cap_merges : 1024;
                merges = realloc(merges, cap_merges * sizeof *merges);
            }
            char *m = malloc(2 * t.len[r] + 2);
            size_t k = gpt2_encode(tok, splits[i].at, m);
            m[k++] = ' ';
            k += gpt2_encode(tok + splits[i].at, t.len[r] - splits[i].at, m + k);
            m[k] = '\0';
            merges[n_merges++] = m;
        }
    }
    for (int i = 0; i < N_SPECIAL; i++) {
        char name[64];
        special_name(i, name, sizeof name);
        texts[t.n + i] = strdup(name);
        lens[t.n + i] = strlen(name);
        types[t.n + i] = B158_TOKEN_CONTROL;
    }

    b158_gguf_writer *w = NULL;
    b158_status st = b158_gguf_writer_create(&w);
    int32_t base = (int32_t)t.n;
    if (st == B158_OK) {
        b158_gguf_add_str(w, "general.architecture", "llama");
        b158_gguf_add_str(w, "general.name", "llama3-tiktoken");
        b158_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
        b158_gguf_add_str(w, "tokenizer.ggml.pre", "llama-bpe");
        b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)texts, lens,
                              n_vocab);
        b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_I32, types, n_vocab);
        b158_gguf_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL,
                              n_merges);
        b158_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)base);
        b158_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)base + 1);
        b158_gguf_add_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)base + 9);
        b158_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
        st = b158_gguf_writer_write_file(w, out);
    }
    if (st != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    printf("%s: %zu tokens (%zu + %d special), %zu merges\n", out, n_vocab, t.n, N_SPECIAL,
           n_merges);

    b158_gguf_writer_free(w);
    for (size_t i = 0; i < n_vocab; i++)
        free(texts[i]);
    for (size_t i = 0; i < n_merges; i++)
        free(merges[i]);
    free(texts);
    free(lens);
    free(types);
    free(merges);
    free(splits);
    b158_strmap_free(&ranks);
    free(t.bytes);
    free(t.off);
    free(t.len);
    return 0;
}
