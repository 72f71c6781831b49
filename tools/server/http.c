/* b158-cl-server: the HTTP layer. libmicrohttpd runs one thread per connection; that thread
 * parses and validates the request, tokenizes the prompt (the vocabulary is immutable and
 * shared), submits a task to the scheduler and then blocks on the task's channel: in the access
 * handler for a whole response, in the content reader callback for a stream. It never touches
 * the session. A client that goes away is noticed when a write fails (MHD then frees the
 * stream, whose free callback cancels the task) or, while nothing is written, by peeking at the
 * socket between waits; either way its slot is freed at the next scheduler step. /tokenize and
 * /detokenize are answered in the connection's thread with the shared vocabulary alone. */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "openai.h"

#define SRV_WAIT_MS 200     /* how often a waiting thread looks for a vanished client */
#define SRV_IDLE_TIMEOUT 60 /* seconds an idle keep-alive connection is kept */

/* HTTP statuses counted in /metrics (499: the client went away before the answer). A stream is
 * counted when it ends: 200 when it ran to [DONE], 499 when its client left. */
static const int counted_status[] = {200, 400, 401, 404, 405, 413, 499, 500, 503};
#define N_COUNTED (sizeof counted_status / sizeof counted_status[0])

struct srv_http {
    srv_http_params p;
    struct MHD_Daemon *daemon;
    int port;
    int quiesced_fd; /* the listening socket after srv_http_quiesce, closed at stop */
    long long started;

    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t idle;
    unsigned long long requests[N_COUNTED];
    unsigned long long next_id;
    int in_flight; /* completion requests not yet fully answered */
};

enum route {
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_TOKENIZE,
    ROUTE_DETOKENIZE,
};

static const struct {
    const char *path;
    const char *method;
    enum route route;
} routes[] = {
    {"/health", "GET", ROUTE_HEALTH},
    {"/metrics", "GET", ROUTE_METRICS},
    {"/v1/models", "GET", ROUTE_MODELS},
    {"/models", "GET", ROUTE_MODELS},
    {"/v1/chat/completions", "POST", ROUTE_CHAT},
    {"/chat/completions", "POST", ROUTE_CHAT},
    {"/v1/completions", "POST", ROUTE_COMPLETIONS},
    {"/completions", "POST", ROUTE_COMPLETIONS},
    {"/tokenize", "POST", ROUTE_TOKENIZE},
    {"/detokenize", "POST", ROUTE_DETOKENIZE},
};

/* State of one request across the calls of the access handler. */
typedef struct {
    enum route route;
    char *body;
    size_t len, cap;
    int too_large;
    int in_flight; /* counted in srv_http.in_flight until MHD has sent the answer */
} request_state;

static void count(srv_http *h, int status)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < N_COUNTED; i++)
        if (counted_status[i] == status)
            h->requests[i]++;
    pthread_mutex_unlock(&h->mu);
}

/* Queues body (malloc'd, taken over) as the response; allow: the Allow header of a 405. */
static enum MHD_Result send_body(srv_http *h, struct MHD_Connection *c, int status,
                                 const char *type, char *body, const char *allow)
{
    if (!body)
        return MHD_NO; /* out of memory: drop the connection */
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    count(h, status);
    return rc;
}

static enum MHD_Result send_error(srv_http *h, struct MHD_Connection *c, const srv_error *e)
{
    return send_body(h, c, e->status, "application/json", srv_error_json(e), NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Whether the client closed its end: a peek that reads end-of-file (or a broken socket). */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 1;
    char byte;
    ssize_t n = recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* ---- simple routes ------------------------------------------------------------------------ */

static enum MHD_Result metrics(srv_http *h, struct MHD_Connection *c)
{
    srv_sched_stats st;
    srv_sched_get_stats(h->p.sched, &st);
    unsigned long long req[N_COUNTED];
    pthread_mutex_lock(&h->mu);
    memcpy(req, h->requests, sizeof req);
    pthread_mutex_unlock(&h->mu);
    size_t cap = 4096, n = 0;
    char *t = malloc(cap);
    if (!t)
        return MHD_NO;
#define PUT(...) n += (size_t)snprintf(t + n, n < cap ? cap - n : 0, __VA_ARGS__)
    PUT("# HELP b158_requests_total HTTP requests answered, by status (499: client went "
        "away).\n# TYPE b158_requests_total counter\n");
    for (size_t i = 0; i < N_COUNTED; i++)
        PUT("b158_requests_total{status=\"%d\"} %llu\n", counted_status[i], req[i]);
    PUT("# HELP b158_prompt_tokens_total Prompt tokens decoded.\n"
        "# TYPE b158_prompt_tokens_total counter\nb158_prompt_tokens_total %llu\n",
        (unsigned long long)st.prompt_tokens);
    PUT("# HELP b158_generated_tokens_total Tokens generated.\n"
        "# TYPE b158_generated_tokens_total counter\nb158_generated_tokens_total %llu\n",
        (unsigned long long)st.generated_tokens);
    PUT("# HELP b158_slots_active Sequence slots serving a request.\n"
        "# TYPE b158_slots_active gauge\nb158_slots_active %d\n",
        st.active);
    PUT("# HELP b158_slots_total Sequence slots (-np).\n"
        "# TYPE b158_slots_total gauge\nb158_slots_total %d\n",
        st.n_slots);
    PUT("# HELP b158_queue_length Requests waiting for a slot.\n"
        "# TYPE b158_queue_length gauge\nb158_queue_length %d\n",
        st.queued);
    PUT("# HELP b158_decode_steps_total Forward steps (one b158_session_decode each).\n"
        "# TYPE b158_decode_steps_total counter\nb158_decode_steps_total %llu\n",
        (unsigned long long)st.steps);
    PUT("# HELP b158_decode_tokens_total Tokens through the model in those steps.\n"
        "# TYPE b158_decode_tokens_total counter\nb158_decode_tokens_total %llu\n",
        (unsigned long long)st.step_tokens);
    PUT("# HELP b158_decode_seconds_total Time spent in forward steps.\n"
        "# TYPE b158_decode_seconds_total counter\nb158_decode_seconds_total %.6f\n",
        st.decode_seconds);
    PUT("# HELP b158_seconds_per_token Forward-step time per token through the model, since "
        "start.\n# TYPE b158_seconds_per_token gauge\nb158_seconds_per_token %.9f\n",
        st.step_tokens ? st.decode_seconds / (double)st.step_tokens : 0.0);
#undef PUT
    if (n >= cap) { /* 4 KiB holds every line above with room to spare */
        free(t);
        return MHD_NO;
    }
    return send_body(h, c, 200, "text/plain; version=0.0.4", t, NULL);
}

/* ---- llama-server's tokenizer routes: answered here, the scheduler is not involved --------- */

static enum MHD_Result tokenizer(srv_http *h, struct MHD_Connection *c, request_state *rs)
{
    const char *body = rs->body ? rs->body : "";
    srv_error e;
    char *json = NULL;
    if (rs->route == ROUTE_TOKENIZE) {
        srv_tokenize_request req;
        if (srv_tokenize_parse(body, rs->len, &req, &e) == 0)
            json = srv_tokenize_json(h->p.vocab, &req, &e);
        srv_tokenize_free(&req);
    } else {
        srv_detokenize_request req;
        if (srv_detokenize_parse(body, rs->len, b158_vocab_n_tokens(h->p.vocab), &req, &e) == 0)
            json = srv_detokenize_json(h->p.vocab, &req, &e);
        srv_detokenize_free(&req);
    }
    return json ? send_body(h, c, 200, "application/json", json, NULL) : send_error(h, c, &e);
}

/* ---- completions -------------------------------------------------------------------------- */

/* A streamed response: the task's text as server-sent events. */
typedef struct {
    srv_http *h;
    srv_task *task;
    struct MHD_Connection *conn;
    srv_kind kind;
    int include_usage;
    srv_result r;
    char id[64];
    int role_sent, finished;
    char *text; /* text received in the last wait */
    size_t text_len, text_cap;
    char *out; /* event bytes not yet handed to MHD */
    size_t out_len, out_off, out_cap;
} stream;

/* Appends text to the bytes waiting for MHD. Returns -1 when out of memory. */
static int put(stream *s, const char *text)
{
    size_t n = strlen(text), need = s->out_len + n;
    if (need > s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap : 1024;
        while (cap < need)
            cap *= 2;
        char *p = realloc(s->out, cap);
        if (!p)
            return -1;
        s->out = p;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, text, n);
    s->out_len += n;
    return 0;
}

/* Appends the event "data: JSON\n\n" (json malloc'd, freed here). */
static int event(stream *s, char *json)
{
    int rc = !json || put(s, "data: ") || put(s, json) || put(s, "\n\n") ? -1 : 0;
    free(json);
    return rc;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream *s = cls;
    (void)pos;
    for (;;) {
        if (s->out_off < s->out_len) {
            size_t n = s->out_len - s->out_off < max ? s->out_len - s->out_off : max;
            memcpy(buf, s->out + s->out_off, n);
            s->out_off += n;
            return (ssize_t)n;
        }
        s->out_off = s->out_len = 0;
        if (s->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int oom = 0;
        if (s->kind == SRV_CHAT && !s->role_sent) { /* OpenAI's first chunk: the role */
            s->role_sent = 1;
            oom = event(s, srv_chunk_json(s->kind, &s->r, 1, NULL));
        } else {
            srv_task_state st;
            s->text_len = 0;
            long got =
                srv_task_wait(s->task, SRV_WAIT_MS, &s->text, &s->text_len, &s->text_cap, &st);
            if (got > 0) {
                s->r.text = s->text;
                s->r.text_len = (size_t)got;
                oom = event(s, srv_chunk_json(s->kind, &s->r, 0, NULL));
            }
            if (got < 0) {
                oom = 1;
            } else if (st.done) {
                s->r.prompt_tokens = st.prompt_tokens;
                s->r.completion_tokens = st.completion_tokens;
                if (st.error_status) {
                    /* the status line went out long ago: the error is an event */
                    srv_error e;
                    srv_error_set(&e, st.error_status, "server_error", NULL, NULL, "%s", st.error);
                    oom = oom || event(s, srv_error_json(&e));
                } else {
                    oom = oom || event(s, srv_chunk_json(s->kind, &s->r, 0, st.finish_reason));
                    if (s->include_usage)
                        oom = oom || event(s, srv_usage_chunk_json(s->kind, &s->r));
                }
                oom = oom || put(s, "data: [DONE]\n\n");
                s->finished = 1;
                count(s->h, 200); /* counted before the client can see the end */
                MHD_set_connection_option(s->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                          (unsigned)SRV_IDLE_TIMEOUT);
            } else if (got == 0 && client_gone(s->conn)) {
                return MHD_CONTENT_READER_END_WITH_ERROR; /* the free callback cancels */
            }
        }
        if (oom)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

/* MHD is done with the stream: finished, failed to write, or the server is stopping. */
static void stream_free(void *cls)
{
    stream *s = cls;
    if (!s->finished) {
        srv_sched_cancel(s->h->p.sched, s->task);
        count(s->h, 499);
    }
    srv_task_release(s->task);
    free(s->text);
    free(s->out);
    free(s);
}

/* The prompt's tokens into *tok / *n: the ids a completion request gave (each in the
 * vocabulary, else 400), else the prompt tokenized. 0, or -1 with e filled. */
static int prompt_tokens(const srv_http *h, const srv_request *req, b158_token **tok, size_t *n,
                         srv_error *e)
{
    if (req->prompt_ids) {
        for (size_t i = 0; i < req->n_prompt_ids; i++)
            if (req->prompt_ids[i] < 0 || req->prompt_ids[i] >= h->p.n_vocab) {
                srv_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                              "prompt[%zu] = %d is not in the vocabulary: ids are 0 to %d", i,
                              (int)req->prompt_ids[i], h->p.n_vocab - 1);
                return -1;
            }
        if (!(*tok = malloc(req->n_prompt_ids * sizeof **tok))) {
            srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
            return -1;
        }
        memcpy(*tok, req->prompt_ids, req->n_prompt_ids * sizeof **tok);
        *n = req->n_prompt_ids;
        return 0;
    }
    if (b158_tokenize_alloc(h->p.vocab, req->prompt, req->prompt_len,
                            B158_TOKENIZE_ADD_BOS | B158_TOKENIZE_PARSE_SPECIAL, tok,
                            n) != B158_OK) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "tokenizing the prompt: %s",
                      b158_last_error());
        return -1;
    }
    return 0;
}

/* Validated request -> tokens -> sampler -> task, or an error in *e. */
static srv_task *make_task(srv_http *h, srv_request *req, srv_error *e)
{
    b158_token *tok = NULL;
    size_t n = 0;
    if (prompt_tokens(h, req, &tok, &n, e))
        return NULL;
    if (n == 0) { /* an empty prompt without BOS starts from end-of-text, as llama.cpp does */
        b158_token start = b158_vocab_bos(h->p.vocab) >= 0 ? b158_vocab_bos(h->p.vocab)
                                                           : b158_vocab_eos(h->p.vocab);
        b158_token *one = realloc(tok, sizeof *one);
        if (start < 0 || !one) {
            free(one ? one : tok);
            srv_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                          "the prompt is empty and the vocabulary has no BOS or EOS token");
            return NULL;
        }
        tok = one;
        tok[0] = start;
        n = 1;
    }
    if (n > (size_t)h->p.n_ctx) {
        free(tok);
        srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded",
                      req->kind == SRV_CHAT ? "messages" : "prompt",
                      "the prompt has %zu tokens but the context holds %d; shorten it or start "
                      "the server with a larger -c",
                      n, h->p.n_ctx);
        return NULL;
    }
    if (!req->seed_set) {
        pthread_mutex_lock(&h->mu);
        unsigned long long k = h->next_id;
        pthread_mutex_unlock(&h->mu);
        req->sampling.seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ k;
    }
    if (req->sampling.repeat_last_n < 0 || req->sampling.repeat_last_n > h->p.n_ctx)
        req->sampling.repeat_last_n = h->p.n_ctx; /* -1: the slot's context */
    b158_sampler *smp = NULL;
    if (b158_sampler_create(&req->sampling, h->p.n_vocab, &smp) != B158_OK) {
        free(tok);
        srv_error_set(e, 400, "invalid_request_error", NULL, NULL, "%s", b158_last_error());
        return NULL;
    }
    const int greedy = b158_sampler_params_greedy(&req->sampling);
    const srv_task_params tp = {tok,       (int)n,        req->max_tokens, smp,
                                req->stop, req->stop_len, req->n_stop,     greedy};
    srv_task *t = srv_task_new(&tp);
    if (!t)
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return t;
}

static enum MHD_Result completions(srv_http *h, struct MHD_Connection *c, request_state *rs)
{
    const srv_kind kind = rs->route == ROUTE_CHAT ? SRV_CHAT : SRV_COMPLETION;
    srv_request req;
    srv_error e;
    if (srv_request_parse(rs->body ? rs->body : "", rs->len, kind, h->p.fmt, &req, &e))
        return send_error(h, c, &e);
    srv_task *t = make_task(h, &req, &e);
    const int streamed = req.stream, include_usage = req.include_usage;
    srv_request_free(&req);
    if (!t)
        return send_error(h, c, &e);
    int rc = srv_sched_submit(h->p.sched, t);
    if (rc != SRV_SUBMIT_OK) {
        srv_task_release(t);
        srv_error_set(&e, 503, "server_error",
                      rc == SRV_SUBMIT_FULL ? "queue_full" : "shutting_down", NULL,
                      rc == SRV_SUBMIT_FULL ? "every slot is busy and the queue is full; retry "
                                              "later"
                                            : "the server is shutting down");
        return send_error(h, c, &e);
    }
    /* the wait can outlast the idle timeout: none while the request runs */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    srv_result r = {0};
    char id[64];
    pthread_mutex_lock(&h->mu);
    unsigned long long k = ++h->next_id;
    pthread_mutex_unlock(&h->mu);
    snprintf(id, sizeof id, "%s-%llx%llx", kind == SRV_CHAT ? "chatcmpl" : "cmpl", h->started, k);
    r.id = id;
    r.model = h->p.model_id;
    r.created = (long long)time(NULL);
    if (streamed) {
        stream *s = calloc(1, sizeof *s);
        struct MHD_Response *resp = s ? MHD_create_response_from_callback(
                                            MHD_SIZE_UNKNOWN, 16384, stream_read, s, stream_free)
                                      : NULL;
        if (!resp) {
            free(s);
            srv_sched_cancel(h->p.sched, t);
            srv_task_release(t);
            return MHD_NO;
        }
        s->h = h;
        s->task = t;
        s->conn = c;
        s->kind = kind;
        s->include_usage = include_usage;
        s->r = r;
        snprintf(s->id, sizeof s->id, "%s", id);
        s->r.id = s->id;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result q = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp); /* the stream lives until MHD frees it */
        return q;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    srv_task_state st;
    for (double checked = now_s();;) {
        long got = srv_task_wait(t, SRV_WAIT_MS, &text, &len, &cap, &st);
        if (st.done || got < 0)
            break;
        /* text keeps coming while the client may be gone: look every SRV_WAIT_MS */
        if (now_s() - checked < SRV_WAIT_MS * 1e-3)
            continue;
        checked = now_s();
        if (client_gone(c)) {
            srv_sched_cancel(h->p.sched, t);
            srv_task_release(t);
            free(text);
            count(h, 499);
            return MHD_NO;
        }
    }
    if (!st.done) /* (out of memory for its text) nobody reads the rest: its slot is freed */
        srv_sched_cancel(h->p.sched, t);
    srv_task_release(t);
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)SRV_IDLE_TIMEOUT);
    if (!st.done || st.error_status) {
        srv_error_set(&e, st.done ? st.error_status : 500, "server_error", NULL, NULL, "%s",
                      st.done ? st.error : "out of memory");
        free(text);
        return send_error(h, c, &e);
    }
    r.text = text;
    r.text_len = len;
    r.finish_reason = st.finish_reason;
    r.prompt_tokens = st.prompt_tokens;
    r.completion_tokens = st.completion_tokens;
    char *json = srv_response_json(kind, &r);
    free(text);
    return send_body(h, c, 200, "application/json", json, NULL);
}

/* ---- the access handler ------------------------------------------------------------------- */

/* The checks that need no body: route, method, key, declared size. 0 = go on. */
static int precheck(srv_http *h, struct MHD_Connection *c, const char *url, const char *method,
                    request_state *rs, srv_error *e, const char **allow)
{
    int path_known = 0, found = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !found; i++) {
        if (strcmp(url, routes[i].path) != 0)
            continue;
        path_known = 1;
        *allow = routes[i].method;
        if (strcmp(method, routes[i].method) == 0) {
            rs->route = routes[i].route;
            found = 1;
        }
    }
    if (!found) {
        if (path_known)
            srv_error_set(e, 405, "invalid_request_error", "method_not_allowed", NULL,
                          "%.64s is not allowed on %.200s", method, url);
        else
            srv_error_set(e, 404, "not_found_error", "not_found", NULL,
                          "no route %.64s %.200s; see GET /v1/models, POST /v1/completions, "
                          "POST /v1/chat/completions, POST /tokenize and POST /detokenize",
                          method, url);
        return -1;
    }
    if (h->p.api_key && rs->route != ROUTE_HEALTH) {
        const char *auth =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const size_t klen = strlen(h->p.api_key);
        /* compared in full whatever the first difference, so timing tells nothing */
        int bad = !auth || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != klen;
        unsigned char diff = 0;
        for (size_t i = 0; !bad && i < klen; i++)
            diff |= (unsigned char)(auth[7 + i] ^ h->p.api_key[i]);
        if (bad || diff) {
            srv_error_set(e, 401, "authentication_error", "invalid_api_key", NULL,
                          auth ? "incorrect API key"
                               : "an API key is needed: "
                                 "'Authorization: Bearer KEY'");
            return -1;
        }
    }
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > h->p.max_body) {
        srv_error_set(e, 413, "invalid_request_error", "request_too_large", NULL,
                      "the request body is larger than %zu bytes", h->p.max_body);
        return -1;
    }
    return 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    srv_http *h = cls;
    request_state *rs = *con_cls;
    (void)version;
    if (!rs) {
        if (!(rs = calloc(1, sizeof *rs)))
            return MHD_NO;
        *con_cls = rs;
        srv_error e;
        const char *allow = NULL;
        /* answered before the body is read; MHD then closes the connection */
        if (precheck(h, c, url, method, rs, &e, &allow))
            return send_body(h, c, e.status, "application/json", srv_error_json(&e),
                             e.status == 405 ? allow : NULL);
        if (rs->route == ROUTE_CHAT || rs->route == ROUTE_COMPLETIONS) {
            rs->in_flight = 1;
            pthread_mutex_lock(&h->mu);
            h->in_flight++;
            pthread_mutex_unlock(&h->mu);
        }
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (rs->too_large || rs->len + n > h->p.max_body) {
            rs->too_large = 1;
            return MHD_YES;
        }
        if (rs->len + n + 1 > rs->cap) {
            size_t cap = rs->cap ? rs->cap : 4096;
            while (cap < rs->len + n + 1)
                cap *= 2;
            char *p = realloc(rs->body, cap);
            if (!p)
                return MHD_NO;
            rs->body = p;
            rs->cap = cap;
        }
        memcpy(rs->body + rs->len, upload, n);
        rs->len += n;
        return MHD_YES;
    }
    if (rs->too_large) {
        srv_error e;
        srv_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                      "the request body is larger than %zu bytes", h->p.max_body);
        return send_error(h, c, &e);
    }
    switch (rs->route) {
    case ROUTE_HEALTH:
        return send_body(h, c, 200, "application/json", strdup("{\"status\":\"ok\"}"), NULL);
    case ROUTE_METRICS:
        return metrics(h, c);
    case ROUTE_MODELS:
        return send_body(h, c, 200, "application/json", srv_models_json(h->p.model_id, h->started),
                         NULL);
    case ROUTE_TOKENIZE:
    case ROUTE_DETOKENIZE:
        return tokenizer(h, c, rs);
    default:
        return completions(h, c, rs);
    }
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_http *h = cls;
    request_state *rs = *con_cls;
    (void)c, (void)toe;
    if (rs && rs->in_flight) {
        pthread_mutex_lock(&h->mu);
        if (--h->in_flight == 0)
            pthread_cond_broadcast(&h->idle);
        pthread_mutex_unlock(&h->mu);
    }
    if (rs) {
        free(rs->body);
        free(rs);
        *con_cls = NULL;
    }
}

/* ---- start and stop ----------------------------------------------------------------------- */

int srv_http_start(const srv_http_params *p, srv_http **out, char *err, size_t cap)
{
    *out = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, cap, "cannot resolve --host %s: %s", p->host, gai_strerror(gai));
        return -1;
    }
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        snprintf(err, cap, "out of memory");
        return -1;
    }
    h->p = *p;
    h->quiesced_fd = -1;
    h->started = (long long)time(NULL);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->idle, NULL);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, handler, h,
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)SRV_IDLE_TIMEOUT, MHD_OPTION_CONNECTION_LIMIT, 1000u,
                                 MHD_OPTION_NOTIFY_COMPLETED, request_done, h, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        snprintf(err, cap, "cannot listen on %s port %d (in use, or not an address here?)", p->host,
                 p->port);
        pthread_cond_destroy(&h->idle);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : p->port;
    *out = h;
    return 0;
}

int srv_http_port(const srv_http *h)
{
    return h->port;
}

void srv_http_quiesce(srv_http *h)
{
    if (h && h->quiesced_fd < 0)
        h->quiesced_fd = MHD_quiesce_daemon(h->daemon);
}

int srv_http_drain(srv_http *h, int timeout_ms)
{
    if (!h)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    while (h->in_flight > 0)
        if (pthread_cond_timedwait(&h->idle, &h->mu, &ts) != 0)
            break;
    int left = h->in_flight;
    pthread_mutex_unlock(&h->mu);
    return left;
}

void srv_http_stop(srv_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    if (h->quiesced_fd >= 0)
        close(h->quiesced_fd);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
