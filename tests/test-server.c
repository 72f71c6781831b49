/* b158-cl-server end to end: request parsing and stop strings as functions, then the server as a
 * child process on an ephemeral port with the shipped model, driven with libcurl: every
 * endpoint, streaming, stop strings, batched requests against the same requests alone, every
 * error class, a client that disconnects, a load test and a clean shutdown (exit status 0, which
 * under ASan means no leak and under TSan no race). */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "b158/tokenizer.h"
#include "openai.h"
#include "sched.h"
#include "test-common.h"

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- parsing and stop strings, no server ---------------------------------------------------- */

static const b158_chat_format *bitnet_format(void)
{
    return b158_chat_detect(NULL, 0);
}

static int parse(const char *json, srv_kind kind, srv_request *r, srv_error *e)
{
    return srv_request_parse(json, strlen(json), kind, bitnet_format(), r, e);
}

static void test_parse_valid(void)
{
    srv_request r;
    srv_error e;
    CU_ASSERT_EQUAL_FATAL(parse("{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":"
                                "\"Be brief.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\""
                                ",\"text\":\"Hi\"}]}],\"temperature\":0,\"top_k\":5,\"top_p\":0.5,"
                                "\"min_p\":0.1,\"seed\":-7,\"max_tokens\":12.0,\"stop\":[\"a\",\"bc"
                                "\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                                "\"frequency_penalty\":0.5,\"presence_penalty\":-0.25,"
                                "\"repeat_last_n\":32,\"n\":1}",
                                SRV_CHAT, &r, &e),
                          0);
    const char *want = "System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: ";
    CU_ASSERT_EQUAL(r.prompt_len, strlen(want));
    CU_ASSERT_STRING_EQUAL(r.prompt, want);
    CU_ASSERT_EQUAL(r.sampling.temp, 0.0f);
    CU_ASSERT_EQUAL(r.sampling.top_k, 5);
    CU_ASSERT_EQUAL(r.sampling.top_p, 0.5f);
    CU_ASSERT_EQUAL(r.sampling.min_p, 0.1f);
    CU_ASSERT_EQUAL(r.sampling.frequency_penalty, 0.5f);
    CU_ASSERT_EQUAL(r.sampling.presence_penalty, -0.25f);
    CU_ASSERT_EQUAL(r.sampling.repeat_last_n, 32);
    CU_ASSERT(r.seed_set && r.sampling.seed == (uint64_t)-7);
    CU_ASSERT_EQUAL(r.max_tokens, 12);
    CU_ASSERT(r.n_stop == 2 && strcmp(r.stop[1], "bc") == 0 && r.stop_len[1] == 2);
    CU_ASSERT(r.stream && r.include_usage);
    srv_request_free(&r);

    /* the framing follows the model's chat template: LLaMA-3 and ChatML */
    static const char *const tmpl[] = {"{% ... <|start_header_id|> ... %}", "<|im_start|>"};
    for (int i = 0; i < 2; i++) {
        const b158_chat_format *f = b158_chat_detect(tmpl[i], strlen(tmpl[i]));
        const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}";
        CU_ASSERT_EQUAL_FATAL(srv_request_parse(body, strlen(body), SRV_CHAT, f, &r, &e), 0);
        char framed[256];
        snprintf(framed, sizeof framed, "%sHi%s%s", f->user_prefix, f->turn_end,
                 f->assistant_prefix);
        CU_ASSERT_STRING_EQUAL(r.prompt, framed);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.prompt, i ? "<|im_start|>user" : "<|start_header_id|>"));
        srv_request_free(&r);
    }

    /* completions: a string or an array of one; NUL bytes are text; OpenAI's default of 16 */
    CU_ASSERT_EQUAL_FATAL(
        parse("{\"prompt\":[\"a\\u0000b\"],\"stop\":\"x\"}", SRV_COMPLETION, &r, &e), 0);
    CU_ASSERT(r.prompt_len == 3 && memcmp(r.prompt, "a\0b", 3) == 0);
    CU_ASSERT_EQUAL(r.max_tokens, 16);
    CU_ASSERT(r.n_stop == 1 && !r.stream && !r.seed_set);
    CU_ASSERT(r.prompt_ids == NULL && r.n_prompt_ids == 0);
    srv_request_free(&r);
    srv_request_free(&r); /* twice is harmless */
    /* the "off" values of the fields this server refuses pass */
    CU_ASSERT_EQUAL(parse("{\"prompt\":\"a\",\"logprobs\":0,\"echo\":false,\"best_of\":1,"
                          "\"suffix\":\"\",\"logit_bias\":{}}",
                          SRV_COMPLETION, &r, &e),
                    0);
    srv_request_free(&r);
    CU_ASSERT_EQUAL(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":"
                          "false,\"top_logprobs\":null,\"tools\":null,\"logit_bias\":null,"
                          "\"response_format\":{\"type\":\"text\"}}",
                          SRV_CHAT, &r, &e),
                    0);
    srv_request_free(&r);
    /* token ids: an array of integers (2.0 too), or an array of one such array */
    static const char *const ids[] = {"{\"prompt\":[7,0,2.0]}", "{\"prompt\":[[7,0,2]]}"};
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL_FATAL(parse(ids[i], SRV_COMPLETION, &r, &e), 0);
        CU_ASSERT(r.n_prompt_ids == 3 && r.prompt_ids[0] == 7 && r.prompt_ids[1] == 0 &&
                  r.prompt_ids[2] == 2);
        CU_ASSERT(r.prompt && r.prompt_len == 0);
        srv_request_free(&r);
    }
}

/* 1025 bytes: one more than a stop string may have */
#define SRV_TEST_S8 "xxxxxxxx"
#define SRV_TEST_S64                                                                               \
    SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8 SRV_TEST_S8
#define SRV_TEST_S512                                                                              \
    SRV_TEST_S64 SRV_TEST_S64 SRV_TEST_S64 SRV_TEST_S64 SRV_TEST_S64 SRV_TEST_S64 SRV_TEST_S64     \
        SRV_TEST_S64
#define SRV_TEST_LONG_STOP SRV_TEST_S512 SRV_TEST_S512 "x"

static void test_parse_invalid(void)
{
    static const struct {
        srv_kind kind;
        const char *json, *param;
    } bad[] = {
        {SRV_COMPLETION, "", NULL},
        {SRV_COMPLETION, "{\"prompt\":\"a\"", NULL},
        {SRV_COMPLETION, "{\"prompt\":\"a\"} x", NULL},
        {SRV_COMPLETION, "[1]", NULL},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"prompt\":\"b\"}", NULL},
        {SRV_COMPLETION, "{}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":7}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[1,1.5]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[1,-1]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[1,\"a\"]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[4294967296]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[2147483648]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":[[1],[2]]}", "prompt"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", "temperature"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"temperature\":-1}", "temperature"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", "top_p"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"top_p\":1.5}", "top_p"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"top_k\":-1}", "top_k"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"top_k\":2.5}", "top_k"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"min_p\":2}", "min_p"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"frequency_penalty\":2.5}", "frequency_penalty"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"presence_penalty\":-3}", "presence_penalty"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"presence_penalty\":\"1\"}", "presence_penalty"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"repeat_last_n\":-2}", "repeat_last_n"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1e300}", "max_tokens"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"seed\":\"1\"}", "seed"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"n\":2}", "n"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stop\":\"\"}", "stop"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stop\":[1]}", "stop"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stop\":\"" SRV_TEST_LONG_STOP "\"}", "stop"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stream\":1}", "stream"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":[]}", "stream_options"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"model\":3}", "model"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":1}", "logprobs"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"echo\":true}", "echo"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"best_of\":2}", "best_of"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"suffix\":\"x\"}", "suffix"},
        {SRV_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":{\"5\":-100}}", "logit_bias"},
        {SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true}",
         "logprobs"},
        {SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":2}",
         "top_logprobs"},
        {SRV_CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":[{\"type\":"
         "\"function\"}]}",
         "tools"},
        {SRV_CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"response_format\":{"
         "\"type\":\"json_object\"}}",
         "response_format"},
        {SRV_CHAT, "{\"messages\":[]}", "messages"},
        {SRV_CHAT, "{\"messages\":{}}", "messages"},
        {SRV_CHAT, "{\"prompt\":\"a\"}", "messages"},
        {SRV_CHAT, "{\"messages\":[{\"content\":\"a\"}]}", "messages"},
        {SRV_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"a\"}]}", "messages"},
        {SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages"},
        {SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         "messages"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_request r;
        srv_error e;
        memset(&e, 0, sizeof e);
        const int rc = parse(bad[i].json, bad[i].kind, &r, &e);
        if (rc != -1 || e.status != 400 || !e.message[0])
            fprintf(stderr, "\naccepted or wrong error: %s -> %d %s\n", bad[i].json, e.status,
                    e.message);
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_EQUAL(e.status, 400);
        CU_ASSERT_STRING_EQUAL(e.type, "invalid_request_error");
        CU_ASSERT(bad[i].param ? e.param && strcmp(e.param, bad[i].param) == 0 : !e.param);
        CU_ASSERT_PTR_NULL(r.prompt);
        /* the error JSON is OpenAI's shape */
        char *j = srv_error_json(&e);
        json_t *root = j ? json_loads(j, 0, NULL) : NULL;
        json_t *err = json_object_get(root, "error");
        CU_ASSERT(json_is_string(json_object_get(err, "message")));
        CU_ASSERT(json_is_string(json_object_get(err, "type")));
        CU_ASSERT(json_object_get(err, "param") != NULL && json_object_get(err, "code") != NULL);
        json_decref(root);
        free(j);
    }
}

/* An error of a parse function: 400 invalid_request_error naming param, in OpenAI's shape. */
static void check_parse_error(const char *json, int rc, const srv_error *e, const char *param)
{
    if (rc != -1 || e->status != 400 || !e->message[0])
        fprintf(stderr, "\naccepted or wrong error: %s -> %d %s\n", json, e->status, e->message);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_EQUAL(e->status, 400);
    CU_ASSERT(e->type && strcmp(e->type, "invalid_request_error") == 0);
    CU_ASSERT(param ? e->param && strcmp(e->param, param) == 0 : !e->param);
    char *j = srv_error_json(e);
    json_t *root = j ? json_loads(j, 0, NULL) : NULL;
    json_t *err = json_object_get(root, "error");
    CU_ASSERT(json_is_string(json_object_get(err, "message")));
    CU_ASSERT(json_object_get(err, "param") != NULL && json_object_get(err, "code") != NULL);
    json_decref(root);
    free(j);
}

static void test_tokenize_parse(void)
{
    srv_tokenize_request r;
    srv_error e;
    /* llama-server's defaults: no BOS, special tokens parsed, ids only; null = the default */
    const char *body = "{\"content\":\"a\\u0000b\",\"add_special\":null}";
    CU_ASSERT_EQUAL_FATAL(srv_tokenize_parse(body, strlen(body), &r, &e), 0);
    CU_ASSERT(r.content_len == 3 && memcmp(r.content, "a\0b", 3) == 0);
    CU_ASSERT_EQUAL(r.flags, (unsigned)B158_TOKENIZE_PARSE_SPECIAL);
    CU_ASSERT(!r.with_pieces);
    srv_tokenize_free(&r);
    srv_tokenize_free(&r); /* twice is harmless */
    body = "{\"content\":\"\",\"add_special\":true,\"parse_special\":false,\"with_pieces\":true,"
           "\"model\":7}";
    CU_ASSERT_EQUAL_FATAL(srv_tokenize_parse(body, strlen(body), &r, &e), 0);
    CU_ASSERT(r.content_len == 0 && r.content && r.content[0] == '\0');
    CU_ASSERT_EQUAL(r.flags, (unsigned)B158_TOKENIZE_ADD_BOS);
    CU_ASSERT(r.with_pieces);
    srv_tokenize_free(&r);

    static const struct {
        const char *json, *param;
    } bad[] = {
        {"", NULL},
        {"{\"content\":\"a\"", NULL},
        {"{\"content\":\"a\"} x", NULL},
        {"[\"a\"]", NULL},
        {"{\"content\":\"a\",\"content\":\"b\"}", NULL},
        {"{}", "content"},
        {"{\"content\":null}", "content"},
        {"{\"content\":5}", "content"},
        {"{\"content\":[\"a\"]}", "content"},
        {"{\"content\":\"a\",\"add_special\":1}", "add_special"},
        {"{\"content\":\"a\",\"parse_special\":\"true\"}", "parse_special"},
        {"{\"content\":\"a\",\"with_pieces\":[]}", "with_pieces"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        const int rc = srv_tokenize_parse(bad[i].json, strlen(bad[i].json), &r, &e);
        check_parse_error(bad[i].json, rc, &e, bad[i].param);
        CU_ASSERT_PTR_NULL(r.content);
    }
}

static void test_detokenize_parse(void)
{
    srv_detokenize_request r;
    srv_error e;
    const char *body = "{\"tokens\":[0,4095,7.0]}";
    CU_ASSERT_EQUAL_FATAL(srv_detokenize_parse(body, strlen(body), 4096, &r, &e), 0);
    CU_ASSERT(r.n_tokens == 3 && r.tokens[0] == 0 && r.tokens[1] == 4095 && r.tokens[2] == 7);
    srv_detokenize_free(&r);
    srv_detokenize_free(&r);
    body = "{\"tokens\":[]}";
    CU_ASSERT_EQUAL_FATAL(srv_detokenize_parse(body, strlen(body), 4096, &r, &e), 0);
    CU_ASSERT_EQUAL(r.n_tokens, 0);
    srv_detokenize_free(&r);

    static const struct {
        const char *json, *param;
    } bad[] = {
        {"", NULL},
        {"{\"tokens\":[1,2]", NULL},
        {"[1,2]", NULL},
        {"{}", "tokens"},
        {"{\"tokens\":null}", "tokens"},
        {"{\"tokens\":7}", "tokens"},
        {"{\"tokens\":\"1 2\"}", "tokens"},
        {"{\"tokens\":[1,2.5]}", "tokens"},
        {"{\"tokens\":[-1]}", "tokens"},
        {"{\"tokens\":[4096]}", "tokens"},
        {"{\"tokens\":[1e300]}", "tokens"},
        {"{\"tokens\":[9223372036854775807]}", "tokens"},
        {"{\"tokens\":[\"1\"]}", "tokens"},
        {"{\"tokens\":[null]}", "tokens"},
        {"{\"tokens\":[[1]]}", "tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        const int rc = srv_detokenize_parse(bad[i].json, strlen(bad[i].json), 4096, &r, &e);
        check_parse_error(bad[i].json, rc, &e, bad[i].param);
        CU_ASSERT(r.tokens == NULL && r.n_tokens == 0);
    }
}

/* The bytes of the pieces of a /tokenize answer with_pieces, one after the other (a piece is a
 * string, or an array of byte values that are not valid UTF-8) into out, NUL-terminated; -1 when
 * the answer is not of that shape or ids differs from its ids. */
static long join_pieces(json_t *tokens, const b158_token *ids, size_t n, char *out, size_t cap)
{
    size_t len = 0;
    if (!json_is_array(tokens) || json_array_size(tokens) != n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tokens, i), *piece = json_object_get(t, "piece");
        if (json_object_size(t) != 2 || !json_is_integer(json_object_get(t, "id")) ||
            json_integer_value(json_object_get(t, "id")) != ids[i])
            return -1;
        if (json_is_string(piece)) {
            const size_t pl = json_string_length(piece);
            if (len + pl >= cap)
                return -1;
            memcpy(out + len, json_string_value(piece), pl);
            len += pl;
        } else if (json_is_array(piece) && json_array_size(piece) > 0) {
            const size_t at = len;
            for (size_t k = 0; k < json_array_size(piece); k++) {
                json_int_t byte = json_integer_value(json_array_get(piece, k));
                if (!json_is_integer(json_array_get(piece, k)) || byte < 0 || byte > 255 ||
                    len + 1 >= cap)
                    return -1;
                out[len++] = (char)byte;
            }
            /* bytes only where they are no UTF-8 string */
            json_t *str = json_stringn(out + at, len - at);
            json_decref(str);
            if (str)
                return -1;
        } else {
            return -1;
        }
    }
    out[len] = '\0';
    return (long)len;
}

/* The answers' JSON as functions, with a LLaMA-3 BPE vocabulary that adds BOS. */
static void test_tokenizer_json(void)
{
    b158_vocab *v = NULL;
    CU_ASSERT_FATAL(b158_vocab_load(b158_test_source("tests/data/hf/"
                                                     "llama3tok-gqa-relu2-bitlinear-tq2_0/"
                                                     "model.gguf"),
                                    &v) == B158_OK);
    const b158_token bos = b158_vocab_bos(v);
    CU_ASSERT_FATAL(bos >= 0 && b158_vocab_add_bos(v));
    const char *bos_text = b158_vocab_token_text(v, bos, NULL);
    /* "é" is two byte tokens here; the BOS text is one token only when parsed as special */
    char content[128];
    snprintf(content, sizeof content, "ROMEO: h\xC3\xA9llo %s!", bos_text);
    for (unsigned flags = 0; flags < 4; flags++) {
        srv_tokenize_request r = {content, strlen(content), flags, 0};
        b158_token *ids = NULL;
        size_t n = 0;
        CU_ASSERT_FATAL(b158_tokenize_alloc(v, r.content, r.content_len, flags, &ids, &n) ==
                        B158_OK);
        const int with_bos = (flags & B158_TOKENIZE_ADD_BOS) != 0;
        CU_ASSERT_EQUAL(ids[0] == bos, with_bos);
        size_t n_bos = 0;
        for (size_t i = 0; i < n; i++)
            n_bos += ids[i] == bos;
        CU_ASSERT_EQUAL(n_bos, (size_t)with_bos + ((flags & B158_TOKENIZE_PARSE_SPECIAL) != 0));
        for (r.with_pieces = 0; r.with_pieces < 2; r.with_pieces++) {
            srv_error e;
            char *j = srv_tokenize_json(v, &r, &e);
            json_t *root = j ? json_loads(j, JSON_REJECT_DUPLICATES, NULL) : NULL;
            json_t *tokens = json_object_get(root, "tokens");
            CU_ASSERT(json_object_size(root) == 1 && json_array_size(tokens) == n);
            if (!r.with_pieces) {
                for (size_t i = 0; i < json_array_size(tokens); i++)
                    CU_ASSERT(json_is_integer(json_array_get(tokens, i)) &&
                              json_integer_value(json_array_get(tokens, i)) == ids[i]);
            } else {
                /* the pieces add up to the content, after BOS's text when it was added; the
                 * halves of "é" are arrays of one byte each */
                char joined[256], want[256];
                snprintf(want, sizeof want, "%s%s", with_bos ? bos_text : "", content);
                CU_ASSERT_EQUAL(join_pieces(tokens, ids, n, joined, sizeof joined),
                                (long)strlen(want));
                CU_ASSERT_STRING_EQUAL(joined, want);
                CU_ASSERT_PTR_NOT_NULL(strstr(j, "\"piece\":[195]}"));
                CU_ASSERT_PTR_NOT_NULL(strstr(j, "\"piece\":[169]}"));
            }
            json_decref(root);
            free(j);
        }

        /* back through /detokenize's JSON: the same text, special tokens' text included */
        srv_detokenize_request d = {ids, n};
        srv_error e;
        char *j = srv_detokenize_json(v, &d, &e);
        json_t *root = j ? json_loads(j, JSON_ALLOW_NUL, NULL) : NULL;
        char want[256];
        snprintf(want, sizeof want, "%s%s", with_bos ? bos_text : "", content);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "content")), want);
        CU_ASSERT_EQUAL(json_object_size(root), 1);
        json_decref(root);
        free(j);
        free(ids);
    }

    /* a lone half of a character is U+FFFD; no tokens, no text */
    b158_token halves[4];
    size_t nh = 0;
    CU_ASSERT_FATAL(b158_tokenize(v, "\xC3\xA9", 2, 0, halves, 4, &nh) == B158_OK && nh == 2);
    static const char *const want[] = {"{\"content\":\"\"}", "{\"content\":\"\xEF\xBF\xBD\"}"};
    for (size_t k = 0; k < 2; k++) {
        srv_detokenize_request d = {halves, k};
        srv_error e;
        char *j = srv_detokenize_json(v, &d, &e);
        CU_ASSERT(j && strcmp(j, want[k]) == 0);
        free(j);
    }
    b158_vocab_free(v);
}

static void test_stop_scan(void)
{
    char *stop[] = {"World", "\n\n", "abcab"};
    const size_t len[] = {5, 2, 5};
    int stopped;
    /* no stop string anywhere: all of it */
    CU_ASSERT_EQUAL(srv_stop_scan("Hello", 5, stop, len, 3, &stopped), 5);
    CU_ASSERT(!stopped);
    /* a tail that begins a stop string is held back */
    CU_ASSERT_EQUAL(srv_stop_scan("Hello Wor", 9, stop, len, 3, &stopped), 6);
    CU_ASSERT(!stopped);
    CU_ASSERT_EQUAL(srv_stop_scan("Hi\n", 3, stop, len, 3, &stopped), 2);
    CU_ASSERT_EQUAL(srv_stop_scan("xxabca", 6, stop, len, 3, &stopped), 2);
    /* a whole stop string: the text before its start, the earliest of several */
    CU_ASSERT_EQUAL(srv_stop_scan("Hello World!", 12, stop, len, 3, &stopped), 6);
    CU_ASSERT(stopped);
    CU_ASSERT_EQUAL(srv_stop_scan("a\n\nb World", 10, stop, len, 3, &stopped), 1);
    CU_ASSERT(stopped);
    CU_ASSERT_EQUAL(srv_stop_scan("xabcabcab", 9, stop, len, 3, &stopped), 1);
    CU_ASSERT(stopped);
    /* no stop strings, empty text */
    CU_ASSERT_EQUAL(srv_stop_scan("abc", 3, NULL, NULL, 0, &stopped), 3);
    CU_ASSERT_EQUAL(srv_stop_scan("", 0, stop, len, 3, &stopped), 0);
    CU_ASSERT(!stopped);
    /* fed a character at a time, as tokens come, the stop string split across them */
    const char *text = "It is the Wo Worl World's end";
    char held[64];
    size_t n = 0, sent = 0;
    stopped = 0;
    for (size_t i = 0; text[i] && !stopped; i++) {
        held[n++] = text[i];
        size_t ok = srv_stop_scan(held, n, stop, len, 3, &stopped);
        sent += ok;
        memmove(held, held + ok, n - ok);
        n -= ok;
    }
    CU_ASSERT(stopped);
    CU_ASSERT_EQUAL(sent, strlen("It is the Wo Worl "));
}

/* ---- the server as a child process ---------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int out_fd; /* its stdout */
    int port;
    char base[64]; /* http://127.0.0.1:PORT */
} server;

/* The arguments that put the server on the OpenCL device, or on the CPU reference path when
 * there is none (a failure under B158_REQUIRE_DEVICE=1, as in every other test). */
static const char *device_args(void)
{
    static int checked, have;
    if (!checked) {
        size_t n = 0;
        have = b158_device_list(NULL, 0, &n) == B158_OK && n > 0;
        checked = 1;
        const char *req = getenv("B158_REQUIRE_DEVICE");
        if (!have && req && strcmp(req, "1") == 0) {
            CU_FAIL("no OpenCL device and B158_REQUIRE_DEVICE=1");
        } else if (!have) {
            fprintf(stderr, "\nno OpenCL device: the server runs with --cpu-ref\n");
        }
    }
    return have ? "" : "--cpu-ref";
}

/* Starts b158-cl-server with the shipped model on an ephemeral port; extra is a
 * space-separated argument list. Waits for its "listening on" line. */
static int server_start(server *s, const char *extra)
{
    memset(s, 0, sizeof s[0]);
    const char *bin_dir = getenv("B158_BIN_DIR");
    char bin[4096], args[1024];
    snprintf(bin, sizeof bin, "%s/b158-cl-server", bin_dir ? bin_dir : ".");
    snprintf(args, sizeof args, "-m %s --port 0 %s %s",
             b158_test_source("models/shakespeare-bitnet.gguf"), device_args(), extra);
    char *argv[64];
    int argc = 0;
    argv[argc++] = bin;
    for (char *tok = strtok(args, " "); tok && argc < 63; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    s->pid = fork();
    CU_ASSERT_FATAL(s->pid >= 0);
    if (s->pid == 0) {
        /* a test that dies takes its server along */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* as a shell starts a background job: SIGINT must still stop the server */
        signal(SIGINT, SIG_IGN);
        /* Under ASan, LeakSanitizer's exit-time scan crashed on a stale dynamic-TLS entry of the
         * main thread ("Tracer caught signal 11", "DTLS ... at 0x7b1") after PoCL had loaded and
         * unloaded kernel libraries; without __tls_get_addr interception the scan skips DTLS
         * and still reports leaks (checked with a task that was never freed). */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof opts, "%s%sintercept_tls_get_addr=0", asan ? asan : "",
                 asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(bin, argv);
        fprintf(stderr, "cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    s->out_fd = fds[0];
    /* its first stdout line says where it listens (slow under the sanitizers: a minute) */
    char line[256];
    size_t n = 0;
    const double t0 = now_s();
    while (n + 1 < sizeof line && now_s() - t0 < 120) {
        struct pollfd p = {s->out_fd, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t r = read(s->out_fd, line + n, 1);
        if (r <= 0)
            break;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    const char *at = strstr(line, "listening on http://127.0.0.1:");
    if (!at) {
        fprintf(stderr, "\nb158-cl-server %s did not start (stdout: '%s')\n", extra, line);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        close(s->out_fd);
        s->pid = 0;
        CU_FAIL("the server did not start");
        return -1;
    }
    s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
    return 0;
}

/* sig (SIGTERM or SIGINT), then its exit status (-1: it had to be killed; 128 + n: signal n). */
static int server_stop(server *s, int sig)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    int st = 0, rc = -1;
    const double t0 = now_s();
    while (now_s() - t0 < 60) {
        pid_t w = waitpid(s->pid, &st, WNOHANG);
        if (w == s->pid) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        sleep_ms(20);
    }
    if (rc == -1) {
        fprintf(stderr, "\nb158-cl-server did not stop within 60 s of signal %d: killed\n", sig);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    close(s->out_fd);
    s->pid = 0;
    return rc;
}

/* ---- HTTP through libcurl ------------------------------------------------------------------- */

typedef struct {
    CURL *e;
    struct curl_slist *headers;
    char *body; /* the response body, NUL-terminated */
    size_t len, cap;
    long status;
    size_t abort_after; /* nonzero: drop the connection once this many bytes came */
    int done;
    CURLcode result;
} xfer;

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    xfer *x = user;
    size_t bytes = size * n;
    if (x->len + bytes + 1 > x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 4096;
        while (cap < x->len + bytes + 1)
            cap *= 2;
        char *b = realloc(x->body, cap);
        if (!b)
            return 0;
        x->body = b;
        x->cap = cap;
    }
    memcpy(x->body + x->len, p, bytes);
    x->len += bytes;
    x->body[x->len] = '\0';
    if (x->abort_after && x->len >= x->abort_after)
        return 0; /* curl closes the connection */
    return bytes;
}

/* A request to path; body NULL = GET, else a POST of that text as JSON (len -1 = strlen). */
static void xfer_init(xfer *x, const server *s, const char *method, const char *path,
                      const char *body, long len, const char *key)
{
    memset(x, 0, sizeof x[0]);
    char url[512], auth[512];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    x->e = curl_easy_init();
    CU_ASSERT_PTR_NOT_NULL_FATAL(x->e);
    curl_easy_setopt(x->e, CURLOPT_URL, url);
    curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(x->e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->e, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(x->e, CURLOPT_NOSIGNAL, 1L);
    x->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        x->headers = curl_slist_append(x->headers, auth);
    }
    curl_easy_setopt(x->e, CURLOPT_HTTPHEADER, x->headers);
    if (body) {
        curl_easy_setopt(x->e, CURLOPT_POSTFIELDSIZE, len < 0 ? (long)strlen(body) : len);
        curl_easy_setopt(x->e, CURLOPT_COPYPOSTFIELDS, body);
    }
    if (method)
        curl_easy_setopt(x->e, CURLOPT_CUSTOMREQUEST, method);
}

static void xfer_free(xfer *x)
{
    if (x->e)
        curl_easy_cleanup(x->e);
    curl_slist_free_all(x->headers);
    free(x->body);
    memset(x, 0, sizeof x[0]);
}

static void xfer_finish(xfer *x, CURLcode rc)
{
    x->result = rc;
    x->done = 1;
    curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &x->status);
    if (!x->body) {
        x->body = calloc(1, 1);
        x->cap = 1;
    }
}

/* One request, waited for. */
static void request(xfer *x, const server *s, const char *path, const char *body, const char *key)
{
    xfer_init(x, s, NULL, path, body, -1, key);
    xfer_finish(x, curl_easy_perform(x->e));
}

/* Runs n transfers side by side until all are done. */
static void run_all(xfer *xs, int n)
{
    CURLM *m = curl_multi_init();
    for (int i = 0; i < n; i++)
        curl_multi_add_handle(m, xs[i].e);
    int running = n;
    while (running) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)))
            for (int i = 0; i < n; i++)
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == xs[i].e)
                    xfer_finish(&xs[i], msg->data.result);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < n; i++)
        curl_multi_remove_handle(m, xs[i].e);
    curl_multi_cleanup(m);
}

/* ---- responses --------------------------------------------------------------------------------
 */

/* The error of an error response: OpenAI's shape, or a failed assertion. */
static void check_error(const xfer *x, long status, const char *code)
{
    if (x->status != status)
        fprintf(stderr, "\nwanted %ld, got %ld: %.300s\n", status, x->status, x->body);
    CU_ASSERT_EQUAL(x->status, status);
    json_t *root = json_loads(x->body, 0, NULL);
    json_t *e = json_object_get(root, "error");
    CU_ASSERT(json_is_string(json_object_get(e, "message")));
    CU_ASSERT(json_is_string(json_object_get(e, "type")));
    json_t *c = json_object_get(e, "code");
    CU_ASSERT(json_object_get(e, "param") != NULL && c != NULL);
    if (code)
        CU_ASSERT(json_is_string(c) && strcmp(json_string_value(c), code) == 0);
    json_decref(root);
}

/* What a completion produced, from a whole response or a stream's events. */
typedef struct {
    char text[16384];
    size_t len;
    char finish[16];
    int prompt_tokens, completion_tokens, total_tokens;
    int events, done_last, role_first;
} outcome;

static const char *choice_text(json_t *choice, srv_kind kind, int delta)
{
    json_t *holder =
        kind == SRV_COMPLETION ? choice : json_object_get(choice, delta ? "delta" : "message");
    return json_string_value(json_object_get(holder, kind == SRV_COMPLETION ? "text" : "content"));
}

static void add_text(outcome *o, const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n && o->len + n < sizeof o->text) {
        memcpy(o->text + o->len, t, n);
        o->len += n;
        o->text[o->len] = '\0';
    }
}

static void read_usage(outcome *o, json_t *usage)
{
    o->prompt_tokens = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
    o->completion_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    o->total_tokens = (int)json_integer_value(json_object_get(usage, "total_tokens"));
}

/* A whole response. */
static int read_response(const xfer *x, srv_kind kind, outcome *o)
{
    memset(o, 0, sizeof o[0]);
    json_t *root = json_loads(x->body, 0, NULL);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    const char *obj = json_string_value(json_object_get(root, "object"));
    const int ok = x->status == 200 && choice && obj &&
                   strcmp(obj, kind == SRV_CHAT ? "chat.completion" : "text_completion") == 0;
    if (ok) {
        add_text(o, choice_text(choice, kind, 0));
        const char *f = json_string_value(json_object_get(choice, "finish_reason"));
        snprintf(o->finish, sizeof o->finish, "%s", f ? f : "");
        read_usage(o, json_object_get(root, "usage"));
    } else {
        fprintf(stderr, "\nnot a %s response (%ld): %.500s\n",
                kind == SRV_CHAT ? "chat.completion" : "text_completion", x->status, x->body);
    }
    json_decref(root);
    return ok ? 0 : -1;
}

/* A stream: "data: {chunk}\n\n" events, then "data: [DONE]\n\n". */
static int read_stream(const xfer *x, srv_kind kind, outcome *o)
{
    memset(o, 0, sizeof o[0]);
    if (x->status != 200)
        return -1;
    int bad = 0;
    const char *p = x->body;
    while (*p && !bad) {
        const char *end = strstr(p, "\n\n");
        if (strncmp(p, "data: ", 6) != 0 || !end) {
            bad = 1;
            break;
        }
        o->events++;
        o->done_last = 0;
        if (strncmp(p + 6, "[DONE]\n\n", 8) == 0) {
            o->done_last = 1;
            p = end + 2;
            continue;
        }
        json_t *root = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        const char *obj = json_string_value(json_object_get(root, "object"));
        bad = !obj ||
              strcmp(obj, kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion") != 0;
        json_t *choices = json_object_get(root, "choices");
        json_t *choice = json_array_get(choices, 0);
        if (!bad && choice) {
            json_t *delta = json_object_get(choice, "delta");
            if (o->events == 1 && kind == SRV_CHAT)
                o->role_first = json_is_string(json_object_get(delta, "role"));
            add_text(o, choice_text(choice, kind, 1));
            const char *f = json_string_value(json_object_get(choice, "finish_reason"));
            if (f)
                snprintf(o->finish, sizeof o->finish, "%s", f);
        } else if (!bad && json_object_get(root, "usage")) {
            read_usage(o, json_object_get(root, "usage"));
        }
        json_decref(root);
        p = end + 2;
    }
    if (bad)
        fprintf(stderr, "\nnot an event stream: %.500s\n", x->body);
    return bad || !o->done_last ? -1 : 0;
}

/* A completion request; temperature 0 = greedy. */
static char *request_body(const char *prompt, int max_tokens, int stream, double temperature,
                          const char *extra)
{
    json_t *j = json_pack("{s:s,s:i,s:f,s:b}", "prompt", prompt, "max_tokens", max_tokens,
                          "temperature", temperature, "stream", stream);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (extra && *extra) { /* ,"key":value pairs spliced in before the closing brace */
        char *t = malloc(strlen(s) + strlen(extra) + 2);
        sprintf(t, "%.*s,%s}", (int)strlen(s) - 1, s, extra);
        free(s);
        s = t;
    }
    return s;
}

static char *completion_body(const char *prompt, int max_tokens, int stream, const char *extra)
{
    return request_body(prompt, max_tokens, stream, 0.0, extra);
}

/* A greedy completion of prompt, whole or streamed; its outcome or a failed assertion. */
static int complete(const server *s, const char *prompt, int max_tokens, int stream,
                    const char *extra, outcome *o)
{
    char *body = completion_body(prompt, max_tokens, stream, extra);
    xfer x;
    request(&x, s, "/v1/completions", body, NULL);
    free(body);
    int rc = stream ? read_stream(&x, SRV_COMPLETION, o) : read_response(&x, SRV_COMPLETION, o);
    CU_ASSERT_EQUAL(rc, 0);
    xfer_free(&x);
    return rc;
}

/* A value of the /metrics text (the first sample whose line starts with name). */
static double metric(const server *s, const char *name)
{
    xfer x;
    request(&x, s, "/metrics", NULL, NULL);
    double v = -1;
    const char *p = x.body;
    while (p && *p) {
        if (strncmp(p, name, strlen(name)) == 0) {
            v = atof(strchr(p, ' ') + 1);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    xfer_free(&x);
    return v;
}

/* ---- suites ---------------------------------------------------------------------------------- */

static void expect_clean_exit_on(server *s, int sig)
{
    int rc = server_stop(s, sig);
    if (rc != 0)
        fprintf(stderr, "\nb158-cl-server exit status %d after signal %d\n", rc, sig);
    CU_ASSERT_EQUAL(rc, 0);
}

static void expect_clean_exit(server *s)
{
    expect_clean_exit_on(s, SIGTERM);
}

static void test_endpoints(void)
{
    server s;
    if (server_start(&s, "-np 2"))
        return;
    xfer x;
    request(&x, &s, "/health", NULL, NULL);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, "\"ok\""));
    xfer_free(&x);

    request(&x, &s, "/v1/models", NULL, NULL);
    CU_ASSERT_EQUAL(x.status, 200);
    json_t *root = json_loads(x.body, 0, NULL);
    json_t *m = json_array_get(json_object_get(root, "data"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "object")), "list");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m, "id")), "shakespeare-bitnet.gguf");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m, "object")), "model");
    json_decref(root);
    xfer_free(&x);

    /* the greedy continuation PyTorch recorded for the shipped model */
    size_t jl;
    char *js =
        b158_test_read_file(b158_test_source("models/shakespeare-bitnet.expected.json"), &jl);
    json_t *exp = js ? json_loads(js, 0, NULL) : NULL;
    json_t *g = json_object_get(exp, "greedy");
    const char *prompt = json_string_value(json_object_get(g, "prompt"));
    const char *want = json_string_value(json_object_get(g, "text"));
    const int n = (int)json_integer_value(json_object_get(g, "n_predict"));
    CU_ASSERT_FATAL(prompt && want && n > 0);
    outcome o;
    if (complete(&s, prompt, n, 0, NULL, &o) == 0) {
        if (strcmp(o.text, want) != 0)
            fprintf(stderr, "\nwanted '%s'\ngot    '%s'\n", want ? want : "", o.text);
        CU_ASSERT_STRING_EQUAL(o.text, want);
        CU_ASSERT_STRING_EQUAL(o.finish, "length");
        CU_ASSERT_EQUAL(o.completion_tokens, n);
        CU_ASSERT_EQUAL(o.prompt_tokens, 2);
        CU_ASSERT_EQUAL(o.total_tokens, n + 2);
    }
    /* the same prompt as the token ids the server makes of it: the same text */
    b158_vocab *v = NULL;
    b158_token *ids = NULL;
    size_t n_ids = 0;
    CU_ASSERT_FATAL(b158_vocab_load(b158_test_source("models/shakespeare-bitnet.gguf"), &v) ==
                    B158_OK);
    CU_ASSERT_FATAL(b158_tokenize_alloc(v, prompt, strlen(prompt),
                                        B158_TOKENIZE_ADD_BOS | B158_TOKENIZE_PARSE_SPECIAL, &ids,
                                        &n_ids) == B158_OK);
    json_t *arr = json_array();
    for (size_t i = 0; i < n_ids; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    json_t *jb = json_pack("{s:o,s:i,s:i}", "prompt", arr, "max_tokens", n, "temperature", 0);
    char *body = json_dumps(jb, JSON_COMPACT);
    request(&x, &s, "/v1/completions", body, NULL);
    if (read_response(&x, SRV_COMPLETION, &o) == 0) {
        CU_ASSERT_STRING_EQUAL(o.text, want);
        CU_ASSERT_EQUAL(o.prompt_tokens, (int)n_ids);
    }
    xfer_free(&x);
    free(body);
    json_decref(jb);
    /* an id past the vocabulary: 400 naming the prompt */
    char bad[96];
    snprintf(bad, sizeof bad, "{\"prompt\":[1,%d],\"max_tokens\":1}", b158_vocab_n_tokens(v));
    request(&x, &s, "/v1/completions", bad, NULL);
    CU_ASSERT_EQUAL(x.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, "\"param\":\"prompt\""));
    xfer_free(&x);
    free(ids);
    b158_vocab_free(v);
    /* temperature 0 with a frequency penalty: the sampler's pick on the penalized logits (not
     * the device's argmax), so another text of as many tokens */
    if (complete(&s, prompt, n, 0, "\"frequency_penalty\":2", &o) == 0) {
        CU_ASSERT_STRING_NOT_EQUAL(o.text, want);
        CU_ASSERT_EQUAL(o.completion_tokens, n);
    }
    json_decref(exp);
    free(js);

    /* chat: the reply of the framed conversation, the usage adding up */
    request(&x, &s, "/v1/chat/completions",
            "{\"model\":\"any\",\"messages\":[{\"role\":\"system\",\"content\":\"You are "
            "Romeo.\"},{\"role\":\"user\",\"content\":\"Who goes there?\"}],\"max_tokens\":"
            "12,\"temperature\":0}",
            NULL);
    if (read_response(&x, SRV_CHAT, &o) == 0) {
        CU_ASSERT(o.len > 0);
        CU_ASSERT_STRING_EQUAL(o.finish, "length");
        CU_ASSERT_EQUAL(o.completion_tokens, 12);
        CU_ASSERT(o.prompt_tokens > 10 && o.total_tokens == o.prompt_tokens + 12);
    }
    root = json_loads(x.body, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(msg, "role")), "assistant");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "model")),
                           "shakespeare-bitnet.gguf");
    const char *id = json_string_value(json_object_get(root, "id"));
    CU_ASSERT(id && strncmp(id, "chatcmpl-", 9) == 0);
    CU_ASSERT(json_is_integer(json_object_get(root, "created")));
    json_decref(root);
    xfer_free(&x);

    /* /metrics: Prometheus text with what just happened */
    request(&x, &s, "/metrics", NULL, NULL);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, "# TYPE b158_requests_total counter"));
    xfer_free(&x);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"200\"}") >= 4);
    CU_ASSERT(metric(&s, "b158_generated_tokens_total") >= n + 12);
    CU_ASSERT(metric(&s, "b158_prompt_tokens_total") >= 12);
    CU_ASSERT_EQUAL(metric(&s, "b158_slots_total"), 2);
    CU_ASSERT_EQUAL(metric(&s, "b158_slots_active"), 0);
    CU_ASSERT_EQUAL(metric(&s, "b158_queue_length"), 0);
    CU_ASSERT(metric(&s, "b158_seconds_per_token") > 0);
    expect_clean_exit_on(&s, SIGINT); /* Ctrl-C */
}

/* A 200 answer's JSON (a new reference), or NULL after a failed assertion. */
static json_t *answer(const server *s, const char *path, const char *body)
{
    xfer x;
    request(&x, s, path, body, NULL);
    json_t *root = json_loads(x.body, JSON_REJECT_DUPLICATES, NULL);
    if (x.status != 200 || !root)
        fprintf(stderr, "\n%s %.200s: %ld %.300s\n", path, body, x.status, x.body);
    CU_ASSERT(x.status == 200 && root);
    xfer_free(&x);
    return root;
}

/* /tokenize and /detokenize as llama-server's, with the shipped model's vocabulary. */
static void test_tokenizer_endpoints(void)
{
    b158_vocab *v = NULL;
    CU_ASSERT_FATAL(b158_vocab_load(b158_test_source("models/shakespeare-bitnet.gguf"), &v) ==
                    B158_OK);
    server s;
    if (server_start(&s, "-np 1")) {
        b158_vocab_free(v);
        return;
    }
    size_t jl;
    char *js =
        b158_test_read_file(b158_test_source("models/shakespeare-bitnet.expected.json"), &jl);
    json_t *exp = js ? json_loads(js, 0, NULL) : NULL;
    const char *prompt =
        json_string_value(json_object_get(json_object_get(exp, "greedy"), "prompt"));
    CU_ASSERT_FATAL(prompt != NULL);
    /* the greedy prompt, then text whose "é" is two byte tokens */
    char text[256];
    snprintf(text, sizeof text, "%s h\xC3\xA9llo, <|eot_id|>", prompt);
    for (int t = 0; t < 2; t++) {
        const char *content = t ? text : prompt;
        for (int add_special = 0; add_special < 2; add_special++) {
            const unsigned flags =
                B158_TOKENIZE_PARSE_SPECIAL | (add_special ? B158_TOKENIZE_ADD_BOS : 0u);
            b158_token *ids = NULL;
            size_t n = 0;
            CU_ASSERT_FATAL(b158_tokenize_alloc(v, content, strlen(content), flags, &ids, &n) ==
                            B158_OK);
            /* BOS comes first only where the vocabulary adds one */
            const int bos = add_special && b158_vocab_add_bos(v) && b158_vocab_bos(v) >= 0;
            if (bos)
                CU_ASSERT_EQUAL(ids[0], b158_vocab_bos(v));
            json_t *req = json_pack("{s:s,s:b}", "content", content, "add_special", add_special);
            char *body = json_dumps(req, JSON_COMPACT);
            json_t *root = answer(&s, "/tokenize", body);
            json_t *tokens = json_object_get(root, "tokens");
            CU_ASSERT_EQUAL(json_array_size(tokens), n);
            json_t *back = json_array();
            for (size_t i = 0; i < json_array_size(tokens); i++) {
                json_t *id = json_array_get(tokens, i);
                CU_ASSERT(json_is_integer(id) && json_integer_value(id) == ids[i]);
                json_array_append(back, id);
            }
            json_decref(root);
            free(body);

            /* the ids back through /detokenize: the same text (BOS's text in front) */
            json_t *dreq = json_pack("{s:o}", "tokens", back);
            char *dbody = json_dumps(dreq, JSON_COMPACT);
            json_decref(dreq);
            root = answer(&s, "/detokenize", dbody);
            char want[512];
            snprintf(want, sizeof want, "%s%s",
                     bos ? b158_vocab_token_text(v, b158_vocab_bos(v), NULL) : "", content);
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "content")), want);
            json_decref(root);
            free(dbody);

            /* with_pieces: {"id", "piece"} whose pieces add up to that text */
            json_object_set_new(req, "with_pieces", json_true());
            body = json_dumps(req, JSON_COMPACT);
            root = answer(&s, "/tokenize", body);
            char joined[512];
            CU_ASSERT_EQUAL(
                join_pieces(json_object_get(root, "tokens"), ids, n, joined, sizeof joined),
                (long)strlen(want));
            CU_ASSERT_STRING_EQUAL(joined, want);
            json_decref(root);
            free(body);
            json_decref(req);
            free(ids);
        }
    }
    json_decref(exp);
    free(js);

    /* parse_special false: the special token's text is plain text */
    json_t *root = answer(&s, "/tokenize", "{\"content\":\"<|eot_id|>\",\"parse_special\":false}");
    b158_token *ids = NULL;
    size_t n = 0;
    CU_ASSERT_FATAL(b158_tokenize_alloc(v, "<|eot_id|>", 10, 0, &ids, &n) == B158_OK);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(root, "tokens")), n);
    free(ids);
    json_decref(root);

    /* most of a megabyte of content, piece by piece: as many tokens as the library makes */
    const size_t big = 900 * 1024;
    char *huge = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        huge[i] = "Speak, speak. \n"[i % 15];
    huge[big] = '\0';
    CU_ASSERT_FATAL(b158_tokenize_alloc(v, huge, big, B158_TOKENIZE_PARSE_SPECIAL, &ids, &n) ==
                    B158_OK);
    json_t *req = json_pack("{s:s,s:b}", "content", huge, "with_pieces", 1);
    char *body = json_dumps(req, JSON_COMPACT);
    root = answer(&s, "/tokenize", body);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(root, "tokens")), n);
    json_decref(root);
    free(body);
    json_decref(req);
    free(ids);
    free(huge);

    /* bad bodies: 400 naming the field; other methods: 405 with Allow */
    static const struct {
        const char *path, *body, *param;
    } bad[] = {
        {"/tokenize", "{\"content\":", NULL},
        {"/tokenize", "{}", "content"},
        {"/tokenize", "{\"content\":[1,2]}", "content"},
        {"/tokenize", "{\"content\":\"a\",\"with_pieces\":\"yes\"}", "with_pieces"},
        {"/tokenize", "{\"content\":\"a\",\"add_special\":0}", "add_special"},
        {"/detokenize", "[]", NULL},
        {"/detokenize", "{\"tokens\":\"1\"}", "tokens"},
        {"/detokenize", "{\"tokens\":[1,4096]}", "tokens"},
        {"/detokenize", "{\"tokens\":[-1]}", "tokens"},
        {"/detokenize", "{\"tokens\":[1.5]}", "tokens"},
    };
    const double n400 = metric(&s, "b158_requests_total{status=\"400\"}");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        xfer x;
        request(&x, &s, bad[i].path, bad[i].body, NULL);
        check_error(&x, 400, NULL);
        json_t *r = json_loads(x.body, 0, NULL);
        json_t *param = json_object_get(json_object_get(r, "error"), "param");
        CU_ASSERT(bad[i].param
                      ? json_is_string(param) && strcmp(json_string_value(param), bad[i].param) == 0
                      : json_is_null(param));
        json_decref(r);
        xfer_free(&x);
    }
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(v), 4096); /* (the id that is one too many above) */
    CU_ASSERT_EQUAL(metric(&s, "b158_requests_total{status=\"400\"}") - n400,
                    (double)(sizeof bad / sizeof bad[0]));
    const double n405 = metric(&s, "b158_requests_total{status=\"405\"}");
    static const char *const paths[] = {"/tokenize", "/detokenize"};
    for (int i = 0; i < 2; i++) {
        xfer x;
        request(&x, &s, paths[i], NULL, NULL);
        check_error(&x, 405, "method_not_allowed");
        struct curl_header *allow = NULL;
        CU_ASSERT(curl_easy_header(x.e, "Allow", 0, CURLH_HEADER, -1, &allow) == CURLHE_OK &&
                  strcmp(allow->value, "POST") == 0);
        xfer_free(&x);
    }
    CU_ASSERT_EQUAL(metric(&s, "b158_requests_total{status=\"405\"}") - n405, 2);
    /* no slot was involved */
    CU_ASSERT_EQUAL(metric(&s, "b158_decode_steps_total"), 0);
    b158_vocab_free(v);
    expect_clean_exit(&s);
}

static void test_stream(void)
{
    server s;
    if (server_start(&s, "-np 2"))
        return;
    const char *prompt = "JULIET:\nO Romeo, Romeo!";
    outcome whole, ev;
    /* the events of a stream add up to the whole response */
    if (complete(&s, prompt, 40, 0, NULL, &whole) == 0 &&
        complete(&s, prompt, 40, 1, "\"stream_options\":{\"include_usage\":true}", &ev) == 0) {
        CU_ASSERT_STRING_EQUAL(ev.text, whole.text);
        CU_ASSERT_STRING_EQUAL(ev.finish, whole.finish);
        CU_ASSERT(ev.events >= 4 && ev.done_last);
        CU_ASSERT_EQUAL(ev.completion_tokens, whole.completion_tokens);
        CU_ASSERT_EQUAL(ev.total_tokens, whole.total_tokens);
    }
    /* chat: the first chunk carries the role */
    xfer x;
    request(&x, &s, "/v1/chat/completions",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"Speak.\"}],\"max_tokens\":8,"
            "\"temperature\":0,\"stream\":true}",
            NULL);
    CU_ASSERT_EQUAL(read_stream(&x, SRV_CHAT, &ev), 0);
    CU_ASSERT(ev.role_first && ev.len > 0);
    CU_ASSERT_STRING_EQUAL(ev.finish, "length");
    xfer_free(&x);

    /* stop strings, whole and streamed: the text up to the stop string, without it; the one
     * picked spans a token boundary in the middle of the greedy text */
    if (whole.len > 20) {
        const size_t at = whole.len / 2;
        char stop[8], extra[64];
        memcpy(stop, whole.text + at, 4);
        stop[4] = '\0';
        json_t *js = json_string(stop);
        char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        if (q) {
            snprintf(extra, sizeof extra, "\"stop\":[\"zzzz\",%s]", q);
            const size_t first = (size_t)(strstr(whole.text, stop) - whole.text);
            for (int streamed = 0; streamed < 2; streamed++) {
                outcome o;
                if (complete(&s, prompt, 40, streamed, extra, &o) == 0) {
                    CU_ASSERT_EQUAL(o.len, first);
                    CU_ASSERT(strncmp(o.text, whole.text, first) == 0);
                    CU_ASSERT_STRING_EQUAL(o.finish, "stop");
                }
            }
        }
        free(q);
        json_decref(js);
    }
    expect_clean_exit(&s);
}

static void test_errors(void)
{
    server s;
    if (server_start(&s, "-np 1"))
        return;
    xfer x;
    static const struct {
        const char *path, *body, *code;
        long status;
    } cases[] = {
        {"/v1/completions", "{\"prompt\":", NULL, 400},
        {"/v1/completions", "not json", NULL, 400},
        {"/v1/completions", "{\"prompt\":\"a\",\"temperature\":\"hot\"}", NULL, 400},
        {"/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":-3}", NULL, 400},
        {"/v1/chat/completions", "{\"messages\":\"hi\"}", NULL, 400},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
         "\"stream\":\"yes\"}",
         NULL, 400},
        {"/v1/nothing", "{}", "not_found", 404},
        {"/", NULL, "not_found", 404},
        {"/v1/completions", NULL, "method_not_allowed", 405},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        request(&x, &s, cases[i].path, cases[i].body, NULL);
        check_error(&x, cases[i].status, cases[i].code);
        xfer_free(&x);
    }
    xfer_init(&x, &s, "DELETE", "/health", NULL, 0, NULL);
    xfer_finish(&x, curl_easy_perform(x.e));
    check_error(&x, 405, "method_not_allowed");
    struct curl_header *allow = NULL;
    CU_ASSERT(curl_easy_header(x.e, "Allow", 0, CURLH_HEADER, -1, &allow) == CURLHE_OK &&
              strcmp(allow->value, "GET") == 0);
    xfer_free(&x);

    /* a prompt longer than the 256-token context */
    char *long_prompt = malloc(8192);
    for (int i = 0; i < 8191; i++)
        long_prompt[i] = "ab c"[i % 4];
    long_prompt[8191] = '\0';
    char *body = completion_body(long_prompt, 4, 0, NULL);
    request(&x, &s, "/v1/completions", body, NULL);
    check_error(&x, 400, "context_length_exceeded");
    xfer_free(&x);
    free(body);
    free(long_prompt);

    /* a body over 1 MiB, with its length declared and chunked */
    const size_t big = (1u << 20) + 100;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    memcpy(huge, "{\"prompt\":\"", 11);
    xfer_init(&x, &s, NULL, "/v1/completions", huge, (long)big, NULL);
    xfer_finish(&x, curl_easy_perform(x.e));
    check_error(&x, 413, "request_too_large");
    xfer_free(&x);
    xfer_init(&x, &s, "POST", "/v1/completions", NULL, 0, NULL);
    x.headers = curl_slist_append(x.headers, "Transfer-Encoding: chunked");
    curl_easy_setopt(x.e, CURLOPT_HTTPHEADER, x.headers);
    FILE *f = fmemopen(huge, big, "rb");
    curl_easy_setopt(x.e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(x.e, CURLOPT_READDATA, f);
    xfer_finish(&x, curl_easy_perform(x.e));
    check_error(&x, 413, "request_too_large");
    fclose(f);
    xfer_free(&x);
    free(huge);

    /* after all that, it still answers */
    outcome o;
    complete(&s, "ROMEO:", 4, 0, NULL, &o);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"400\"}") >= 7);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"413\"}") >= 2);
    expect_clean_exit(&s);
}

static void test_api_key(void)
{
    server s;
    if (server_start(&s, "-np 1 --api-key sesame"))
        return;
    xfer x;
    const char *body = "{\"prompt\":\"ROMEO:\",\"max_tokens\":2}";
    const char *keys[] = {NULL, "wrong", "sesam", "sesame2"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        request(&x, &s, "/v1/completions", body, keys[i]);
        check_error(&x, 401, "invalid_api_key");
        xfer_free(&x);
    }
    static const char *const paths[] = {"/v1/models", "/tokenize", "/detokenize"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        request(&x, &s, paths[i], i ? "{\"content\":\"a\",\"tokens\":[1]}" : NULL, NULL);
        check_error(&x, 401, "invalid_api_key");
        xfer_free(&x);
        request(&x, &s, paths[i], i ? "{\"content\":\"a\",\"tokens\":[1]}" : NULL, "wrong");
        check_error(&x, 401, "invalid_api_key");
        xfer_free(&x);
    }
    request(&x, &s, "/tokenize", "{\"content\":\"ROMEO:\"}", "sesame");
    CU_ASSERT_EQUAL(x.status, 200);
    xfer_free(&x);
    request(&x, &s, "/v1/completions", body, "sesame");
    CU_ASSERT_EQUAL(x.status, 200);
    xfer_free(&x);
    request(&x, &s, "/health", NULL, NULL); /* open, as llama-server's */
    CU_ASSERT_EQUAL(x.status, 200);
    xfer_free(&x);
    expect_clean_exit(&s);
}

/* The first event of a stream has come: the request holds its slot. */
static void wait_bytes(CURLM *m, xfer *x, size_t n)
{
    int running = 1;
    const double t0 = now_s();
    while (x->len < n && running && now_s() - t0 < 120) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 50, NULL);
    }
}

/* A long greedy stream (ROMEO:, 4000 tokens) in m, once its first bytes came: a busy slot */
static void busy_stream(CURLM *m, const server *s, xfer *x)
{
    char *body = completion_body("ROMEO:", 4000, 1, NULL);
    xfer_init(x, s, NULL, "/v1/completions", body, -1, NULL);
    free(body);
    curl_multi_add_handle(m, x->e);
    wait_bytes(m, x, 1);
}

static void test_queue_full(void)
{
    /* one slot and room for one waiting request: the third gets 503 */
    server s;
    if (server_start(&s, "-np 1 --queue 1 -c 4096"))
        return;
    CURLM *m = curl_multi_init();
    xfer a, b, c;
    busy_stream(m, &s, &a);
    CU_ASSERT(a.len > 0);
    char *short_gen = completion_body("JULIET:", 4, 0, NULL);
    xfer_init(&b, &s, NULL, "/v1/completions", short_gen, -1, NULL);
    free(short_gen);
    curl_multi_add_handle(m, b.e);
    const double t0 = now_s();
    while (metric(&s, "b158_queue_length") < 1 && now_s() - t0 < 60) {
        int running;
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    CU_ASSERT_EQUAL(metric(&s, "b158_slots_active"), 1);
    CU_ASSERT_EQUAL(metric(&s, "b158_queue_length"), 1);
    request(&c, &s, "/v1/completions", "{\"prompt\":\"KING:\"}", NULL);
    check_error(&c, 503, "queue_full");
    xfer_free(&c);
    /* the long stream's client goes away: its slot serves the waiting request */
    curl_multi_remove_handle(m, a.e);
    xfer_free(&a);
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->easy_handle == b.e)
            xfer_finish(&b, msg->data.result);
    outcome o;
    CU_ASSERT_EQUAL(read_response(&b, SRV_COMPLETION, &o), 0);
    curl_multi_remove_handle(m, b.e);
    xfer_free(&b);
    curl_multi_cleanup(m);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"503\"}") >= 1);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"499\"}") >= 1);
    expect_clean_exit(&s);
}

static void test_disconnect(void)
{
    /* clients that leave mid-stream and mid-wait free their slot at the next step */
    server s;
    if (server_start(&s, "-np 2 -c 4096"))
        return;
    xfer x[2];
    char *body = completion_body("ROMEO:", 4000, 1, NULL);
    xfer_init(&x[0], &s, NULL, "/v1/completions", body, -1, NULL);
    x[0].abort_after = 600; /* a few events */
    free(body);
    body = completion_body("JULIET:", 4000, 0, NULL);
    xfer_init(&x[1], &s, NULL, "/v1/completions", body, -1, NULL);
    curl_easy_setopt(x[1].e, CURLOPT_TIMEOUT_MS, 700L); /* gives up waiting */
    free(body);
    const double t0 = now_s();
    run_all(x, 2);
    CU_ASSERT_EQUAL(x[0].result, CURLE_WRITE_ERROR);
    CU_ASSERT_EQUAL(x[1].result, CURLE_OPERATION_TIMEDOUT);
    xfer_free(&x[0]);
    xfer_free(&x[1]);
    while (metric(&s, "b158_slots_active") > 0 && now_s() - t0 < 60)
        sleep_ms(20);
    /* well before 4000 tokens each: the slots were given back */
    CU_ASSERT_EQUAL(metric(&s, "b158_slots_active"), 0);
    CU_ASSERT(metric(&s, "b158_generated_tokens_total") < 4000);
    CU_ASSERT_EQUAL(metric(&s, "b158_requests_total{status=\"499\"}"), 2);
    outcome o;
    complete(&s, "ROMEO:", 4, 0, NULL, &o);
    expect_clean_exit(&s);
}

/* The text of each request alone equals its text while the others run beside it: greedy, and
 * sampled with a seed (each request has its own sampler). Steps of at most 8 tokens split the
 * longer prompts into chunks that share steps with the others' generated tokens. */
static void test_batched(void)
{
    server s;
    if (server_start(&s, "-np 4 -b 8"))
        return;
    static const struct {
        const char *prompt;
        int max_tokens, stream;
        double temperature;
    } reqs[] = {
        {"ROMEO:", 60, 0, 0.0},
        {"JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?", 35, 1, 0.0},
        {"First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.", 90,
         0, 0.0},
        {"KING", 20, 1, 0.0},
        {"MENENIUS:\nWhat work's, my countrymen, in hand? where go you", 75, 1, 0.9},
        {"\n", 50, 0, 1.0},
    };
    enum { N = sizeof reqs / sizeof reqs[0] };
    outcome alone[N], together[N];
    xfer x[N];
    const char *extra = "\"seed\":1234,\"stream_options\":{\"include_usage\":true}";
    for (int i = 0; i < N; i++) {
        char *body = request_body(reqs[i].prompt, reqs[i].max_tokens, reqs[i].stream,
                                  reqs[i].temperature, extra);
        request(&x[i], &s, "/v1/completions", body, NULL);
        free(body);
        int rc = reqs[i].stream ? read_stream(&x[i], SRV_COMPLETION, &alone[i])
                                : read_response(&x[i], SRV_COMPLETION, &alone[i]);
        xfer_free(&x[i]);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc)
            goto out;
    }
    const double steps0 = metric(&s, "b158_decode_steps_total");
    for (int i = 0; i < N; i++) {
        char *body = request_body(reqs[i].prompt, reqs[i].max_tokens, reqs[i].stream,
                                  reqs[i].temperature, extra);
        xfer_init(&x[i], &s, NULL, "/v1/completions", body, -1, NULL);
        free(body);
    }
    run_all(x, N);
    int gen = 0;
    for (int i = 0; i < N; i++) {
        int rc = reqs[i].stream ? read_stream(&x[i], SRV_COMPLETION, &together[i])
                                : read_response(&x[i], SRV_COMPLETION, &together[i]);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc == 0 && strcmp(alone[i].text, together[i].text) != 0)
            fprintf(stderr, "\nrequest %d alone:    '%s'\nrequest %d together: '%s'\n", i,
                    alone[i].text, i, together[i].text);
        CU_ASSERT_STRING_EQUAL(alone[i].text, together[i].text);
        CU_ASSERT_STRING_EQUAL(alone[i].finish, together[i].finish);
        CU_ASSERT_EQUAL(alone[i].completion_tokens, together[i].completion_tokens);
        gen += together[i].completion_tokens;
        xfer_free(&x[i]);
    }
    /* alone, every generated token takes a step of its own (and each prompt one more); side by
     * side they share steps. How many they share depends on when each request arrives. */
    const double steps = metric(&s, "b158_decode_steps_total") - steps0;
    fprintf(stderr, "\n%d requests side by side: %d tokens generated in %.0f steps\n", N, gen,
            steps);
    CU_ASSERT(steps < gen);
out:
    expect_clean_exit(&s);
}

/* Prompts are fed oldest admission first: A, admitted to slot 1 beside a long stream in slot
 * 0, is still feeding its long prompt (at -b 2, one token a step while the stream takes the
 * other) when the stream's client leaves and B takes slot 0; B's short prompt waits for A's,
 * so A ends (after one token) well before B (20 tokens). Before, the lowest slot's prompt went
 * first and B finished first: a steady run of short requests in slot 0 could starve A. */
static void test_prompt_order(void)
{
    server s;
    if (server_start(&s, "-np 2 -b 2"))
        return;
    char prompt[1024] = "";
    for (int i = 0; i < 7; i++) /* 7 x 23 tokens */
        strcat(prompt, "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n"
                       "Speak, speak.");
    CURLM *m = curl_multi_init();
    xfer x, a, b;
    busy_stream(m, &s, &x);
    char *body = completion_body(prompt, 1, 0, NULL);
    xfer_init(&a, &s, NULL, "/v1/completions", body, -1, NULL);
    free(body);
    curl_multi_add_handle(m, a.e);
    int running = 1;
    for (const double t0 = now_s(); metric(&s, "b158_slots_active") < 2 && now_s() - t0 < 60;) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 5, NULL);
    }
    curl_multi_remove_handle(m, x.e); /* the stream's client leaves: slot 0 is B's */
    xfer_free(&x);
    body = completion_body("KING", 20, 0, NULL); /* (ends 20 steps after A, not 1) */
    xfer_init(&b, &s, NULL, "/v1/completions", body, -1, NULL);
    free(body);
    curl_multi_add_handle(m, b.e);
    const xfer *first = NULL;
    for (running = 1; running;) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            xfer *d = msg->easy_handle == a.e ? &a : msg->easy_handle == b.e ? &b : NULL;
            if (d && msg->msg == CURLMSG_DONE) {
                xfer_finish(d, msg->data.result);
                first = first ? first : d;
            }
        }
        if (running)
            curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    outcome o;
    CU_ASSERT_EQUAL(read_response(&a, SRV_COMPLETION, &o), 0);
    CU_ASSERT_EQUAL(o.prompt_tokens, 7 * 23);
    CU_ASSERT_EQUAL(read_response(&b, SRV_COMPLETION, &o), 0);
    CU_ASSERT_PTR_EQUAL(first, &a);
    fprintf(stderr, "\nfirst done: %s\n", first == &a ? "A (admitted first)" : "B");
    curl_multi_remove_handle(m, a.e);
    curl_multi_remove_handle(m, b.e);
    xfer_free(&a);
    xfer_free(&b);
    curl_multi_cleanup(m);
    expect_clean_exit(&s);
}

/* Client i's k-th request of the load test: a short completion, or for one client in eight a
 * /tokenize and for another a /detokenize (answered in the HTTP threads beside the scheduler's
 * steps, on the shared vocabulary: what the ThreadSanitizer build is there to see) */
static const char *load_request(int i, int k, char **body)
{
    static const char *prompts[] = {
        "ROMEO:", "JULIET:", "KING RICHARD III:", "First Citizen:", "\n"};
    if (i % 8 == 7) {
        json_t *j = json_pack("{s:s,s:b}", "content", prompts[(i + k) % 5], "with_pieces", k % 2);
        *body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return "/tokenize";
    }
    if (i % 8 == 6) {
        *body = strdup(k % 2 ? "{\"tokens\":[65,66,10]}" : "{\"tokens\":[]}");
        return "/detokenize";
    }
    *body = completion_body(prompts[(i + k) % 5], 1 + (i + k) % 8, i % 2, NULL);
    return "/v1/completions";
}

/* Whether the answer x to load_request(i, ..) is right */
static int load_answer_ok(int i, const xfer *x)
{
    if (x->result != CURLE_OK)
        return 0;
    if (i % 8 >= 6)
        return x->status == 200 && strstr(x->body, i % 8 == 7 ? "{\"tokens\":[" : "{\"content\":");
    outcome o;
    const int rc =
        i % 2 ? read_stream(x, SRV_COMPLETION, &o) : read_response(x, SRV_COMPLETION, &o);
    return rc == 0 && o.completion_tokens <= 8;
}

/* 64 clients, 20 short requests each (load_request), over keep-alive connections: every one
 * answered. */
static void test_load(void)
{
    server s;
    if (server_start(&s, "-np 16 --queue 64"))
        return;
    enum { CLIENTS = 64, EACH = 20 };
    xfer x[CLIENTS];
    int sent[CLIENTS], ok = 0, failed = 0;
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)CLIENTS);
    for (int i = 0; i < CLIENTS; i++)
        sent[i] = 0;
    const double t0 = now_s();
    /* each client's next request starts when its last one is answered */
    int running = 0;
    for (int i = 0; i < CLIENTS; i++) {
        char *body;
        const char *path = load_request(i, 0, &body);
        xfer_init(&x[i], &s, NULL, path, body, -1, NULL);
        free(body);
        curl_multi_add_handle(m, x[i].e);
        sent[i]++;
        running++;
    }
    while (running > 0 && now_s() - t0 < 600) {
        int still;
        curl_multi_perform(m, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            for (int i = 0; i < CLIENTS; i++) {
                if (msg->easy_handle != x[i].e)
                    continue;
                xfer_finish(&x[i], msg->data.result);
                if (load_answer_ok(i, &x[i]))
                    ok++;
                else {
                    failed++;
                    fprintf(stderr, "\nclient %d request %d failed: curl %d, HTTP %ld\n", i,
                            sent[i], (int)x[i].result, x[i].status);
                }
                /* the same easy handle again: curl keeps its connection alive */
                if (sent[i] < EACH) {
                    char *body;
                    (void)load_request(i, sent[i], &body); /* (the same route) */
                    curl_multi_remove_handle(m, x[i].e);
                    x[i].len = 0;
                    x[i].done = 0;
                    curl_easy_setopt(x[i].e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
                    curl_easy_setopt(x[i].e, CURLOPT_COPYPOSTFIELDS, body);
                    free(body);
                    curl_multi_add_handle(m, x[i].e);
                    sent[i]++;
                } else {
                    curl_multi_remove_handle(m, x[i].e);
                    running--;
                }
            }
        }
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    const double dt = now_s() - t0;
    for (int i = 0; i < CLIENTS; i++)
        xfer_free(&x[i]);
    curl_multi_cleanup(m);
    fprintf(stderr,
            "\nload: %d clients x %d requests: %d answered, %d failed in %.1f s (%.1f "
            "requests/s); %.0f tokens generated, %.0f steps\n",
            CLIENTS, EACH, ok, failed, dt, ok / dt, metric(&s, "b158_generated_tokens_total"),
            metric(&s, "b158_decode_steps_total"));
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_EQUAL(ok, CLIENTS * EACH);
    CU_ASSERT(metric(&s, "b158_requests_total{status=\"200\"}") >= CLIENTS * EACH);
    expect_clean_exit(&s);
}

/* SIGTERM with requests running and waiting: each gets an answer, the server exits 0. */
static void test_shutdown(void)
{
    server s;
    if (server_start(&s, "-np 1 -c 4096"))
        return;
    CURLM *m = curl_multi_init();
    xfer x[3];
    for (int i = 0; i < 3; i++) {
        char *body = completion_body("ROMEO:", 4000, i == 0, NULL);
        xfer_init(&x[i], &s, NULL, "/v1/completions", body, -1, NULL);
        free(body);
    }
    /* the stream holds the slot, then the two others queue */
    curl_multi_add_handle(m, x[0].e);
    wait_bytes(m, &x[0], 1);
    curl_multi_add_handle(m, x[1].e);
    curl_multi_add_handle(m, x[2].e);
    const double t0 = now_s();
    while (metric(&s, "b158_queue_length") < 2 && now_s() - t0 < 60) {
        int running;
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 20, NULL);
    }
    kill(s.pid, SIGTERM);
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        for (int i = 0; i < 3; i++)
            if (msg->easy_handle == x[i].e)
                xfer_finish(&x[i], msg->data.result);
    /* the stream ends with an error event and [DONE]; the waiting ones get 503 */
    CU_ASSERT_EQUAL(x[0].status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(x[0].body, "data: {\"error\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(x[0].body, "data: [DONE]"));
    check_error(&x[1], 503, NULL);
    check_error(&x[2], 503, NULL);
    for (int i = 0; i < 3; i++) {
        curl_multi_remove_handle(m, x[i].e);
        xfer_free(&x[i]);
    }
    curl_multi_cleanup(m);
    expect_clean_exit(&s);
}

static void add_suites(void)
{
    static const b158_test_case parse_tests[] = {{"valid", test_parse_valid},
                                                 {"invalid", test_parse_invalid},
                                                 {"stop_scan", test_stop_scan},
                                                 {"tokenize", test_tokenize_parse},
                                                 {"detokenize", test_detokenize_parse},
                                                 {"tokenizer_json", test_tokenizer_json},
                                                 {NULL, NULL}};
    static const b158_test_case endpoint_tests[] = {
        {"endpoints", test_endpoints}, {"tokenizer", test_tokenizer_endpoints}, {NULL, NULL}};
    static const b158_test_case stream_tests[] = {{"stream", test_stream}, {NULL, NULL}};
    static const b158_test_case error_tests[] = {{"errors", test_errors},
                                                 {"api_key", test_api_key},
                                                 {"queue_full", test_queue_full},
                                                 {NULL, NULL}};
    static const b158_test_case batched_tests[] = {{"batched", test_batched},
                                                   {"disconnect", test_disconnect},
                                                   {"prompt_order", test_prompt_order},
                                                   {NULL, NULL}};
    static const b158_test_case load_tests[] = {{"load", test_load}, {NULL, NULL}};
    static const b158_test_case shutdown_tests[] = {{"shutdown", test_shutdown}, {NULL, NULL}};
    b158_test_suite("parse", parse_tests);
    b158_test_suite("endpoints", endpoint_tests);
    b158_test_suite("stream", stream_tests);
    b158_test_suite("errors", error_tests);
    b158_test_suite("batched", batched_tests);
    b158_test_suite("load", load_tests);
    b158_test_suite("shutdown", shutdown_tests);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = b158_test_main(argc, argv, add_suites);
    curl_global_cleanup();
    return rc;
}
