/* b158-cl-server: the scheduler thread (continuous batching over the session's sequence slots)
 * and the per-request channels that carry generated text back to the HTTP threads.
 *
 * Threads: the scheduler thread is the only one that touches the runtime, the model and the
 * session once srv_sched_start has returned (b158/model.h: they are one unit for one thread at
 * a time); the thread that created them gets them back after srv_sched_stop. HTTP threads
 * tokenize (the vocabulary is immutable and shared), build a task and submit it, then read the
 * task's channel; they never call the session. Tasks move between threads under the
 * scheduler's mutex (the queue) and their own (the channel). */
#ifndef B158_SERVER_SCHED_H
#define B158_SERVER_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "b158/model.h"
#include "b158/tokenizer.h"
#include "openai.h"

typedef struct srv_task srv_task;
typedef struct srv_sched srv_sched;

/* What a task needs to run. The task takes over tokens (malloc'd) and sampler; stop strings
 * are copied. */
typedef struct srv_task_params {
    b158_token *tokens; /* the prompt, at least one token */
    int n_tokens;
    int max_tokens;        /* 0 = until the sequence's context is full */
    b158_sampler *sampler; /* this request's own */
    char *const *stop;
    const size_t *stop_len;
    int n_stop;
    int greedy; /* the sampler is plain argmax (temperature 0, no repeat penalty): steps whose
                   sampled sequences all are take the session's argmax, the logits stay on the
                   device */
} srv_task_params;

/* A task owned by its creator (one reference); NULL when out of memory, and then the tokens
 * and the sampler are freed. */
srv_task *srv_task_new(const srv_task_params *p);
/* Drops the creator's reference; the task is freed once the scheduler has let go too. */
void srv_task_release(srv_task *t);

/* A snapshot of a task's channel. */
typedef struct srv_task_state {
    int done;                  /* no more text will come */
    const char *finish_reason; /* "stop" or "length" when done without error */
    int error_status;          /* nonzero: ended by an error (HTTP status 500 or 503) */
    char error[256];           /* its message */
    int prompt_tokens, completion_tokens;
} srv_task_state;

/* Waits up to timeout_ms for new text or the end, then appends the text that came since the
 * last call to *text / *len / *cap (a malloc'd buffer the caller owns and frees; NUL-
 * terminated) and fills *st. Returns the number of bytes appended, or -1 when out of memory. */
long srv_task_wait(srv_task *t, int timeout_ms, char **text, size_t *len, size_t *cap,
                   srv_task_state *st);

typedef struct srv_sched_params {
    b158_session *session; /* handed to the scheduler thread until srv_sched_stop */
    const b158_vocab *vocab;
    int n_batch;   /* most tokens per decode call; at least the session's n_seq */
    int max_queue; /* most requests waiting for a slot; more get 503 */
} srv_sched_params;

/* Starts the scheduler thread. Returns 0, or -1 (out of memory, thread creation failed). */
int srv_sched_start(const srv_sched_params *p, srv_sched **out);

enum {
    SRV_SUBMIT_OK = 0,
    SRV_SUBMIT_FULL = 1,     /* every slot busy and the queue full */
    SRV_SUBMIT_STOPPING = 2, /* the server is shutting down */
};
/* Queues t for a slot (the scheduler takes a reference). */
int srv_sched_submit(srv_sched *s, srv_task *t);
/* The client of t went away: t leaves the queue now, or its slot at the next step. */
void srv_sched_cancel(srv_sched *s, srv_task *t);

/* Ends every queued and running task with a 503 error and joins the thread: the session is the
 * caller's again. Submitting is refused from then on; cancelling is still allowed. NULL is a
 * no-op. */
void srv_sched_stop(srv_sched *s);
/* Frees a stopped scheduler, once no HTTP thread can reach it. NULL is a no-op. */
void srv_sched_free(srv_sched *s);

/* Counters for /metrics. */
typedef struct srv_sched_stats {
    int n_slots, active, queued;
    uint64_t prompt_tokens;    /* prompt tokens decoded */
    uint64_t generated_tokens; /* tokens sampled */
    uint64_t steps;            /* decode calls */
    uint64_t step_tokens;      /* tokens through those calls */
    double decode_seconds;     /* time in those calls */
} srv_sched_stats;
void srv_sched_get_stats(srv_sched *s, srv_sched_stats *out);

/* Stop strings over streamed text: text[0..len) is what a request generated and has not sent
 * yet. Returns how many leading bytes can be sent now; sets *stopped when a stop string occurs
 * (the return value is then where the earliest one starts, and the rest is dropped). Without a
 * match it holds back the longest tail that could begin a stop string. */
size_t srv_stop_scan(const char *text, size_t len, char *const *stop, const size_t *stop_len,
                     int n_stop, int *stopped);

#endif
