/* b158-cl-server: OpenAI requests (and llama-server's /tokenize and /detokenize) from JSON bytes
 * (parsed and validated, no sockets involved) and the JSON of responses, stream chunks and
 * errors. */
#ifndef B158_SERVER_OPENAI_H
#define B158_SERVER_OPENAI_H

#include <stddef.h>

#include "b158/model.h"
#include "b158/tokenizer.h"

#define SRV_MAX_STOP 4        /* OpenAI's limit on stop strings */
#define SRV_MAX_STOP_LEN 1024 /* bytes per stop string */

typedef enum srv_kind {
    SRV_CHAT = 0,       /* POST /v1/chat/completions: messages */
    SRV_COMPLETION = 1, /* POST /v1/completions: prompt */
} srv_kind;

/* An error in OpenAI's shape {"error": {"message", "type", "param", "code"}} with its HTTP
 * status. */
typedef struct srv_error {
    int status;        /* 400, 401, 404, 405, 413, 500 or 503 */
    const char *type;  /* "invalid_request_error", "authentication_error", "not_found_error",
                          "server_error" (static strings) */
    const char *code;  /* machine-readable code, NULL = JSON null */
    const char *param; /* the request field at fault, NULL = JSON null */
    char message[512];
} srv_error;

/* A validated request. Strings are the request's own (malloc'd), freed by srv_request_free. */
typedef struct srv_request {
    srv_kind kind;
    char *prompt; /* completions: the prompt; chat: the messages framed in the chat format,
                     ending with the assistant's prefix. May hold NUL bytes. */
    size_t prompt_len;
    /* completions given token ids (OpenAI's and llama-server's array of integers, or an array of
     * one such array): the ids, as given (no BOS added; the range is the caller's to check), and
     * prompt "" */
    b158_token *prompt_ids;
    size_t n_prompt_ids;
    int max_tokens; /* most tokens to generate; 0 = until the context is full */
    b158_sampler_params sampling;
    int seed_set; /* the request gave a seed (else the caller picks one) */
    char *stop[SRV_MAX_STOP];
    size_t stop_len[SRV_MAX_STOP];
    int n_stop;
    int stream;        /* server-sent events */
    int include_usage; /* stream_options.include_usage: a last chunk with the usage */
} srv_request;

/* Parses and validates body[0..len) (any bytes) as a request of kind; chat messages are framed
 * with fmt. Returns 0 and fills *out (free it with srv_request_free), or -1 with *err filled
 * (status 400) and *out empty. Fields OpenAI has that change nothing here are ignored; n must
 * be 1. */
int srv_request_parse(const char *body, size_t len, srv_kind kind, const b158_chat_format *fmt,
                      srv_request *out, srv_error *err);
void srv_request_free(srv_request *r);

/* POST /tokenize, as llama-server's: {"content": TEXT, "add_special": false, "parse_special":
 * true, "with_pieces": false}. */
typedef struct srv_tokenize_request {
    char *content; /* the text (malloc'd, NUL-terminated); may hold NUL bytes */
    size_t content_len;
    unsigned flags;  /* B158_TOKENIZE_ADD_BOS when add_special, B158_TOKENIZE_PARSE_SPECIAL when
                        parse_special (the default) */
    int with_pieces; /* each token as {"id", "piece"} */
} srv_tokenize_request;

/* Parses and validates body[0..len) (any bytes) as a /tokenize request: content must be a string,
 * the flags true or false (null = the default). Returns 0 and fills *out (free it with
 * srv_tokenize_free), or -1 with *err filled (400, 500 when out of memory) and *out empty. */
int srv_tokenize_parse(const char *body, size_t len, srv_tokenize_request *out, srv_error *err);
void srv_tokenize_free(srv_tokenize_request *r);

/* POST /detokenize, as llama-server's: {"tokens": [ids]}. */
typedef struct srv_detokenize_request {
    b158_token *tokens; /* malloc'd; NULL when there are none */
    size_t n_tokens;
} srv_detokenize_request;

/* Parses and validates body[0..len) (any bytes) as a /detokenize request: tokens must be an array
 * of integers in [0, n_vocab). Returns 0 and fills *out (free it with srv_detokenize_free), or -1
 * with *err filled (400 with param "tokens", 500 when out of memory) and *out empty. */
int srv_detokenize_parse(const char *body, size_t len, int32_t n_vocab, srv_detokenize_request *out,
                         srv_error *err);
void srv_detokenize_free(srv_detokenize_request *r);

/* Fills *e; message is a printf format. */
void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The JSON texts below are malloc'd, NUL-terminated, or NULL when out of memory. */
char *srv_error_json(const srv_error *e);

/* What a finished request produced. */
typedef struct srv_result {
    const char *id;    /* "chatcmpl-..." / "cmpl-..." */
    const char *model; /* the model's id */
    long long created; /* Unix time */
    const char *text;  /* generated text, valid UTF-8 */
    size_t text_len;
    const char *finish_reason; /* "stop" or "length" */
    int prompt_tokens, completion_tokens;
} srv_result;

/* A whole (non-streamed) response: chat.completion or text_completion. */
char *srv_response_json(srv_kind kind, const srv_result *r);
/* One stream chunk of r: chat.completion.chunk (delta with the role when role is nonzero,
 * else with r's text, or empty with the finish reason) or text_completion. finish_reason NULL
 * = JSON null. */
char *srv_chunk_json(srv_kind kind, const srv_result *r, int role, const char *finish_reason);
/* The last chunk of a stream with stream_options.include_usage: no choices, the usage. */
char *srv_usage_chunk_json(srv_kind kind, const srv_result *r);
/* GET /v1/models: a list of the one model. */
char *srv_models_json(const char *model, long long created);

/* POST /tokenize's answer: r's content tokenized with v (shared, read-only) into {"tokens": [ids]},
 * or with r->with_pieces {"tokens": [{"id": ID, "piece": TEXT}, ...]}, where a piece that is not
 * valid UTF-8 on its own (part of a character) is the array of its byte values, as llama-server
 * gives it; pieces include special tokens' text, so for byte-level BPE they add up to the
 * content (after BOS's text where add_special put BOS first; SentencePiece: with the space its
 * encoding puts in front). NULL with *err filled (500) when tokenizing fails or memory runs
 * out. */
char *srv_tokenize_json(const b158_vocab *v, const srv_tokenize_request *r, srv_error *err);
/* POST /detokenize's answer: {"content": TEXT}, the pieces of r's tokens one after the other
 * (special tokens' text included, as llama-server's), bytes that form no UTF-8 character as
 * U+FFFD. NULL with *err filled (500) when memory runs out. */
char *srv_detokenize_json(const b158_vocab *v, const srv_detokenize_request *r, srv_error *err);

#endif
