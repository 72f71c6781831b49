/* Fuzz target: vocabulary loading from hostile metadata (the b158_vocab_load path: GGUF bytes ->
 * b158_vocab_from_gguf). A vocabulary that loads then encodes and decodes a few texts and every
 * token (the first 4096), and its chat template goes through b158_chat_detect. */
#include <string.h>

#include "b158/tokenizer.h"
#include "fuzz-common.h"
#include "gguf.h"
#include "tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    return 0;
}

static const char *const texts[] = {
    "Hello world",
    " leading  spaces\n\nand lines\r\n\t",
    "digits 1234567 it's we'll",
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 bad\xff\xc0\xaf",
    "<s><|endoftext|><|eot_id|></s><unk>",
};

static void round_trip(const b158_vocab *v, const char *text, unsigned flags)
{
    b158_token *ids = NULL;
    size_t n = 0;
    if (b158_tokenize_alloc(v, text, strlen(text), flags, &ids, &n) != B158_OK)
        return;
    const int32_t n_tokens = b158_vocab_n_tokens(v);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_tokens);
    size_t need = 0;
    (void)b158_detokenize(v, ids, n, 1, NULL, 0, &need);
    char *out = malloc(need + 1);
    FUZZ_CHECK(out);
    size_t len = 0;
    FUZZ_CHECK(b158_detokenize(v, ids, n, 1, out, need + 1, &len) == B158_OK && len == need);
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    b158_gguf *g = NULL;
    if (b158_gguf_open_memory(data, size, &g) != B158_OK)
        return 0;
    b158_vocab *v = NULL;
    b158_status st = b158_vocab_from_gguf(g, &v);
    b158_gguf_close(g); /* the vocab keeps copies of everything */
    if (st != B158_OK) {
        FUZZ_CHECK(v == NULL);
        return 0;
    }
    const int32_t n_tokens = b158_vocab_n_tokens(v);
    FUZZ_CHECK(n_tokens > 0);
    const b158_token special[] = {b158_vocab_bos(v), b158_vocab_eos(v), b158_vocab_eot(v),
                                  b158_vocab_unk(v)};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        FUZZ_CHECK(special[i] >= -1 && special[i] < n_tokens);
    FUZZ_CHECK(b158_vocab_pre(v) != NULL);
    size_t tlen = 0;
    const char *tmpl = b158_vocab_chat_template(v, &tlen);
    FUZZ_CHECK(!tmpl || tmpl[tlen] == '\0');
    FUZZ_CHECK(b158_chat_detect(tmpl, tlen) != NULL);

    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (unsigned flags = 0; flags < 4; flags++)
            round_trip(v, texts[i], flags);

    /* every token: text, piece and the streaming decoder over all of them */
    const size_t max_piece = b158_vocab_max_piece(v);
    const size_t cap = 3 * (max_piece + 4);
    char *buf = malloc(cap);
    FUZZ_CHECK(buf);
    b158_detok_stream ds;
    b158_detok_stream_init(&ds);
    for (b158_token id = 0; id < n_tokens && id < 4096; id++) {
        size_t len = 0;
        const char *t = b158_vocab_token_text(v, id, &len);
        FUZZ_CHECK(t && t[len] == '\0');
        FUZZ_CHECK(b158_vocab_find(v, t, len) >= -1);
        const char *p = b158_vocab_token_piece(v, id, 1, &len);
        FUZZ_CHECK(p && len <= max_piece);
        (void)b158_vocab_token_type(v, id);
        (void)b158_vocab_token_score(v, id);
        (void)b158_vocab_is_eog(v, id);
        size_t n = 0;
        FUZZ_CHECK(b158_detok_stream_push(&ds, v, id, id & 1, buf, cap, &n) == B158_OK && n <= cap);
    }
    FUZZ_CHECK(b158_detok_stream_flush(&ds, buf, cap) <= 3);
    free(buf);
    b158_vocab_free(v);
    return 0;
}
