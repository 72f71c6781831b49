/* GGUF tests: writer/reader round trip, real vocab files, and hostile files that must be
 * rejected with a clear error and without reading out of bounds (run under ASan too). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf-write.h"
#include "gguf.h"
#include "test-common.h"

/* ---- a raw byte builder for files the writer refuses to produce ------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_put(buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void b_u32(buf *b, uint32_t v)
{
    b_put(b, &v, 4);
}

static void b_u64(buf *b, uint64_t v)
{
    b_put(b, &v, 8);
}

static void b_str(buf *b, const char *s)
{
    b_u64(b, strlen(s));
    b_put(b, s, strlen(s));
}

static void b_header(buf *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
    b_put(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_t);
    b_u64(b, n_kv);
}

static void b_kv_u32(buf *b, const char *key, uint32_t v)
{
    b_str(b, key);
    b_u32(b, B158_GGUF_U32);
    b_u32(b, v);
}

static void b_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, offset);
}

static void b_pad(buf *b, size_t align)
{
    while (b->n % align)
        b_put(b, "", 1);
}

static void b_zeros(buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_put(b, "", 1);
}

/* Opens b (copied into an exact-size allocation so ASan sees any overread) and expects want. */
static b158_status open_buf(const buf *b, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, b->p, len);
    b158_gguf *g = NULL;
    b158_status st = b158_gguf_open_memory(copy, len, &g);
    CU_ASSERT((st == B158_OK) == (g != NULL));
    b158_gguf_close(g);
    free(copy);
    return st;
}

#define EXPECT_REJECT(b, want, substr)                                                             \
    do {                                                                                           \
        b158_status st_ = open_buf((b), (b)->n);                                                   \
        CU_ASSERT_EQUAL(st_, (want));                                                              \
        if (st_ != (want) || !strstr(b158_last_error(), (substr)))                                 \
            fprintf(stderr, "\n  %s:%d: status %s, message: %s\n", __FILE__, __LINE__,             \
                    b158_status_str(st_), b158_last_error());                                      \
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), (substr)));                               \
    } while (0)

/* A small valid file: two F32 tensors {4} and {8,2} at offsets 0 and 32. */
static void valid_file(buf *b)
{
    b_header(b, 3, 2, 1);
    b_kv_u32(b, "general.alignment", 32);
    uint64_t ne1[1] = {4}, ne2[2] = {8, 2};
    b_tensor(b, "a", 1, ne1, B158_TT_F32, 0);
    b_tensor(b, "b", 2, ne2, B158_TT_F32, 32);
    b_pad(b, 32);
    b_zeros(b, 32 + 64);
}

/* ---- round trip ------------------------------------------------------------------------- */

static void test_roundtrip(void)
{
    b158_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_writer_set_alignment(w, 64), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_str(w, "general.architecture", "bitnet-25"), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_u8(w, "t.u8", 200), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_i8(w, "t.i8", -100), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_u16(w, "t.u16", 60000), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_i16(w, "t.i16", -30000), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_u32(w, "t.u32", 4000000000u), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_i32(w, "t.i32", -5), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_u64(w, "t.u64", 0xffffffffffffffffull), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_i64(w, "t.i64", INT64_MIN), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_f32(w, "t.f32", 1.5f), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_f64(w, "t.f64", 1e-300), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_bool(w, "t.bool", 1), B158_OK);
    const char *strs[] = {"hello", "", "w\xc3\xb6rld"};
    CU_ASSERT_EQUAL(b158_gguf_add_arr_str(w, "t.strs", strs, NULL, 3), B158_OK);
    const float scores[] = {-1.0f, 0.0f, 2.5f};
    CU_ASSERT_EQUAL(b158_gguf_add_arr(w, "t.scores", B158_GGUF_F32, scores, 3), B158_OK);
    const int32_t ints[] = {1, -2, 3, 4};
    CU_ASSERT_EQUAL(b158_gguf_add_arr(w, "t.ints", B158_GGUF_I32, ints, 4), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_arr(w, "t.empty", B158_GGUF_U8, NULL, 0), B158_OK);

    float f32[6] = {1, 2, 3, 4, 5, 6};
    uint8_t tq2[2 * B158_TQ2_0_BYTES], i2s[512 / 4 + 32];
    for (size_t i = 0; i < sizeof tq2; i++)
        tq2[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof i2s; i++)
        i2s[i] = (uint8_t)(i * 13);
    uint64_t ne_f[2] = {3, 2}, ne_tq[1] = {512}, ne_i2[2] = {128, 4};
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "f", B158_TT_F32, 2, ne_f, f32), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "tq", B158_TT_TQ2_0, 1, ne_tq, tq2), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "i2", B158_TT_I2_S, 2, ne_i2, i2s), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "f", B158_TT_F32, 2, ne_f, f32), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_gguf_add_u8(w, "t.u8", 1), B158_ERR_INVALID_ARG); /* sticky error */
    uint64_t bad[1] = {100};
    b158_gguf_writer *w2 = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w2), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w2, "x", B158_TT_TQ2_0, 1, bad, tq2), B158_ERR_FORMAT);
    b158_gguf_writer_free(w2);

    void *data = NULL;
    size_t size = 0;
    /* the writer remembers the duplicate adds above: a file would silently lack them */
    CU_ASSERT_NOT_EQUAL(b158_gguf_writer_write_mem(w, &data, &size), B158_OK);
    b158_gguf_writer_free(w);

    /* again without the mistakes */
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w), B158_OK);
    b158_gguf_writer_set_alignment(w, 64);
    b158_gguf_add_str(w, "general.architecture", "bitnet-25");
    b158_gguf_add_u8(w, "t.u8", 200);
    b158_gguf_add_i8(w, "t.i8", -100);
    b158_gguf_add_u16(w, "t.u16", 60000);
    b158_gguf_add_i16(w, "t.i16", -30000);
    b158_gguf_add_u32(w, "t.u32", 4000000000u);
    b158_gguf_add_i32(w, "t.i32", -5);
    b158_gguf_add_u64(w, "t.u64", 0xffffffffffffffffull);
    b158_gguf_add_i64(w, "t.i64", INT64_MIN);
    b158_gguf_add_f32(w, "t.f32", 1.5f);
    b158_gguf_add_f64(w, "t.f64", 1e-300);
    b158_gguf_add_bool(w, "t.bool", 1);
    b158_gguf_add_arr_str(w, "t.strs", strs, NULL, 3);
    b158_gguf_add_arr(w, "t.scores", B158_GGUF_F32, scores, 3);
    b158_gguf_add_arr(w, "t.ints", B158_GGUF_I32, ints, 4);
    b158_gguf_add_arr(w, "t.empty", B158_GGUF_U8, NULL, 0);
    b158_gguf_add_tensor(w, "f", B158_TT_F32, 2, ne_f, f32);
    b158_gguf_add_tensor(w, "tq", B158_TT_TQ2_0, 1, ne_tq, tq2);
    b158_gguf_add_tensor(w, "i2", B158_TT_I2_S, 2, ne_i2, i2s);
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_write_mem(w, &data, &size), B158_OK);
    b158_gguf_writer_free(w);

    b158_gguf *g = NULL;
    b158_status st = b158_gguf_open_memory(data, size, &g);
    if (st != B158_OK)
        fprintf(stderr, "\n%s\n", b158_last_error());
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_version(g), 3);
    CU_ASSERT_EQUAL(b158_gguf_alignment(g), 64);
    CU_ASSERT_EQUAL(b158_gguf_data_offset(g) % 64, 0);
    CU_ASSERT_EQUAL(b158_gguf_n_kv(g), 17);
    CU_ASSERT(b158_gguf_has_key(g, "t.u8"));
    CU_ASSERT(!b158_gguf_has_key(g, "t.u"));
    CU_ASSERT(!b158_gguf_has_key(g, "t.u8 "));

    b158_gguf_str s;
    CU_ASSERT_EQUAL(b158_gguf_get_str(g, "general.architecture", &s), B158_OK);
    CU_ASSERT(s.len == 9 && memcmp(s.ptr, "bitnet-25", 9) == 0);
    char small[4], big[32];
    CU_ASSERT_EQUAL(b158_gguf_copy_str(g, "general.architecture", small, sizeof small),
                    B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_gguf_copy_str(g, "general.architecture", big, sizeof big), B158_OK);
    CU_ASSERT_STRING_EQUAL(big, "bitnet-25");

    int64_t i64;
    uint64_t u64;
    int32_t i32;
    uint32_t u32;
    CU_ASSERT(b158_gguf_get_i64(g, "t.u8", &i64) == B158_OK && i64 == 200);
    CU_ASSERT(b158_gguf_get_i64(g, "t.i8", &i64) == B158_OK && i64 == -100);
    CU_ASSERT(b158_gguf_get_u32(g, "t.u16", &u32) == B158_OK && u32 == 60000);
    CU_ASSERT(b158_gguf_get_i32(g, "t.i16", &i32) == B158_OK && i32 == -30000);
    CU_ASSERT(b158_gguf_get_u32(g, "t.u32", &u32) == B158_OK && u32 == 4000000000u);
    CU_ASSERT_EQUAL(b158_gguf_get_i32(g, "t.u32", &i32), B158_ERR_FORMAT); /* > INT32_MAX */
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "t.u32"));
    CU_ASSERT(b158_gguf_get_i32(g, "t.i32", &i32) == B158_OK && i32 == -5);
    CU_ASSERT_EQUAL(b158_gguf_get_u32(g, "t.i32", &u32), B158_ERR_FORMAT); /* negative */
    CU_ASSERT_EQUAL(b158_gguf_get_u64(g, "t.i32", &u64), B158_ERR_FORMAT);
    CU_ASSERT(b158_gguf_get_u64(g, "t.u64", &u64) == B158_OK && u64 == 0xffffffffffffffffull);
    CU_ASSERT_EQUAL(b158_gguf_get_i64(g, "t.u64", &i64), B158_ERR_FORMAT);
    CU_ASSERT(b158_gguf_get_i64(g, "t.i64", &i64) == B158_OK && i64 == INT64_MIN);
    CU_ASSERT_EQUAL(b158_gguf_get_i32(g, "t.i64", &i32), B158_ERR_FORMAT);

    float f;
    double d;
    int bl;
    CU_ASSERT(b158_gguf_get_f32(g, "t.f32", &f) == B158_OK && f == 1.5f);
    CU_ASSERT(b158_gguf_get_f64(g, "t.f64", &d) == B158_OK && d == 1e-300);
    CU_ASSERT(b158_gguf_get_f64(g, "t.f32", &d) == B158_OK && d == 1.5);
    CU_ASSERT_EQUAL(b158_gguf_get_f32(g, "t.u8", &f), B158_ERR_FORMAT);
    CU_ASSERT(b158_gguf_get_bool(g, "t.bool", &bl) == B158_OK && bl == 1);
    CU_ASSERT_EQUAL(b158_gguf_get_bool(g, "t.u8", &bl), B158_ERR_FORMAT);
    CU_ASSERT_EQUAL(b158_gguf_get_str(g, "t.u8", &s), B158_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "'t.u8' is a u8, expected a string"));
    CU_ASSERT_EQUAL(b158_gguf_get_u32(g, "no.such.key", &u32), B158_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "'no.such.key' is missing"));
    CU_ASSERT_EQUAL(b158_gguf_get_u32(g, "t.ints", &u32), B158_ERR_FORMAT);

    enum b158_gguf_vtype vt;
    uint64_t cnt;
    CU_ASSERT(b158_gguf_get_arr_info(g, "t.strs", &vt, &cnt) == B158_OK && vt == B158_GGUF_STRING &&
              cnt == 3);
    b158_gguf_str tab[3];
    CU_ASSERT_EQUAL(b158_gguf_get_arr_strs(g, "t.strs", tab, 3), B158_OK);
    CU_ASSERT(tab[0].len == 5 && memcmp(tab[0].ptr, "hello", 5) == 0);
    CU_ASSERT(tab[1].len == 0);
    CU_ASSERT(tab[2].len == 6 && memcmp(tab[2].ptr, "w\xc3\xb6rld", 6) == 0);
    CU_ASSERT_EQUAL(b158_gguf_get_arr_strs(g, "t.strs", tab, 2), B158_ERR_FORMAT);
    CU_ASSERT_EQUAL(b158_gguf_get_arr_strs(g, "t.ints", tab, 4), B158_ERR_FORMAT);
    float sc[3];
    CU_ASSERT_EQUAL(b158_gguf_get_arr_copy(g, "t.scores", B158_GGUF_F32, sc, 3), B158_OK);
    CU_ASSERT(memcmp(sc, scores, sizeof sc) == 0);
    CU_ASSERT_EQUAL(b158_gguf_get_arr_copy(g, "t.scores", B158_GGUF_I32, sc, 3), B158_ERR_FORMAT);
    const void *raw;
    CU_ASSERT(b158_gguf_get_arr_raw(g, "t.ints", &vt, &raw, &cnt) == B158_OK &&
              vt == B158_GGUF_I32 && cnt == 4 && memcmp(raw, ints, sizeof ints) == 0);
    CU_ASSERT(b158_gguf_get_arr_info(g, "t.empty", &vt, &cnt) == B158_OK && cnt == 0);

    CU_ASSERT_EQUAL_FATAL(b158_gguf_n_tensors(g), 3);
    const b158_gguf_tensor *t = b158_gguf_find_tensor(g, "f");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT(t->type == B158_TT_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 &&
              t->ne[2] == 1 && t->n_elements == 6 && t->n_bytes == 24);
    CU_ASSERT(memcmp(t->data, f32, 24) == 0);
    CU_ASSERT_EQUAL(t->offset % 64, 0);
    t = b158_gguf_find_tensor(g, "tq");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT(t->type == B158_TT_TQ2_0 && t->n_bytes == sizeof tq2);
    CU_ASSERT(memcmp(t->data, tq2, sizeof tq2) == 0);
    t = b158_gguf_find_tensor(g, "i2");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT(t->type == B158_TT_I2_S && t->n_bytes == sizeof i2s && t->n_elements == 512);
    CU_ASSERT(memcmp(t->data, i2s, sizeof i2s) == 0);
    CU_ASSERT_PTR_NULL(b158_gguf_find_tensor(g, "nope"));
    CU_ASSERT_PTR_EQUAL(b158_gguf_tensor_at(g, 1), b158_gguf_find_tensor(g, "tq"));
    CU_ASSERT_PTR_NULL(b158_gguf_tensor_at(g, 3));
    b158_gguf_close(g);

    /* the same bytes through a file */
    char path[] = "/tmp/b158-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL((size_t)write(fd, data, size), size);
    close(fd);
    CU_ASSERT_EQUAL(b158_gguf_open(path, &g), B158_OK);
    CU_ASSERT_STRING_EQUAL(b158_gguf_path(g), path);
    CU_ASSERT_EQUAL(b158_gguf_n_tensors(g), 3);
    b158_gguf_close(g);
    unlink(path);
    free(data);
}

static b158_status fill_ramp(void *user, size_t index, void *dst, size_t n)
{
    (void)user;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)dst)[i] = (uint8_t)(index * 31 + i);
    return B158_OK;
}

static void test_write_file(void)
{
    b158_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w), B158_OK);
    b158_gguf_writer_set_fill(w, fill_ramp, NULL);
    uint64_t ne[2] = {256, 3};
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "x", B158_TT_TQ1_0, 2, ne, NULL), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_tensor(w, "y", B158_TT_F16, 1, ne, NULL), B158_OK);
    char path[] = "/tmp/b158-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_EQUAL(b158_gguf_writer_write_file(w, path), B158_OK);
    b158_gguf_writer_free(w);
    b158_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_open(path, &g), B158_OK);
    const b158_gguf_tensor *t = b158_gguf_find_tensor(g, "y");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->n_bytes, 512);
    CU_ASSERT_EQUAL(((const uint8_t *)t->data)[5], (uint8_t)(31 + 5));
    t = b158_gguf_find_tensor(g, "x");
    CU_ASSERT_EQUAL(t->n_bytes, 3 * B158_TQ1_0_BYTES);
    b158_gguf_close(g);
    unlink(path);
    CU_ASSERT_EQUAL(b158_gguf_writer_write_file(NULL, path), B158_ERR_INVALID_ARG);
}

/* ---- hostile files ---------------------------------------------------------------------- */

static void test_truncated(void)
{
    buf b = {0};
    valid_file(&b);
    CU_ASSERT_EQUAL_FATAL(open_buf(&b, b.n), B158_OK);
    /* every proper prefix lacks part of the header, infos or data */
    int bad = 0;
    for (size_t len = 0; len < b.n; len++) {
        b158_status st = open_buf(&b, len);
        if (st != B158_ERR_FORMAT || strlen(b158_last_error()) < 10) {
            fprintf(stderr, "\n  truncation at %zu: %s %s\n", len, b158_status_str(st),
                    b158_last_error());
            bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(b.p);

    /* a writer file with metadata of every kind, truncated everywhere */
    b158_gguf_writer *w = NULL;
    b158_gguf_writer_create(&w);
    const char *strs[] = {"a", "bc", ""};
    const uint16_t u16s[] = {1, 2};
    b158_gguf_add_arr_str(w, "s", strs, NULL, 3);
    b158_gguf_add_arr(w, "n", B158_GGUF_U16, u16s, 2);
    b158_gguf_add_str(w, "k", "value");
    b158_gguf_add_f64(w, "d", 2.0);
    b158_gguf_add_bool(w, "b", 0);
    uint64_t ne[1] = {8};
    float data[8] = {0};
    b158_gguf_add_tensor(w, "t", B158_TT_F32, 1, ne, data);
    void *mem;
    size_t size;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_write_mem(w, &mem, &size), B158_OK);
    b158_gguf_writer_free(w);
    buf m = {mem, size, size};
    CU_ASSERT_EQUAL(open_buf(&m, size), B158_OK);
    /* the last tensor ends 32 bytes into the data section; bytes after it are padding */
    size_t end = size; /* 8 floats = 32 bytes, already aligned: no trailing padding */
    for (size_t len = 0; len < end; len++)
        if (open_buf(&m, len) == B158_OK)
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
    free(mem);
}

static void test_counts(void)
{
    buf b = {0};
    b_header(&b, 3, 1ull << 63, 0);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "cannot fit");
    b.n = 0;
    b_header(&b, 3, 0, 1ull << 63);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "cannot fit");
    b.n = 0;
    b_header(&b, 3, 0xffffffffffffffffull, 0xffffffffffffffffull);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "cannot fit");

    /* key length 2^63 */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_u64(&b, 1ull << 63);
    b_zeros(&b, 32);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "key length");
    /* string value length 2^63 and 2^64-1 */
    for (int k = 0; k < 2; k++) {
        b.n = 0;
        b_header(&b, 3, 0, 1);
        b_str(&b, "general.name");
        b_u32(&b, B158_GGUF_STRING);
        b_u64(&b, k ? 0xffffffffffffffffull : 1ull << 63);
        b_zeros(&b, 32);
        EXPECT_REJECT(&b, B158_ERR_FORMAT, "general.name");
    }
    /* numeric array count whose byte size overflows 64 bits */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, B158_GGUF_ARRAY);
    b_u32(&b, B158_GGUF_U64);
    b_u64(&b, 1ull << 62);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "array of");
    /* string array count 2^63 */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, B158_GGUF_ARRAY);
    b_u32(&b, B158_GGUF_STRING);
    b_u64(&b, 1ull << 63);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "string array count");
    /* one string of a string array too long */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, B158_GGUF_ARRAY);
    b_u32(&b, B158_GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ok");
    b_u64(&b, 1000);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "exceeds");
    /* tensor name length 2^63 */
    b.n = 0;
    b_header(&b, 3, 1, 0);
    b_u64(&b, 1ull << 63);
    b_zeros(&b, 64);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "name length");
    free(b.p);
}

static void test_value_types(void)
{
    buf b = {0};
    uint32_t bad_types[] = {13, 100, 0xffffffffu};
    for (size_t i = 0; i < 3; i++) {
        b.n = 0;
        b_header(&b, 3, 0, 1);
        b_str(&b, "weird");
        b_u32(&b, bad_types[i]);
        b_zeros(&b, 32);
        EXPECT_REJECT(&b, B158_ERR_FORMAT, "unknown value type");
    }
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, B158_GGUF_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 1);
    b_zeros(&b, 32);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "unknown array element type");
    /* arrays of arrays */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "nested");
    b_u32(&b, B158_GGUF_ARRAY);
    b_u32(&b, B158_GGUF_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, B158_GGUF_U8);
    b_u64(&b, 1);
    b_zeros(&b, 32);
    EXPECT_REJECT(&b, B158_ERR_UNSUPPORTED, "arrays of arrays");
    /* bool that is not 0/1 */
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "flag");
    b_u32(&b, B158_GGUF_BOOL);
    b_put(&b, "\x07", 1);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "not 0 or 1");
    /* duplicate keys */
    b.n = 0;
    b_header(&b, 3, 0, 2);
    b_kv_u32(&b, "k", 1);
    b_kv_u32(&b, "k", 2);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "duplicate metadata key 'k'");
    /* magic and versions */
    b.n = 0;
    b_put(&b, "GGML", 4);
    b_zeros(&b, 20);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "not a GGUF file");
    b.n = 0;
    b_header(&b, 1, 0, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "version 1");
    b.n = 0;
    b_header(&b, 4, 0, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "unknown GGUF version 4");
    b.n = 0;
    b_header(&b, 0x03000000u, 0, 0);
    EXPECT_REJECT(&b, B158_ERR_UNSUPPORTED, "big-endian");
    b.n = 0;
    b_header(&b, 2, 0, 0); /* v2 is accepted */
    CU_ASSERT_EQUAL(open_buf(&b, b.n), B158_OK);
    free(b.p);
}

/* A file with one tensor described by the arguments and 256 bytes of data. */
static void one_tensor(buf *b, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
    b->n = 0;
    b_header(b, 3, 1, 0);
    b_tensor(b, "blk.0.attn_q.weight", n_dims, ne, type, off);
    b_pad(b, 32);
    b_zeros(b, 256);
}

static void test_tensors(void)
{
    buf b = {0};
    uint64_t ne[5] = {8, 1, 1, 1, 1};
    one_tensor(&b, 1, ne, B158_TT_F32, 0);
    CU_ASSERT_EQUAL(open_buf(&b, b.n), B158_OK);

    uint32_t bad_types[] = {4, 5, 16, 29, 31, 37, 38, 39, 1000};
    for (size_t i = 0; i < sizeof bad_types / sizeof *bad_types; i++) {
        one_tensor(&b, 1, ne, bad_types[i], 0);
        EXPECT_REJECT(&b, B158_ERR_UNSUPPORTED, "blk.0.attn_q.weight");
        char id[32];
        snprintf(id, sizeof id, "type id %u", bad_types[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), id));
    }
    one_tensor(&b, 0, ne, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "n_dims 0");
    one_tensor(&b, 5, ne, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "n_dims 5");
    uint64_t zero[2] = {8, 0};
    one_tensor(&b, 2, zero, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "ne[1] = 0");
    uint64_t huge[4] = {1ull << 32, 1ull << 32, 1, 1};
    one_tensor(&b, 2, huge, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "overflows");
    uint64_t big[1] = {1ull << 63};
    one_tensor(&b, 1, big, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "not in 1..2^63-1");
    uint64_t biggish[2] = {1ull << 40, 1ull << 20};
    one_tensor(&b, 2, biggish, B158_TT_F32, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "past the end");
    uint64_t odd[1] = {100};
    one_tensor(&b, 1, odd, B158_TT_TQ2_0, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "multiple of the TQ2_0 block size 256");
    one_tensor(&b, 1, odd, B158_TT_Q8_0, 0);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "multiple of the Q8_0 block size 32");
    /* offsets: misaligned, past the end, overflowing */
    one_tensor(&b, 1, ne, B158_TT_F32, 4);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "not a multiple of the alignment 32");
    one_tensor(&b, 1, ne, B158_TT_F32, 256);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "past the end");
    one_tensor(&b, 1, ne, B158_TT_F32, 0xffffffffffffffe0ull);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "past the end");
    uint64_t ne64[1] = {64}; /* 256 bytes at offset 32: one past */
    one_tensor(&b, 1, ne64, B158_TT_F32, 32);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "past the end");

    /* overlapping and duplicate tensors */
    b.n = 0;
    b_header(&b, 3, 2, 0);
    uint64_t ne16[1] = {16};
    b_tensor(&b, "x", 1, ne16, B158_TT_F32, 0);
    b_tensor(&b, "y", 1, ne16, B158_TT_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "overlap");
    b.n = 0;
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "x", 1, ne16, B158_TT_F32, 0);
    b_tensor(&b, "x", 1, ne16, B158_TT_F32, 64);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "duplicate tensor name 'x'");
    free(b.p);
}

static void test_alignment(void)
{
    buf b = {0};
    uint32_t bad[] = {0, 3, 48, 0xffffffffu};
    uint64_t ne[1] = {8};
    for (size_t i = 0; i < 4; i++) {
        b.n = 0;
        b_header(&b, 3, 1, 1);
        b_kv_u32(&b, "general.alignment", bad[i]);
        b_tensor(&b, "t", 1, ne, B158_TT_F32, 0);
        b_pad(&b, 32);
        b_zeros(&b, 64);
        EXPECT_REJECT(&b, B158_ERR_FORMAT, "general.alignment");
    }
    b.n = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, B158_GGUF_U64);
    b_u64(&b, 32);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "must be a u32");
    /* alignment 16: offset 16 is fine, and the data section starts on a 16-byte boundary */
    b.n = 0;
    b_header(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 16);
    b_tensor(&b, "t", 1, ne, B158_TT_F32, 16);
    b_pad(&b, 16);
    b_zeros(&b, 64);
    CU_ASSERT_EQUAL(open_buf(&b, b.n), B158_OK);
    /* data section missing its padding */
    b.n = 0;
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, ne, B158_TT_F32, 0);
    if (b.n % 32 == 0)
        b_put(&b, "", 1);
    EXPECT_REJECT(&b, B158_ERR_FORMAT, "truncated");
    free(b.p);
}

static void test_open_errors(void)
{
    b158_gguf *g = (b158_gguf *)1;
    CU_ASSERT_EQUAL(b158_gguf_open("/nonexistent/x.gguf", &g), B158_ERR_IO);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "/nonexistent/x.gguf"));
    CU_ASSERT_EQUAL(b158_gguf_open("/tmp", &g), B158_ERR_IO);
    CU_ASSERT_EQUAL(b158_gguf_open(NULL, &g), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_gguf_open_memory(NULL, 0, &g), B158_ERR_FORMAT);
    b158_gguf_close(NULL);

    char path[] = "/tmp/b158-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_EQUAL(b158_gguf_open(path, &g), B158_ERR_FORMAT); /* empty file */
    unlink(path);
}

/* Random byte flips of a valid file: anything may be reported, nothing may crash. */
static void test_fuzz(void)
{
    buf b = {0};
    valid_file(&b);
    uint8_t *orig = malloc(b.n);
    memcpy(orig, b.p, b.n);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(b.p, orig, b.n);
        int flips = b158_test_randint(1, 4);
        for (int k = 0; k < flips; k++)
            b.p[b158_test_randint(0, (int)b.n - 1)] = (uint8_t)b158_test_rand();
        b158_status st = open_buf(&b, b.n);
        CU_ASSERT(st == B158_OK || st == B158_ERR_FORMAT || st == B158_ERR_UNSUPPORTED);
    }
    free(orig);
    free(b.p);
}

/* ---- real files ------------------------------------------------------------------------- */

static void test_real_vocabs(void)
{
    static const char *files[] = {"tokenizers/ggml-vocab-llama-spm.gguf",
                                  "tokenizers/ggml-vocab-gpt-2.gguf"};
    static const char *models[] = {"llama", "gpt2"};
    for (int i = 0; i < 2; i++) {
        const char *path = b158_test_fetched(files[i]);
        b158_gguf *g = NULL;
        b158_status st = b158_gguf_open(path, &g);
        if (st != B158_OK)
            fprintf(stderr, "\n%s\n", b158_last_error());
        CU_ASSERT_EQUAL_FATAL(st, B158_OK);
        char model[32];
        CU_ASSERT_EQUAL(b158_gguf_copy_str(g, "tokenizer.ggml.model", model, sizeof model),
                        B158_OK);
        CU_ASSERT_STRING_EQUAL(model, models[i]);
        enum b158_gguf_vtype vt;
        uint64_t n;
        CU_ASSERT_EQUAL(b158_gguf_get_arr_info(g, "tokenizer.ggml.tokens", &vt, &n), B158_OK);
        CU_ASSERT(vt == B158_GGUF_STRING && n > 1000);
        b158_gguf_str *tab = malloc(n * sizeof *tab);
        CU_ASSERT_EQUAL(b158_gguf_get_arr_strs(g, "tokenizer.ggml.tokens", tab, n), B158_OK);
        free(tab);
        b158_gguf_close(g);
    }
}

static void add_suites(void)
{
    static const b158_test_case rw[] = {{"roundtrip", test_roundtrip},
                                        {"write_file", test_write_file},
                                        {"real_vocabs", test_real_vocabs},
                                        {NULL, NULL}};
    static const b158_test_case hostile[] = {{"truncated", test_truncated},
                                             {"counts", test_counts},
                                             {"value_types", test_value_types},
                                             {"tensors", test_tensors},
                                             {"alignment", test_alignment},
                                             {"open_errors", test_open_errors},
                                             {"fuzz", test_fuzz},
                                             {NULL, NULL}};
    b158_test_suite("readwrite", rw);
    b158_test_suite("hostile", hostile);
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
