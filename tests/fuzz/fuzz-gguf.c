/* Fuzz target: the GGUF reader (host/gguf.c) on arbitrary bytes. A file that opens is walked in
 * full: every key through every typed getter, every array element, every tensor's info and the
 * first and last byte of its data (ASan checks they lie inside the input). */
#include <string.h>

#include "fuzz-common.h"
#include "gguf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    return 0;
}

static void walk_key(const b158_gguf *g, const char *key, size_t size)
{
    int64_t i64;
    uint64_t u64;
    int32_t i32;
    uint32_t u32;
    double f64;
    float f32;
    int b;
    b158_gguf_str s;
    char buf[64];
    (void)b158_gguf_get_i64(g, key, &i64);
    (void)b158_gguf_get_u64(g, key, &u64);
    (void)b158_gguf_get_i32(g, key, &i32);
    (void)b158_gguf_get_u32(g, key, &u32);
    (void)b158_gguf_get_f64(g, key, &f64);
    (void)b158_gguf_get_f32(g, key, &f32);
    (void)b158_gguf_get_bool(g, key, &b);
    if (b158_gguf_get_str(g, key, &s) == B158_OK && s.len) {
        volatile char first = s.ptr[0], last = s.ptr[s.len - 1];
        (void)first, (void)last;
    }
    (void)b158_gguf_copy_str(g, key, buf, sizeof buf);

    enum b158_gguf_vtype et;
    uint64_t n;
    if (b158_gguf_get_arr_info(g, key, &et, &n) != B158_OK)
        return;
    /* every element lies in the input, so n is bounded by the input size */
    if (et == B158_GGUF_STRING) {
        FUZZ_CHECK(n <= size / 8);
        b158_gguf_str *strs = malloc((n ? n : 1) * sizeof *strs);
        FUZZ_CHECK(strs);
        if (b158_gguf_get_arr_strs(g, key, strs, n) == B158_OK)
            for (uint64_t j = 0; j < n; j++)
                if (strs[j].len) {
                    volatile char last = strs[j].ptr[strs[j].len - 1];
                    (void)last;
                }
        free(strs);
        return;
    }
    const void *raw;
    if (b158_gguf_get_arr_raw(g, key, &et, &raw, &n) != B158_OK)
        return;
    const size_t es = b158_gguf_vtype_size(et);
    FUZZ_CHECK(es > 0 && n <= size / es);
    if (n) {
        volatile unsigned char last = ((const unsigned char *)raw)[n * es - 1];
        (void)last;
    }
    void *copy = malloc(n * es + 1);
    FUZZ_CHECK(copy);
    (void)b158_gguf_get_arr_copy(g, key, et, copy, n);
    (void)b158_gguf_get_arr_copy(g, key, B158_GGUF_F32, copy, n / 4 < n ? n / 4 : n);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    b158_gguf *g = NULL;
    if (b158_gguf_open_memory(data, size, &g) != B158_OK) {
        FUZZ_CHECK(g == NULL);
        return 0;
    }
    (void)b158_gguf_version(g);
    /* the data section may start past the end only when there are no tensors */
    FUZZ_CHECK(b158_gguf_data_offset(g) <= size || b158_gguf_n_tensors(g) == 0);
    const uint32_t align = b158_gguf_alignment(g);
    FUZZ_CHECK(align > 0 && (align & (align - 1)) == 0);
    for (size_t i = 0; i < b158_gguf_n_kv(g); i++) {
        const b158_gguf_str k = b158_gguf_key_at(g, i);
        FUZZ_CHECK(b158_gguf_kv_type(g, i) < B158_GGUF_VTYPE_COUNT);
        char *key = malloc(k.len + 1);
        FUZZ_CHECK(key);
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        if (!memchr(k.ptr, '\0', k.len)) { /* a key with a NUL cannot be looked up by name */
            FUZZ_CHECK(b158_gguf_has_key(g, key));
            walk_key(g, key, size);
        }
        free(key);
    }
    walk_key(g, "no such key", size);
    for (size_t i = 0; i < b158_gguf_n_tensors(g); i++) {
        const b158_gguf_tensor *t = b158_gguf_tensor_at(g, i);
        FUZZ_CHECK(t && t->name && t->n_dims >= 1 && t->n_dims <= B158_GGUF_MAX_DIMS);
        FUZZ_CHECK(b158_gguf_find_tensor(g, t->name) != NULL);
        FUZZ_CHECK(t->offset <= size && t->n_bytes <= size - t->offset);
        FUZZ_CHECK(b158_gguf_type_name(t->type) != NULL);
        uint64_t nb = 0;
        FUZZ_CHECK(b158_gguf_tensor_nbytes(t->type, t->ne[0], t->n_elements, &nb) == B158_OK &&
                   nb == t->n_bytes);
        (void)b158_gguf_type_block(t->type);
        (void)b158_gguf_type_block_bytes(t->type);
        if (t->n_bytes) {
            const unsigned char *p = t->data;
            volatile unsigned char first = p[0], last = p[t->n_bytes - 1];
            (void)first, (void)last;
        }
    }
    FUZZ_CHECK(b158_gguf_tensor_at(g, b158_gguf_n_tensors(g)) == NULL);
    b158_gguf_close(g);
    return 0;
}
