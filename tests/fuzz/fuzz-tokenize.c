/* Fuzz target: encoding and decoding arbitrary bytes with one real vocabulary (built twice: the
 * shipped model's byte-level BPE and the SentencePiece vocabulary of a test fixture; the path is
 * compiled in, $B158_FUZZ_VOCAB overrides it). The first input byte picks the flags (bits 0-1)
 * and whether to check b158_tokenize against b158_tokenize_alloc (bit 2), the rest is the text; the
 * same bytes are also decoded as a list of (often invalid) token ids. */
#include <string.h>

#include "b158/tokenizer.h"
#include "fuzz-common.h"

static b158_vocab *vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    const char *path = getenv("B158_FUZZ_VOCAB");
    if (!path || !*path)
        path = B158_FUZZ_VOCAB;
    if (b158_vocab_load(path, &vocab) != B158_OK) {
        fprintf(stderr, "fuzz-tokenize: cannot load the vocabulary: %s\n", b158_last_error());
        exit(1);
    }
    return 0;
}

/* Decodes ids[0..n) whole and through the streaming decoder; returns the whole text (malloc). */
static char *decode(const b158_token *ids, size_t n, int special, size_t *len, int *ok)
{
    size_t need = 0;
    (void)b158_detokenize(vocab, ids, n, special, NULL, 0, &need); /* the size it needs */
    char *out = malloc(need + 1);
    FUZZ_CHECK(out);
    b158_status st = b158_detokenize(vocab, ids, n, special, out, need + 1, len);
    *ok = st == B158_OK;
    FUZZ_CHECK(st == B158_OK || st == B158_ERR_INVALID_ARG);
    const size_t cap = 3 * (b158_vocab_max_piece(vocab) + 4);
    char *buf = malloc(cap);
    FUZZ_CHECK(buf);
    b158_detok_stream ds;
    b158_detok_stream_init(&ds);
    for (size_t i = 0; i < n; i++) {
        size_t got = 0;
        st = b158_detok_stream_push(&ds, vocab, ids[i], special, buf, cap, &got);
        FUZZ_CHECK(st == B158_OK || (st == B158_ERR_INVALID_ARG &&
                                     (ids[i] < 0 || ids[i] >= b158_vocab_n_tokens(vocab))));
        FUZZ_CHECK(got <= cap);
    }
    FUZZ_CHECK(b158_detok_stream_flush(&ds, buf, cap) <= 3);
    free(buf);
    return out;
}

/* RFC 3629 UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t k = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
        if (!k || i + k > n)
            return 0;
        uint32_t cp = k == 1 ? c : c & (0xff >> (k + 1));
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k;
    }
    return 1;
}

/* Whether decoding must give the text back, as in llama.cpp: byte-level BPE for any valid UTF-8
 * (special tokens decode to their text); SentencePiece without special tokens (it puts a space
 * in front of the text after each one) and without U+2581, its own stand-in for a space. */
static int lossless(const char *text, size_t len, unsigned flags)
{
    if ((flags & B158_TOKENIZE_ADD_BOS) || !valid_utf8(text, len))
        return 0;
    if (b158_vocab_get_type(vocab) == B158_VOCAB_BPE)
        return 1;
    for (size_t i = 0; i + 3 <= len; i++)
        if (memcmp(text + i, "\xe2\x96\x81", 3) == 0)
            return 0;
    return !(flags & B158_TOKENIZE_PARSE_SPECIAL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const unsigned flags = data[0] & 3;
    const size_t len = size - 1;
    char *text = malloc(len ? len : 1); /* exact size: ASan catches a read past the end */
    FUZZ_CHECK(text);
    memcpy(text, data + 1, len);

    b158_token *ids = NULL;
    size_t n = 0;
    FUZZ_CHECK(b158_tokenize_alloc(vocab, text, len, flags, &ids, &n) == B158_OK);
    const int32_t n_tokens = b158_vocab_n_tokens(vocab);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_tokens);
    if (data[0] & 4) { /* the counting form agrees with the allocating one (half the runs) */
        size_t n2 = 0;
        b158_token one;
        b158_status st = b158_tokenize(vocab, text, len, flags, &one, 1, &n2);
        FUZZ_CHECK(n2 == n && (st == B158_OK) == (n <= 1));
    }
    size_t dlen = 0;
    int ok = 0;
    char *dec = decode(ids, n, 1, &dlen, &ok);
    FUZZ_CHECK(ok);
    if (lossless(text, len, flags))
        FUZZ_CHECK(dlen == len && memcmp(dec, text, len) == 0);
    free(dec);
    free(ids);

    /* the raw bytes as token ids, most of them out of range */
    const size_t n_raw = len / sizeof(b158_token);
    b158_token *raw = malloc((n_raw ? n_raw : 1) * sizeof *raw);
    FUZZ_CHECK(raw);
    memcpy(raw, text, n_raw * sizeof *raw);
    dec = decode(raw, n_raw, flags & 1, &dlen, &ok);
    free(dec);
    free(raw);
    free(text);
    return 0;
}
