/* b158-vocab-from-tiktoken: builds a vocab-only LLaMA-3 BPE GGUF from a tiktoken model file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b158/tokenizer.h"

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

/* Ranks by token bytes, for looking a byte string's rank up with bsearch. */
typedef struct entry {
    const unsigned char *bytes;
    size_t len;
    int32_t rank;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    const size_t n = x->len < y->len ? x->len : y->len;
    const int c = memcmp(x->bytes, y->bytes, n);
    if (c || x->len == y->len)
        return c;
    return x->len < y->len ? -1 : 1;
}

/* Rank of the token whose bytes are s[0..n), or -1. */
static int32_t rank_of(const entry *sorted, size_t n_sorted, const unsigned char *s, size_t n)
{
    const entry key = {s, n, -1};
    const entry *e = bsearch(&key, sorted, n_sorted, sizeof *sorted, cmp_entry);
    return e ? e->rank : -1;
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

static size_t token_splits(const tokens *t, const entry *sorted, size_t rank, split *out)
{
    const unsigned char *tok = t->bytes + t->off[rank];
    size_t n = t->len[rank], k = 0;
    for (size_t at = 1; at < n; at++) {
        int32_t l = rank_of(sorted, t->n, tok, at);
        int32_t r = rank_of(sorted, t->n, tok + at, n - at);
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
    entry *sorted = malloc(t.n * sizeof *sorted);
    if (!sorted) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    size_t max_len = 0;
    for (size_t r = 0; r < t.n; r++) {
        sorted[r] = (entry){t.bytes + t.off[r], t.len[r], (int32_t)r};
        if (t.len[r] > max_len)
            max_len = t.len[r];
    }
    qsort(sorted, t.n, sizeof *sorted, cmp_entry);
    for (size_t i = 1; i < t.n; i++) {
        if (cmp_entry(&sorted[i - 1], &sorted[i]) == 0) {
            const int32_t r =
                sorted[i - 1].rank > sorted[i].rank ? sorted[i - 1].rank : sorted[i].rank;
            fprintf(stderr, "error: %s: token of rank %d appears twice\n", in, (int)r);
            return 1;
        }
    }

    /* token texts: GPT-2 alphabet (<= 2 bytes per byte), then the specials */
    char **texts = malloc(n_vocab * sizeof *texts);
    size_t *lens = malloc(n_vocab * sizeof *lens);
    b158_token_type *types = malloc(n_vocab * sizeof *types);
    split *splits = malloc((max_len + 1) * sizeof *splits);
    char **merges = NULL;
    size_t n_merges = 0, cap_merges = 0;
    for (size_t r = 0; r < t.n; r++) {
        texts[r] = malloc(2 * t.len[r] + 1);
        lens[r] = b158_bpe_text_from_bytes(t.bytes + t.off[r], t.len[r], texts[r]);
        types[r] = B158_TOKEN_NORMAL;
        if (t.len[r] < 2)
            continue;
        size_t ns = token_splits(&t, sorted, r, splits);
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
            size_t k = b158_bpe_text_from_bytes(tok, splits[i].at, m);
            m[k++] = ' ';
            k += b158_bpe_text_from_bytes(tok + splits[i].at, t.len[r] - splits[i].at, m + k);
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

    b158_vocab_write_params vp = b158_vocab_write_default_params();
    vp.type = B158_VOCAB_BPE;
    vp.name = "llama3-tiktoken";
    vp.pre = "llama-bpe";
    vp.n_tokens = n_vocab;
    vp.texts = (const char *const *)texts;
    vp.lens = lens;
    vp.token_types = types;
    vp.merges = (const char *const *)merges;
    vp.n_merges = n_merges;
    vp.bos = (b158_token)t.n;
    vp.eos = (b158_token)t.n + 1;
    vp.eot = (b158_token)t.n + 9;
    vp.add_bos = 1;
    b158_status st = b158_vocab_write(&vp, out);
    if (st != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    printf("%s: %zu tokens (%zu + %d special), %zu merges\n", out, n_vocab, t.n, N_SPECIAL,
           n_merges);

    for (size_t i = 0; i < n_vocab; i++)
        free(texts[i]);
    for (size_t i = 0; i < n_merges; i++)
        free(merges[i]);
    free(texts);
    free(lens);
    free(types);
    free(merges);
    free(splits);
    free(sorted);
    free(t.bytes);
    free(t.off);
    free(t.len);
    return 0;
}
