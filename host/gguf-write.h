/* GGUF v3 writer: collect metadata and tensor infos, then stream header, infos and data out. */
#ifndef B158_HOST_GGUF_WRITE_H
#define B158_HOST_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"
#include "gguf-types.h"

/* Metadata is serialized as it is added; tensor data is only referenced (or produced by the
 * fill callback) and read when the file is written, so a writer holds little memory. Layout
 * follows llama.cpp: KV in insertion order, tensor infos in insertion order, data offsets
 * aligned to general.alignment (32 unless set), zero padding between tensors. */
typedef struct b158_gguf_writer b158_gguf_writer;

b158_status b158_gguf_writer_create(b158_gguf_writer **out);
void b158_gguf_writer_free(b158_gguf_writer *w);

/* Sets general.alignment (a power of two) and stores it as a u32 KV. */
b158_status b158_gguf_writer_set_alignment(b158_gguf_writer *w, uint32_t alignment);

/* Scalar KVs. Duplicate keys are rejected with B158_ERR_INVALID_ARG. */
b158_status b158_gguf_add_u8(b158_gguf_writer *w, const char *key, uint8_t v);
b158_status b158_gguf_add_i8(b158_gguf_writer *w, const char *key, int8_t v);
b158_status b158_gguf_add_u16(b158_gguf_writer *w, const char *key, uint16_t v);
b158_status b158_gguf_add_i16(b158_gguf_writer *w, const char *key, int16_t v);
b158_status b158_gguf_add_u32(b158_gguf_writer *w, const char *key, uint32_t v);
b158_status b158_gguf_add_i32(b158_gguf_writer *w, const char *key, int32_t v);
b158_status b158_gguf_add_u64(b158_gguf_writer *w, const char *key, uint64_t v);
b158_status b158_gguf_add_i64(b158_gguf_writer *w, const char *key, int64_t v);
b158_status b158_gguf_add_f32(b158_gguf_writer *w, const char *key, float v);
b158_status b158_gguf_add_f64(b158_gguf_writer *w, const char *key, double v);
b158_status b158_gguf_add_bool(b158_gguf_writer *w, const char *key, int v);
b158_status b158_gguf_add_str(b158_gguf_writer *w, const char *key, const char *v);
b158_status b158_gguf_add_strn(b158_gguf_writer *w, const char *key, const char *v, size_t len);

/* Array of n numeric or bool elements of type elem, stored little-endian as in memory. */
b158_status b158_gguf_add_arr(b158_gguf_writer *w, const char *key, enum b158_gguf_vtype elem,
                              const void *data, size_t n);
/* Array of n strings; lens may be NULL for NUL-terminated strings. */
b158_status b158_gguf_add_arr_str(b158_gguf_writer *w, const char *key, const char *const *strs,
                                  const size_t *lens, size_t n);

/* Adds a tensor info. data (n_bytes as the type dictates, see b158_gguf_tensor_nbytes) must
 * stay valid until the file is written; NULL means "ask the fill callback". */
b158_status b158_gguf_add_tensor(b158_gguf_writer *w, const char *name, uint32_t type,
                                 uint32_t n_dims, const uint64_t *ne, const void *data);

/* Produces the data of tensor index (in add order) into dst (n_bytes, zeroed) at write time. */
typedef b158_status (*b158_gguf_fill_fn)(void *user, size_t index, void *dst, size_t n_bytes);
void b158_gguf_writer_set_fill(b158_gguf_writer *w, b158_gguf_fill_fn fn, void *user);

/* Writes the whole file (via path.tmp, renamed on success). */
b158_status b158_gguf_writer_write_file(b158_gguf_writer *w, const char *path);
/* Writes into a malloc'd buffer the caller frees. */
b158_status b158_gguf_writer_write_mem(b158_gguf_writer *w, void **data, size_t *size);

#endif
