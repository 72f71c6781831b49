/* Fuzz target: b158-cl-server's request parsing and validation (srv_request_parse) on arbitrary
 * bytes, no sockets. The first byte picks the route (bit 0: chat or completions) and the chat
 * format (bits 1-2); the rest is the body. A request that parses is checked field by field, its
 * prompt tokenized with the shipped model's vocabulary as the server does and scanned for its
 * stop strings; an error must be a 400 (or 500) whose JSON reads back in OpenAI's shape. */
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
