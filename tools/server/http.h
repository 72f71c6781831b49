/* b158-cl-server: the HTTP layer (libmicrohttpd, one thread per connection): routes, API key,
 * body limit, JSON and server-sent-event responses, /metrics. */
#ifndef B158_SERVER_HTTP_H
#define B158_SERVER_HTTP_H

#include <stddef.h>

#include "b158/tokenizer.h"
#include "sched.h"

typedef struct srv_http srv_http;

typedef struct srv_http_params {
    const char *host;            /* address to bind (name or numeric, IPv4 or IPv6) */
    int port;                    /* 0 = any free port (srv_http_port says which) */
    const char *api_key;         /* NULL = no key; else every route but /health wants
                                    "Authorization: Bearer KEY" */
    const char *model_id;        /* the model's name in /v1/models and responses */
    const b158_vocab *vocab;     /* shared, read-only: HTTP threads tokenize */
    const b158_chat_format *fmt; /* the model's chat format */
    int n_vocab;                 /* rows of the model's logits */
    int n_ctx;                   /* tokens per sequence slot */
    size_t max_body;             /* largest request body in bytes; more get 413 */
    srv_sched *sched;
} srv_http_params;

/* Binds and starts serving. Returns 0, or -1 with a sentence in err. */
int srv_http_start(const srv_http_params *p, srv_http **out, char *err, size_t cap);
/* The port it listens on. */
int srv_http_port(const srv_http *h);
/* Stops accepting connections; running requests go on. */
void srv_http_quiesce(srv_http *h);
/* Waits up to timeout_ms until every completion request has been answered (once the scheduler
 * has stopped, each has its answer: this lets MHD send it). Returns how many are left. */
int srv_http_drain(srv_http *h, int timeout_ms);
/* Closes every connection, joins their threads and frees h. NULL is a no-op. */
void srv_http_stop(srv_http *h);

#endif
