/* b158-cl-server: the scheduler thread. Each step gathers the next token of every generating
 * slot and prompt chunks of newly admitted requests into one b158_batch (at most n_batch
 * tokens), calls b158_session_decode once, samples every slot that asked for logits with its
 * request's own sampler and sends the text down the request's channel. Requests join and leave
 * between steps; the ones that find every slot busy wait in a bounded FIFO. */
#include "sched.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct srv_task {
    /* input: written by the creator before srv_sched_submit, read-only afterwards */
    b158_token *tokens;
    int n_tokens;
    int max_tokens;
    b158_sampler *sampler; /* used by the scheduler thread only once submitted */
    int greedy;            /* srv_task_params.greedy */
    char *stop[SRV_MAX_STOP];
    size_t stop_len[SRV_MAX_STOP];
    int n_stop;

    /* queue link: guarded by the scheduler's mutex */
    srv_task *next;
    int queued;

    /* the channel: guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *out; /* text not yet taken by srv_task_wait */
    size_t out_len, out_cap;
    srv_task_state st;
    int cancelled;
    int refs;
};

/* A sequence slot of the session and the request it serves. */
typedef struct {
    srv_task *task;    /* NULL: free */
    int fresh;         /* admitted this step: clear the sequence first */
    uint64_t admitted; /* its admission's number: prompts are fed oldest first */
    int n_fed;         /* prompt tokens decoded so far */
    int generating;    /* the prompt is in; next is the token to feed */
    b158_token next;
    int batch_i; /* index in this step's batch of the token it samples after, or -1 */
    int n_gen;
    int stopped; /* a stop string ended it: nothing after it is sent */
    b158_detok_stream ds;
    char *hold; /* text held back because it could start a stop string */
    size_t hold_len, hold_cap;
} slot;

struct srv_sched {
    b158_session *session;
    const b158_vocab *vocab;
    int n_seq, n_ctx, n_batch, max_queue;
    pthread_t thread;

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_task *head, *tail;
    int n_queued, n_active, stopping;
    srv_sched_stats stats;

    /* the scheduler thread's own */
    uint64_t admissions;
    slot *slots;
    b158_token *b_tok;
    b158_seq_id *b_seq;
    int8_t *b_logits;
    char *piece;
    size_t piece_cap;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- tasks and their channels -------------------------------------------------------------- */

srv_task *srv_task_new(const srv_task_params *p)
{
    srv_task *t = calloc(1, sizeof *t);
    int ok = t != NULL;
    pthread_condattr_t ca;
    if (ok) {
        t->tokens = p->tokens;
        t->n_tokens = p->n_tokens;
        t->max_tokens = p->max_tokens;
        t->sampler = p->sampler;
        t->greedy = p->greedy;
        t->refs = 1;
        t->st.prompt_tokens = p->n_tokens;
        for (int i = 0; ok && i < p->n_stop && i < SRV_MAX_STOP; i++) {
            ok = (t->stop[i] = malloc(p->stop_len[i] + 1)) != NULL;
            if (ok) {
                memcpy(t->stop[i], p->stop[i], p->stop_len[i] + 1);
                t->stop_len[i] = p->stop_len[i];
                t->n_stop++;
            }
        }
        /* timed waits on the monotonic clock: a clock change does not stall a client */
        ok = ok && pthread_condattr_init(&ca) == 0;
        if (ok) {
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            ok = pthread_cond_init(&t->cv, &ca) == 0;
            pthread_condattr_destroy(&ca);
            if (ok && pthread_mutex_init(&t->mu, NULL) != 0) {
                pthread_cond_destroy(&t->cv);
                ok = 0;
            }
        }
    }
    if (!ok) {
        for (int i = 0; t && i < t->n_stop; i++)
            free(t->stop[i]);
        free(t);
        free(p->tokens);
        b158_sampler_free(p->sampler);
        return NULL;
    }
    return t;
}

static void task_unref(srv_task *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    int left = --t->refs;
    pthread_mutex_unlock(&t->mu);
    if (left)
        return;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t->tokens);
    b158_sampler_free(t->sampler);
    for (int i = 0; i < t->n_stop; i++)
        free(t->stop[i]);
    free(t->out);
    free(t);
}

void srv_task_release(srv_task *t)
{
    task_unref(t);
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *q = realloc(*p, c);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

long srv_task_wait(srv_task *t, int timeout_ms, char **text, size_t *len, size_t *cap,
                   srv_task_state *st)
{
    pthread_mutex_lock(&t->mu);
    if (t->out_len == 0 && !t->st.done && timeout_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (t->out_len == 0 && !t->st.done)
            if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) != 0)
                break;
    }
    long n = (long)t->out_len;
    if (n && grow(text, cap, *len + t->out_len + 1) == 0) {
        memcpy(*text + *len, t->out, t->out_len);
        *len += t->out_len;
        (*text)[*len] = '\0';
        t->out_len = 0;
    } else if (n) {
        n = -1;
    }
    *st = t->st;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* Sends text to the task's reader. */
static void emit(srv_task *t, const char *text, size_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&t->mu);
    if (grow(&t->out, &t->out_cap, t->out_len + n) == 0) {
        memcpy(t->out + t->out_len, text, n);
        t->out_len += n;
    } else if (!t->st.error_status) {
        t->st.error_status = 500;
        snprintf(t->st.error, sizeof t->st.error, "out of memory for the generated text");
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Ends the task's channel: a finish reason, or an error status with its message. */
static void finish(srv_task *t, const char *reason, int status, const char *error, int n_gen)
{
    pthread_mutex_lock(&t->mu);
    t->st.done = 1;
    t->st.completion_tokens = n_gen;
    if (status && !t->st.error_status) {
        t->st.error_status = status;
        snprintf(t->st.error, sizeof t->st.error, "%s", error);
    }
    if (!t->st.error_status)
        t->st.finish_reason = reason;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* ---- stop strings ------------------------------------------------------------------------- */

size_t srv_stop_scan(const char *text, size_t len, char *const *stop, const size_t *stop_len,
                     int n_stop, int *stopped)
{
    size_t first = len, keep = 0;
    *stopped = 0;
    for (int i = 0; i < n_stop; i++) {
        const size_t sl = stop_len[i];
        if (!sl)
            continue;
        for (size_t p = 0; p + sl <= len && p < first; p++)
            if (text[p] == stop[i][0] && memcmp(text + p, stop[i], sl) == 0) {
                first = p;
                *stopped = 1;
                break;
            }
        /* the longest tail of the text that is a proper prefix of this stop string */
        for (size_t k = (sl - 1 < len ? sl - 1 : len); k > keep; k--)
            if (memcmp(text + len - k, stop[i], k) == 0) {
                keep = k;
                break;
            }
    }
    return *stopped ? first : len - keep;
}

/* ---- the scheduler ------------------------------------------------------------------------ */

static void slot_end(srv_sched *s, slot *sl, const char *reason, int status, const char *error)
{
    srv_task *t = sl->task;
    if (!status && !sl->stopped) {
        /* the rest of the text: no more tokens can complete a stop string */
        size_t n = b158_detok_stream_flush(&sl->ds, s->piece, s->piece_cap);
        if (n && grow(&sl->hold, &sl->hold_cap, sl->hold_len + n) == 0) {
            memcpy(sl->hold + sl->hold_len, s->piece, n);
            sl->hold_len += n;
        }
        int stopped = 0;
        size_t ok =
            srv_stop_scan(sl->hold, sl->hold_len, t->stop, t->stop_len, t->n_stop, &stopped);
        emit(t, sl->hold, stopped ? ok : sl->hold_len);
        if (stopped)
            reason = "stop";
    }
    sl->hold_len = 0;
    sl->task = NULL;
    /* the counters are right before the client hears of the end */
    pthread_mutex_lock(&s->mu);
    s->n_active--;
    pthread_mutex_unlock(&s->mu);
    finish(t, reason, status, error, sl->n_gen);
    task_unref(t);
}

/* A request enters its slot: the sequence starts empty; the prompt feeds the repeat penalty. */
static void slot_start(srv_sched *s, slot *sl, int seq)
{
    srv_task *t = sl->task;
    sl->fresh = 0;
    sl->n_fed = sl->generating = sl->n_gen = sl->stopped = 0;
    sl->batch_i = -1;
    sl->hold_len = 0;
    b158_detok_stream_init(&sl->ds);
    sl->admitted = s->admissions++;
    for (int i = 0; i < t->n_tokens; i++)
        b158_sampler_accept(t->sampler, t->tokens[i]);
    /* (a step decoded ahead for the request before may report its device error here once; the
     * second clear is this request's own) */
    if (b158_session_seq_clear(s->session, seq) != B158_OK &&
        b158_session_seq_clear(s->session, seq) != B158_OK)
        slot_end(s, sl, NULL, 500, b158_last_error());
}

/* The sampled token of a slot: end of generation, text (minus stop strings) or a limit. */
static void slot_token(srv_sched *s, slot *sl, int seq, b158_token tok)
{
    srv_task *t = sl->task;
    sl->n_gen++;
    if (b158_vocab_is_eog(s->vocab, tok)) {
        slot_end(s, sl, "stop", 0, NULL);
        return;
    }
    size_t n = 0;
    if (tok < b158_vocab_n_tokens(s->vocab) &&
        b158_detok_stream_push(&sl->ds, s->vocab, tok, 0, s->piece, s->piece_cap, &n) != B158_OK)
        n = 0;
    if (n && grow(&sl->hold, &sl->hold_cap, sl->hold_len + n) != 0) {
        slot_end(s, sl, NULL, 500, "out of memory for the generated text");
        return;
    }
    if (n) {
        memcpy(sl->hold + sl->hold_len, s->piece, n);
        sl->hold_len += n;
    }
    int stopped = 0;
    size_t ok = srv_stop_scan(sl->hold, sl->hold_len, t->stop, t->stop_len, t->n_stop, &stopped);
    emit(t, sl->hold, ok);
    if (stopped) {
        sl->stopped = 1;
        slot_end(s, sl, "stop", 0, NULL);
        return;
    }
    if (ok) {
        memmove(sl->hold, sl->hold + ok, sl->hold_len - ok);
        sl->hold_len -= ok;
    }
    if ((t->max_tokens > 0 && sl->n_gen >= t->max_tokens) ||
        b158_session_seq_pos(s->session, seq) >= s->n_ctx) {
        slot_end(s, sl, "length", 0, NULL);
        return;
    }
    sl->next = tok;
    sl->generating = 1;
}

/* One forward step over every active slot. */
static void step(srv_sched *s)
{
    for (int i = 0; i < s->n_seq; i++) {
        slot *sl = &s->slots[i];
        if (!sl->task)
            continue;
        pthread_mutex_lock(&sl->task->mu);
        int gone = sl->task->cancelled;
        pthread_mutex_unlock(&sl->task->mu);
        if (gone)
            slot_end(s, sl, NULL, 499, "the client went away");
    }
    /* generation first (one token per slot, n_seq <= n_batch), then prompt chunks */
    int n = 0, n_prompt = 0;
    for (int i = 0; i < s->n_seq; i++) {
        slot *sl = &s->slots[i];
        sl->batch_i = -1;
        if (!sl->task || !sl->generating)
            continue;
        s->b_tok[n] = sl->next;
        s->b_seq[n] = i;
        s->b_logits[n] = 1;
        sl->batch_i = n++;
    }
    /* the prompts still being fed, oldest admission first, each taking what room is left: a
     * long prompt is not overtaken by requests admitted after it */
    for (uint64_t after = 0; n < s->n_batch;) {
        int i = -1;
        for (int j = 0; j < s->n_seq; j++) {
            const slot *c = &s->slots[j];
            if (c->task && !c->generating && c->admitted >= after &&
                (i < 0 || c->admitted < s->slots[i].admitted))
                i = j;
        }
        if (i < 0)
            break;
        slot *sl = &s->slots[i];
        after = sl->admitted + 1;
        const srv_task *t = sl->task;
        int take = t->n_tokens - sl->n_fed;
        if (take > s->n_batch - n)
            take = s->n_batch - n;
        for (int k = 0; k < take; k++) {
            s->b_tok[n] = t->tokens[sl->n_fed + k];
            s->b_seq[n] = i;
            s->b_logits[n++] = 0;
        }
        sl->n_fed += take;
        n_prompt += take;
        if (sl->n_fed == t->n_tokens) { /* the last prompt token: sample after it */
            s->b_logits[n - 1] = 1;
            sl->batch_i = n - 1;
        }
    }
    if (n == 0)
        return;
    /* a step whose sampled sequences all sample greedily reads back tokens, not logits */
    int greedy = 1;
    for (int i = 0; i < s->n_seq; i++)
        if (s->slots[i].task && s->slots[i].batch_i >= 0)
            greedy &= s->slots[i].task->greedy;
    const b158_batch batch = {n, s->b_tok, s->b_seq, s->b_logits, greedy};
    const double t0 = now_s();
    const b158_status st = b158_session_decode(s->session, &batch);
    const double dt = now_s() - t0;
    pthread_mutex_lock(&s->mu);
    s->stats.steps++;
    s->stats.step_tokens += (uint64_t)n;
    s->stats.prompt_tokens += (uint64_t)n_prompt;
    s->stats.decode_seconds += dt;
    pthread_mutex_unlock(&s->mu);
    if (st != B158_OK) {
        /* the sequences of the batch are undefined now: each is cleared now (what a step
         * decoded ahead left is then not the next request's) and again when reused */
        char msg[256];
        snprintf(msg, sizeof msg, "decoding failed: %s", b158_last_error());
        fprintf(stderr, "b158-cl-server: %s\n", msg);
        for (int i = 0; i < s->n_seq; i++) {
            int in_batch = 0;
            for (int k = 0; k < n && !in_batch; k++)
                in_batch = s->b_seq[k] == i;
            if (s->slots[i].task && in_batch) {
                slot_end(s, &s->slots[i], NULL, 500, msg);
                (void)b158_session_seq_clear(s->session, i);
            }
        }
        return;
    }
    int sampled = 0;
    for (int i = 0; i < s->n_seq; i++)
        sampled += s->slots[i].task && s->slots[i].batch_i >= 0;
    pthread_mutex_lock(&s->mu);
    s->stats.generated_tokens += (uint64_t)sampled;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_seq; i++) {
        slot *sl = &s->slots[i];
        if (!sl->task || sl->batch_i < 0)
            continue;
        const float *logits = b158_session_logits(s->session, sl->batch_i);
        const b158_token pick = greedy ? b158_session_argmax(s->session, sl->batch_i) : -1;
        if (greedy && pick >= 0)
            b158_sampler_accept(sl->task->sampler, pick);
        if (!logits && pick < 0)
            slot_end(s, sl, NULL, 500, "the session returned no logits for a sequence");
        else
            slot_token(s, sl, i, greedy ? pick : b158_sampler_sample(sl->task->sampler, logits));
    }
}

static void *sched_main(void *arg)
{
    srv_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stopping && s->n_active == 0 && !s->head)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping)
            break;
        /* requests join between steps, oldest first */
        for (int i = 0; i < s->n_seq && s->head; i++) {
            slot *sl = &s->slots[i];
            if (sl->task)
                continue;
            srv_task *t = s->head;
            s->head = t->next;
            if (!s->head)
                s->tail = NULL;
            t->next = NULL;
            t->queued = 0;
            s->n_queued--;
            s->n_active++;
            sl->task = t;
            sl->fresh = 1;
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < s->n_seq; i++)
            if (s->slots[i].task && s->slots[i].fresh)
                slot_start(s, &s->slots[i], i);
        step(s);
        pthread_mutex_lock(&s->mu);
    }
    /* shutting down: nothing new is queued once stopping is set */
    srv_task *q = s->head;
    for (srv_task *t = q; t; t = t->next)
        t->queued = 0;
    s->head = s->tail = NULL;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_seq; i++)
        if (s->slots[i].task)
            slot_end(s, &s->slots[i], NULL, 503, "the server is shutting down");
    while (q) {
        srv_task *next = q->next;
        finish(q, NULL, 503, "the server is shutting down", 0);
        task_unref(q);
        q = next;
    }
    return NULL;
}

static void sched_free(srv_sched *s)
{
    for (int i = 0; s->slots && i < s->n_seq; i++)
        free(s->slots[i].hold);
    free(s->slots);
    free(s->b_tok);
    free(s->b_seq);
    free(s->b_logits);
    free(s->piece);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int srv_sched_start(const srv_sched_params *p, srv_sched **out)
{
    *out = NULL;
    srv_sched *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->session = p->session;
    s->vocab = p->vocab;
    s->n_seq = b158_session_n_seq(p->session);
    s->n_ctx = b158_session_n_ctx(p->session);
    s->n_batch = p->n_batch < s->n_seq ? s->n_seq : p->n_batch;
    s->max_queue = p->max_queue;
    s->stats.n_slots = s->n_seq;
    s->piece_cap = 3 * (b158_vocab_max_piece(p->vocab) + 4);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->slots = calloc((size_t)s->n_seq, sizeof *s->slots);
    s->b_tok = malloc((size_t)s->n_batch * sizeof *s->b_tok);
    s->b_seq = malloc((size_t)s->n_batch * sizeof *s->b_seq);
    s->b_logits = malloc((size_t)s->n_batch);
    s->piece = malloc(s->piece_cap);
    if (!s->slots || !s->b_tok || !s->b_seq || !s->b_logits || !s->piece ||
        pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        sched_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int srv_sched_submit(srv_sched *s, srv_task *t)
{
    pthread_mutex_lock(&s->mu);
    int rc = SRV_SUBMIT_OK;
    if (s->stopping)
        rc = SRV_SUBMIT_STOPPING;
    else if (s->n_queued >= s->max_queue && s->n_active + s->n_queued >= s->n_seq)
        rc = SRV_SUBMIT_FULL;
    if (rc == SRV_SUBMIT_OK) {
        pthread_mutex_lock(&t->mu);
        t->refs++;
        pthread_mutex_unlock(&t->mu);
        t->queued = 1;
        if (s->tail)
            s->tail->next = t;
        else
            s->head = t;
        s->tail = t;
        s->n_queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void srv_sched_cancel(srv_sched *s, srv_task *t)
{
    pthread_mutex_lock(&s->mu);
    int was_queued = t->queued;
    if (was_queued) {
        srv_task **pp = &s->head, *prev = NULL;
        while (*pp && *pp != t) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = t->next;
            if (s->tail == t)
                s->tail = prev;
        }
        t->next = NULL;
        t->queued = 0;
        s->n_queued--;
    }
    pthread_mutex_unlock(&s->mu);
    if (was_queued) {
        finish(t, NULL, 499, "the client went away", 0);
        task_unref(t); /* the queue's reference */
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->cancelled = 1;
    pthread_mutex_unlock(&t->mu);
}

void srv_sched_stop(srv_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
}

void srv_sched_free(srv_sched *s)
{
    if (s)
        sched_free(s);
}

void srv_sched_get_stats(srv_sched *s, srv_sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->active = s->n_active;
    out->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}
