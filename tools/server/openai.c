/* b158-cl-server: OpenAI (and tokenizer) request parsing and validation, response and error
 * JSON (jansson). */
#include "openai.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

#define BAD(param, ...) srv_error_set(err, 400, "invalid_request_error", NULL, param, __VA_ARGS__)

/* ---- a growable byte buffer for the framed conversation --------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

/* Room for n more bytes and a NUL. */
static int buf_reserve(buf *b, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    return 0;
}

static int buf_add(buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

/* ---- field readers: each returns 0 (absent or valid) or -1 with err filled -------------- */

/* The value of a JSON number that is an integer (2 and 2.0 both): 0, or -1 for anything else. */
static int int_value(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    /* a real is taken when it is an integer that a double holds exactly */
    double d = json_is_real(v) ? json_real_value(v) : NAN;
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d))
        return -1;
    *out = (long long)d;
    return 0;
}

/* A JSON number that is an integer, within [lo, hi]. */
static int get_int(json_t *root, const char *key, long long lo, long long hi, long long *out,
                   int *present, srv_error *err)
{
    json_t *v = json_object_get(root, key);
    if (present)
        *present = 0;
    if (!v || json_is_null(v))
        return 0;
    long long x = 0;
    if (int_value(v, &x)) {
        BAD(key, "'%s' must be an integer", key);
        return -1;
    }
    if (x < lo || x > hi) {
        BAD(key, "'%s' must be in [%lld, %lld], got %lld", key, lo, hi, x);
        return -1;
    }
    *out = x;
    if (present)
        *present = 1;
    return 0;
}

static int get_float(json_t *root, const char *key, double lo, double hi, float *out,
                     srv_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v)) {
        BAD(key, "'%s' must be a number", key);
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        BAD(key, "'%s' must be in [%g, %g], got %.17g", key, lo, hi, d);
        return -1;
    }
    *out = (float)d;
    return 0;
}

static int get_bool(json_t *root, const char *key, int *out, srv_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        BAD(key, "'%s' must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* stop: a string or an array of at most SRV_MAX_STOP non-empty strings. */
static int get_stop(json_t *root, srv_request *r, srv_error *err)
{
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v))
        return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    json_t *arr[SRV_MAX_STOP];
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > SRV_MAX_STOP) {
            BAD("stop", "'stop' holds at most %d strings, got %zu", SRV_MAX_STOP, n);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            arr[i] = json_array_get(v, i);
        items = arr;
    }
    for (size_t i = 0; i < n; i++) {
        if (!json_is_string(items[i]) || json_string_length(items[i]) == 0) {
            BAD("stop", "'stop' must be a non-empty string or an array of them");
            return -1;
        }
        /* the scheduler rescans held-back text for each token: keep that bounded */
        if (json_string_length(items[i]) > SRV_MAX_STOP_LEN) {
            BAD("stop", "a stop string is at most %d bytes", SRV_MAX_STOP_LEN);
            return -1;
        }
        size_t len = json_string_length(items[i]);
        char *s = malloc(len + 1);
        if (!s) {
            srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return -1;
        }
        memcpy(s, json_string_value(items[i]), len + 1);
        r->stop[r->n_stop] = s;
        r->stop_len[r->n_stop++] = len;
    }
    return 0;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined),
 * or null. */
static int add_content(buf *b, json_t *content, size_t i, srv_error *err)
{
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content))
        return buf_add(b, json_string_value(content), json_string_length(content));
    if (json_is_array(content)) {
        for (size_t k = 0; k < json_array_size(content); k++) {
            json_t *part = json_array_get(content, k);
            json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
            if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
                !json_is_string(text)) {
                BAD("messages",
                    "messages[%zu].content[%zu]: only {\"type\": \"text\", "
                    "\"text\": ...} parts are supported",
                    i, k);
                return -2;
            }
            if (buf_add(b, json_string_value(text), json_string_length(text)))
                return -1;
        }
        return 0;
    }
    BAD("messages", "messages[%zu].content must be a string or an array of text parts", i);
    return -2;
}

/* The conversation as the model's chat format frames it: every turn is prefix + content +
 * turn_end, and the text ends with the assistant's prefix, where the model answers. */
static int frame_messages(json_t *msgs, const b158_chat_format *fmt, srv_request *r, srv_error *err)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        BAD("messages", "'messages' must be a non-empty array");
        return -1;
    }
    buf b = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            BAD("messages", "messages[%zu] must be an object with a string 'role'", i);
            rc = -2;
            break;
        }
        const char *rs = json_string_value(role), *prefix;
        if (strcmp(rs, "system") == 0 || strcmp(rs, "developer") == 0)
            prefix = fmt->system_prefix;
        else if (strcmp(rs, "user") == 0)
            prefix = fmt->user_prefix;
        else if (strcmp(rs, "assistant") == 0)
            prefix = fmt->assistant_prefix;
        else {
            BAD("messages", "messages[%zu].role must be system, developer, user or assistant", i);
            rc = -2;
            break;
        }
        if (buf_add(&b, prefix, strlen(prefix)) ||
            (rc = add_content(&b, json_object_get(m, "content"), i, err)) != 0 ||
            buf_add(&b, fmt->turn_end, strlen(fmt->turn_end)))
            rc = rc ? rc : -1;
    }
    if (rc == 0 && buf_add(&b, fmt->assistant_prefix, strlen(fmt->assistant_prefix)))
        rc = -1;
    if (rc) {
        if (rc == -1)
            srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        free(b.p);
        return -1;
    }
    r->prompt = b.p;
    r->prompt_len = b.n;
    return 0;
}

/* A prompt of token ids: the non-empty array p of integers into r->prompt_ids. */
/* The array of token ids arr (field key) into *ids (malloc'd; NULL when empty) / *n, each an
 * integer in [0, end): 0, or -1 with err filled (*ids then still the caller's to free). */
static int get_ids(json_t *arr, const char *key, long long end, b158_token **ids, size_t *n,
                   srv_error *err)
{
    const size_t count = json_array_size(arr); /* the 1 MiB body bounds it */
    if (count && !(*ids = malloc(count * sizeof **ids))) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        long long id = 0;
        if (int_value(json_array_get(arr, i), &id) || id < 0 || id >= end) {
            BAD(key, "%s[%zu] must be a token id: an integer from 0 to %lld", key, i, end - 1);
            return -1;
        }
        (*ids)[i] = (b158_token)id;
    }
    *n = count;
    return 0;
}

static int get_prompt_ids(json_t *p, srv_request *r, srv_error *err)
{
    if (!(r->prompt = calloc(1, 1))) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    /* (the vocabulary's range is the server's to check) */
    return get_ids(p, "prompt", (long long)INT32_MAX + 1, &r->prompt_ids, &r->n_prompt_ids, err);
}

/* prompt: a string, an array of token ids, or an array holding one of those. */
static int get_prompt(json_t *root, srv_request *r, srv_error *err)
{
    json_t *p = json_object_get(root, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_number(json_array_get(p, 0)))
        p = json_array_get(p, 0); /* an array of one prompt */
    if (json_is_array(p) && json_array_size(p) > 0 && json_is_number(json_array_get(p, 0)))
        return get_prompt_ids(p, r, err);
    if (!json_is_string(p)) {
        BAD("prompt", "'prompt' must be a string, an array of token ids, or an array of one of "
                      "those");
        return -1;
    }
    size_t n = json_string_length(p);
    if (!(r->prompt = malloc(n + 1))) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    memcpy(r->prompt, json_string_value(p), n + 1);
    r->prompt_len = n;
    return 0;
}

/* A 400 for a field this server does not support: -1 */
static int unsupported(const char *key, srv_error *err)
{
    BAD(key, "'%s' is not supported by b158-cl-server", key);
    return -1;
}

/* OpenAI fields that ask for what this server does not do: refused (400 naming the field) rather
 * than ignored, so a client does not read a null it did not expect (llama-server refuses tools
 * without its template engine too). Their "off" values pass. */
static int refuse_unsupported(json_t *root, srv_kind kind, srv_error *err)
{
    long long x = 0;
    int present = 0, on = 0;
    json_t *bias = json_object_get(root, "logit_bias");
    if (bias && !json_is_null(bias) && (!json_is_object(bias) || json_object_size(bias))) {
        return unsupported("logit_bias", err);
    }
    if (kind == SRV_CHAT) {
        if (get_bool(root, "logprobs", &on, err))
            return -1;
        if (on)
            return unsupported("logprobs", err);
        if (get_int(root, "top_logprobs", 0, 20, &x, &present, err))
            return -1;
        if (x > 0)
            return unsupported("top_logprobs", err);
        static const char *const lists[] = {"tools", "functions"};
        for (int i = 0; i < 2; i++) {
            json_t *v = json_object_get(root, lists[i]);
            if (v && !json_is_null(v) && (!json_is_array(v) || json_array_size(v) > 0)) {
                BAD(lists[i], "'%s' (function calling) is not supported by b158-cl-server",
                    lists[i]);
                return -1;
            }
        }
        json_t *rf = json_object_get(root, "response_format");
        json_t *type = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (rf && !json_is_null(rf) &&
            (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)) {
            BAD("response_format", "'response_format' other than {\"type\": \"text\"} is not "
                                   "supported by b158-cl-server");
            return -1;
        }
        return 0;
    }
    if (get_int(root, "logprobs", 0, 5, &x, &present, err))
        return -1;
    if (x > 0)
        return unsupported("logprobs", err);
    if (get_bool(root, "echo", &on, err))
        return -1;
    if (on)
        return unsupported("echo", err);
    if (get_int(root, "best_of", 1, 1, &x, &present, err))
        return -1;
    json_t *suffix = json_object_get(root, "suffix");
    if (suffix && !json_is_null(suffix) &&
        (!json_is_string(suffix) || json_string_length(suffix) > 0)) {
        BAD("suffix", "'suffix' (insertion) is not supported by b158-cl-server");
        return -1;
    }
    return 0;
}

/* body[0..len) as a JSON object (a new reference), or NULL with err filled. */
static json_t *load_object(const char *body, size_t len, srv_error *err)
{
    json_error_t je;
    /* strict: one JSON value and nothing after it, no duplicate keys; NUL in strings is text */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        BAD(NULL, "malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        BAD(NULL, "the request body must be a JSON object");
        json_decref(root);
        return NULL;
    }
    return root;
}

int srv_request_parse(const char *body, size_t len, srv_kind kind, const b158_chat_format *fmt,
                      srv_request *out, srv_error *err)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->sampling = b158_sampler_default_params();
    out->max_tokens = kind == SRV_COMPLETION ? 16 : 0; /* OpenAI's defaults */
    json_t *root = load_object(body, len, err);
    if (!root)
        return -1;
    int rc = -1;
    long long x = 0, n = 1;
    int present = 0;
    if (kind == SRV_CHAT ? frame_messages(json_object_get(root, "messages"), fmt, out, err)
                         : get_prompt(root, out, err))
        goto done;
    /* max_completion_tokens is the newer name of max_tokens in chat requests */
    if (get_int(root, "max_tokens", 1, 1 << 24, &x, &present, err))
        goto done;
    if (present)
        out->max_tokens = (int)x;
    if (get_int(root, "max_completion_tokens", 1, 1 << 24, &x, &present, err))
        goto done;
    if (present)
        out->max_tokens = (int)x;
    b158_sampler_params *sp = &out->sampling;
    if (get_float(root, "temperature", 0.0, 2.0, &sp->temp, err) ||
        get_float(root, "top_p", 0.0, 1.0, &sp->top_p, err) ||
        get_float(root, "min_p", 0.0, 1.0, &sp->min_p, err) ||
        get_float(root, "repeat_penalty", 0.0, 100.0, &sp->repeat_penalty, err) ||
        get_float(root, "frequency_penalty", -2.0, 2.0, &sp->frequency_penalty, err) ||
        get_float(root, "presence_penalty", -2.0, 2.0, &sp->presence_penalty, err))
        goto done;
    if (get_int(root, "top_k", 0, 1 << 30, &x, &present, err))
        goto done;
    if (present)
        sp->top_k = (int)x;
    /* llama-server's: the penalties' window, -1 the slot's context, 0 none */
    if (get_int(root, "repeat_last_n", -1, 1 << 24, &x, &present, err))
        goto done;
    if (present)
        sp->repeat_last_n = (int)x;
    if (sp->top_p <= 0.0f) {
        BAD("top_p", "'top_p' must be greater than 0");
        goto done;
    }
    if (sp->repeat_penalty <= 0.0f) {
        BAD("repeat_penalty", "'repeat_penalty' must be greater than 0");
        goto done;
    }
    /* OpenAI's seed is any 64-bit integer; the sampler takes its bits */
    if (get_int(root, "seed", INT64_MIN, INT64_MAX, &x, &out->seed_set, err))
        goto done;
    if (out->seed_set)
        sp->seed = (uint64_t)x;
    if (get_int(root, "n", 1, 1, &n, NULL, err) || get_stop(root, out, err) ||
        get_bool(root, "stream", &out->stream, err))
        goto done;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            BAD("stream_options", "'stream_options' must be an object");
            goto done;
        }
        if (get_bool(so, "include_usage", &out->include_usage, err))
            goto done;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) {
        BAD("model", "'model' must be a string");
        goto done;
    }
    if (refuse_unsupported(root, kind, err))
        goto done;
    rc = 0;
done:
    json_decref(root);
    if (rc)
        srv_request_free(out);
    return rc;
}

void srv_request_free(srv_request *r)
{
    if (!r)
        return;
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    srv_kind kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
}

/* ---- /tokenize and /detokenize ----------------------------------------------------------- */

int srv_tokenize_parse(const char *body, size_t len, srv_tokenize_request *out, srv_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = load_object(body, len, err);
    if (!root)
        return -1;
    int rc = -1, add_special = 0, parse_special = 1;
    json_t *content = json_object_get(root, "content");
    if (!json_is_string(content)) {
        BAD("content", "'content' must be a string");
        goto done;
    }
    if (get_bool(root, "add_special", &add_special, err) ||
        get_bool(root, "parse_special", &parse_special, err) ||
        get_bool(root, "with_pieces", &out->with_pieces, err))
        goto done;
    const size_t n = json_string_length(content);
    if (!(out->content = malloc(n + 1))) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    memcpy(out->content, json_string_value(content), n + 1);
    out->content_len = n;
    out->flags = (add_special ? B158_TOKENIZE_ADD_BOS : 0u) |
                 (parse_special ? B158_TOKENIZE_PARSE_SPECIAL : 0u);
    rc = 0;
done:
    json_decref(root);
    if (rc)
        srv_tokenize_free(out);
    return rc;
}

void srv_tokenize_free(srv_tokenize_request *r)
{
    if (!r)
        return;
    free(r->content);
    memset(r, 0, sizeof *r);
}

int srv_detokenize_parse(const char *body, size_t len, int32_t n_vocab, srv_detokenize_request *out,
                         srv_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = load_object(body, len, err);
    if (!root)
        return -1;
    int rc = -1;
    json_t *tokens = json_object_get(root, "tokens");
    if (!json_is_array(tokens)) {
        BAD("tokens", "'tokens' must be an array of token ids");
        goto done;
    }
    if (get_ids(tokens, "tokens", n_vocab, &out->tokens, &out->n_tokens, err))
        goto done;
    rc = 0;
done:
    json_decref(root);
    if (rc)
        srv_detokenize_free(out);
    return rc;
}

void srv_detokenize_free(srv_detokenize_request *r)
{
    if (!r)
        return;
    free(r->tokens);
    memset(r, 0, sizeof *r);
}

/* ---- responses ---------------------------------------------------------------------------- */

/* json_dumps of a new reference, which it releases. */
static char *dump(json_t *j)
{
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *srv_error_json(const srv_error *e)
{
    /* the message may hold any bytes a client sent (truncated too): never invalid JSON */
    json_t *msg = json_stringn(e->message, strlen(e->message));
    if (!msg)
        msg = json_string("invalid request");
    return dump(json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", msg, "type",
                          e->type ? e->type : "server_error", "param", str_or_null(e->param),
                          "code", str_or_null(e->code)));
}

static json_t *usage(const srv_result *r)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", r->prompt_tokens, "completion_tokens",
                     r->completion_tokens, "total_tokens", r->prompt_tokens + r->completion_tokens);
}

static json_t *text(const srv_result *r)
{
    json_t *t = json_stringn(r->text ? r->text : "", r->text ? r->text_len : 0);
    return t ? t : json_string("\xEF\xBF\xBD"); /* never reached: the text is whole UTF-8 */
}

char *srv_response_json(srv_kind kind, const srv_result *r)
{
    json_t *choice;
    if (kind == SRV_CHAT)
        choice = json_pack("{s:i,s:{s:s,s:o},s:n,s:s}", "index", 0, "message", "role", "assistant",
                           "content", text(r), "logprobs", "finish_reason", r->finish_reason);
    else
        choice = json_pack("{s:i,s:o,s:n,s:s}", "index", 0, "text", text(r), "logprobs",
                           "finish_reason", r->finish_reason);
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", r->id, "object",
                          kind == SRV_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->model, "choices", choice, "usage",
                          usage(r)));
}

char *srv_chunk_json(srv_kind kind, const srv_result *r, int role, const char *finish_reason)
{
    json_t *choice;
    if (kind == SRV_CHAT) {
        json_t *delta = role            ? json_pack("{s:s,s:s}", "role", "assistant", "content", "")
                        : finish_reason ? json_object()
                                        : json_pack("{s:o}", "content", text(r));
        choice = json_pack("{s:i,s:o,s:n,s:o}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", str_or_null(finish_reason));
    } else {
        choice = json_pack("{s:i,s:o,s:n,s:o}", "index", 0, "text",
                           finish_reason ? json_string("") : text(r), "logprobs", "finish_reason",
                           str_or_null(finish_reason));
    }
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", r->id, "object",
                          kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->model, "choices", choice));
}

char *srv_usage_chunk_json(srv_kind kind, const srv_result *r)
{
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", r->id, "object",
                          kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->model, "choices", "usage", usage(r)));
}

char *srv_models_json(const char *model, long long created)
{
    return dump(json_pack("{s:s,s:[{s:s,s:s,s:I,s:s}]}", "object", "list", "data", "id", model,
                          "object", "model", "created", (json_int_t)created, "owned_by",
                          "b158-cl"));
}

/* A token's piece as JSON: a string, or the array of its byte values when it is not valid UTF-8
 * on its own (jansson checks strictly: overlong forms and surrogates are not). */
static json_t *piece_json(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    json_t *bytes = json_array();
    for (size_t i = 0; bytes && i < n; i++)
        if (json_array_append_new(bytes, json_integer((unsigned char)p[i]))) {
            json_decref(bytes);
            bytes = NULL;
        }
    return bytes;
}

char *srv_tokenize_json(const b158_vocab *v, const srv_tokenize_request *r, srv_error *err)
{
    b158_token *tok = NULL;
    size_t n = 0;
    if (b158_tokenize_alloc(v, r->content, r->content_len, r->flags, &tok, &n) != B158_OK) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "tokenizing the content: %s",
                      b158_last_error());
        return NULL;
    }
    /* written element by element: a megabyte of content can be a million tokens, and a tree of
     * that many jansson objects would take hundreds of bytes for each */
    buf b = {0};
    int rc = buf_add(&b, "{\"tokens\":[", 11);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = i ? buf_add(&b, ",", 1) : 0;
        if (rc == 0 && r->with_pieces) {
            size_t pl = 0;
            const char *p = b158_vocab_token_piece(v, tok[i], 1, &pl);
            json_t *piece = piece_json(p, pl);
            char *e =
                piece ? dump(json_pack("{s:i,s:o}", "id", (int)tok[i], "piece", piece)) : NULL;
            rc = !e || buf_add(&b, e, strlen(e)) ? -1 : 0;
            free(e);
        } else if (rc == 0) {
            char id[16]; /* an int32_t */
            rc = buf_add(&b, id, (size_t)snprintf(id, sizeof id, "%d", (int)tok[i]));
        }
    }
    free(tok);
    if (rc || buf_add(&b, "]}", 2)) {
        free(b.p);
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    return b.p;
}

char *srv_detokenize_json(const b158_vocab *v, const srv_detokenize_request *r, srv_error *err)
{
    /* the streaming decoder makes whole UTF-8 characters of pieces that split them and U+FFFD of
     * bytes that form none, as the completions' text is made */
    const size_t room = 3 * (b158_vocab_max_piece(v) + 4);
    b158_detok_stream ds;
    b158_detok_stream_init(&ds);
    buf b = {0};
    int rc = buf_reserve(&b, room);
    for (size_t i = 0; rc == 0 && i < r->n_tokens; i++) {
        size_t got = 0;
        if (b158_detok_stream_push(&ds, v, r->tokens[i], 1, b.p + b.n, b.cap - b.n, &got) !=
            B158_OK) {
            free(b.p);
            srv_error_set(err, 500, "server_error", NULL, NULL, "detokenizing: %s",
                          b158_last_error());
            return NULL;
        }
        b.n += got;
        rc = buf_reserve(&b, room);
    }
    if (rc == 0)
        b.n += b158_detok_stream_flush(&ds, b.p + b.n, b.cap - b.n);
    json_t *text = rc == 0 ? json_stringn(b.p, b.n) : NULL;
    free(b.p);
    char *json = text ? dump(json_pack("{s:o}", "content", text)) : NULL;
    if (!json)
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    return json;
}
