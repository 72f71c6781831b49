/* GGUF reader: mmaps a file, validates every field before use, exposes metadata and tensors. */
#ifndef B158_HOST_GGUF_H
#define B158_HOST_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"
#include "gguf-types.h"

/* An open GGUF file. Everything it hands out (strings, tensor data) points into the mapping
 * and stays valid until b158_gguf_close. */
typedef struct b158_gguf b158_gguf;

/* A string inside the file: not NUL-terminated. */
typedef struct b158_gguf_str {
    const char *ptr;
    size_t len;
} b158_gguf_str;

/* One tensor, fully validated: known type, 1..4 dims, ne[i] > 0, data inside the file,
 * aligned to general.alignment and not overlapping any other tensor. */
typedef struct b158_gguf_tensor {
    const char *name;                /* NUL-terminated copy owned by the b158_gguf */
    uint32_t type;                   /* enum b158_gguf_ttype / ggml type id */
    uint32_t n_dims;                 /* 1..4 */
    uint64_t ne[B158_GGUF_MAX_DIMS]; /* ne[0] contiguous; unused dims are 1 */
    uint64_t n_elements;
    uint64_t n_bytes; /* size of the data in the file */
    uint64_t offset;  /* from the start of the file */
    const void *data; /* into the mapping, aligned to general.alignment within the file */
} b158_gguf_tensor;

/* Maps path read-only and validates it. B158_ERR_IO when it cannot be opened or mapped,
 * B158_ERR_FORMAT when malformed, B158_ERR_UNSUPPORTED for valid features this reader
 * does not handle (unknown tensor type, nested arrays, big-endian files). */
b158_status b158_gguf_open(const char *path, b158_gguf **out);
/* Same over a caller's buffer, which must outlive the b158_gguf (it is not copied or freed). */
b158_status b158_gguf_open_memory(const void *data, size_t size, b158_gguf **out);
void b158_gguf_close(b158_gguf *g);

uint32_t b158_gguf_version(const b158_gguf *g);
uint32_t b158_gguf_alignment(const b158_gguf *g);
uint64_t b158_gguf_data_offset(const b158_gguf *g); /* start of the tensor data section */
const char *b158_gguf_path(const b158_gguf *g);     /* "<memory>" for open_memory */

/* ---- metadata --------------------------------------------------------------------------- */

size_t b158_gguf_n_kv(const b158_gguf *g);
/* Index of key or -1. Keys are compared as exact byte strings. */
int64_t b158_gguf_find_key(const b158_gguf *g, const char *key);
int b158_gguf_has_key(const b158_gguf *g, const char *key);
/* Key and value type of entry i (i < n_kv). */
b158_gguf_str b158_gguf_key_at(const b158_gguf *g, size_t i);
enum b158_gguf_vtype b158_gguf_kv_type(const b158_gguf *g, size_t i);

/* Typed getters: B158_ERR_FORMAT naming the key when it is missing, of the wrong type, or out
 * of the range of the output type. Integer getters accept any integer value type. */
b158_status b158_gguf_get_i64(const b158_gguf *g, const char *key, int64_t *out);
b158_status b158_gguf_get_u64(const b158_gguf *g, const char *key, uint64_t *out);
b158_status b158_gguf_get_i32(const b158_gguf *g, const char *key, int32_t *out);
b158_status b158_gguf_get_u32(const b158_gguf *g, const char *key, uint32_t *out);
/* f32 or f64 values. */
b158_status b158_gguf_get_f64(const b158_gguf *g, const char *key, double *out);
b158_status b158_gguf_get_f32(const b158_gguf *g, const char *key, float *out);
b158_status b158_gguf_get_bool(const b158_gguf *g, const char *key, int *out);
/* String value as pointer + length into the mapping. */
b158_status b158_gguf_get_str(const b158_gguf *g, const char *key, b158_gguf_str *out);
/* Copies a string value with a terminating NUL; B158_ERR_INVALID_ARG when cap is too small. */
b158_status b158_gguf_copy_str(const b158_gguf *g, const char *key, char *buf, size_t cap);

/* Element type and count of an array value. */
b158_status b158_gguf_get_arr_info(const b158_gguf *g, const char *key, enum b158_gguf_vtype *type,
                                   uint64_t *count);
/* Raw elements of a numeric (or bool) array: a pointer into the mapping, which may be
 * unaligned (read with memcpy), and its element type and count. */
b158_status b158_gguf_get_arr_raw(const b158_gguf *g, const char *key, enum b158_gguf_vtype *type,
                                  const void **data, uint64_t *count);
/* Copies exactly n elements of a numeric array of element type want into dst (aligned). */
b158_status b158_gguf_get_arr_copy(const b158_gguf *g, const char *key, enum b158_gguf_vtype want,
                                   void *dst, uint64_t n);
/* Fills dst[0..n) with the strings of a string array of exactly n elements (one pass). */
b158_status b158_gguf_get_arr_strs(const b158_gguf *g, const char *key, b158_gguf_str *dst,
                                   uint64_t n);

/* ---- tensors ---------------------------------------------------------------------------- */

size_t b158_gguf_n_tensors(const b158_gguf *g);
const b158_gguf_tensor *b158_gguf_tensor_at(const b158_gguf *g, size_t i); /* NULL if i >= n */
const b158_gguf_tensor *b158_gguf_find_tensor(const b158_gguf *g, const char *name);

/* ---- tensor types ----------------------------------------------------------------------- */

/* "F32", "TQ2_0", "I2_S", ... or NULL for an id this reader does not know. */
const char *b158_gguf_type_name(uint32_t type);
/* Block size in elements and bytes per block; 0 for unknown ids. I2_S reports 1 / 0: its
 * size is per tensor (b158_gguf_tensor_nbytes). */
uint32_t b158_gguf_type_block(uint32_t type);
uint32_t b158_gguf_type_block_bytes(uint32_t type);
/* Bytes of a tensor of n_elements elements whose ne[0] is ne0: B158_ERR_UNSUPPORTED for an
 * unknown type, B158_ERR_FORMAT when ne0 is not a multiple of the block size. */
b158_status b158_gguf_tensor_nbytes(uint32_t type, uint64_t ne0, uint64_t n_elements,
                                    uint64_t *out);

#endif
