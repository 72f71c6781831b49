/* b158-cl-server: OpenAI requests from JSON bytes (parsed and validated, no sockets involved) and
 * the JSON of responses, stream chunks and errors. */
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

#endif
