/* Containers the tokenizers share (host/tokenizer-util.c): a growable token list and the
 * priority queue of candidate merges. */
#ifndef B158_HOST_TOKENIZER_UTIL_H
#define B158_HOST_TOKENIZER_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

/* Growable token list. */
typedef struct b158_tokvec {
    b158_token *p;
    size_t n, cap;
} b158_tokvec;

b158_status b158_tokvec_push(b158_tokvec *v, b158_token t);

/* Priority queue of candidate merges: smaller key first, then smaller left index (the order
 * both llama.cpp tokenizers use). BPE keys are ranks, SentencePiece keys negated scores. */
typedef struct b158_bigram {
    double key;
    int32_t left, right;
    uint32_t size; /* bytes of left + right when queued, to detect stale entries */
} b158_bigram;

typedef struct b158_heap {
    b158_bigram *p;
    size_t n, cap;
} b158_heap;

b158_status b158_heap_push(b158_heap *h, b158_bigram b);
b158_bigram b158_heap_pop(b158_heap *h);

#endif
