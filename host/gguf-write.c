/* GGUF v3 writer: metadata serialized on add, tensor data streamed to a file or memory buffer. */
#include "gguf-write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"

typedef struct wtensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[B158_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    const void *data;
} wtensor;

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

struct b158_gguf_writer {
    bytes kv; /* serialized KV pairs */
    size_t n_kv;
    char **keys; /* for duplicate detection */
    size_t keys_cap;
    wtensor *tensors;
    size_t n_tensors, tensors_cap;
    uint32_t alignment;
    b158_gguf_fill_fn fill;
    void *fill_user;
    b158_status error; /* first failure of an add: later adds and writes return it */
};

static b158_status put(bytes *b, const void *src, size_t n)
{
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2)
                return B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: buffer too large");
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory (%zu bytes)", cap);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
    return B158_OK;
}

static b158_status put_u32(bytes *b, uint32_t v)
{
    return put(b, &v, 4);
}

static b158_status put_u64(bytes *b, uint64_t v)
{
    return put(b, &v, 8);
}

static b158_status put_str(bytes *b, const char *s, size_t len)
{
    B158_TRY(put_u64(b, len));
    return put(b, s, len);
}

b158_status b158_gguf_writer_create(b158_gguf_writer **out)
{
    if (!out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_gguf_writer_create: NULL argument");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory");
    (*out)->alignment = B158_GGUF_DEFAULT_ALIGNMENT;
    return B158_OK;
}

void b158_gguf_writer_free(b158_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* Records the outcome of an add so a failure cannot be silently skipped by the caller. */
static b158_status remember(b158_gguf_writer *w, b158_status st)
{
    if (st != B158_OK && w->error == B158_OK)
        w->error = st;
    return st;
}

/* Writes key and value type after checking the key is new. */
static b158_status begin_kv(b158_gguf_writer *w, const char *key, enum b158_gguf_vtype type)
{
    if (!w || !key)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: NULL writer or key");
    if (w->error != B158_OK)
        return w->error;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return remember(w, B158_FAIL(B158_ERR_INVALID_ARG,
                                         "gguf writer: duplicate metadata key '%s'", key));
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k)
            return remember(w, B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory"));
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return remember(w, B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory"));
    w->keys[w->n_kv++] = copy;
    b158_status st = put_str(&w->kv, key, strlen(key));
    if (st == B158_OK)
        st = put_u32(&w->kv, (uint32_t)type);
    return remember(w, st);
}

static b158_status add_scalar(b158_gguf_writer *w, const char *key, enum b158_gguf_vtype t,
                              const void *v, size_t n)
{
    B158_TRY(begin_kv(w, key, t));
    return remember(w, put(&w->kv, v, n));
}

b158_status b158_gguf_add_u8(b158_gguf_writer *w, const char *key, uint8_t v)
{
    return add_scalar(w, key, B158_GGUF_U8, &v, 1);
}

b158_status b158_gguf_add_i8(b158_gguf_writer *w, const char *key, int8_t v)
{
    return add_scalar(w, key, B158_GGUF_I8, &v, 1);
}

b158_status b158_gguf_add_u16(b158_gguf_writer *w, const char *key, uint16_t v)
{
    return add_scalar(w, key, B158_GGUF_U16, &v, 2);
}

b158_status b158_gguf_add_i16(b158_gguf_writer *w, const char *key, int16_t v)
{
    return add_scalar(w, key, B158_GGUF_I16, &v, 2);
}

b158_status b158_gguf_add_u32(b158_gguf_writer *w, const char *key, uint32_t v)
{
    return add_scalar(w, key, B158_GGUF_U32, &v, 4);
}

b158_status b158_gguf_add_i32(b158_gguf_writer *w, const char *key, int32_t v)
{
    return add_scalar(w, key, B158_GGUF_I32, &v, 4);
}

b158_status b158_gguf_add_u64(b158_gguf_writer *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, B158_GGUF_U64, &v, 8);
}

b158_status b158_gguf_add_i64(b158_gguf_writer *w, const char *key, int64_t v)
{
    return add_scalar(w, key, B158_GGUF_I64, &v, 8);
}

b158_status b158_gguf_add_f32(b158_gguf_writer *w, const char *key, float v)
{
    return add_scalar(w, key, B158_GGUF_F32, &v, 4);
}

b158_status b158_gguf_add_f64(b158_gguf_writer *w, const char *key, double v)
{
    return add_scalar(w, key, B158_GGUF_F64, &v, 8);
}

b158_status b158_gguf_add_bool(b158_gguf_writer *w, const char *key, int v)
{
    uint8_t b = v != 0;
    return add_scalar(w, key, B158_GGUF_BOOL, &b, 1);
}

b158_status b158_gguf_add_strn(b158_gguf_writer *w, const char *key, const char *v, size_t len)
{
    if (!v && len)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: NULL string for key '%s'", key);
    B158_TRY(begin_kv(w, key, B158_GGUF_STRING));
    return remember(w, put_str(&w->kv, v, len));
}

b158_status b158_gguf_add_str(b158_gguf_writer *w, const char *key, const char *v)
{
    return b158_gguf_add_strn(w, key, v, v ? strlen(v) : 0);
}

b158_status b158_gguf_add_arr(b158_gguf_writer *w, const char *key, enum b158_gguf_vtype elem,
                              const void *data, size_t n)
{
    size_t es = b158_gguf_vtype_size(elem);
    if (!es)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "gguf writer: key '%s': element type %d is not numeric (use "
                         "b158_gguf_add_arr_str for strings)",
                         key ? key : "(null)", (int)elem);
    if (!data && n)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: NULL array for key '%s'", key);
    if (n > SIZE_MAX / es)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: array '%s' too large", key);
    B158_TRY(begin_kv(w, key, B158_GGUF_ARRAY));
    b158_status st = put_u32(&w->kv, (uint32_t)elem);
    if (st == B158_OK)
        st = put_u64(&w->kv, n);
    if (st == B158_OK)
        st = put(&w->kv, data, n * es);
    return remember(w, st);
}

b158_status b158_gguf_add_arr_str(b158_gguf_writer *w, const char *key, const char *const *strs,
                                  const size_t *lens, size_t n)
{
    if (!strs && n)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: NULL array for key '%s'", key);
    B158_TRY(begin_kv(w, key, B158_GGUF_ARRAY));
    b158_status st = put_u32(&w->kv, B158_GGUF_STRING);
    if (st == B158_OK)
        st = put_u64(&w->kv, n);
    for (size_t i = 0; i < n && st == B158_OK; i++) {
        if (!strs[i] && (!lens || lens[i]))
            st = B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: '%s'[%zu] is NULL", key, i);
        else
            st = put_str(&w->kv, strs[i], lens ? lens[i] : strlen(strs[i]));
    }
    return remember(w, st);
}

b158_status b158_gguf_writer_set_alignment(b158_gguf_writer *w, uint32_t alignment)
{
    if (!w || alignment == 0 || (alignment & (alignment - 1)) != 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: alignment %u is not a power of two",
                         alignment);
    B158_TRY(b158_gguf_add_u32(w, "general.alignment", alignment));
    w->alignment = alignment;
    return B158_OK;
}

b158_status b158_gguf_add_tensor(b158_gguf_writer *w, const char *name, uint32_t type,
                                 uint32_t n_dims, const uint64_t *ne, const void *data)
{
    if (!w || !name || !ne)
        return B158_FAIL(B158_ERR_INVALID_ARG, "gguf writer: NULL writer, name or shape");
    if (w->error != B158_OK)
        return w->error;
    if (n_dims < 1 || n_dims > B158_GGUF_MAX_DIMS)
        return remember(w, B158_FAIL(B158_ERR_INVALID_ARG,
                                     "gguf writer: tensor '%s': n_dims %u is not in 1..4", name,
                                     n_dims));
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] == 0 || __builtin_mul_overflow(n, ne[d], &n) || n > (uint64_t)INT64_MAX)
            return remember(w, B158_FAIL(B158_ERR_INVALID_ARG,
                                         "gguf writer: tensor '%s': bad shape (ne[%u] = %llu)",
                                         name, d, (unsigned long long)ne[d]));
    uint64_t nbytes;
    b158_status st = b158_gguf_tensor_nbytes(type, ne[0], n, &nbytes);
    if (st != B158_OK)
        return remember(w, st);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return remember(w, B158_FAIL(B158_ERR_INVALID_ARG,
                                         "gguf writer: duplicate tensor name '%s'", name));
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 64;
        wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            return remember(w, B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory"));
        w->tensors = t;
        w->tensors_cap = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return remember(w, B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory"));
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < B158_GGUF_MAX_DIMS; d++)
        t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->n_bytes = nbytes;
    t->data = data;
    w->n_tensors++;
    return B158_OK;
}

void b158_gguf_writer_set_fill(b158_gguf_writer *w, b158_gguf_fill_fn fn, void *user)
{
    w->fill = fn;
    w->fill_user = user;
}

/* ---- output ----------------------------------------------------------------------------- */

typedef struct sink {
    FILE *f;    /* file output, or */
    bytes *mem; /* memory output */
    const char *path;
} sink;

static b158_status emit(sink *s, const void *p, size_t n)
{
    if (s->mem)
        return put(s->mem, p, n);
    if (n && fwrite(p, 1, n, s->f) != n)
        return B158_FAIL(B158_ERR_IO, "%s: write failed: %s", s->path, strerror(errno));
    return B158_OK;
}

static b158_status emit_zeros(sink *s, size_t n)
{
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        B158_TRY(emit(s, zeros, k));
        n -= k;
    }
    return B158_OK;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

static b158_status write_all(b158_gguf_writer *w, sink *s)
{
    if (w->error != B158_OK)
        return B158_FAIL(w->error, "gguf writer: an earlier add failed; nothing written");
    bytes hdr = {0};
    b158_status st = put(&hdr, "GGUF", 4);
    if (st == B158_OK)
        st = put_u32(&hdr, B158_GGUF_VERSION);
    if (st == B158_OK)
        st = put_u64(&hdr, w->n_tensors);
    if (st == B158_OK)
        st = put_u64(&hdr, w->n_kv);
    if (st == B158_OK)
        st = put(&hdr, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors && st == B158_OK; i++) {
        const wtensor *t = &w->tensors[i];
        st = put_str(&hdr, t->name, strlen(t->name));
        if (st == B158_OK)
            st = put_u32(&hdr, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && st == B158_OK; d++)
            st = put_u64(&hdr, t->ne[d]);
        if (st == B158_OK)
            st = put_u32(&hdr, t->type);
        if (st == B158_OK)
            st = put_u64(&hdr, off);
        off = align_up(off + t->n_bytes, w->alignment);
    }
    if (st == B158_OK)
        st = emit(s, hdr.p, hdr.n);
    /* llama.cpp pads to the alignment even when no tensor follows */
    if (st == B158_OK)
        st = emit_zeros(s, align_up(hdr.n, w->alignment) - hdr.n);
    free(hdr.p);
    for (size_t i = 0; i < w->n_tensors && st == B158_OK; i++) {
        const wtensor *t = &w->tensors[i];
        if (t->n_bytes > SIZE_MAX)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "tensor '%s' too large", t->name);
        if (t->data) {
            st = emit(s, t->data, (size_t)t->n_bytes);
        } else if (w->fill) {
            void *buf = calloc(1, (size_t)t->n_bytes);
            if (!buf)
                return B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: no memory for tensor '%s'",
                                 t->name);
            st = w->fill(w->fill_user, i, buf, (size_t)t->n_bytes);
            if (st == B158_OK)
                st = emit(s, buf, (size_t)t->n_bytes);
            free(buf);
        } else {
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "gguf writer: tensor '%s' has no data and no fill callback is set",
                             t->name);
        }
        if (st == B158_OK)
            st = emit_zeros(s, align_up(t->n_bytes, w->alignment) - t->n_bytes);
    }
    return st;
}

b158_status b158_gguf_writer_write_mem(b158_gguf_writer *w, void **data, size_t *size)
{
    if (!w || !data || !size)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_gguf_writer_write_mem: NULL argument");
    bytes out = {0};
    sink s = {NULL, &out, "<memory>"};
    b158_status st = write_all(w, &s);
    if (st != B158_OK) {
        free(out.p);
        return st;
    }
    *data = out.p;
    *size = out.n;
    return B158_OK;
}

b158_status b158_gguf_writer_write_file(b158_gguf_writer *w, const char *path)
{
    if (!w || !path)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_gguf_writer_write_file: NULL argument");
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "gguf writer: out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        b158_status st = B158_FAIL(B158_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    sink s = {f, NULL, tmp};
    b158_status st = write_all(w, &s);
    if (fclose(f) != 0 && st == B158_OK)
        st = B158_FAIL(B158_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (st == B158_OK && rename(tmp, path) != 0)
        st = B158_FAIL(B158_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (st != B158_OK)
        remove(tmp);
    free(tmp);
    return st;
}
