/* Hash maps for the tokenizers: byte string -> token id, and token pair -> merge rank. */
#ifndef B158_HOST_TOKENIZER_MAP_H
#define B158_HOST_TOKENIZER_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

/* Open addressing over keys the caller keeps alive (the map stores pointers, not copies). */
typedef struct b158_strmap_slot {
    const char *key;
    uint32_t len;
    b158_token value; /* -1 = empty slot */
} b158_strmap_slot;

typedef struct b158_strmap {
    b158_strmap_slot *slots;
    size_t cap; /* power of two, at least twice the expected count */
    size_t n;
} b158_strmap;

/* Sized for up to expected keys (puts past that fail). */
b158_status b158_strmap_init(b158_strmap *m, size_t expected);
void b158_strmap_free(b158_strmap *m);
/* Inserts key -> value (value >= 0). Returns 1 if inserted, 0 if the key already existed
 * (*old, if not NULL, gets its value), -1 when the map is full. */
int b158_strmap_put(b158_strmap *m, const char *key, size_t len, b158_token value, b158_token *old);
/* Value of key, or -1. */
b158_token b158_strmap_get(const b158_strmap *m, const char *key, size_t len);

/* (left id, right id) -> (rank, merged id) for BPE merges. */
typedef struct b158_pairmap_slot {
    uint64_t key; /* left << 32 | right */
    int32_t rank; /* -1 = empty slot */
    b158_token merged;
} b158_pairmap_slot;

typedef struct b158_pairmap {
    b158_pairmap_slot *slots;
    size_t cap;
} b158_pairmap;

b158_status b158_pairmap_init(b158_pairmap *m, size_t expected);
void b158_pairmap_free(b158_pairmap *m);
/* Keeps the first (lowest) rank for a pair seen twice. */
void b158_pairmap_put(b158_pairmap *m, b158_token left, b158_token right, int32_t rank,
                      b158_token merged);
/* Slot of the pair, or NULL. */
const b158_pairmap_slot *b158_pairmap_get(const b158_pairmap *m, b158_token left, b158_token right);

#endif
