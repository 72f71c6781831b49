/* Byte-level BPE (GPT-2, LLaMA-3): PCRE2 pre-tokenization, byte alphabet, merges by rank. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer-impl.h"

/* GPT-2 maps the printable bytes 33..126, 161..172 and 174..255 to themselves and the other
 * 68 bytes, in order, to U+0100..U+0143, so every byte is a visible character. */
uint32_t b158_gpt2_byte_to_cp(uint8_t b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 256u + 33 + (b - 127u);
    if (b == 173)
        return 323;
    return b;
}

int b158_gpt2_cp_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp >= 256 && cp <= 288)
        return (int)(cp - 256);
    if (cp >= 289 && cp <= 322)
        return (int)(cp - 289 + 127);
    if (cp == 323)
        return 173;
    return -1;
}

b158_status b158_bpe_init(b158_vocab *v, const b158_gguf_str *merges, size_t n_merges)
{
    B158_TRY(b158_pairmap_init(&v->merges, n_merges));
    char *cat = malloc(2 * v->max_token_len + 2);
    if (!cat)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    size_t skipped = 0;
    for (size_t i = 0; i < n_merges && i <= INT32_MAX; i++) {
        const char *s = merges[i].ptr;
        size_t len = merges[i].len;
        /* split at the first space after the first byte, as llama.cpp does */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            skipped++;
            continue;
        }
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        b158_token l = b158_strmap_get(&v->by_text, s, ll);
        b158_token r = b158_strmap_get(&v->by_text, sp + 1, rl);
        if (l < 0 || r < 0 || ll + rl > 2 * v->max_token_len) {
            skipped++; /* a merge of non-tokens can never apply to token symbols */
            continue;
        }
        memcpy(cat, s, ll);
        memcpy(cat + ll, sp + 1, rl);
        b158_pairmap_put(&v->merges, l, r, (int32_t)i, b158_strmap_get(&v->by_text, cat, ll + rl));
    }
    free(cat);
    if (skipped)
        b158_log(B158_LOG_DEBUG, "BPE: %zu of %zu merges do not join two tokens; skipped", skipped,
                 n_merges);

    const char *pattern =
        strcmp(v->pre, "llama-bpe") == 0 || v->ignore_merges ? B158_RE_LLAMA3 : B158_RE_GPT2;
    int err;
    PCRE2_SIZE erroff;
    v->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                          &erroff, NULL);
    if (!v->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "the pre-tokenizer regex does not compile with this PCRE2 (%s at %zu); "
                         "PCRE2 needs Unicode support",
                         (const char *)msg, (size_t)erroff);
    }
    /* JIT is an optimization: the interpreter gives the same matches */
    if (pcre2_jit_compile(v->re, PCRE2_JIT_COMPLETE) != 0)
        b158_log(B158_LOG_DEBUG, "BPE: PCRE2 JIT unavailable, using the interpreter");
    return B158_OK;
}

/* Scratch space reused across the words of one call. */
typedef struct bpe_work {
    char *enc; /* the word in the GPT-2 alphabet */
    size_t enc_cap;
    b158_symbol *sym;
    size_t sym_cap;
    b158_heap heap;
} bpe_work;

static b158_status add_bigram(const b158_vocab *v, bpe_work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || w->sym[l].id < 0 || w->sym[r].id < 0)
        return B158_OK;
    const b158_pairmap_slot *m = b158_pairmap_get(&v->merges, w->sym[l].id, w->sym[r].id);
    if (!m)
        return B158_OK;
    b158_bigram b = {(double)m->rank, l, r, w->sym[l].n + w->sym[r].n};
    return b158_heap_push(&w->heap, b);
}

/* Encodes one pre-token (raw bytes) and appends its tokens. */
static b158_status encode_word(const b158_vocab *v, bpe_work *w, const unsigned char *word,
                               size_t len, b158_tokvec *out)
{
    /* each byte becomes one character of at most 2 UTF-8 bytes */
    if (2 * len > w->enc_cap || len > w->sym_cap) {
        size_t cap = 2 * len + 64;
        char *e = realloc(w->enc, cap);
        b158_symbol *s = e ? realloc(w->sym, cap * sizeof *s) : NULL;
        if (e)
            w->enc = e;
        if (!e || !s)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for a %zu-byte word", len);
        w->sym = s;
        w->enc_cap = w->sym_cap = cap;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        b158_symbol *s = &w->sym[i];
        s->start = (uint32_t)n;
        n += b158_utf8_encode(b158_gpt2_byte_to_cp(word[i]), w->enc + n);
        s->n = (uint32_t)(n - s->start);
        s->prev = (int32_t)i - 1;
        s->next = i + 1 < len ? (int32_t)i + 1 : -1;
        s->id = v->byte_token[word[i]];
    }
    if (v->ignore_merges) {
        b158_token id = b158_strmap_get(&v->by_text, w->enc, n);
        if (id >= 0)
            return b158_tokvec_push(out, id);
    }
    w->heap.n = 0;
    for (size_t i = 1; i < len; i++)
        B158_TRY(add_bigram(v, w, (int32_t)i - 1, (int32_t)i));
    while (w->heap.n) {
        b158_bigram b = b158_heap_pop(&w->heap);
        b158_symbol *l = &w->sym[b.left], *r = &w->sym[b.right];
        /* stale when either side has been merged since this pair was queued */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->id = b158_pairmap_get(&v->merges, l->id, r->id)->merged;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = b.left;
        B158_TRY(add_bigram(v, w, l->prev, b.left));
        B158_TRY(add_bigram(v, w, b.left, l->next));
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const b158_symbol *s = &w->sym[i];
        if (s->id >= 0) {
            B158_TRY(b158_tokvec_push(out, s->id));
            continue;
        }
        /* not a token (a merge result missing from the vocab, or a byte with no token):
         * llama.cpp emits the one-byte tokens it can find and drops the rest */
        for (uint32_t k = 0; k < s->n; k++) {
            b158_token id = b158_strmap_get(&v->by_text, w->enc + s->start + k, 1);
            if (id >= 0)
                B158_TRY(b158_tokvec_push(out, id));
        }
    }
    return B158_OK;
}

/* *copy = text with every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD
 * (what llama.cpp does before pre-tokenizing), or NULL when the text is already valid. */
static b158_status sanitize(const char *text, size_t len, char **copy, size_t *copy_len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t k = b158_utf8_valid_len(s + i, len - i);
        if (!k)
            break;
        i += k;
    }
    *copy = NULL;
    if (i == len)
        return B158_OK;
    char *out = malloc(3 * len);
    if (!out)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    memcpy(out, text, i);
    size_t n = i;
    while (i < len) {
        size_t k = b158_utf8_valid_len(s + i, len - i);
        if (k) {
            memcpy(out + n, s + i, k);
            n += k;
            i += k;
        } else {
            memcpy(out + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i++;
        }
    }
    *copy = out;
    *copy_len = n;
    return B158_OK;
}

b158_status b158_bpe_encode(const b158_vocab *v, const char *text, size_t len, b158_tokvec *out)
{
    char *clean = NULL;
    size_t clean_len = 0;
    B158_TRY(sanitize(text, len, &clean, &clean_len));
    if (clean) {
        text = clean;
        len = clean_len;
    }
    const unsigned char *s = (const unsigned char *)text;
    bpe_work w = {0};
    b158_status st = B158_OK;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(v->re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    /* long runs of spaces need more than the default 32 KiB JIT stack */
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!md || !mc)
        st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for regex matching");
    if (st == B158_OK && js)
        pcre2_jit_stack_assign(mc, NULL, js);
    size_t off = 0;
    while (st == B158_OK && off < len) {
        int rc = pcre2_match(v->re, s, len, off, PCRE2_NO_UTF_CHECK, md, mc);
        if (rc == PCRE2_ERROR_NOMATCH) {
            st = encode_word(v, &w, s + off, len - off, out);
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "pre-tokenizer regex failed at byte %zu: %s", off,
                           (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) /* no alternative matches empty; guard against looping anyway */
            me = ms + b158_utf8_lead_len(s[ms]);
        if (me > len)
            me = len;
        /* text the regex skipped is a pre-token of its own, as in llama.cpp */
        if (ms > off)
            st = encode_word(v, &w, s + off, ms - off, out);
        if (st == B158_OK)
            st = encode_word(v, &w, s + ms, me - ms, out);
        off = me;
    }
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    free(w.enc);
    free(w.sym);
    free(w.heap.p);
    free(clean);
    return st;
}
