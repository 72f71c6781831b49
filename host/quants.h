/* Weight codecs of the GGUF loader: ternary TQ1_0 / TQ2_0 / I2_S / float tensors and F16 tables. */
#ifndef B158_HOST_QUANTS_H
#define B158_HOST_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

/* Q8_0 (ggml id 8): blocks of 32 elements, fp16 d then int8 q[32]; value d * q. Some GGUF files
 * store the token embedding this way. Not a ternary weight format. */
#define B158_TYPE_Q8_0 8u
#define B158_QK8_0 32
#define B158_Q8_0_BYTES 34

/* What b158_ternary_decode found out about a tensor, for the loader's log. */
typedef struct b158_ternary_info {
    int ternarized;    /* 1: float latent weights were ternarized with absmean (lossy); 0: the
                          file held ternary values, decoded losslessly */
    int uniform_scale; /* 1: every row that has a nonzero weight got the same scale */
    float scale;       /* that common scale when uniform_scale, else 0 */
    int64_t nonzero;   /* number of nonzero ternary weights */
} b158_ternary_info;

/* GGUF/ggml name of a tensor type ("TQ2_0", "I2_S", ...); "unknown" for ids it does not know.
 * Never NULL. */
const char *b158_tensor_type_name(uint32_t type);

/* Bytes a tensor of n_rows rows x k columns (k = ne[0], contiguous) of the given type occupies
 * in a GGUF file: F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 or I2_S (n/4 codes + 32 bytes holding the
 * f32 scale). Returns B158_ERR_FORMAT when k does not fit the type's block (256 for TQ types,
 * 32 for Q8_0, n_rows * k a multiple of 128 for I2_S) or the size overflows, and
 * B158_ERR_UNSUPPORTED for other types. */
b158_status b158_tensor_nbytes(uint32_t type, int64_t n_rows, int64_t k, size_t *out);

/* Decodes a ternary weight tensor into w_out (n_rows * k int8 values in {-1, 0, +1}, row-major)
 * and row_scale_out (n_rows floats) so that weight[r][c] = w_out[r * k + c] * row_scale_out[r].
 * data_size must equal b158_tensor_nbytes(type, n_rows, k). info may be NULL.
 *  - TQ2_0, TQ1_0: fp16 block scales d. Blocks whose codes are all zero, or whose d is +-0,
 *    hold only zeros and do not constrain the row scale; a negative d flips the codes. All
 *    other blocks of one row must share |d| exactly, otherwise B158_ERR_UNSUPPORTED (a per-block
 *    scale cannot be represented per row; no lossy fallback). A TQ2_0 code 3 or a non-finite d
 *    is B158_ERR_FORMAT.
 *  - I2_S: the one tensor scale for every row; a code 3 or a non-finite scale is
 *    B158_ERR_FORMAT.
 *  - F32, F16, BF16: if every value is 0 or +-s for one s > 0, decoded losslessly with scale s;
 *    otherwise (latent weights) ternarized with absmean over the whole tensor,
 *    gamma = mean|W|, W_t = clamp(roundf(W / (gamma + 1e-5f)), -1, 1), scale gamma, and
 *    info->ternarized is set. NaN or infinite values are B158_ERR_FORMAT.
 * A row without any nonzero weight gets the tensor's common scale, or 1 when the whole tensor
 * is zero, so callers may divide by any scale. Any other type is B158_ERR_UNSUPPORTED. */
b158_status b158_ternary_decode(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                                int64_t k, int8_t *w_out, float *row_scale_out,
                                b158_ternary_info *info);

/* Bytes b158_ternary_encode writes: b158_tensor_nbytes, or 0 when the type or shape is
 * invalid (the reason is recorded as the last error). */
size_t b158_ternary_encoded_size(uint32_t type, int64_t n_rows, int64_t k);

/* Encodes ternary weights w (n_rows * k values in {-1, 0, +1}) as a GGUF tensor of the given
 * type into out (out_size >= b158_ternary_encoded_size). scales holds n_rows row scales for
 * TQ1_0 / TQ2_0 (stored as fp16 in every block, like ggml) and ONE tensor scale for I2_S
 * (stored as f32), F32, F16 and BF16 (which store the values w * s rounded to the type).
 * TQ1_0 is packed exactly like ggml's quantize_row_tq1_0. Scales must be finite, >= 0 and
 * representable in the stored type. Returns B158_ERR_INVALID_ARG for a non-ternary weight or a
 * bad scale. */
b158_status b158_ternary_encode(uint32_t type, const int8_t *w, const float *scales, int64_t n_rows,
                                int64_t k, void *out, size_t out_size);

/* Converts an F32, F16, BF16 or Q8_0 tensor (norm weights, embedding) to n_rows * k floats.
 * data_size must equal b158_tensor_nbytes. */
b158_status b158_tensor_to_f32(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                               int64_t k, float *out);

/* Converts an F32, F16, BF16 or Q8_0 tensor to n_rows * k FP16 values (the device storage of
 * the embedding): F16 is copied, the others rounded to nearest even (overflow gives +-inf). */
b158_status b158_tensor_to_f16(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                               int64_t k, uint16_t *out);

#endif
