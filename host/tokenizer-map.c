/* Hash maps for the tokenizers: FNV-1a over bytes, linear probing, fixed capacity. */
#include "tokenizer-map.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

static size_t capacity_for(size_t expected)
{
    size_t cap = 16;
    while (cap < 2 * expected)
        cap *= 2;
    return cap;
}

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    /* splitmix64 finalizer */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

b158_status b158_strmap_init(b158_strmap *m, size_t expected)
{
    m->cap = capacity_for(expected);
    m->n = 0;
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for a %zu-entry token map", m->cap);
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].value = -1;
    return B158_OK;
}

void b158_strmap_free(b158_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

int b158_strmap_put(b158_strmap *m, const char *key, size_t len, b158_token value, b158_token *old)
{
    if (2 * (m->n + 1) > m->cap || len > UINT32_MAX)
        return -1;
    size_t mask = m->cap - 1;
    for (size_t h = hash_str(key, len) & mask;; h = (h + 1) & mask) {
        b158_strmap_slot *s = &m->slots[h];
        if (s->value < 0) {
            s->key = key;
            s->len = (uint32_t)len;
            s->value = value;
            m->n++;
            return 1;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) {
            if (old)
                *old = s->value;
            return 0;
        }
    }
}

b158_token b158_strmap_get(const b158_strmap *m, const char *key, size_t len)
{
    size_t mask = m->cap - 1;
    for (size_t h = hash_str(key, len) & mask;; h = (h + 1) & mask) {
        const b158_strmap_slot *s = &m->slots[h];
        if (s->value < 0)
            return -1;
        if (s->len == len && memcmp(s->key, key, len) == 0)
            return s->value;
    }
}

b158_status b158_pairmap_init(b158_pairmap *m, size_t expected)
{
    m->cap = capacity_for(expected);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for a %zu-entry merge map", m->cap);
    for (size_t i = 0; i < m->cap; i++)
        m->slots[i].rank = -1;
    return B158_OK;
}

void b158_pairmap_free(b158_pairmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
}

static uint64_t pair_key(b158_token left, b158_token right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

void b158_pairmap_put(b158_pairmap *m, b158_token left, b158_token right, int32_t rank,
                      b158_token merged)
{
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1;
    for (size_t h = hash_u64(key) & mask;; h = (h + 1) & mask) {
        b158_pairmap_slot *s = &m->slots[h];
        if (s->rank < 0) {
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            return;
        }
        if (s->key == key)
            return;
    }
}

const b158_pairmap_slot *b158_pairmap_get(const b158_pairmap *m, b158_token left, b158_token right)
{
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1;
    for (size_t h = hash_u64(key) & mask;; h = (h + 1) & mask) {
        const b158_pairmap_slot *s = &m->slots[h];
        if (s->rank < 0)
            return NULL;
        if (s->key == key)
            return s;
    }
}
