/* GGUF reader: bounds-checked parse of header, metadata and tensor infos over an mmapped file. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

typedef struct kv_entry {
    b158_gguf_str key;
    uint32_t type;     /* enum b158_gguf_vtype */
    uint32_t arr_type; /* element type when type is ARRAY */
    uint64_t arr_n;    /* element count when type is ARRAY */
    uint64_t off;      /* file offset of the value (of the first element for arrays) */
} kv_entry;

struct b158_gguf {
    const uint8_t *base;
    size_t size;
    int mapped; /* base came from mmap and must be unmapped */
    char *path;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    kv_entry *kv;
    size_t n_kv;
    b158_gguf_tensor *tensors;
    size_t n_tensors;
    char *names; /* NUL-terminated tensor names, back to back */
    /* open-addressing hash tables of index + 1 (0 = empty), capacity a power of two */
    uint32_t *kv_hash;
    uint32_t *t_hash;
    size_t kv_hash_cap;
    size_t t_hash_cap;
};

/* ---- tensor types ----------------------------------------------------------------------- */

typedef struct type_info {
    const char *name;
    uint32_t block;
    uint32_t bytes;
} type_info;

static const type_info types[] = {
    [B158_TT_F32] = {"F32", 1, 4},
    [B158_TT_F16] = {"F16", 1, 2},
    [B158_TT_Q4_0] = {"Q4_0", 32, 18},
    [B158_TT_Q4_1] = {"Q4_1", 32, 20},
    [B158_TT_Q5_0] = {"Q5_0", 32, 22},
    [B158_TT_Q5_1] = {"Q5_1", 32, 24},
    [B158_TT_Q8_0] = {"Q8_0", 32, 34},
    [B158_TT_Q8_1] = {"Q8_1", 32, 36},
    [B158_TT_Q2_K] = {"Q2_K", 256, 84},
    [B158_TT_Q3_K] = {"Q3_K", 256, 110},
    [B158_TT_Q4_K] = {"Q4_K", 256, 144},
    [B158_TT_Q5_K] = {"Q5_K", 256, 176},
    [B158_TT_Q6_K] = {"Q6_K", 256, 210},
    [B158_TT_Q8_K] = {"Q8_K", 256, 292},
    [B158_TT_I8] = {"I8", 1, 1},
    [B158_TT_I16] = {"I16", 1, 2},
    [B158_TT_I32] = {"I32", 1, 4},
    [B158_TT_I64] = {"I64", 1, 8},
    [B158_TT_F64] = {"F64", 1, 8},
    [B158_TT_BF16] = {"BF16", 1, 2},
    [B158_TT_TQ1_0] = {"TQ1_0", B158_QK_K, B158_TQ1_0_BYTES},
    [B158_TT_TQ2_0] = {"TQ2_0", B158_QK_K, B158_TQ2_0_BYTES},
    [B158_TT_I2_S] = {"I2_S", 1, 0},
};
#define N_TYPES (sizeof types / sizeof types[0])

const char *b158_gguf_type_name(uint32_t type)
{
    return type < N_TYPES ? types[type].name : NULL;
}

uint32_t b158_gguf_type_block(uint32_t type)
{
    return type < N_TYPES && types[type].name ? types[type].block : 0;
}

uint32_t b158_gguf_type_block_bytes(uint32_t type)
{
    return type < N_TYPES && types[type].name ? types[type].bytes : 0;
}

b158_status b158_gguf_tensor_nbytes(uint32_t type, uint64_t ne0, uint64_t n_elements, uint64_t *out)
{
    const char *name = b158_gguf_type_name(type);
    if (!name)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "tensor type id %u is not supported", type);
    if (type == B158_TT_I2_S) {
        /* 2-bit codes for every element, then one f32 scale padded to 32 bytes */
        if (ne0 % 4 != 0)
            return B158_FAIL(B158_ERR_FORMAT, "I2_S needs ne[0] a multiple of 4, got %llu",
                             (unsigned long long)ne0);
        *out = n_elements / 4 + 32;
        return B158_OK;
    }
    uint32_t blk = types[type].block;
    if (ne0 % blk != 0)
        return B158_FAIL(B158_ERR_FORMAT, "%s needs ne[0] a multiple of %u, got %llu", name, blk,
                         (unsigned long long)ne0);
    uint64_t nb;
    if (__builtin_mul_overflow(n_elements / blk, (uint64_t)types[type].bytes, &nb))
        return B158_FAIL(B158_ERR_FORMAT, "%s tensor of %llu elements: size overflows", name,
                         (unsigned long long)n_elements);
    *out = nb;
    return B158_OK;
}

/* ---- value types ------------------------------------------------------------------------ */

static const char *const vtype_names[B158_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static const char *vtype_name(uint32_t t)
{
    return t < B158_GGUF_VTYPE_COUNT ? vtype_names[t] : "unknown";
}

/* ---- hashing ---------------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static size_t table_cap(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

/* ---- parsing ---------------------------------------------------------------------------- */

typedef struct reader {
    b158_gguf *g;
    uint64_t off;
} reader;

static uint64_t left(const reader *r)
{
    return r->g->size - r->off;
}

/* Fails unless n more bytes exist; what names the field for the message. */
static b158_status need(reader *r, uint64_t n, const char *what, const char *ctx)
{
    if (n > left(r))
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: truncated GGUF file: %s%s needs %llu bytes at offset %llu but "
                         "only %llu remain",
                         r->g->path, ctx, what, (unsigned long long)n, (unsigned long long)r->off,
                         (unsigned long long)left(r));
    return B158_OK;
}

static b158_status rd(reader *r, void *dst, size_t n, const char *what, const char *ctx)
{
    B158_TRY(need(r, n, what, ctx));
    memcpy(dst, r->g->base + r->off, n);
    r->off += n;
    return B158_OK;
}

static b158_status rd_u32(reader *r, uint32_t *v, const char *what, const char *ctx)
{
    return rd(r, v, 4, what, ctx);
}

static b158_status rd_u64(reader *r, uint64_t *v, const char *what, const char *ctx)
{
    return rd(r, v, 8, what, ctx);
}

static b158_status rd_str(reader *r, b158_gguf_str *s, const char *what, const char *ctx)
{
    uint64_t len;
    char lenwhat[96];
    snprintf(lenwhat, sizeof lenwhat, "%s length", what);
    B158_TRY(rd_u64(r, &len, lenwhat, ctx));
    if (len > left(r))
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: %s%s length %llu at offset %llu exceeds the %llu bytes left in "
                         "the file",
                         r->g->path, ctx, what, (unsigned long long)len,
                         (unsigned long long)(r->off - 8), (unsigned long long)left(r));
    s->ptr = (const char *)r->g->base + r->off;
    s->len = (size_t)len;
    r->off += len;
    return B158_OK;
}

/* Skips over a value of type t (not ARRAY), validating it. */
static b158_status skip_scalar_or_str(reader *r, uint32_t t, const char *ctx)
{
    if (t == B158_GGUF_STRING) {
        b158_gguf_str s;
        return rd_str(r, &s, "string value", ctx);
    }
    size_t sz = b158_gguf_vtype_size(t);
    B158_TRY(need(r, sz, "value", ctx));
    if (t == B158_GGUF_BOOL && r->g->base[r->off] > 1)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %sbool value %u at offset %llu is not 0 or 1",
                         r->g->path, ctx, r->g->base[r->off], (unsigned long long)r->off);
    r->off += sz;
    return B158_OK;
}

static b158_status parse_kv(reader *r, size_t i, kv_entry *e)
{
    char ctx[200];
    snprintf(ctx, sizeof ctx, "key #%zu: ", i);
    B158_TRY(rd_str(r, &e->key, "key", ctx));
    snprintf(ctx, sizeof ctx, "key '%.*s': ", (int)(e->key.len > 120 ? 120 : e->key.len),
             e->key.ptr);
    B158_TRY(rd_u32(r, &e->type, "value type", ctx));
    if (e->type >= B158_GGUF_VTYPE_COUNT)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %sunknown value type %u", r->g->path, ctx, e->type);
    if (e->type != B158_GGUF_ARRAY) {
        e->off = r->off;
        return skip_scalar_or_str(r, e->type, ctx);
    }
    B158_TRY(rd_u32(r, &e->arr_type, "array element type", ctx));
    B158_TRY(rd_u64(r, &e->arr_n, "array count", ctx));
    e->off = r->off;
    if (e->arr_type == B158_GGUF_ARRAY)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "%s: %sarrays of arrays are not supported",
                         r->g->path, ctx);
    if (e->arr_type >= B158_GGUF_VTYPE_COUNT)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %sunknown array element type %u", r->g->path, ctx,
                         e->arr_type);
    if (e->arr_type == B158_GGUF_STRING) {
        /* every string needs at least its 8-byte length */
        if (e->arr_n > left(r) / 8)
            return B158_FAIL(
                B158_ERR_FORMAT, "%s: %sstring array count %llu cannot fit in the %llu bytes left",
                r->g->path, ctx, (unsigned long long)e->arr_n, (unsigned long long)left(r));
        for (uint64_t k = 0; k < e->arr_n; k++)
            B158_TRY(skip_scalar_or_str(r, B158_GGUF_STRING, ctx));
        return B158_OK;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(e->arr_n, (uint64_t)b158_gguf_vtype_size(e->arr_type), &bytes) ||
        bytes > left(r))
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: %sarray of %llu %s elements exceeds the %llu bytes left in the file",
                         r->g->path, ctx, (unsigned long long)e->arr_n, vtype_name(e->arr_type),
                         (unsigned long long)left(r));
    if (e->arr_type == B158_GGUF_BOOL) {
        for (uint64_t k = 0; k < e->arr_n; k++)
            if (r->g->base[r->off + k] > 1)
                return B158_FAIL(B158_ERR_FORMAT, "%s: %sbool element %llu is not 0 or 1",
                                 r->g->path, ctx, (unsigned long long)k);
    }
    r->off += bytes;
    return B158_OK;
}

static int str_eq(b158_gguf_str a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.ptr, b, blen) == 0;
}

static int64_t kv_lookup(const b158_gguf *g, const char *key, size_t len)
{
    if (!g->kv_hash)
        return -1;
    size_t mask = g->kv_hash_cap - 1;
    for (size_t h = hash_bytes(key, len) & mask;; h = (h + 1) & mask) {
        uint32_t v = g->kv_hash[h];
        if (v == 0)
            return -1;
        if (str_eq(g->kv[v - 1].key, key, len))
            return v - 1;
    }
}

static b158_status parse_metadata(reader *r, uint64_t n_kv)
{
    b158_gguf *g = r->g;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->kv_hash_cap = table_cap(n_kv);
    g->kv_hash = calloc(g->kv_hash_cap, sizeof *g->kv_hash);
    if (!g->kv || !g->kv_hash)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "%s: out of memory for %llu metadata entries",
                         g->path, (unsigned long long)n_kv);
    for (size_t i = 0; i < n_kv; i++) {
        kv_entry *e = &g->kv[i];
        B158_TRY(parse_kv(r, i, e));
        if (kv_lookup(g, e->key.ptr, e->key.len) >= 0)
            return B158_FAIL(B158_ERR_FORMAT, "%s: duplicate metadata key '%.*s'", g->path,
                             (int)(e->key.len > 200 ? 200 : e->key.len), e->key.ptr);
        size_t mask = g->kv_hash_cap - 1;
        size_t h = hash_bytes(e->key.ptr, e->key.len) & mask;
        while (g->kv_hash[h])
            h = (h + 1) & mask;
        g->kv_hash[h] = (uint32_t)(i + 1);
        g->n_kv = i + 1;
    }
    /* alignment comes first because tensor offsets are checked against it */
    g->alignment = B158_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = kv_lookup(g, "general.alignment", strlen("general.alignment"));
    if (ai >= 0) {
        const kv_entry *e = &g->kv[ai];
        if (e->type != B158_GGUF_U32)
            return B158_FAIL(B158_ERR_FORMAT, "%s: general.alignment must be a u32, got %s",
                             g->path, vtype_name(e->type));
        uint32_t a;
        memcpy(&a, g->base + e->off, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return B158_FAIL(B158_ERR_FORMAT, "%s: general.alignment %u is not a power of two",
                             g->path, a);
        g->alignment = a;
    }
    return B158_OK;
}

static const b158_gguf_tensor *tensor_lookup(const b158_gguf *g, const char *name, size_t len)
{
    if (!g->t_hash)
        return NULL;
    size_t mask = g->t_hash_cap - 1;
    for (size_t h = hash_bytes(name, len) & mask;; h = (h + 1) & mask) {
        uint32_t v = g->t_hash[h];
        if (v == 0)
            return NULL;
        const b158_gguf_tensor *t = &g->tensors[v - 1];
        if (strlen(t->name) == len && memcmp(t->name, name, len) == 0)
            return t;
    }
}

static b158_status parse_tensor_info(reader *r, size_t i, b158_gguf_str *name_out)
{
    b158_gguf *g = r->g;
    b158_gguf_tensor *t = &g->tensors[i];
    char ctx[200];
    snprintf(ctx, sizeof ctx, "tensor #%zu: ", i);
    b158_gguf_str name;
    B158_TRY(rd_str(r, &name, "name", ctx));
    if (memchr(name.ptr, '\0', name.len))
        return B158_FAIL(B158_ERR_FORMAT, "%s: tensor #%zu: name contains a NUL byte", g->path, i);
    *name_out = name;
    snprintf(ctx, sizeof ctx, "tensor '%.*s': ", (int)(name.len > 120 ? 120 : name.len), name.ptr);
    B158_TRY(rd_u32(r, &t->n_dims, "n_dims", ctx));
    if (t->n_dims < 1 || t->n_dims > B158_GGUF_MAX_DIMS)
        return B158_FAIL(B158_ERR_FORMAT, "%s: %sn_dims %u is not in 1..%d", g->path, ctx,
                         t->n_dims, B158_GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < B158_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        B158_TRY(rd_u64(r, &t->ne[d], "ne", ctx));
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return B158_FAIL(B158_ERR_FORMAT, "%s: %sne[%u] = %llu is not in 1..2^63-1", g->path,
                             ctx, d, (unsigned long long)t->ne[d]);
        if (__builtin_mul_overflow(n, t->ne[d], &n) || n > (uint64_t)INT64_MAX)
            return B158_FAIL(B158_ERR_FORMAT, "%s: %selement count overflows 2^63", g->path, ctx);
    }
    t->n_elements = n;
    B158_TRY(rd_u32(r, &t->type, "type", ctx));
    if (!b158_gguf_type_name(t->type))
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "%s: %stensor type id %u is not supported (known: F32, F16, BF16, F64, "
                         "I8..I64, Q4_0..Q8_1, Q2_K..Q8_K, TQ1_0, TQ2_0, I2_S)",
                         g->path, ctx, t->type);
    uint32_t blk = t->type == B158_TT_I2_S ? 4 : types[t->type].block;
    if (t->ne[0] % blk != 0)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: %sne[0] = %llu is not a multiple of the %s block "
                         "size %u",
                         g->path, ctx, (unsigned long long)t->ne[0], types[t->type].name, blk);
    B158_TRY(b158_gguf_tensor_nbytes(t->type, t->ne[0], n, &t->n_bytes));
    B158_TRY(rd_u64(r, &t->offset, "offset", ctx));
    if (t->offset % g->alignment != 0)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: %sdata offset %llu is not a multiple of the alignment %u", g->path,
                         ctx, (unsigned long long)t->offset, g->alignment);
    return B158_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const b158_gguf_tensor *x = *(const b158_gguf_tensor *const *)a;
    const b158_gguf_tensor *y = *(const b158_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static b158_status parse_tensors(reader *r, uint64_t n_t)
{
    b158_gguf *g = r->g;
    g->tensors = calloc(n_t ? n_t : 1, sizeof *g->tensors);
    b158_gguf_str *names = calloc(n_t ? n_t : 1, sizeof *names);
    if (!g->tensors || !names) {
        free(names);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "%s: out of memory for %llu tensors", g->path,
                         (unsigned long long)n_t);
    }
    b158_status st = B158_OK;
    size_t name_bytes = 0;
    for (size_t i = 0; i < n_t && st == B158_OK; i++) {
        st = parse_tensor_info(r, i, &names[i]);
        name_bytes += names[i].len + 1;
    }
    g->n_tensors = (size_t)n_t;
    if (st == B158_OK) {
        g->names = malloc(name_bytes ? name_bytes : 1);
        g->t_hash_cap = table_cap(n_t);
        g->t_hash = calloc(g->t_hash_cap, sizeof *g->t_hash);
        if (!g->names || !g->t_hash)
            st = B158_FAIL(B158_ERR_HOST_MEMORY, "%s: out of memory for tensor names", g->path);
    }
    char *p = g->names;
    for (size_t i = 0; i < n_t && st == B158_OK; i++) {
        b158_gguf_tensor *t = &g->tensors[i];
        memcpy(p, names[i].ptr, names[i].len);
        p[names[i].len] = '\0';
        t->name = p;
        p += names[i].len + 1;
        if (tensor_lookup(g, t->name, names[i].len)) {
            st = B158_FAIL(B158_ERR_FORMAT, "%s: duplicate tensor name '%s'", g->path, t->name);
            break;
        }
        size_t mask = g->t_hash_cap - 1;
        size_t h = hash_bytes(t->name, names[i].len) & mask;
        while (g->t_hash[h])
            h = (h + 1) & mask;
        g->t_hash[h] = (uint32_t)(i + 1);
    }
    free(names);
    if (st != B158_OK) {
        /* names not yet copied must not be read by lookups */
        free(g->t_hash);
        g->t_hash = NULL;
        return st;
    }

    /* data section: starts at the next multiple of the alignment after the infos */
    uint64_t a = g->alignment, end = r->off;
    g->data_offset = (end + a - 1) / a * a; /* end < size, no overflow */
    if (n_t == 0)
        return B158_OK;
    if (g->data_offset > g->size)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: truncated GGUF file: the tensor data section would start at %llu "
                         "but the file has %zu bytes",
                         g->path, (unsigned long long)g->data_offset, g->size);
    uint64_t data_size = g->size - g->data_offset;
    for (size_t i = 0; i < n_t; i++) {
        b158_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return B158_FAIL(B158_ERR_FORMAT,
                             "%s: tensor '%s': data [%llu, +%llu) lies past the end of the "
                             "%llu-byte data section (file truncated?)",
                             g->path, t->name, (unsigned long long)t->offset,
                             (unsigned long long)t->n_bytes, (unsigned long long)data_size);
        t->offset += g->data_offset;
        t->data = g->base + t->offset;
    }
    const b158_gguf_tensor **order = malloc(n_t * sizeof *order);
    if (!order)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "%s: out of memory", g->path);
    for (size_t i = 0; i < n_t; i++)
        order[i] = &g->tensors[i];
    qsort(order, n_t, sizeof *order, cmp_offset);
    for (size_t i = 1; i < n_t; i++) {
        const b158_gguf_tensor *x = order[i - 1], *y = order[i];
        if (x->offset + x->n_bytes > y->offset) {
            st = B158_FAIL(B158_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the file",
                           g->path, x->name, y->name);
            break;
        }
    }
    free(order);
    return st;
}

static b158_status parse(b158_gguf *g)
{
    reader r = {g, 0};
    uint8_t magic[4];
    uint32_t version;
    uint64_t n_t, n_kv;
    B158_TRY(rd(&r, magic, 4, "magic", ""));
    if (memcmp(magic, "GGUF", 4) != 0)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                         g->path, magic[0], magic[1], magic[2], magic[3]);
    B158_TRY(rd_u32(&r, &version, "version", ""));
    if (version == 1)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: GGUF version 1 is obsolete and not supported (re-convert the "
                         "model to GGUF v3)",
                         g->path);
    if ((version & 0xffff) == 0 && (version >> 16) != 0)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "%s: big-endian GGUF files are not supported (version field %#x)", g->path,
                         version);
    if (version != 2 && version != 3)
        return B158_FAIL(B158_ERR_FORMAT, "%s: unknown GGUF version %u (2 and 3 supported)",
                         g->path, version);
    g->version = version;
    B158_TRY(rd_u64(&r, &n_t, "tensor count", ""));
    B158_TRY(rd_u64(&r, &n_kv, "metadata count", ""));
    /* smallest encodings: kv = key length + type + 1-byte value; tensor info = name length +
     * n_dims + one ne + type + offset */
    const uint64_t min_kv = 8 + 4 + 1, min_t = 8 + 4 + 8 + 4 + 8;
    if (n_kv > left(&r) / min_kv || n_t > (left(&r) - n_kv * min_kv) / min_t)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: %llu metadata entries and %llu tensors cannot fit in a %zu-byte "
                         "file",
                         g->path, (unsigned long long)n_kv, (unsigned long long)n_t, g->size);
    B158_TRY(parse_metadata(&r, n_kv));
    return parse_tensors(&r, n_t);
}

static b158_status open_common(b158_gguf *g, b158_gguf **out)
{
    b158_status st = parse(g);
    if (st != B158_OK) {
        b158_gguf_close(g);
        return st;
    }
    *out = g;
    return B158_OK;
}

b158_status b158_gguf_open_memory(const void *data, size_t size, b158_gguf **out)
{
    if (!out || (!data && size))
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_gguf_open_memory: NULL argument");
    *out = NULL;
    b158_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup("<memory>"))) {
        free(g);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "b158_gguf_open_memory: out of memory");
    }
    g->base = data;
    g->size = size;
    return open_common(g, out);
}

b158_status b158_gguf_open(const char *path, b158_gguf **out)
{
    if (!path || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return B158_FAIL(B158_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return B158_FAIL(B158_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return B158_FAIL(B158_ERR_IO, "%s: not a regular file", path);
    }
    b158_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        close(fd);
        return B158_FAIL(B158_ERR_HOST_MEMORY, "b158_gguf_open: out of memory");
    }
    g->size = (size_t)sb.st_size;
    if (g->size > 0) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            b158_gguf_close(g);
            return B158_FAIL(B158_ERR_IO, "%s: cannot map %zu bytes: %s", path, (size_t)sb.st_size,
                             strerror(e));
        }
        g->base = m;
        g->mapped = 1;
    }
    close(fd);
    return open_common(g, out);
}

void b158_gguf_close(b158_gguf *g)
{
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g->kv);
    free(g->kv_hash);
    free(g->tensors);
    free(g->t_hash);
    free(g->names);
    free(g->path);
    free(g);
}

uint32_t b158_gguf_version(const b158_gguf *g)
{
    return g->version;
}

uint32_t b158_gguf_alignment(const b158_gguf *g)
{
    return g->alignment;
}

uint64_t b158_gguf_data_offset(const b158_gguf *g)
{
    return g->data_offset;
}

const char *b158_gguf_path(const b158_gguf *g)
{
    return g->path;
}

/* ---- metadata getters ------------------------------------------------------------------- */

size_t b158_gguf_n_kv(const b158_gguf *g)
{
    return g->n_kv;
}

int64_t b158_gguf_find_key(const b158_gguf *g, const char *key)
{
    return key ? kv_lookup(g, key, strlen(key)) : -1;
}

int b158_gguf_has_key(const b158_gguf *g, const char *key)
{
    return b158_gguf_find_key(g, key) >= 0;
}

b158_gguf_str b158_gguf_key_at(const b158_gguf *g, size_t i)
{
    b158_gguf_str none = {"", 0};
    return i < g->n_kv ? g->kv[i].key : none;
}

enum b158_gguf_vtype b158_gguf_kv_type(const b158_gguf *g, size_t i)
{
    return i < g->n_kv ? (enum b158_gguf_vtype)g->kv[i].type : B158_GGUF_VTYPE_COUNT;
}

/* The entry for key, or NULL after recording "missing" for it. */
static const kv_entry *get_entry(const b158_gguf *g, const char *key, b158_status *st)
{
    int64_t i = b158_gguf_find_key(g, key);
    if (i < 0) {
        *st = B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' is missing", g->path,
                        key ? key : "(null)");
        return NULL;
    }
    return &g->kv[i];
}

static b158_status wrong_type(const b158_gguf *g, const char *key, const kv_entry *e,
                              const char *want)
{
    if (e->type == B158_GGUF_ARRAY)
        return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' is an array of %s, expected %s",
                         g->path, key, vtype_name(e->arr_type), want);
    return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' is a %s, expected %s", g->path, key,
                     vtype_name(e->type), want);
}

/* Reads an integer value as sign + magnitude to range-check it for every output type. */
static b158_status get_int(const b158_gguf *g, const char *key, int *neg, uint64_t *mag)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_entry(g, key, &st);
    if (!e)
        return st;
    const uint8_t *p = g->base + e->off;
    int64_t s = 0;
    uint64_t u = 0;
    int is_signed = 1;
    switch (e->type) {
    case B158_GGUF_U8:
        u = p[0], is_signed = 0;
        break;
    case B158_GGUF_I8:
        s = (int8_t)p[0];
        break;
    case B158_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        u = v, is_signed = 0;
    } break;
    case B158_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        s = v;
    } break;
    case B158_GGUF_U32: {
        uint32_t v;
        memcpy(&v, p, 4);
        u = v, is_signed = 0;
    } break;
    case B158_GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        s = v;
    } break;
    case B158_GGUF_U64:
        memcpy(&u, p, 8), is_signed = 0;
        break;
    case B158_GGUF_I64:
        memcpy(&s, p, 8);
        break;
    default:
        return wrong_type(g, key, e, "an integer");
    }
    if (is_signed) {
        *neg = s < 0;
        *mag = s < 0 ? (uint64_t)(-(s + 1)) + 1 : (uint64_t)s;
    } else {
        *neg = 0;
        *mag = u;
    }
    return B158_OK;
}

static b158_status out_of_range(const b158_gguf *g, const char *key, int neg, uint64_t mag,
                                const char *type)
{
    return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' = %s%llu is out of range for %s",
                     g->path, key, neg ? "-" : "", (unsigned long long)mag, type);
}

b158_status b158_gguf_get_i64(const b158_gguf *g, const char *key, int64_t *out)
{
    int neg = 0;
    uint64_t mag = 0;
    B158_TRY(get_int(g, key, &neg, &mag));
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return out_of_range(g, key, neg, mag, "int64");
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return B158_OK;
}

b158_status b158_gguf_get_u64(const b158_gguf *g, const char *key, uint64_t *out)
{
    int neg = 0;
    uint64_t mag = 0;
    B158_TRY(get_int(g, key, &neg, &mag));
    if (neg)
        return out_of_range(g, key, neg, mag, "uint64");
    *out = mag;
    return B158_OK;
}

b158_status b158_gguf_get_i32(const b158_gguf *g, const char *key, int32_t *out)
{
    int neg = 0;
    uint64_t mag = 0;
    B158_TRY(get_int(g, key, &neg, &mag));
    if (neg ? mag > (uint64_t)INT32_MAX + 1 : mag > (uint64_t)INT32_MAX)
        return out_of_range(g, key, neg, mag, "int32");
    *out = neg ? (int32_t)(0 - (int64_t)mag) : (int32_t)mag;
    return B158_OK;
}

b158_status b158_gguf_get_u32(const b158_gguf *g, const char *key, uint32_t *out)
{
    int neg = 0;
    uint64_t mag = 0;
    B158_TRY(get_int(g, key, &neg, &mag));
    if (neg || mag > UINT32_MAX)
        return out_of_range(g, key, neg, mag, "uint32");
    *out = (uint32_t)mag;
    return B158_OK;
}

b158_status b158_gguf_get_f64(const b158_gguf *g, const char *key, double *out)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_entry(g, key, &st);
    if (!e)
        return st;
    if (e->type == B158_GGUF_F32) {
        float f;
        memcpy(&f, g->base + e->off, 4);
        *out = f;
    } else if (e->type == B158_GGUF_F64) {
        memcpy(out, g->base + e->off, 8);
    } else {
        return wrong_type(g, key, e, "a float");
    }
    return B158_OK;
}

b158_status b158_gguf_get_f32(const b158_gguf *g, const char *key, float *out)
{
    double d;
    B158_TRY(b158_gguf_get_f64(g, key, &d));
    *out = (float)d;
    return B158_OK;
}

b158_status b158_gguf_get_bool(const b158_gguf *g, const char *key, int *out)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_entry(g, key, &st);
    if (!e)
        return st;
    if (e->type != B158_GGUF_BOOL)
        return wrong_type(g, key, e, "a bool");
    *out = g->base[e->off] != 0;
    return B158_OK;
}

b158_status b158_gguf_get_str(const b158_gguf *g, const char *key, b158_gguf_str *out)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_entry(g, key, &st);
    if (!e)
        return st;
    if (e->type != B158_GGUF_STRING)
        return wrong_type(g, key, e, "a string");
    uint64_t len;
    memcpy(&len, g->base + e->off, 8);
    out->ptr = (const char *)g->base + e->off + 8;
    out->len = (size_t)len;
    return B158_OK;
}

b158_status b158_gguf_copy_str(const b158_gguf *g, const char *key, char *buf, size_t cap)
{
    b158_gguf_str s = {NULL, 0};
    B158_TRY(b158_gguf_get_str(g, key, &s));
    if (!buf || s.len >= cap)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "%s: metadata key '%s' holds %zu bytes, more than the %zu-byte buffer",
                         g->path, key, s.len + 1, cap);
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    return B158_OK;
}

static const kv_entry *get_array(const b158_gguf *g, const char *key, b158_status *st)
{
    const kv_entry *e = get_entry(g, key, st);
    if (e && e->type != B158_GGUF_ARRAY) {
        *st = wrong_type(g, key, e, "an array");
        return NULL;
    }
    return e;
}

b158_status b158_gguf_get_arr_info(const b158_gguf *g, const char *key, enum b158_gguf_vtype *type,
                                   uint64_t *count)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_array(g, key, &st);
    if (!e)
        return st;
    *type = (enum b158_gguf_vtype)e->arr_type;
    *count = e->arr_n;
    return B158_OK;
}

b158_status b158_gguf_get_arr_raw(const b158_gguf *g, const char *key, enum b158_gguf_vtype *type,
                                  const void **data, uint64_t *count)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_array(g, key, &st);
    if (!e)
        return st;
    if (e->arr_type == B158_GGUF_STRING)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: metadata key '%s' is an array of strings, expected numbers", g->path,
                         key);
    *type = (enum b158_gguf_vtype)e->arr_type;
    *data = g->base + e->off;
    *count = e->arr_n;
    return B158_OK;
}

b158_status b158_gguf_get_arr_copy(const b158_gguf *g, const char *key, enum b158_gguf_vtype want,
                                   void *dst, uint64_t n)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_array(g, key, &st);
    if (!e)
        return st;
    if (e->arr_type != (uint32_t)want || !b158_gguf_vtype_size(want))
        return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' is an array of %s, expected %s",
                         g->path, key, vtype_name(e->arr_type), vtype_name(want));
    if (e->arr_n != n)
        return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' has %llu elements, expected %llu",
                         g->path, key, (unsigned long long)e->arr_n, (unsigned long long)n);
    memcpy(dst, g->base + e->off, (size_t)n * b158_gguf_vtype_size(want));
    return B158_OK;
}

b158_status b158_gguf_get_arr_strs(const b158_gguf *g, const char *key, b158_gguf_str *dst,
                                   uint64_t n)
{
    b158_status st = B158_OK;
    const kv_entry *e = get_array(g, key, &st);
    if (!e)
        return st;
    if (e->arr_type != B158_GGUF_STRING)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s: metadata key '%s' is an array of %s, expected strings", g->path, key,
                         vtype_name(e->arr_type));
    if (e->arr_n != n)
        return B158_FAIL(B158_ERR_FORMAT, "%s: metadata key '%s' has %llu elements, expected %llu",
                         g->path, key, (unsigned long long)e->arr_n, (unsigned long long)n);
    /* lengths were validated by the parser */
    uint64_t off = e->off;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        memcpy(&len, g->base + off, 8);
        dst[i].ptr = (const char *)g->base + off + 8;
        dst[i].len = (size_t)len;
        off += 8 + len;
    }
    return B158_OK;
}

/* ---- tensors ---------------------------------------------------------------------------- */

size_t b158_gguf_n_tensors(const b158_gguf *g)
{
    return g->n_tensors;
}

const b158_gguf_tensor *b158_gguf_tensor_at(const b158_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const b158_gguf_tensor *b158_gguf_find_tensor(const b158_gguf *g, const char *name)
{
    return name ? tensor_lookup(g, name, strlen(name)) : NULL;
}
