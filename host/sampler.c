/* Token sampling in llama.cpp's default order: penalties (repeat, frequency, presence), top-k,
 * top-p, min-p, temperature, then a seeded draw (temp 0 = argmax). All scratch is allocated at
 * creation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "b158/model.h"
#include "error.h"

typedef struct {
    b158_token id;
    float logit;
    float p;
} cand;

struct b158_sampler {
    b158_sampler_params p;
    int n_vocab;
    cand *cands;        /* (n_vocab) candidates of the current step */
    b158_token *recent; /* ring of the last repeat_last_n tokens */
    int *count; /* (n_vocab, with penalties) zero between steps: a token's count in the window */
    int n_recent, recent_head;
    uint64_t rng;
};

b158_sampler_params b158_sampler_default_params(void)
{
    return (b158_sampler_params){0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0, 0.0f, 0.0f};
}

static int penalized(const b158_sampler_params *p)
{
    return p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

int b158_sampler_params_greedy(const b158_sampler_params *p)
{
    return p && p->temp == 0.0f && !penalized(p);
}

b158_status b158_sampler_create(const b158_sampler_params *params, int n_vocab, b158_sampler **out)
{
    if (!out || n_vocab <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_sampler_create: bad arguments");
    *out = NULL;
    b158_sampler_params p = params ? *params : b158_sampler_default_params();
    if (!(p.temp >= 0.0f) || p.top_k < 0 || !(p.top_p > 0.0f && p.top_p <= 1.0f) ||
        !(p.min_p >= 0.0f && p.min_p <= 1.0f) || !(p.repeat_penalty > 0.0f) ||
        !isfinite(p.repeat_penalty) || p.repeat_last_n < 0 || !isfinite(p.frequency_penalty) ||
        !isfinite(p.presence_penalty))
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "sampler: need temp >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p <= 1, "
                         "repeat penalty > 0, finite frequency and presence penalties (got %g, "
                         "%d, %g, %g, %g, %g, %g)",
                         p.temp, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.frequency_penalty,
                         p.presence_penalty);
    b158_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the sampler");
    s->p = p;
    s->n_vocab = n_vocab;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->recent = malloc(((size_t)p.repeat_last_n + 1) * sizeof *s->recent);
    s->count = penalized(&p) ? calloc((size_t)n_vocab, sizeof *s->count) : NULL;
    if (!s->cands || !s->recent || (penalized(&p) && !s->count)) {
        b158_sampler_free(s);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for the sampler");
    }
    s->rng = p.seed ^ 0x853c49e6748fea9bull;
    *out = s;
    return B158_OK;
}

void b158_sampler_free(b158_sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s->recent);
    free(s->count);
    free(s);
}

void b158_sampler_accept(b158_sampler *s, b158_token token)
{
    if (!s || s->p.repeat_last_n == 0)
        return;
    s->recent[s->recent_head] = token;
    s->recent_head = (s->recent_head + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n)
        s->n_recent++;
}

static double next_unit(uint64_t *state) /* [0, 1) */
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static int by_logit_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id; /* stable on ties: reproducible */
}

/* Moves the k largest candidates to the front, sorted descending (a k-heap over n). */
static void top_k_front(cand *c, int n, int k)
{
    if (k >= n) {
        qsort(c, (size_t)n, sizeof *c, by_logit_desc);
        return;
    }
    qsort(c, (size_t)k, sizeof *c, by_logit_desc); /* c[k-1] is the smallest kept */
    for (int i = k; i < n; i++) {
        if (by_logit_desc(&c[i], &c[k - 1]) >= 0)
            continue;
        int j = k - 1; /* insert into the sorted prefix */
        cand t = c[i];
        c[i] = c[j];
        while (j > 0 && by_logit_desc(&t, &c[j - 1]) < 0) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = t;
    }
}

b158_token b158_sampler_sample(b158_sampler *s, const float *logits)
{
    const b158_sampler_params *p = &s->p;
    int n = s->n_vocab;
    for (int i = 0; i < n; i++)
        s->cands[i] = (cand){i, logits[i], 0.0f};
    if (penalized(p)) {
        /* llama.cpp's penalties: each token of the window once, with its count there */
        for (int r = 0; r < s->n_recent; r++)
            if (s->recent[r] >= 0 && s->recent[r] < n)
                s->count[s->recent[r]]++;
        for (int r = 0; r < s->n_recent; r++) {
            const b158_token id = s->recent[r];
            if (id < 0 || id >= n || !s->count[id])
                continue; /* out of range, or done at its first place in the window */
            float *l = &s->cands[id].logit;
            *l = *l > 0.0f ? *l / p->repeat_penalty : *l * p->repeat_penalty;
            *l -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
            s->count[id] = 0;
        }
    }
    b158_token pick;
    if (p->temp <= 0.0f) { /* b158_ref_argmax's pick: the first largest, NaN never */
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!isnan(s->cands[i].logit) && (best < 0 || s->cands[i].logit > s->cands[best].logit))
                best = i;
        pick = s->cands[best < 0 ? 0 : best].id;
    } else {
        top_k_front(s->cands, n, p->top_k > 0 && p->top_k < n ? p->top_k : n);
        if (p->top_k > 0 && p->top_k < n)
            n = p->top_k;
        /* softmax of the untempered logits for top-p and min-p, as llama.cpp's chain does */
        const float mx = s->cands[0].logit;
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += s->cands[i].p = expf(s->cands[i].logit - mx);
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->cands[i].p / sum;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        if (p->min_p > 0.0f) {
            const float floor_p = p->min_p * s->cands[0].p; /* cands[0].p == 1 */
            int k = 1;
            while (k < n && s->cands[k].p >= floor_p)
                k++;
            n = k;
        }
        /* temperature on what is left, then the draw */
        sum = 0;
        for (int i = 0; i < n; i++)
            sum += s->cands[i].p = expf((s->cands[i].logit - mx) / p->temp);
        double r = next_unit(&s->rng) * sum;
        pick = s->cands[n - 1].id;
        for (int i = 0; i < n; i++) {
            r -= s->cands[i].p;
            if (r < 0) {
                pick = s->cands[i].id;
                break;
            }
        }
    }
    b158_sampler_accept(s, pick);
    return pick;
}
