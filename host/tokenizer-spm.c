/* SentencePiece (LLaMA) encoder: score-ordered merges of UTF-8 characters, byte fallback. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer-impl.h"

typedef struct spm_work {
    const char *text;
    b158_symbol *sym;
    b158_heap heap;
} spm_work;

/* Queues the merge of symbols l and r when their concatenation is a token. */
static b158_status add_bigram(const b158_vocab *v, spm_work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return B158_OK;
    uint32_t size = w->sym[l].n + w->sym[r].n;
    b158_token id = b158_strmap_get(&v->by_text, w->text + w->sym[l].start, size);
    if (id < 0)
        return B158_OK;
    /* highest score first: the heap pops the smallest key */
    b158_bigram b = {-(double)v->scores[id], l, r, size};
    return b158_heap_push(&w->heap, b);
}

b158_status b158_spm_encode(const b158_vocab *v, const char *text, size_t len, int space_prefix,
                            b158_tokvec *out)
{
    /* spaces become U+2581 (3 bytes), plus one in front when asked */
    size_t cap = 3 * len + 3;
    char *buf = malloc(cap);
    b158_symbol *sym = malloc(cap * sizeof *sym);
    if (!buf || !sym) {
        free(buf);
        free(sym);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of memory for a %zu-byte text", len);
    }
    size_t n = 0;
    if (space_prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    /* one symbol per character; invalid UTF-8 is cut by lead byte like llama.cpp, and such
     * pieces end up as byte tokens. When no token of two or more bytes contains a newline, no
     * merge can cross one: each line is merged on its own, which gives the same result as one
     * global queue (merges never interact across the cut) with a far smaller queue. */
    int32_t ns = 0;
    for (size_t off = 0; off < n; ns++) {
        size_t cl = b158_utf8_lead_len((unsigned char)buf[off]);
        if (cl > n - off)
            cl = n - off;
        int cut =
            ns > 0 && v->spm_split_newlines && (buf[off] == '\n' || buf[sym[ns - 1].start] == '\n');
        sym[ns] = (b158_symbol){cut ? -1 : ns - 1, -1, (uint32_t)off, (uint32_t)cl, -1};
        if (ns > 0 && !cut)
            sym[ns - 1].next = ns;
        off += cl;
    }
    spm_work w = {buf, sym, {0}};
    b158_status st = B158_OK;
    for (int32_t seg = 0; seg < ns && st == B158_OK;) {
        int32_t end = seg + 1;
        while (end < ns && sym[end].prev >= 0)
            end++;
        for (int32_t i = seg + 1; i < end && st == B158_OK; i++)
            st = add_bigram(v, &w, i - 1, i);
        while (st == B158_OK && w.heap.n) {
            b158_bigram b = b158_heap_pop(&w.heap);
            b158_symbol *l = &sym[b.left], *r = &sym[b.right];
            if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
                continue; /* one side was merged since */
            l->n += r->n;
            r->n = 0;
            l->next = r->next;
            if (r->next >= 0)
                sym[r->next].prev = b.left;
            st = add_bigram(v, &w, l->prev, b.left);
            if (st == B158_OK)
                st = add_bigram(v, &w, b.left, l->next);
        }
        for (int32_t i = seg; i >= 0 && st == B158_OK; i = sym[i].next) {
            b158_token id = b158_strmap_get(&v->by_text, buf + sym[i].start, sym[i].n);
            if (id >= 0) {
                st = b158_tokvec_push(out, id);
                continue;
            }
            /* byte fallback: <0xNN> per byte, else the unknown token */
            for (uint32_t k = 0; k < sym[i].n && st == B158_OK; k++) {
                b158_token bt = v->byte_token[(unsigned char)buf[sym[i].start + k]];
                if (bt < 0)
                    bt = v->unk;
                if (bt >= 0)
                    st = b158_tokvec_push(out, bt);
            }
        }
        seg = end;
    }
    free(w.heap.p);
    free(buf);
    free(sym);
    return st;
}
