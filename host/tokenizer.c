/* Vocabulary loading from GGUF, special-token splitting, the encode entry point and decoders. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer-impl.h"

/* ---- loading ---------------------------------------------------------------------------- */

void b158_vocab_free(b158_vocab *v)
{
    if (!v)
        return;
    free(v->text);
    free(v->text_off);
    free(v->text_len);
    free(v->scores);
    free(v->types);
    b158_strmap_free(&v->by_text);
    free(v->piece);
    free(v->piece_off);
    free(v->piece_len);
    free(v->eog);
    free(v->specials);
    b158_pairmap_free(&v->merges);
    pcre2_code_free(v->re);
    free(v->chat_template);
    free(v);
}

/* Reads an optional id key: absent or out of range leaves *id unchanged. */
static b158_status read_id(const b158_vocab *v, const b158_gguf *g, const char *key, b158_token *id)
{
    if (!b158_gguf_has_key(g, key))
        return B158_OK;
    uint32_t x;
    B158_TRY(b158_gguf_get_u32(g, key, &x));
    if (x >= (uint32_t)v->n_tokens) {
        b158_log(B158_LOG_WARN, "%s: %s = %u is outside the %d-token vocabulary; ignored",
                 b158_gguf_path(g), key, x, v->n_tokens);
        return B158_OK;
    }
    *id = (b158_token)x;
    return B158_OK;
}

static b158_status read_flag(const b158_gguf *g, const char *key, int *flag)
{
    if (!b158_gguf_has_key(g, key))
        return B158_OK;
    return b158_gguf_get_bool(g, key, flag);
}

/* Optional per-token array of f32 or i32 with at least n elements, converted to float or int. */
static b158_status read_token_array(const b158_gguf *g, const char *key, int32_t n, int want_float,
                                    void *dst)
{
    enum b158_gguf_vtype t;
    const void *raw;
    uint64_t count;
    B158_TRY(b158_gguf_get_arr_raw(g, key, &t, &raw, &count));
    if (count < (uint64_t)n)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %s has %llu elements for %d tokens",
                         b158_gguf_path(g), key, (unsigned long long)count, n);
    if (t != B158_GGUF_F32 && t != B158_GGUF_I32)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %s must be an array of f32 or i32",
                         b158_gguf_path(g), key);
    const unsigned char *p = raw;
    for (int32_t i = 0; i < n; i++) {
        float f;
        int32_t k;
        if (t == B158_GGUF_F32) {
            memcpy(&f, p + 4 * (size_t)i, 4);
            /* any float may arrive here (NaN, 1e30): only small whole values are token types */
            k = f >= 0.0f && f <= (float)B158_TOKEN_BYTE ? (int32_t)f : -1;
        } else {
            memcpy(&k, p + 4 * (size_t)i, 4);
            f = (float)k;
        }
        if (want_float)
            ((float *)dst)[i] = f;
        else
            ((uint8_t *)dst)[i] = k >= 0 && k <= B158_TOKEN_BYTE ? (uint8_t)k : 0;
    }
    return B158_OK;
}

static b158_status load_tokens(b158_vocab *v, const b158_gguf *g)
{
    const char *key = "tokenizer.ggml.tokens";
    enum b158_gguf_vtype t;
    uint64_t n;
    B158_TRY(b158_gguf_get_arr_info(g, key, &t, &n));
    if (t != B158_GGUF_STRING || n == 0 || n > INT32_MAX)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %s must be a non-empty array of strings (got %llu)",
                         b158_gguf_path(g), key, (unsigned long long)n);
    v->n_tokens = (int32_t)n;
    b158_gguf_str *strs = malloc(n * sizeof *strs);
    v->text_off = malloc(n * sizeof *v->text_off);
    v->text_len = malloc(n * sizeof *v->text_len);
    v->scores = calloc(n, sizeof *v->scores);
    v->types = malloc(n);
    if (!strs || !v->text_off || !v->text_len || !v->scores || !v->types) {
        free(strs);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for %llu tokens",
                         (unsigned long long)n);
    }
    b158_status st = b158_gguf_get_arr_strs(g, key, strs, n);
    size_t total = 0;
    for (uint64_t i = 0; i < n && st == B158_OK; i++)
        total += strs[i].len + 1;
    if (st == B158_OK && total > UINT32_MAX)
        st = B158_FAIL(B158_ERR_FORMAT, "%s: token texts exceed 4 GiB", b158_gguf_path(g));
    if (st == B158_OK && !(v->text = malloc(total)))
        st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for token texts");
    if (st == B158_OK)
        st = b158_strmap_init(&v->by_text, n);
    size_t off = 0;
    for (uint64_t i = 0; i < n && st == B158_OK; i++) {
        memcpy(v->text + off, strs[i].ptr, strs[i].len);
        v->text[off + strs[i].len] = '\0';
        v->text_off[i] = (uint32_t)off;
        v->text_len[i] = (uint32_t)strs[i].len;
        if (strs[i].len > v->max_token_len)
            v->max_token_len = strs[i].len;
        b158_token old = -1;
        /* empty texts cannot be matched; llama.cpp renames them, here they are just unmapped */
        if (strs[i].len &&
            b158_strmap_put(&v->by_text, v->text + off, strs[i].len, (b158_token)i, &old) == 0)
            st = B158_FAIL(B158_ERR_FORMAT, "%s: duplicate token '%.*s' has ids %d and %llu",
                           b158_gguf_path(g), (int)(strs[i].len > 100 ? 100 : strs[i].len),
                           strs[i].ptr, old, (unsigned long long)i);
        off += strs[i].len + 1;
    }
    free(strs);
    B158_TRY(st);

    memset(v->types, B158_TOKEN_NORMAL, n);
    if (b158_gguf_has_key(g, "tokenizer.ggml.scores"))
        B158_TRY(read_token_array(g, "tokenizer.ggml.scores", v->n_tokens, 1, v->scores));
    if (b158_gguf_has_key(g, "tokenizer.ggml.token_type"))
        B158_TRY(read_token_array(g, "tokenizer.ggml.token_type", v->n_tokens, 0, v->types));
    return B158_OK;
}

static int is_llama3_pre(const char *pre)
{
    static const char *const names[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", NULL};
    for (int i = 0; names[i]; i++)
        if (strcmp(pre, names[i]) == 0)
            return 1;
    return 0;
}

static b158_status load_settings(b158_vocab *v, const b158_gguf *g, const char *model)
{
    v->bos = v->eos = v->eot = v->eom = v->unk = -1;
    if (v->type == B158_VOCAB_SPM) {
        /* llama.cpp's SentencePiece defaults */
        v->bos = v->n_tokens > 1 ? 1 : -1;
        v->eos = v->n_tokens > 2 ? 2 : -1;
        v->unk = 0;
        v->add_bos = 1;
        v->add_space_prefix = 1;
    } else {
        int has_pre = b158_gguf_has_key(g, "tokenizer.ggml.pre");
        if (has_pre)
            B158_TRY(b158_gguf_copy_str(g, "tokenizer.ggml.pre", v->pre, sizeof v->pre));
        if (!has_pre && v->n_tokens >= 128000) {
            /* bitnet-b1.58-2B-4T ships its LLaMA-3 vocab without the key */
            snprintf(v->pre, sizeof v->pre, "llama-bpe");
            b158_log(B158_LOG_INFO,
                     "%s: no tokenizer.ggml.pre on a %d-token BPE vocab: using LLaMA-3 "
                     "pre-tokenization",
                     b158_gguf_path(g), v->n_tokens);
        } else if (!has_pre) {
            snprintf(v->pre, sizeof v->pre, "gpt-2");
            b158_log(B158_LOG_WARN, "%s: no tokenizer.ggml.pre: using the GPT-2 pre-tokenizer",
                     b158_gguf_path(g));
        }
        if (is_llama3_pre(v->pre)) {
            v->ignore_merges = 1;
            v->add_bos = 1;
        } else if (strcmp(v->pre, "gpt-2") != 0 && strcmp(v->pre, "default") != 0 &&
                   strcmp(v->pre, "gpt2") != 0) {
            b158_log(B158_LOG_WARN,
                     "%s: pre-tokenizer '%s' is not implemented: using GPT-2's (tokens may "
                     "differ from the reference)",
                     b158_gguf_path(g), v->pre);
        }
    }
    (void)model;
    B158_TRY(read_flag(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix));
    B158_TRY(read_flag(g, "tokenizer.ggml.add_bos_token", &v->add_bos));
    B158_TRY(read_id(v, g, "tokenizer.ggml.bos_token_id", &v->bos));
    B158_TRY(read_id(v, g, "tokenizer.ggml.eos_token_id", &v->eos));
    B158_TRY(read_id(v, g, "tokenizer.ggml.eot_token_id", &v->eot));
    B158_TRY(read_id(v, g, "tokenizer.ggml.eom_token_id", &v->eom));
    B158_TRY(read_id(v, g, "tokenizer.ggml.unknown_token_id", &v->unk));
    return B158_OK;
}

/* Texts that end generation when present (llama.cpp's list). The first found also serves as
 * eot when the file names none. */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>",      "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<|end_of_text|>", "<EOT>",   "_<EOT>",        NULL,
};

typedef struct special_key {
    uint32_t len;
    b158_token id;
} special_key;

/* Longest text first, so "<|eot_id|>" is matched before any shorter special inside it. */
static int cmp_special(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static b158_status build_specials(b158_vocab *v)
{
    v->eog = calloc((size_t)v->n_tokens, 1);
    if (!v->eog)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    for (int i = 0; eog_texts[i]; i++) {
        b158_token id = b158_strmap_get(&v->by_text, eog_texts[i], strlen(eog_texts[i]));
        if (id < 0)
            continue;
        v->eog[id] = 1;
        if (v->eot < 0 && strcmp(eog_texts[i], "<|eom_id|>") != 0)
            v->eot = id;
    }
    if (v->eos >= 0)
        v->eog[v->eos] = 1;
    if (v->eot >= 0)
        v->eog[v->eot] = 1;
    if (v->eom >= 0)
        v->eog[v->eom] = 1;

    size_t n = 0;
    for (b158_token i = 0; i < v->n_tokens; i++) {
        uint8_t t = v->types[i];
        if ((t == B158_TOKEN_CONTROL || t == B158_TOKEN_USER_DEFINED || t == B158_TOKEN_UNKNOWN) &&
            v->text_len[i] > 0)
            n++;
    }
    v->specials = malloc((n ? n : 1) * sizeof *v->specials);
    if (!v->specials)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    for (b158_token i = 0; i < v->n_tokens; i++) {
        uint8_t t = v->types[i];
        if ((t == B158_TOKEN_CONTROL || t == B158_TOKEN_USER_DEFINED || t == B158_TOKEN_UNKNOWN) &&
            v->text_len[i] > 0)
            v->specials[v->n_specials++] = i;
    }
    special_key *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++)
        keys[i] = (special_key){v->text_len[v->specials[i]], v->specials[i]};
    qsort(keys, n, sizeof *keys, cmp_special);
    for (size_t i = 0; i < n; i++)
        v->specials[i] = keys[i].id;
    free(keys);
    return B158_OK;
}

/* Decoded bytes of token id (the special = 1 form) appended to out. */
static size_t decode_token(const b158_vocab *v, b158_token id, char *out)
{
    const char *t = v->text + v->text_off[id];
    size_t len = v->text_len[id];
    switch (v->types[id]) {
    case B158_TOKEN_CONTROL:
    case B158_TOKEN_UNKNOWN:
    case B158_TOKEN_USER_DEFINED:
        memcpy(out, t, len);
        return len;
    case B158_TOKEN_BYTE:
        if (len == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>') {
            unsigned x;
            if (sscanf(t + 3, "%2x", &x) == 1) {
                out[0] = (char)x;
                return 1;
            }
        }
        memcpy(out, t, len);
        return len;
    case B158_TOKEN_NORMAL:
        break;
    default:
        return 0; /* unused / undefined tokens decode to nothing, as in llama.cpp */
    }
    size_t n = 0;
    if (v->type == B158_VOCAB_SPM) {
        for (size_t i = 0; i < len; i++) {
            if (i + 2 < len && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                out[n++] = ' ';
                i += 2;
            } else {
                out[n++] = t[i];
            }
        }
        return n;
    }
    /* BPE: every character of the text stands for one byte */
    const unsigned char *s = (const unsigned char *)t;
    for (size_t i = 0; i < len;) {
        int k = b158_utf8_status(s + i, len - i);
        if (k <= 0) {
            out[n++] = t[i++];
            continue;
        }
        uint32_t cp = s[i] & (k == 1 ? 0x7F : k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
        for (int j = 1; j < k; j++)
            cp = cp << 6 | (s[i + j] & 0x3F);
        int b = b158_gpt2_cp_to_byte(cp);
        if (b >= 0) {
            out[n++] = (char)b;
        } else {
            memcpy(out + n, t + i, (size_t)k);
            n += (size_t)k;
        }
        i += (size_t)k;
    }
    return n;
}

static b158_status build_pieces(b158_vocab *v)
{
    size_t total = 0;
    for (b158_token i = 0; i < v->n_tokens; i++)
        total += v->text_len[i];
    /* a piece is never longer than its text */
    v->piece = malloc(total ? total : 1);
    v->piece_off = malloc((size_t)v->n_tokens * sizeof *v->piece_off);
    v->piece_len = malloc((size_t)v->n_tokens * sizeof *v->piece_len);
    if (!v->piece || !v->piece_off || !v->piece_len)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for token pieces");
    size_t off = 0;
    for (b158_token i = 0; i < v->n_tokens; i++) {
        size_t n = decode_token(v, i, v->piece + off);
        v->piece_off[i] = (uint32_t)off;
        v->piece_len[i] = (uint32_t)n;
        if (n > v->max_piece)
            v->max_piece = n;
        off += n;
    }
    return B158_OK;
}

static void find_byte_tokens(b158_vocab *v)
{
    for (int b = 0; b < 256; b++) {
        char buf[8];
        size_t n;
        if (v->type == B158_VOCAB_SPM) {
            n = (size_t)snprintf(buf, sizeof buf, "<0x%02X>", b);
            v->byte_token[b] = b158_strmap_get(&v->by_text, buf, n);
            if (v->byte_token[b] < 0) {
                /* llama.cpp falls back to the byte as a one-character token */
                buf[0] = (char)b;
                v->byte_token[b] = b158_strmap_get(&v->by_text, buf, 1);
            }
        } else {
            n = b158_utf8_encode(b158_gpt2_byte_to_cp((uint8_t)b), buf);
            v->byte_token[b] = b158_strmap_get(&v->by_text, buf, n);
        }
    }
}

/* tokenizer.chat_template, kept for b158_vocab_chat_template. Only chat mode needs it, so a
 * value that is not a string is reported and left out rather than failing the load. */
static b158_status load_chat_template(b158_vocab *v, const b158_gguf *g)
{
    const char *key = "tokenizer.chat_template";
    const int64_t i = b158_gguf_find_key(g, key);
    if (i < 0)
        return B158_OK;
    b158_gguf_str t;
    if (b158_gguf_kv_type(g, (size_t)i) != B158_GGUF_STRING ||
        b158_gguf_get_str(g, key, &t) != B158_OK) {
        b158_log(B158_LOG_WARN, "%s: %s is not a string; ignored", b158_gguf_path(g), key);
        return B158_OK;
    }
    if (!(v->chat_template = malloc(t.len + 1)))
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for the chat template");
    memcpy(v->chat_template, t.ptr, t.len);
    v->chat_template[t.len] = '\0';
    v->chat_template_len = t.len;
    return B158_OK;
}

b158_status b158_vocab_from_gguf(const b158_gguf *g, b158_vocab **out)
{
    if (!g || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_vocab_from_gguf: NULL argument");
    *out = NULL;
    char model[32];
    if (!b158_gguf_has_key(g, "tokenizer.ggml.model"))
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: no tokenizer in this file (tokenizer.ggml.model is missing)",
                         b158_gguf_path(g));
    b158_status st = b158_gguf_copy_str(g, "tokenizer.ggml.model", model, sizeof model);
    if (st != B158_OK)
        return B158_FAIL(B158_ERR_FORMAT, "%s: tokenizer.ggml.model is not a short string",
                         b158_gguf_path(g));
    b158_vocab_type type;
    if (strcmp(model, "llama") == 0)
        type = B158_VOCAB_SPM;
    else if (strcmp(model, "gpt2") == 0)
        type = B158_VOCAB_BPE;
    else
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "%s: tokenizer model '%s' is not supported (only \"llama\" SentencePiece "
                         "and \"gpt2\" BPE)",
                         b158_gguf_path(g), model);

    b158_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    v->type = type;
    st = load_tokens(v, g);
    if (st == B158_OK)
        st = load_settings(v, g, model);
    if (st == B158_OK)
        find_byte_tokens(v);
    if (st == B158_OK && type == B158_VOCAB_SPM) {
        v->spm_split_newlines = 1;
        for (b158_token i = 0; i < v->n_tokens; i++)
            if (v->text_len[i] > 1 && memchr(v->text + v->text_off[i], '\n', v->text_len[i]))
                v->spm_split_newlines = 0;
    }
    if (st == B158_OK && type == B158_VOCAB_BPE) {
        const char *key = "tokenizer.ggml.merges";
        enum b158_gguf_vtype t;
        uint64_t n = 0;
        st = b158_gguf_get_arr_info(g, key, &t, &n);
        if (st == B158_OK && t != B158_GGUF_STRING)
            st = B158_FAIL(B158_ERR_FORMAT, "%s: %s must be an array of strings", b158_gguf_path(g),
                           key);
        b158_gguf_str *merges = NULL;
        if (st == B158_OK && !(merges = malloc((n ? n : 1) * sizeof *merges)))
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for %llu merges",
                           (unsigned long long)n);
        if (st == B158_OK)
            st = b158_gguf_get_arr_strs(g, key, merges, n);
        if (st == B158_OK)
            st = b158_bpe_init(v, merges, (size_t)n);
        free(merges);
    }
    if (st == B158_OK)
        st = load_chat_template(v, g);
    if (st == B158_OK)
        st = build_specials(v);
    if (st == B158_OK)
        st = build_pieces(v);
    if (st != B158_OK) {
        b158_vocab_free(v);
        return st;
    }
    *out = v;
    return B158_OK;
}

b158_status b158_vocab_load(const char *path, b158_vocab **out)
{
    if (!out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_vocab_load: NULL argument");
    *out = NULL;
    b158_gguf *g = NULL;
    B158_TRY(b158_gguf_open(path, &g));
    b158_status st = b158_vocab_from_gguf(g, out);
    b158_gguf_close(g);
    return st;
}

/* ---- queries ---------------------------------------------------------------------------- */

static int valid_id(const b158_vocab *v, b158_token id)
{
    return v && id >= 0 && id < v->n_tokens;
}

b158_vocab_type b158_vocab_get_type(const b158_vocab *v)
{
    return v ? v->type : (b158_vocab_type)0;
}

int32_t b158_vocab_n_tokens(const b158_vocab *v)
{
    return v ? v->n_tokens : 0;
}

b158_token b158_vocab_bos(const b158_vocab *v)
{
    return v ? v->bos : -1;
}

b158_token b158_vocab_eos(const b158_vocab *v)
{
    return v ? v->eos : -1;
}

b158_token b158_vocab_eot(const b158_vocab *v)
{
    return v ? v->eot : -1;
}

b158_token b158_vocab_unk(const b158_vocab *v)
{
    return v ? v->unk : -1;
}

int b158_vocab_add_bos(const b158_vocab *v)
{
    return v && v->add_bos && v->bos >= 0;
}

const char *b158_vocab_pre(const b158_vocab *v)
{
    return v ? v->pre : "";
}

const char *b158_vocab_chat_template(const b158_vocab *v, size_t *len)
{
    if (len)
        *len = v && v->chat_template ? v->chat_template_len : 0;
    return v ? v->chat_template : NULL;
}

const char *b158_vocab_token_text(const b158_vocab *v, b158_token id, size_t *len)
{
    if (!valid_id(v, id))
        return NULL;
    if (len)
        *len = v->text_len[id];
    return v->text + v->text_off[id];
}

b158_token_type b158_vocab_token_type(const b158_vocab *v, b158_token id)
{
    return valid_id(v, id) ? (b158_token_type)v->types[id] : B158_TOKEN_UNDEFINED;
}

float b158_vocab_token_score(const b158_vocab *v, b158_token id)
{
    return valid_id(v, id) ? v->scores[id] : 0.0f;
}

b158_token b158_vocab_find(const b158_vocab *v, const char *text, size_t len)
{
    return v && text ? b158_strmap_get(&v->by_text, text, len) : -1;
}

int b158_vocab_is_eog(const b158_vocab *v, b158_token id)
{
    return valid_id(v, id) && v->eog[id];
}

int b158_vocab_is_control(const b158_vocab *v, b158_token id)
{
    return valid_id(v, id) &&
           (v->types[id] == B158_TOKEN_CONTROL || v->types[id] == B158_TOKEN_UNKNOWN);
}

/* ---- encoding --------------------------------------------------------------------------- */

/* First occurrence of needle (nl > 0) in hay, or NULL (memmem is not POSIX). */
static const char *find_bytes(const char *hay, size_t hl, const char *needle, size_t nl)
{
    while (hl >= nl) {
        const char *c = memchr(hay, needle[0], hl - nl + 1);
        if (!c)
            return NULL;
        if (memcmp(c, needle, nl) == 0)
            return c;
        hl -= (size_t)(c - hay) + 1;
        hay = c + 1;
    }
    return NULL;
}

typedef struct fragment {
    b158_token token; /* -1: raw text */
    size_t off, len;
} fragment;

typedef struct fraglist {
    fragment *p;
    size_t n, cap;
} fraglist;

static b158_status frag_push(fraglist *l, b158_token token, size_t off, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        fragment *p = realloc(l->p, cap * sizeof *p);
        if (!p)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory splitting special tokens");
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n++] = (fragment){token, off, len};
    return B158_OK;
}

/* Splits the raw fragments of *cur around every occurrence of each special token, longest
 * token first, like llama.cpp's tokenizer_st_partition. Control and unknown tokens are only
 * matched with parse_special; user-defined ones always. */
static b158_status partition(const b158_vocab *v, const char *text, int parse_special,
                             fraglist *cur, fraglist *next)
{
    for (size_t s = 0; s < v->n_specials; s++) {
        b158_token id = v->specials[s];
        uint8_t t = v->types[id];
        if (!parse_special && (t == B158_TOKEN_CONTROL || t == B158_TOKEN_UNKNOWN))
            continue;
        const char *tt = v->text + v->text_off[id];
        size_t tl = v->text_len[id];
        int found = 0;
        for (size_t i = 0; i < cur->n && !found; i++)
            found = cur->p[i].token < 0 &&
                    find_bytes(text + cur->p[i].off, cur->p[i].len, tt, tl) != NULL;
        if (!found)
            continue;
        next->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            fragment f = cur->p[i];
            if (f.token >= 0) {
                B158_TRY(frag_push(next, f.token, 0, 0));
                continue;
            }
            size_t off = f.off, end = f.off + f.len;
            const char *m;
            while (off < end && (m = find_bytes(text + off, end - off, tt, tl))) {
                size_t at = (size_t)(m - text);
                if (at > off)
                    B158_TRY(frag_push(next, -1, off, at - off));
                B158_TRY(frag_push(next, id, 0, 0));
                off = at + tl;
            }
            if (off < end)
                B158_TRY(frag_push(next, -1, off, end - off));
        }
        fraglist tmp = *cur;
        *cur = *next;
        *next = tmp;
    }
    return B158_OK;
}

static b158_status tokenize_vec(const b158_vocab *v, const char *text, size_t len, unsigned flags,
                                b158_tokvec *out)
{
    if (!v || (!text && len))
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_tokenize: NULL vocab or text");
    if ((flags & B158_TOKENIZE_ADD_BOS) && v->add_bos && v->bos >= 0)
        B158_TRY(b158_tokvec_push(out, v->bos));
    if (len == 0)
        return B158_OK;
    fraglist cur = {0}, next = {0};
    b158_status st = frag_push(&cur, -1, 0, len);
    if (st == B158_OK)
        st = partition(v, text, (flags & B158_TOKENIZE_PARSE_SPECIAL) != 0, &cur, &next);
    int prev_special = 1; /* SentencePiece: a space goes in front of the first text */
    for (size_t i = 0; i < cur.n && st == B158_OK; i++) {
        const fragment *f = &cur.p[i];
        if (f->token >= 0) {
            st = b158_tokvec_push(out, f->token);
            prev_special = 1;
        } else if (v->type == B158_VOCAB_SPM) {
            st =
                b158_spm_encode(v, text + f->off, f->len, v->add_space_prefix && prev_special, out);
            prev_special = 0;
        } else {
            st = b158_bpe_encode(v, text + f->off, f->len, out);
        }
    }
    free(cur.p);
    free(next.p);
    return st;
}

b158_status b158_tokenize(const b158_vocab *v, const char *text, size_t len, unsigned flags,
                          b158_token *out, size_t cap, size_t *n_out)
{
    if (!n_out || (!out && cap))
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_tokenize: NULL output");
    b158_tokvec vec = {0};
    b158_status st = tokenize_vec(v, text, len, flags, &vec);
    if (st == B158_OK) {
        *n_out = vec.n;
        if (vec.n && cap) /* an empty text has no token vector to copy from */
            memcpy(out, vec.p, (vec.n < cap ? vec.n : cap) * sizeof *out);
        if (vec.n > cap)
            st = B158_FAIL(B158_ERR_INVALID_ARG,
                           "b158_tokenize: the text has %zu tokens, the buffer holds %zu", vec.n,
                           cap);
    }
    free(vec.p);
    return st;
}

b158_status b158_tokenize_alloc(const b158_vocab *v, const char *text, size_t len, unsigned flags,
                                b158_token **out, size_t *n_out)
{
    if (!out || !n_out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_tokenize_alloc: NULL output");
    b158_tokvec vec = {0};
    b158_status st = tokenize_vec(v, text, len, flags, &vec);
    if (st != B158_OK) {
        free(vec.p);
        return st;
    }
    if (!vec.p && !(vec.p = malloc(sizeof *vec.p)))
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory");
    *out = vec.p;
    *n_out = vec.n;
    return B158_OK;
}

/* ---- decoding --------------------------------------------------------------------------- */

const char *b158_vocab_token_piece(const b158_vocab *v, b158_token id, int special, size_t *len)
{
    if (!valid_id(v, id)) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t n = v->piece_len[id];
    if (!special && b158_vocab_is_control(v, id))
        n = 0;
    if (len)
        *len = n;
    return v->piece + v->piece_off[id];
}

size_t b158_vocab_max_piece(const b158_vocab *v)
{
    return v ? v->max_piece : 0;
}

b158_status b158_detokenize(const b158_vocab *v, const b158_token *ids, size_t n, int special,
                            char *out, size_t cap, size_t *len)
{
    if (!v || (!ids && n) || !len || (!out && cap))
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_detokenize: NULL argument");
    size_t total = 0;
    int strip = v->type == B158_VOCAB_SPM && v->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        if (!valid_id(v, ids[i]))
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "b158_detokenize: token %d at position %zu is not in the %d-token "
                             "vocabulary",
                             ids[i], i, v->n_tokens);
        size_t pl;
        const char *p = b158_vocab_token_piece(v, ids[i], special, &pl);
        if (strip && pl) {
            if (p[0] == ' ')
                p++, pl--;
            strip = 0;
        }
        if (total + pl < cap)
            memcpy(out + total, p, pl);
        total += pl;
    }
    *len = total;
    if (total >= cap) {
        if (cap)
            out[cap - 1] = '\0';
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_detokenize: %zu bytes (and a NUL) do not fit in %zu", total, cap);
    }
    out[total] = '\0';
    return B158_OK;
}

void b158_detok_stream_init(b158_detok_stream *s)
{
    memset(s, 0, sizeof *s);
}

static const char replacement[3] = {'\xEF', '\xBF', '\xBD'};

b158_status b158_detok_stream_push(b158_detok_stream *s, const b158_vocab *v, b158_token id,
                                   int special, char *out, size_t cap, size_t *n_out)
{
    if (!s || !v || !out || !n_out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_detok_stream_push: NULL argument");
    if (!valid_id(v, id))
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_detok_stream_push: token %d is not in the "
                         "%d-token vocabulary",
                         id, v->n_tokens);
    size_t pl;
    const char *p = b158_vocab_token_piece(v, id, special, &pl);
    if (cap < 3 * (pl + 4))
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_detok_stream_push: the buffer needs %zu bytes, has %zu",
                         3 * (pl + 4), cap);
    /* the held-back bytes followed by the new piece */
    unsigned char tmp[8];
    size_t np = s->n_pending, n = 0, i = 0, total = np + pl;
    memcpy(tmp, s->pending, np);
#define BYTE_AT(k) ((k) < np ? tmp[(k)] : (unsigned char)p[(k)-np])
    while (i < total) {
        unsigned char seq[4];
        size_t avail = total - i < 4 ? total - i : 4;
        for (size_t k = 0; k < avail; k++)
            seq[k] = BYTE_AT(i + k);
        int r = b158_utf8_status(seq, avail);
        if (r > 0) {
            memcpy(out + n, seq, (size_t)r);
            n += (size_t)r;
            i += (size_t)r;
        } else if (r < 0) {
            break; /* incomplete at the end: keep for the next token */
        } else {
            memcpy(out + n, replacement, 3);
            n += 3;
            i++;
        }
    }
    s->n_pending = (unsigned)(total - i);
    for (size_t k = 0; k < s->n_pending; k++)
        s->pending[k] = BYTE_AT(i + k);
#undef BYTE_AT
    *n_out = n;
    return B158_OK;
}

size_t b158_detok_stream_flush(b158_detok_stream *s, char *out, size_t cap)
{
    if (!s || !out || !s->n_pending || cap < 3)
        return 0;
    s->n_pending = 0;
    memcpy(out, replacement, 3);
    return 3;
}
