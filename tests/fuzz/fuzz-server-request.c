/* Fuzz target: b158-cl-server's request parsing and validation (srv_request_parse,
 * srv_tokenize_parse, srv_detokenize_parse) on arbitrary bytes, no sockets. The first byte picks
 * the parser (bits 3-4: 1 /tokenize, 2 /detokenize, else a completion), the route (bit 0: chat or
 * completions) and the chat format (bits 1-2); the rest is the body. A completion request that
 * parses is checked field by field, its prompt tokenized with the shipped model's vocabulary as the
 * server does and scanned for its stop strings; a tokenizer request that parses is answered as the
 * server answers it and the answer read back: the ids the library makes, pieces that add up to
 * their bytes, the text of the ids. An error must be a 400 (or 500) whose JSON reads back in
 * OpenAI's shape. */
#define _GNU_SOURCE /* memmem: the oracle only */
#include <jansson.h>
#include <string.h>

#include "b158/tokenizer.h"
#include "fuzz-common.h"
#include "openai.h"
#include "sched.h"

static b158_vocab *vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    FUZZ_CHECK(b158_vocab_load(B158_FUZZ_VOCAB, &vocab) == B158_OK);
    return 0;
}

static void check_request(const srv_request *r)
{
    FUZZ_CHECK(r->prompt != NULL);
    FUZZ_CHECK(!r->prompt_ids || (r->n_prompt_ids > 0 && r->prompt_len == 0));
    for (size_t i = 0; i < r->n_prompt_ids; i++)
        FUZZ_CHECK(r->prompt_ids[i] >= 0);
    FUZZ_CHECK(r->max_tokens >= 0 && r->max_tokens <= (1 << 24));
    FUZZ_CHECK(r->sampling.temp >= 0.0f && r->sampling.temp <= 2.0f);
    FUZZ_CHECK(r->sampling.top_p > 0.0f && r->sampling.top_p <= 1.0f);
    FUZZ_CHECK(r->sampling.min_p >= 0.0f && r->sampling.min_p <= 1.0f);
    FUZZ_CHECK(r->sampling.top_k >= 0);
    FUZZ_CHECK(r->n_stop >= 0 && r->n_stop <= SRV_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++)
        FUZZ_CHECK(r->stop[i] && r->stop_len[i] > 0);
    /* what the HTTP thread does next: tokenize, then the scheduler scans for stop strings */
    b158_token *tok = NULL;
    size_t n = 0;
    FUZZ_CHECK(b158_tokenize_alloc(vocab, r->prompt, r->prompt_len,
                                   B158_TOKENIZE_ADD_BOS | B158_TOKENIZE_PARSE_SPECIAL, &tok,
                                   &n) == B158_OK);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(tok[i] >= 0 && tok[i] < b158_vocab_n_tokens(vocab));
    free(tok);
    int stopped = 0;
    size_t ok = srv_stop_scan(r->prompt, r->prompt_len, r->stop, r->stop_len, r->n_stop, &stopped);
    FUZZ_CHECK(ok <= r->prompt_len);
    /* nothing sent holds a stop string; without a stop, nothing at all does; with one, it
     * starts where the text sent ends */
    int starts = 0;
    for (int i = 0; i < r->n_stop; i++) {
        FUZZ_CHECK(!memmem(r->prompt, ok, r->stop[i], r->stop_len[i]));
        FUZZ_CHECK(stopped || !memmem(r->prompt, r->prompt_len, r->stop[i], r->stop_len[i]));
        starts |= ok + r->stop_len[i] <= r->prompt_len &&
                  memcmp(r->prompt + ok, r->stop[i], r->stop_len[i]) == 0;
    }
    FUZZ_CHECK(!stopped || starts);
}

static void check_error(const srv_error *e)
{
    FUZZ_CHECK(e->status == 400 || e->status == 500);
    FUZZ_CHECK(e->type && e->message[0]);
    char *j = srv_error_json(e);
    FUZZ_CHECK(j);
    json_t *root = json_loads(j, 0, NULL);
    json_t *err = json_object_get(root, "error");
    FUZZ_CHECK(json_is_string(json_object_get(err, "message")) &&
               json_is_string(json_object_get(err, "type")) && json_object_get(err, "param") &&
               json_object_get(err, "code"));
    json_decref(root);
    free(j);
}

/* The bytes of a piece of a /tokenize answer (a string, or an array of byte values that are not
 * valid UTF-8) appended to out[0..cap) at *len. */
static void add_piece(json_t *piece, char *out, size_t cap, size_t *len)
{
    if (json_is_string(piece)) {
        FUZZ_CHECK(json_string_length(piece) <= cap - *len);
        memcpy(out + *len, json_string_value(piece), json_string_length(piece));
        *len += json_string_length(piece);
        return;
    }
    FUZZ_CHECK(json_is_array(piece) && json_array_size(piece) > 0);
    const size_t at = *len;
    for (size_t k = 0; k < json_array_size(piece); k++) {
        json_t *b = json_array_get(piece, k);
        FUZZ_CHECK(json_is_integer(b) && json_integer_value(b) >= 0 &&
                   json_integer_value(b) <= 255 && *len < cap);
        out[(*len)++] = (char)json_integer_value(b);
    }
    /* bytes only where they are no UTF-8 string */
    json_t *s = json_stringn(out + at, *len - at);
    FUZZ_CHECK(!s);
}

/* /detokenize's answer for ids: the text of their pieces, which is want[0..n) when that is
 * valid UTF-8 (want NULL: not checked). */
static void check_detokenize(const b158_token *ids, size_t n, const char *want, size_t want_len)
{
    srv_detokenize_request d = {(b158_token *)ids, n};
    srv_error e;
    char *j = srv_detokenize_json(vocab, &d, &e);
    FUZZ_CHECK(j);
    json_t *root = json_loads(j, JSON_ALLOW_NUL, NULL);
    json_t *content = json_object_get(root, "content");
    FUZZ_CHECK(json_is_string(content) && json_object_size(root) == 1);
    if (want) {
        json_t *w = json_stringn(want, want_len);
        FUZZ_CHECK(!w || json_equal(w, content));
        json_decref(w);
    }
    json_decref(root);
    free(j);
}

static void check_tokenize(const srv_tokenize_request *r)
{
    FUZZ_CHECK(r->content && r->content[r->content_len] == '\0');
    b158_token *ids = NULL;
    size_t n = 0;
    FUZZ_CHECK(b158_tokenize_alloc(vocab, r->content, r->content_len, r->flags, &ids, &n) ==
               B158_OK);
    srv_error e;
    char *j = srv_tokenize_json(vocab, r, &e);
    FUZZ_CHECK(j);
    json_t *root = json_loads(j, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    json_t *tokens = json_object_get(root, "tokens");
    FUZZ_CHECK(json_object_size(root) == 1 && json_array_size(tokens) == n);
    size_t cap = 1, len = 0, joined_len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl = 0;
        b158_vocab_token_piece(vocab, ids[i], 1, &pl);
        cap += pl;
    }
    /* want: the pieces one after the other; joined: the same from the answer */
    char *want = malloc(cap), *joined = malloc(cap);
    FUZZ_CHECK(want && joined);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tokens, i);
        json_t *id = r->with_pieces ? json_object_get(t, "id") : t;
        FUZZ_CHECK(json_is_integer(id) && json_integer_value(id) == ids[i]);
        size_t pl = 0;
        const char *p = b158_vocab_token_piece(vocab, ids[i], 1, &pl);
        memcpy(want + len, p, pl);
        len += pl;
        if (r->with_pieces) {
            FUZZ_CHECK(json_object_size(t) == 2);
            add_piece(json_object_get(t, "piece"), joined, cap, &joined_len);
            FUZZ_CHECK(joined_len == len && memcmp(joined, want, len) == 0);
        }
    }
    /* byte-level BPE gives the content back, after BOS's text where it was added */
    size_t skip = 0;
    if ((r->flags & B158_TOKENIZE_ADD_BOS) && b158_vocab_add_bos(vocab) &&
        b158_vocab_bos(vocab) >= 0) {
        FUZZ_CHECK(n && ids[0] == b158_vocab_bos(vocab));
        b158_vocab_token_piece(vocab, ids[0], 1, &skip);
    }
    if (b158_vocab_get_type(vocab) == B158_VOCAB_BPE)
        FUZZ_CHECK(len - skip == r->content_len &&
                   memcmp(want + skip, r->content, len - skip) == 0);
    check_detokenize(ids, n, want, len);
    free(joined);
    free(want);
    json_decref(root);
    free(j);
    free(ids);
}

/* The request parsers of /tokenize (tokenizer 1) and /detokenize (2). */
static void fuzz_tokenizer(int tokenizer, const char *body, size_t len)
{
    srv_error e;
    if (tokenizer == 1) {
        srv_tokenize_request r;
        if (srv_tokenize_parse(body, len, &r, &e) == 0) {
            check_tokenize(&r);
            srv_tokenize_free(&r);
        } else {
            FUZZ_CHECK(r.content == NULL);
            check_error(&e);
        }
        return;
    }
    srv_detokenize_request r;
    const int32_t n_vocab = b158_vocab_n_tokens(vocab);
    if (srv_detokenize_parse(body, len, n_vocab, &r, &e) == 0) {
        for (size_t i = 0; i < r.n_tokens; i++)
            FUZZ_CHECK(r.tokens[i] >= 0 && r.tokens[i] < n_vocab);
        check_detokenize(r.tokens, r.n_tokens, NULL, 0);
        srv_detokenize_free(&r);
    } else {
        FUZZ_CHECK(r.tokens == NULL && r.n_tokens == 0);
        check_error(&e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *const templates[] = {NULL, "<|start_header_id|>", "<|im_start|>"};
    const char *tmpl = templates[((data[0] >> 1) & 3) % 3];
    const b158_chat_format *fmt = b158_chat_detect(tmpl, tmpl ? strlen(tmpl) : 0);
    const srv_kind kind = data[0] & 1 ? SRV_CHAT : SRV_COMPLETION;
    /* an exact-size copy, so reading past the body is caught by ASan */
    char *body = malloc(size - 1 ? size - 1 : 1);
    FUZZ_CHECK(body);
    memcpy(body, data + 1, size - 1);
    const int tokenizer = (data[0] >> 3) & 3;
    if (tokenizer == 1 || tokenizer == 2) {
        fuzz_tokenizer(tokenizer, body, size - 1);
        free(body);
        return 0;
    }
    srv_request r;
    srv_error e;
    if (srv_request_parse(body, size - 1, kind, fmt, &r, &e) == 0) {
        FUZZ_CHECK(r.kind == kind);
        check_request(&r);
        srv_request_free(&r);
    } else {
        FUZZ_CHECK(r.prompt == NULL && r.n_stop == 0);
        check_error(&e);
    }
    free(body);
    return 0;
}
