/* Weight codecs of the GGUF loader: ternary TQ1_0 / TQ2_0 / I2_S / float tensors and F16 tables. */
#include "gguf.h"
#include "quants.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "gguf-types.h"
#include "half.h"

/* Explicit little-endian access: GGUF is little-endian and tensor data need not be aligned. */
static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static int f16_is_finite(uint16_t h)
{
    return (h & 0x7c00u) != 0x7c00u;
}

const char *b158_tensor_type_name(uint32_t type)
{
    const char *name = b158_gguf_type_name(type);
    return name ? name : "unknown";
}

/* n = n_rows * k with the checks every entry point needs. */
static b158_status check_shape(int64_t n_rows, int64_t k, size_t *n)
{
    if (n_rows <= 0 || k <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "tensor shape %lld x %lld: both dimensions must be positive",
                         (long long)n_rows, (long long)k);
    if (n_rows > INT64_MAX / k || (uint64_t)(n_rows * k) > SIZE_MAX / 4)
        return B158_FAIL(B158_ERR_FORMAT,
                         "tensor shape %lld x %lld: element count overflows this host's sizes",
                         (long long)n_rows, (long long)k);
    *n = (size_t)(n_rows * k);
    return B158_OK;
}

b158_status b158_tensor_nbytes(uint32_t type, int64_t n_rows, int64_t k, size_t *out)
{
    size_t n = 0;
    B158_TRY(check_shape(n_rows, k, &n));
    const char *name = b158_tensor_type_name(type);
    switch (type) {
    case B158_TT_F32: /* check_shape bounds n by SIZE_MAX / 4 */
        *out = n * 4;
        return B158_OK;
    case B158_TT_F16:
    case B158_TT_BF16:
        *out = n * 2;
        return B158_OK;
    case B158_TYPE_Q8_0:
    case B158_TT_TQ1_0:
    case B158_TT_TQ2_0: {
        int64_t qk = type == B158_TYPE_Q8_0 ? B158_QK8_0 : B158_QK_K;
        size_t bs = type == B158_TYPE_Q8_0  ? B158_Q8_0_BYTES
                    : type == B158_TT_TQ1_0 ? B158_TQ1_0_BYTES
                                            : B158_TQ2_0_BYTES;
        /* Blocks never straddle rows in ggml: each row is a whole number of blocks. */
        if (k % qk != 0)
            return B158_FAIL(B158_ERR_FORMAT,
                             "%s tensor of %lld x %lld: ne[0] = %lld is not a multiple of the "
                             "%s block of %lld elements; the file is malformed",
                             name, (long long)n_rows, (long long)k, (long long)k, name,
                             (long long)qk);
        *out = n / (size_t)qk * bs;
        return B158_OK;
    }
    case B158_TT_I2_S:
        /* bitnet.cpp packs only whole 128-element blocks of the flattened tensor and drops a
         * remainder, so another count cannot come from a valid file. */
        if (n % B158_I2S_BLOCK != 0)
            return B158_FAIL(B158_ERR_FORMAT,
                             "I2_S tensor of %lld x %lld: %zu elements is not a multiple of the "
                             "128-element I2_S block; the file is malformed",
                             (long long)n_rows, (long long)k, n);
        *out = n / 4 + 32;
        return B158_OK;
    default:
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "tensor type %u (%s) is not supported here; b158-cl reads F32, F16, "
                         "BF16, Q8_0 (embedding only), TQ1_0, TQ2_0 and I2_S",
                         type, name);
    }
}

/* Shape, size and pointer checks shared by the decoders. */
static b158_status check_input(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                               int64_t k, const void *out, size_t *n)
{
    size_t need = 0;
    B158_TRY(b158_tensor_nbytes(type, n_rows, k, &need));
    *n = (size_t)(n_rows * k);
    if (!data || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s tensor: NULL data or output pointer",
                         b158_tensor_type_name(type));
    if (data_size != need)
        return B158_FAIL(B158_ERR_FORMAT,
                         "%s tensor of %lld x %lld has %zu bytes of data but needs exactly %zu; "
                         "the file is truncated or its tensor info is wrong",
                         b158_tensor_type_name(type), (long long)n_rows, (long long)k, data_size,
                         need);
    return B158_OK;
}

/* ---- decoding ------------------------------------------------------------------------- */

/* Rows marked with a negative scale have no nonzero weight yet: they get the common scale (1 for
 * an all-zero tensor) so that any scale may be divided by. */
static void finish_info(const int8_t *w, size_t n, float *scales, int64_t n_rows, int ternarized,
                        b158_ternary_info *info)
{
    float common = -1.0f;
    int uniform = 1;
    for (int64_t r = 0; r < n_rows; r++) {
        if (scales[r] < 0)
            continue;
        if (common < 0)
            common = scales[r];
        else if (scales[r] != common)
            uniform = 0;
    }
    float fill = uniform && common > 0 ? common : 1.0f;
    for (int64_t r = 0; r < n_rows; r++)
        if (scales[r] < 0)
            scales[r] = fill;
    if (!info)
        return;
    int64_t nz = 0;
    for (size_t i = 0; i < n; i++)
        nz += w[i] != 0;
    info->ternarized = ternarized;
    info->uniform_scale = uniform;
    info->scale = uniform ? (common > 0 ? common : 1.0f) : 0.0f;
    info->nonzero = nz;
}

/* TQ2_0 codes of one block into o[256]; returns the element index of a code 3, or -1. */
static int unpack_tq2_0(const uint8_t *qs, int8_t *o)
{
    for (int g = 0; g < 2; g++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++) {
                int c = (qs[g * 32 + m] >> (2 * l)) & 3;
                if (c == 3)
                    return g * 128 + l * 32 + m;
                o[g * 128 + l * 32 + m] = (int8_t)(c - 1);
            }
    return -1;
}

/* trits[b][n]: trit n (most significant first) of a TQ1_0 byte b, as -1/0/+1. The byte is a
 * fixed-point fraction of 3^5, so multiplying by 3^n (mod 256) shifts trit n to the top. */
static void tq1_0_table(int8_t trits[256][5])
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int b = 0; b < 256; b++)
        for (int n = 0; n < 5; n++) {
            uint8_t v = (uint8_t)(b * pow3[n]);
            trits[b][n] = (int8_t)(((v * 3) >> 8) - 1);
        }
}

static void unpack_tq1_0(const uint8_t *blk, const int8_t trits[256][5], int8_t *o)
{
    const uint8_t *qs = blk, *qh = blk + 48;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            o[n * 32 + m] = trits[qs[m]][n];
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            o[160 + n * 16 + m] = trits[qs[32 + m]][n];
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            o[240 + n * 4 + j] = trits[qh[j]][n];
}

static b158_status decode_tq(uint32_t type, const uint8_t *data, int64_t n_rows, int64_t k,
                             int8_t *w, float *scales)
{
    const char *name = b158_tensor_type_name(type);
    const size_t bs = type == B158_TT_TQ1_0 ? B158_TQ1_0_BYTES : B158_TQ2_0_BYTES;
    const int64_t nb = k / B158_QK_K;
    int8_t trits[256][5];
    if (type == B158_TT_TQ1_0)
        tq1_0_table(trits);
    for (int64_t r = 0; r < n_rows; r++) {
        uint16_t row_d = 0; /* |d| bits of the first block that carries weights */
        int64_t row_b = -1;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = data + (size_t)(r * nb + b) * bs;
            int8_t *o = w + (size_t)r * (size_t)k + (size_t)b * B158_QK_K;
            uint16_t d = rd16(blk + bs - 2);
            if (!f16_is_finite(d))
                return B158_FAIL(B158_ERR_FORMAT,
                                 "%s tensor: block %lld of row %lld has a non-finite scale "
                                 "(fp16 0x%04x); the file is corrupt",
                                 name, (long long)b, (long long)r, d);
            if (type == B158_TT_TQ1_0) {
                unpack_tq1_0(blk, trits, o);
            } else {
                int bad = unpack_tq2_0(blk, o);
                if (bad >= 0)
                    return B158_FAIL(B158_ERR_FORMAT,
                                     "TQ2_0 tensor: element %d of block %lld of row %lld has "
                                     "the unused code 3; the file is corrupt or not ternary",
                                     bad, (long long)b, (long long)r);
            }
            int any = 0;
            for (int i = 0; i < B158_QK_K; i++)
                any |= o[i];
            if (!any)
                continue;
            if ((d & 0x7fffu) == 0) { /* d = 0: the block's weights are all zero */
                memset(o, 0, B158_QK_K);
                continue;
            }
            if (d & 0x8000u)
                for (int i = 0; i < B158_QK_K; i++)
                    o[i] = (int8_t)-o[i];
            if (row_b < 0) {
                row_d = d & 0x7fffu;
                row_b = b;
            } else if ((d & 0x7fffu) != row_d) {
                return B158_FAIL(B158_ERR_UNSUPPORTED,
                                 "%s tensor: row %lld has different block scales (%g in block "
                                 "%lld, %g in block %lld); b158-cl keeps one scale per row and "
                                 "needs BitNet-style tensors whose blocks share it",
                                 name, (long long)r, b158_f16_to_f32(row_d), (long long)row_b,
                                 b158_f16_to_f32(d & 0x7fffu), (long long)b);
            }
        }
        scales[r] = row_b < 0 ? -1.0f : b158_f16_to_f32(row_d);
    }
    return B158_OK;
}

static b158_status decode_i2_s(const uint8_t *data, size_t n, int64_t n_rows, int8_t *w,
                               float *scales)
{
    float s = bits_f32(rd32(data + n / 4));
    if (!isfinite(s))
        return B158_FAIL(B158_ERR_FORMAT,
                         "I2_S tensor: the tensor scale is not finite; the file is corrupt");
    for (size_t i = 0; i < n / B158_I2S_BLOCK; i++) {
        const uint8_t *blk = data + i * 32;
        int8_t *o = w + i * B158_I2S_BLOCK;
        for (int g = 0; g < 4; g++)
            for (int p = 0; p < 32; p++) {
                int c = (blk[p] >> (6 - 2 * g)) & 3;
                if (c == 3)
                    return B158_FAIL(B158_ERR_FORMAT,
                                     "I2_S tensor: element %zu has the unused code 3; the file "
                                     "is corrupt or uses another I2_S layout",
                                     i * B158_I2S_BLOCK + (size_t)(g * 32 + p));
                o[g * 32 + p] = (int8_t)(c - 1);
            }
    }
    /* A zero or negative scale is still an exact description of the weights. */
    if (s == 0)
        memset(w, 0, n);
    else if (s < 0)
        for (size_t i = 0; i < n; i++)
            w[i] = (int8_t)-w[i];
    for (int64_t r = 0; r < n_rows; r++)
        scales[r] = s == 0 ? -1.0f : fabsf(s);
    return B158_OK;
}

/* cnt floats of an F32 / F16 / BF16 / Q8_0 tensor from element i0 (Q8_0: i0 and cnt multiples
 * of 32). */
static void to_f32_chunk(uint32_t type, const uint8_t *data, size_t i0, size_t cnt, float *dst)
{
    switch (type) {
    case B158_TT_F32:
        for (size_t i = 0; i < cnt; i++)
            dst[i] = bits_f32(rd32(data + (i0 + i) * 4));
        break;
    case B158_TT_F16:
        for (size_t i = 0; i < cnt; i++)
            dst[i] = b158_f16_to_f32(rd16(data + (i0 + i) * 2));
        break;
    case B158_TT_BF16:
        for (size_t i = 0; i < cnt; i++)
            dst[i] = b158_bf16_to_f32(rd16(data + (i0 + i) * 2));
        break;
    default: /* Q8_0 */
        for (size_t i = 0; i < cnt; i += B158_QK8_0) {
            const uint8_t *blk = data + (i0 + i) / B158_QK8_0 * B158_Q8_0_BYTES;
            float d = b158_f16_to_f32(rd16(blk));
            for (int j = 0; j < B158_QK8_0; j++)
                dst[i + (size_t)j] = d * (float)(int8_t)blk[2 + j];
        }
        break;
    }
}

#define B158_CHUNK 4096 /* floats converted at a time: large tensors need no float copy */

static b158_status decode_float(uint32_t type, const uint8_t *data, size_t n, int64_t n_rows,
                                int8_t *w, float *scales, int *ternarized)
{
    float buf[B158_CHUNK];
    float amax = 0, amin = INFINITY; /* over the nonzero magnitudes */
    double sum = 0;
    /* Pass 1: is every value 0 or +-s for one s? And mean|W| in case it is not. Branch-free,
     * as zeros and signs are random in ternary tensors. */
    for (size_t i0 = 0; i0 < n; i0 += B158_CHUNK) {
        size_t cnt = n - i0 < B158_CHUNK ? n - i0 : B158_CHUNK;
        int bad = 0;
        to_f32_chunk(type, data, i0, cnt, buf);
        for (size_t i = 0; i < cnt; i++) {
            float a = fabsf(buf[i]);
            bad |= !(a <= FLT_MAX);
            sum += a;
            amax = a > amax ? a : amax;
            amin = a != 0 && a < amin ? a : amin;
        }
        for (size_t i = 0; bad && i < cnt; i++)
            if (!isfinite(buf[i]))
                return B158_FAIL(
                    B158_ERR_FORMAT, "%s weight tensor: element %zu is %s; the file is corrupt",
                    b158_tensor_type_name(type), i0 + i, isnan(buf[i]) ? "NaN" : "infinite");
    }
    const int exact = amax == 0 || amin == amax;
    const float gamma = (float)(sum / (double)n);
    /* transformers' BitNet and llama.cpp's converter: W_t = clamp(round(W * (1 / max(gamma,
     * 1e-5))), -1, 1) with torch.round's ties to even, and the weight stands for W_t / that
     * factor. (REFERENCE.md writes W / (gamma + eps); the checkpoints follow transformers.) */
    const float inv = 1.0f / fmaxf(gamma, 1e-5f);
    for (size_t i0 = 0; i0 < n; i0 += B158_CHUNK) {
        size_t cnt = n - i0 < B158_CHUNK ? n - i0 : B158_CHUNK;
        to_f32_chunk(type, data, i0, cnt, buf);
        int8_t *o = w + i0;
        if (exact) {
            for (size_t i = 0; i < cnt; i++)
                o[i] = (int8_t)((buf[i] > 0) - (buf[i] < 0));
        } else {
            /* clamp(rint(q), -1, 1) with ties to even (+-0.5 -> 0), without the call */
            for (size_t i = 0; i < cnt; i++) {
                const float q = buf[i] * inv;
                o[i] = (int8_t)((q > 0.5f) - (q < -0.5f));
            }
        }
    }
    float scale = exact ? (amax > 0 ? amax : -1.0f) : 1.0f / inv;
    for (int64_t r = 0; r < n_rows; r++)
        scales[r] = scale;
    *ternarized = !exact;
    return B158_OK;
}

b158_status b158_ternary_decode(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                                int64_t k, int8_t *w_out, float *row_scale_out,
                                b158_ternary_info *info)
{
    if (type == B158_TYPE_Q8_0)
        return B158_FAIL(B158_ERR_UNSUPPORTED,
                         "Q8_0 weight tensors are not ternary; b158-cl reads ternary weights "
                         "as TQ1_0, TQ2_0, I2_S, F32, F16 or BF16");
    size_t n = 0;
    B158_TRY(check_input(type, data, data_size, n_rows, k, w_out, &n));
    if (!row_scale_out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "ternary decode: NULL row scale output");
    int ternarized = 0;
    switch (type) {
    case B158_TT_TQ1_0:
    case B158_TT_TQ2_0:
        B158_TRY(decode_tq(type, data, n_rows, k, w_out, row_scale_out));
        break;
    case B158_TT_I2_S:
        B158_TRY(decode_i2_s(data, n, n_rows, w_out, row_scale_out));
        break;
    default: /* F32, F16, BF16: b158_tensor_nbytes rejected everything else */
        B158_TRY(decode_float(type, data, n, n_rows, w_out, row_scale_out, &ternarized));
        break;
    }
    finish_info(w_out, n, row_scale_out, n_rows, ternarized, info);
    return B158_OK;
}

/* ---- encoding ------------------------------------------------------------------------- */

size_t b158_ternary_encoded_size(uint32_t type, int64_t n_rows, int64_t k)
{
    size_t size = 0;
    if (type == B158_TYPE_Q8_0) {
        B158_FAIL(B158_ERR_UNSUPPORTED, "Q8_0 is not a ternary encoding");
        return 0;
    }
    if (b158_tensor_nbytes(type, n_rows, k, &size) != B158_OK)
        return 0;
    return size;
}

/* The ggml block scale: 0 for a block without weights, like quantize_row_tq*_0 (d = amax). */
static uint16_t tq_block_d(const int8_t *x, uint16_t row_d)
{
    for (int i = 0; i < B158_QK_K; i++)
        if (x[i])
            return row_d;
    return 0;
}

static void pack_tq2_0(const int8_t *x, uint16_t d, uint8_t *blk)
{
    memset(blk, 0, 64);
    for (int g = 0; g < 2; g++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                blk[g * 32 + m] |= (uint8_t)((x[g * 128 + l * 32 + m] + 1) << (2 * l));
    wr16(blk + 64, d);
}

/* Horner-packs trits (most significant first), then stores the fraction q / 3^5 as
 * ceil(q * 256 / 243), exactly like ggml's quantize_row_tq1_0. */
static uint8_t pack_trits(const int8_t *x, int stride, int count)
{
    unsigned q = 0;
    for (int n = 0; n < count; n++)
        q = q * 3 + (unsigned)(x[n * stride] + 1);
    for (int n = count; n < 5; n++) /* qh bytes: the empty 5th trit slot is 0 */
        q *= 3;
    return (uint8_t)((q * 256 + 242) / 243);
}

static void pack_tq1_0(const int8_t *x, uint16_t d, uint8_t *blk)
{
    for (int m = 0; m < 32; m++)
        blk[m] = pack_trits(x + m, 32, 5);
    for (int m = 0; m < 16; m++)
        blk[32 + m] = pack_trits(x + 160 + m, 16, 5);
    for (int j = 0; j < 4; j++)
        blk[48 + j] = pack_trits(x + 240 + j, 4, 4);
    wr16(blk + 52, d);
}

static b158_status check_scale(uint32_t type, float s, int64_t row)
{
    int ok = isfinite(s) && s >= 0;
    if (ok && (type == B158_TT_TQ1_0 || type == B158_TT_TQ2_0 || type == B158_TT_F16))
        ok = f16_is_finite(b158_f32_to_f16(s));
    if (ok && type == B158_TT_BF16)
        ok = isfinite(b158_bf16_to_f32(b158_f32_to_bf16(s)));
    if (!ok)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "%s encode: scale %g (row %lld) must be finite, >= 0 and representable "
                         "in the stored type",
                         b158_tensor_type_name(type), (double)s, (long long)row);
    return B158_OK;
}

b158_status b158_ternary_encode(uint32_t type, const int8_t *w, const float *scales, int64_t n_rows,
                                int64_t k, void *out, size_t out_size)
{
    if (type == B158_TYPE_Q8_0)
        return B158_FAIL(B158_ERR_UNSUPPORTED, "Q8_0 is not a ternary encoding");
    size_t need = 0;
    B158_TRY(b158_tensor_nbytes(type, n_rows, k, &need));
    const char *name = b158_tensor_type_name(type);
    size_t n = (size_t)(n_rows * k);
    if (!w || !scales || !out)
        return B158_FAIL(B158_ERR_INVALID_ARG, "%s encode: NULL weights, scales or output", name);
    if (out_size < need)
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "%s encode: output of %zu bytes is smaller than the %zu needed", name,
                         out_size, need);
    for (size_t i = 0; i < n; i++)
        if (w[i] < -1 || w[i] > 1)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "%s encode: weight %zu is %d, not in {-1, 0, +1}", name, i, w[i]);
    const int per_row = type == B158_TT_TQ1_0 || type == B158_TT_TQ2_0;
    for (int64_t r = 0; r < (per_row ? n_rows : 1); r++)
        B158_TRY(check_scale(type, scales[r], r));

    uint8_t *o = out;
    const float s = scales[0];
    switch (type) {
    case B158_TT_TQ1_0:
    case B158_TT_TQ2_0: {
        const size_t bs = type == B158_TT_TQ1_0 ? B158_TQ1_0_BYTES : B158_TQ2_0_BYTES;
        const int64_t nb = k / B158_QK_K;
        for (int64_t r = 0; r < n_rows; r++) {
            uint16_t row_d = b158_f32_to_f16(scales[r]);
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *x = w + (size_t)r * (size_t)k + (size_t)b * B158_QK_K;
                uint8_t *blk = o + (size_t)(r * nb + b) * bs;
                uint16_t d = tq_block_d(x, row_d);
                if (type == B158_TT_TQ1_0)
                    pack_tq1_0(x, d, blk);
                else
                    pack_tq2_0(x, d, blk);
            }
        }
        break;
    }
    case B158_TT_I2_S:
        memset(o, 0, need);
        for (size_t i = 0; i < n; i++) {
            size_t blk = i / B158_I2S_BLOCK, j = i % B158_I2S_BLOCK;
            o[blk * 32 + j % 32] |= (uint8_t)((w[i] + 1) << (6 - 2 * (j / 32)));
        }
        wr32(o + n / 4, f32_bits(s));
        break;
    case B158_TT_F32:
        for (size_t i = 0; i < n; i++)
            wr32(o + i * 4, f32_bits((float)w[i] * s));
        break;
    case B158_TT_F16:
        for (size_t i = 0; i < n; i++)
            wr16(o + i * 2, b158_f32_to_f16((float)w[i] * s));
        break;
    default: /* BF16 */
        for (size_t i = 0; i < n; i++)
            wr16(o + i * 2, b158_f32_to_bf16((float)w[i] * s));
        break;
    }
    return B158_OK;
}

/* ---- float tables --------------------------------------------------------------------- */

static b158_status check_float_type(uint32_t type)
{
    if (type == B158_TT_F32 || type == B158_TT_F16 || type == B158_TT_BF16 ||
        type == B158_TYPE_Q8_0)
        return B158_OK;
    return B158_FAIL(B158_ERR_UNSUPPORTED,
                     "tensor type %u (%s) cannot be read as floats here; norm and embedding "
                     "tensors must be F32, F16, BF16 or Q8_0",
                     type, b158_tensor_type_name(type));
}

b158_status b158_tensor_to_f32(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                               int64_t k, float *out)
{
    size_t n = 0;
    B158_TRY(check_float_type(type));
    B158_TRY(check_input(type, data, data_size, n_rows, k, out, &n));
    to_f32_chunk(type, data, 0, n, out);
    return B158_OK;
}

b158_status b158_tensor_to_f16(uint32_t type, const void *data, size_t data_size, int64_t n_rows,
                               int64_t k, uint16_t *out)
{
    size_t n = 0;
    B158_TRY(check_float_type(type));
    B158_TRY(check_input(type, data, data_size, n_rows, k, out, &n));
    const uint8_t *src = data;
    if (type == B158_TT_F16) {
        for (size_t i = 0; i < n; i++)
            out[i] = rd16(src + i * 2);
        return B158_OK;
    }
    /* F32 / BF16 / Q8_0 values are exact in f32, so one rounding to f16 is correct. */
    float buf[B158_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += B158_CHUNK) {
        size_t cnt = n - i0 < B158_CHUNK ? n - i0 : B158_CHUNK;
        to_f32_chunk(type, src, i0, cnt, buf);
        for (size_t i = 0; i < cnt; i++)
            out[i0 + i] = b158_f32_to_f16(buf[i]);
    }
    return B158_OK;
}
