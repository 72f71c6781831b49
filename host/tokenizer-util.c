/* Containers the tokenizers share: a growable token list and the priority queue of candidate
 * merges. */
#include "tokenizer-util.h"

#include <stdlib.h>

#include "error.h"

b158_status b158_tokvec_push(b158_tokvec *v, b158_token t)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        b158_token *p = realloc(v->p, cap * sizeof *p);
        if (!p)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for %zu tokens", cap);
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = t;
    return B158_OK;
}

static int heap_before(const b158_bigram *a, const b158_bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

b158_status b158_heap_push(b158_heap *h, b158_bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        b158_bigram *p = realloc(h->p, cap * sizeof *p);
        if (!p)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for the merge queue");
        h->p = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(&b, &h->p[parent]))
            break;
        h->p[i] = h->p[parent];
        i = parent;
    }
    h->p[i] = b;
    return B158_OK;
}

b158_bigram b158_heap_pop(b158_heap *h)
{
    b158_bigram top = h->p[0];
    b158_bigram last = h->p[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && heap_before(&h->p[c + 1], &h->p[c]))
            c++;
        if (!heap_before(&h->p[c], &last))
            break;
        h->p[i] = h->p[c];
        i = c;
    }
    if (h->n)
        h->p[i] = last;
    return top;
}
