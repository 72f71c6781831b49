/* Weight codecs: round trips, hand-built layout vectors, absmean ternarization, malformed input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf-types.h"
#include "half.h"
#include "quants.h"
#include "test-common.h"

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static void check_ok(b158_status st)
{
    if (st != B158_OK)
        fprintf(stderr, "\n%s\n", b158_last_error());
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
}

/* Asserts an expected failure and that it left a message behind. */
static void check_fails(b158_status st, b158_status want, const char *what)
{
    if (st != want)
        fprintf(stderr, "\n%s: got %s, want %s (%s)\n", what, b158_status_str(st),
                b158_status_str(want), b158_last_error());
    CU_ASSERT_EQUAL(st, want);
    CU_ASSERT(st == B158_OK || strlen(b158_last_error()) > 0);
}

static void rand_ternary(int8_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        w[i] = (int8_t)b158_test_randint(-1, 1);
}

/* A positive scale stored exactly by fp16 (so every encoding keeps it). */
static float rand_f16_scale(void)
{
    return b158_f16_to_f32(b158_f32_to_f16(b158_test_uniform(0.002f, 3.0f)));
}

static size_t nbytes(uint32_t type, int64_t n_rows, int64_t k)
{
    size_t sz = 0;
    check_ok(b158_tensor_nbytes(type, n_rows, k, &sz));
    CU_ASSERT_EQUAL(b158_ternary_encoded_size(type, n_rows, k), sz);
    return sz;
}

/* Encodes into a buffer of exactly the tensor's size, so ASan sees any overread by decode. */
static uint8_t *encode(uint32_t type, const int8_t *w, const float *scales, int64_t n_rows,
                       int64_t k, size_t *size)
{
    *size = nbytes(type, n_rows, k);
    uint8_t *buf = xmalloc(*size);
    memset(buf, 0xa5, *size);
    check_ok(b158_ternary_encode(type, w, scales, n_rows, k, buf, *size));
    return buf;
}

typedef struct {
    int8_t *w;
    float *s;
    b158_ternary_info info;
} decoded;

static decoded decode(uint32_t type, const void *data, size_t size, int64_t n_rows, int64_t k)
{
    decoded d;
    d.w = xmalloc((size_t)(n_rows * k));
    d.s = xmalloc((size_t)n_rows * sizeof(float));
    memset(d.w, 0x7f, (size_t)(n_rows * k)); /* poison: 127 is never a ternary value */
    memset(&d.info, 0xff, sizeof d.info);
    check_ok(b158_ternary_decode(type, data, size, n_rows, k, d.w, d.s, &d.info));
    return d;
}

static void decoded_free(decoded *d)
{
    free(d->w), free(d->s);
}

static int64_t count_nonzero(const int8_t *w, size_t n)
{
    int64_t nz = 0;
    for (size_t i = 0; i < n; i++)
        nz += w[i] != 0;
    return nz;
}

static const struct {
    int64_t rows, k;
} tq_shapes[] = {{3, 256}, {7, 512}, {1, 256}, {40, 2560}, {2, 1024}};

static const struct {
    int64_t rows, k;
} i2s_shapes[] = {{1, 128}, {3, 256}, {7, 512}, {40, 2560}, {6, 64}, {5, 384}, {1, 3200}};

/* ---- names and sizes ----------------------------------------------------------------- */

static void test_names_sizes(void)
{
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_F32), "F32");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_F16), "F16");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_BF16), "BF16");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TYPE_Q8_0), "Q8_0");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_TQ1_0), "TQ1_0");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_TQ2_0), "TQ2_0");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(B158_TT_I2_S), "I2_S");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(12), "Q4_K");
    CU_ASSERT_STRING_EQUAL(b158_tensor_type_name(1000), "unknown");

    size_t sz = 0;
    check_ok(b158_tensor_nbytes(B158_TT_F32, 3, 5, &sz));
    CU_ASSERT_EQUAL(sz, 60);
    check_ok(b158_tensor_nbytes(B158_TT_F16, 3, 5, &sz));
    CU_ASSERT_EQUAL(sz, 30);
    check_ok(b158_tensor_nbytes(B158_TT_BF16, 3, 5, &sz));
    CU_ASSERT_EQUAL(sz, 30);
    check_ok(b158_tensor_nbytes(B158_TYPE_Q8_0, 3, 64, &sz));
    CU_ASSERT_EQUAL(sz, 6 * 34);
    check_ok(b158_tensor_nbytes(B158_TT_TQ1_0, 3, 512, &sz));
    CU_ASSERT_EQUAL(sz, 6 * 54);
    check_ok(b158_tensor_nbytes(B158_TT_TQ2_0, 3, 512, &sz));
    CU_ASSERT_EQUAL(sz, 6 * 66);
    check_ok(b158_tensor_nbytes(B158_TT_I2_S, 2560, 2560, &sz));
    CU_ASSERT_EQUAL(sz, 2560 * 2560 / 4 + 32);

    check_fails(b158_tensor_nbytes(B158_TT_TQ2_0, 3, 250, &sz), B158_ERR_FORMAT, "k 250");
    check_fails(b158_tensor_nbytes(B158_TT_TQ1_0, 3, 128, &sz), B158_ERR_FORMAT, "k 128");
    check_fails(b158_tensor_nbytes(B158_TYPE_Q8_0, 3, 48, &sz), B158_ERR_FORMAT, "q8 k 48");
    check_fails(b158_tensor_nbytes(B158_TT_I2_S, 3, 100, &sz), B158_ERR_FORMAT, "i2s 300");
    check_fails(b158_tensor_nbytes(2, 3, 256, &sz), B158_ERR_UNSUPPORTED, "Q4_0");
    check_fails(b158_tensor_nbytes(99, 3, 256, &sz), B158_ERR_UNSUPPORTED, "type 99");
    check_fails(b158_tensor_nbytes(B158_TT_F32, 0, 256, &sz), B158_ERR_INVALID_ARG, "0 rows");
    check_fails(b158_tensor_nbytes(B158_TT_F32, 3, -1, &sz), B158_ERR_INVALID_ARG, "k -1");
    check_fails(b158_tensor_nbytes(B158_TT_TQ2_0, INT64_MAX / 2, 256, &sz), B158_ERR_FORMAT,
                "overflow");
    check_fails(b158_tensor_nbytes(B158_TT_F32, (int64_t)1 << 40, (int64_t)1 << 22, &sz),
                B158_ERR_FORMAT, "f32 overflow");
    CU_ASSERT_EQUAL(b158_ternary_encoded_size(B158_TT_TQ2_0, 3, 250), 0);
    CU_ASSERT_EQUAL(b158_ternary_encoded_size(B158_TYPE_Q8_0, 3, 256), 0);
}

/* ---- round trips ---------------------------------------------------------------------- */

/* Per-row scales, some rows all zero: the codes come back exactly, and every row with a weight
 * keeps its (fp16-exact) scale. */
static void roundtrip_tq(uint32_t type)
{
    for (size_t t = 0; t < sizeof tq_shapes / sizeof tq_shapes[0]; t++) {
        const int64_t rows = tq_shapes[t].rows, k = tq_shapes[t].k;
        const size_t n = (size_t)(rows * k);
        int8_t *w = xmalloc(n);
        float *s = xmalloc((size_t)rows * sizeof(float));
        rand_ternary(w, n);
        if (rows > 2)
            memset(w + k, 0, (size_t)k); /* an all-zero row */
        if (k >= 512)
            memset(w, 0, 256); /* an all-zero block inside a row with weights */
        for (int64_t r = 0; r < rows; r++)
            s[r] = rand_f16_scale();
        size_t size;
        uint8_t *buf = encode(type, w, s, rows, k, &size);
        decoded d = decode(type, buf, size, rows, k);
        CU_ASSERT_EQUAL(memcmp(d.w, w, n), 0);
        for (int64_t r = 0; r < rows; r++) {
            if (count_nonzero(w + r * k, (size_t)k))
                CU_ASSERT_EQUAL(d.s[r], s[r]);
            CU_ASSERT(d.s[r] > 0);
        }
        CU_ASSERT_EQUAL(d.info.ternarized, 0);
        CU_ASSERT_EQUAL(d.info.nonzero, count_nonzero(w, n));
        decoded_free(&d);

        /* One scale for the whole tensor: reported as uniform and given to the zero row too. */
        for (int64_t r = 0; r < rows; r++)
            s[r] = s[0];
        free(buf);
        buf = encode(type, w, s, rows, k, &size);
        d = decode(type, buf, size, rows, k);
        CU_ASSERT_EQUAL(memcmp(d.w, w, n), 0);
        CU_ASSERT_EQUAL(d.info.uniform_scale, 1);
        CU_ASSERT_EQUAL(d.info.scale, s[0]);
        for (int64_t r = 0; r < rows; r++)
            CU_ASSERT_EQUAL(d.s[r], s[0]);
        decoded_free(&d);
        free(buf), free(w), free(s);
    }
}

static void test_tq2_0_roundtrip(void)
{
    roundtrip_tq(B158_TT_TQ2_0);
}

static void test_tq1_0_roundtrip(void)
{
    roundtrip_tq(B158_TT_TQ1_0);
}

/* Tensor-scale types: I2_S (f32 scale) and exact-ternary F32 / F16 / BF16. */
static void roundtrip_tensor_scale(uint32_t type, int64_t rows, int64_t k, float s)
{
    const size_t n = (size_t)(rows * k);
    int8_t *w = xmalloc(n);
    rand_ternary(w, n);
    w[n / 2] = -1; /* an all-zero tensor would decode with scale 1 */
    size_t size;
    uint8_t *buf = encode(type, w, &s, rows, k, &size);
    decoded d = decode(type, buf, size, rows, k);
    CU_ASSERT_EQUAL(memcmp(d.w, w, n), 0);
    for (int64_t r = 0; r < rows; r++)
        CU_ASSERT_EQUAL(d.s[r], s);
    CU_ASSERT_EQUAL(d.info.ternarized, 0);
    CU_ASSERT_EQUAL(d.info.uniform_scale, 1);
    CU_ASSERT_EQUAL(d.info.scale, s);
    CU_ASSERT_EQUAL(d.info.nonzero, count_nonzero(w, n));
    decoded_free(&d);
    free(buf), free(w);
}

static void test_i2_s_roundtrip(void)
{
    for (size_t t = 0; t < sizeof i2s_shapes / sizeof i2s_shapes[0]; t++)
        roundtrip_tensor_scale(B158_TT_I2_S, i2s_shapes[t].rows, i2s_shapes[t].k,
                               b158_test_uniform(1e-3f, 5.0f));
}

static void test_float_roundtrip(void)
{
    static const struct {
        int64_t rows, k;
    } shapes[] = {{3, 256}, {7, 500}, {1, 1}, {1, 128}, {40, 2560}, {13, 3}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int64_t rows = shapes[t].rows, k = shapes[t].k;
        roundtrip_tensor_scale(B158_TT_F32, rows, k, b158_test_uniform(1e-3f, 5.0f));
        roundtrip_tensor_scale(B158_TT_F16, rows, k, rand_f16_scale());
        /* A bf16-exact scale in [2^-7, 8]. */
        const float s = b158_bf16_to_f32((uint16_t)(0x3c00 + b158_test_randint(0, 0x0500)));
        roundtrip_tensor_scale(B158_TT_BF16, rows, k, s);
    }
}

/* ---- hand-built layout vectors ---------------------------------------------------------- */

/* TQ2_0 from the layout: element e = g*128 + l*32 + m sits in qs[g*32 + m] bits 2l..2l+1,
 * code w + 1, fp16 d little-endian at bytes 64..65. */
static void test_tq2_0_layout(void)
{
    const float s = 0.5f;
    int8_t w[256];
    uint8_t zero_blk[66], blk[66];
    memset(w, 0, sizeof w);
    check_ok(b158_ternary_encode(B158_TT_TQ2_0, w, &s, 1, 256, zero_blk, sizeof zero_blk));
    for (int i = 0; i < 64; i++)
        CU_ASSERT_EQUAL(zero_blk[i], 0x55);               /* code 1 everywhere */
    CU_ASSERT_EQUAL(zero_blk[64] | zero_blk[65] << 8, 0); /* ggml: d = amax = 0 */

    for (int e = 0; e < 256; e++) {
        const int g = e / 128, l = (e % 128) / 32, m = e % 32;
        for (int v = -1; v <= 1; v += 2) {
            memset(w, 0, sizeof w);
            w[e] = (int8_t)v;
            check_ok(b158_ternary_encode(B158_TT_TQ2_0, w, &s, 1, 256, blk, sizeof blk));
            int changed = 0;
            for (int i = 0; i < 64; i++)
                if (blk[i] != zero_blk[i])
                    changed++;
            CU_ASSERT_EQUAL(changed, 1);
            const uint8_t want = (uint8_t)((0x55 & ~(3 << 2 * l)) | ((v + 1) << 2 * l));
            CU_ASSERT_EQUAL(blk[g * 32 + m], want);
            CU_ASSERT_EQUAL(blk[64] | blk[65] << 8, 0x3800); /* 0.5 in fp16 */

            /* And the decoder reads the hand-built block back. */
            uint8_t hand[66];
            memcpy(hand, zero_blk, 66);
            hand[g * 32 + m] = want;
            hand[64] = 0x00, hand[65] = 0x38;
            int8_t out[256];
            float rs;
            check_ok(b158_ternary_decode(B158_TT_TQ2_0, hand, 66, 1, 256, out, &rs, NULL));
            CU_ASSERT_EQUAL(memcmp(out, w, 256), 0);
            CU_ASSERT_EQUAL(rs, 0.5f);
        }
    }
}

/* Reference TQ1_0 byte from the layout description: trits t[0..count) most significant first,
 * a qh byte leaves its 5th slot 0; stored as ceil(q * 256 / 243). */
static uint8_t ref_tq1_byte(const int *t, int count)
{
    int q = 0;
    for (int n = 0; n < 5; n++)
        q = q * 3 + (n < count ? t[n] : 0);
    return (uint8_t)((q * 256 + 242) / 243);
}

/* Where element e of a TQ1_0 block lives: byte index and trit position (0 = most significant). */
static void tq1_position(int e, int *byte, int *trit)
{
    if (e < 160) {
        *byte = e % 32, *trit = e / 32;
    } else if (e < 240) {
        *byte = 32 + (e - 160) % 16, *trit = (e - 160) / 16;
    } else {
        *byte = 48 + (e - 240) % 4, *trit = (e - 240) / 4;
    }
}

static void test_tq1_0_layout(void)
{
    const float s = 0.25f;
    int8_t w[256];
    uint8_t zero_blk[54], blk[54];
    memset(w, 0, sizeof w);
    check_ok(b158_ternary_encode(B158_TT_TQ1_0, w, &s, 1, 256, zero_blk, sizeof zero_blk));
    /* All trits 1: 121 -> ceil(121 * 256 / 243) = 128; qh 40 * 3 = 120 -> 127 (by hand). */
    for (int i = 0; i < 48; i++)
        CU_ASSERT_EQUAL(zero_blk[i], 128);
    for (int i = 48; i < 52; i++)
        CU_ASSERT_EQUAL(zero_blk[i], 127);

    for (int e = 0; e < 256; e++) {
        int byte, trit;
        tq1_position(e, &byte, &trit);
        for (int v = -1; v <= 1; v += 2) {
            memset(w, 0, sizeof w);
            w[e] = (int8_t)v;
            check_ok(b158_ternary_encode(B158_TT_TQ1_0, w, &s, 1, 256, blk, sizeof blk));
            int t[5] = {1, 1, 1, 1, 1};
            t[trit] = v + 1;
            const uint8_t want = ref_tq1_byte(t, byte >= 48 ? 4 : 5);
            for (int i = 0; i < 52; i++)
                CU_ASSERT_EQUAL(blk[i], i == byte ? want : zero_blk[i]);
            CU_ASSERT_EQUAL(blk[52] | blk[53] << 8, 0x3400); /* 0.25 in fp16 */

            int8_t out[256];
            float rs;
            check_ok(b158_ternary_decode(B158_TT_TQ1_0, blk, 54, 1, 256, out, &rs, NULL));
            CU_ASSERT_EQUAL(memcmp(out, w, 256), 0);
            CU_ASSERT_EQUAL(rs, 0.25f);
        }
    }
    /* Element 0 = +1: q = 2*81 + 27 + 9 + 3 + 1 = 202 -> ceil(202 * 256 / 243) = 213. */
    memset(w, 0, sizeof w);
    w[0] = 1;
    check_ok(b158_ternary_encode(B158_TT_TQ1_0, w, &s, 1, 256, blk, sizeof blk));
    CU_ASSERT_EQUAL(blk[0], 213);

    /* Every one of the 243 trit tuples survives pack -> unpack (v = byte * 3^n, t = v*3 >> 8). */
    for (int q = 0; q < 243; q++) {
        int t[5];
        for (int n = 0, r = q; n < 5; n++, r /= 3)
            t[4 - n] = r % 3;
        uint8_t hand[54];
        memcpy(hand, zero_blk, 54);
        hand[0] = ref_tq1_byte(t, 5);
        hand[52] = 0x00, hand[53] = 0x3c; /* d = 1 */
        int8_t out[256];
        float rs;
        check_ok(b158_ternary_decode(B158_TT_TQ1_0, hand, 54, 1, 256, out, &rs, NULL));
        for (int n = 0; n < 5; n++) {
            CU_ASSERT_EQUAL(out[n * 32], t[n] - 1);
            uint8_t vv = (uint8_t)(hand[0] * (int[]){1, 3, 9, 27, 81}[n]);
            CU_ASSERT_EQUAL((vv * 3) >> 8, t[n]);
        }
    }
}

/* I2_S from the layout: block i, byte i*32 + p holds p (bits 7..6), p+32, p+64, p+96 (1..0);
 * code 0 = -1, 1 = 0, 2 = +1; f32 scale at byte n/4, then zero padding to n/4 + 32. */
static void test_i2_s_layout(void)
{
    const int64_t rows = 2, k = 128, n = rows * k;
    const float s = 1.5f;
    int8_t w[256];
    uint8_t zero_buf[96], buf[96];
    memset(w, 0, sizeof w);
    check_ok(b158_ternary_encode(B158_TT_I2_S, w, &s, rows, k, zero_buf, sizeof zero_buf));
    for (int i = 0; i < 64; i++)
        CU_ASSERT_EQUAL(zero_buf[i], 0x55);
    float got;
    memcpy(&got, zero_buf + n / 4, 4);
    CU_ASSERT_EQUAL(got, s);
    for (int i = 68; i < 96; i++)
        CU_ASSERT_EQUAL(zero_buf[i], 0);

    /* The brief's example: element 5 of block 1 (flat 133) = +1 is byte 32 + 5, bits 7..6. */
    w[133] = 1;
    check_ok(b158_ternary_encode(B158_TT_I2_S, w, &s, rows, k, buf, sizeof buf));
    CU_ASSERT_EQUAL(buf[37], 0x95);

    for (int e = 0; e < n; e++) {
        const int blk = e / 128, p = e % 32, g = (e % 128) / 32;
        for (int v = -1; v <= 1; v += 2) {
            memset(w, 0, sizeof w);
            w[e] = (int8_t)v;
            check_ok(b158_ternary_encode(B158_TT_I2_S, w, &s, rows, k, buf, sizeof buf));
            const uint8_t want = (uint8_t)((0x55 & ~(3 << (6 - 2 * g))) | ((v + 1) << (6 - 2 * g)));
            for (int i = 0; i < 96; i++)
                CU_ASSERT_EQUAL(buf[i], i == blk * 32 + p ? want : zero_buf[i]);
            uint8_t hand[96];
            memcpy(hand, zero_buf, 96);
            hand[blk * 32 + p] = want;
            int8_t out[256];
            float rs[2];
            check_ok(b158_ternary_decode(B158_TT_I2_S, hand, 96, rows, k, out, rs, NULL));
            CU_ASSERT_EQUAL(memcmp(out, w, (size_t)n), 0);
            CU_ASSERT(rs[0] == s && rs[1] == s);
        }
    }
}

/* ---- TQ scale handling -------------------------------------------------------------------- */

static void set_d(uint8_t *blk, size_t bs, uint16_t d)
{
    blk[bs - 2] = (uint8_t)d;
    blk[bs - 1] = (uint8_t)(d >> 8);
}

static void test_tq_scales(void)
{
    static const uint32_t types[] = {B158_TT_TQ1_0, B158_TT_TQ2_0};
    for (int ti = 0; ti < 2; ti++) {
        const uint32_t type = types[ti];
        const size_t bs = type == B158_TT_TQ1_0 ? 54 : 66;
        const int64_t rows = 2, k = 768;
        int8_t w[2 * 768], out[2 * 768];
        float s[2] = {0.5f, 0.75f}, rs[2];
        rand_ternary(w, sizeof w);
        for (int b = 0; b < 6; b++)
            w[b * 256] = 1; /* every block carries a weight */
        size_t size;
        uint8_t *buf = encode(type, w, s, rows, k, &size);

        /* Blocks of one row with different |d|: no per-row scale exists. */
        set_d(buf + 1 * bs, bs, 0x3a00); /* 0.75 in block 1 of row 0 (others 0.5) */
        check_fails(b158_ternary_decode(type, buf, size, rows, k, out, rs, NULL),
                    B158_ERR_UNSUPPORTED, "mixed block scales");
        CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "row 0"));

        /* A negative d flips that block's codes; the row keeps |d|. */
        set_d(buf + 1 * bs, bs, 0xb800); /* -0.5 */
        check_ok(b158_ternary_decode(type, buf, size, rows, k, out, rs, NULL));
        for (int i = 0; i < 768 * 2; i++)
            CU_ASSERT_EQUAL(out[i], (i >= 256 && i < 512) ? -w[i] : w[i]);
        CU_ASSERT(rs[0] == 0.5f && rs[1] == 0.75f);

        /* d = 0 with nonzero codes: the block's weights are zero, and it does not clash. */
        set_d(buf + 1 * bs, bs, 0x0000);
        b158_ternary_info info;
        check_ok(b158_ternary_decode(type, buf, size, rows, k, out, rs, &info));
        for (int i = 256; i < 512; i++)
            CU_ASSERT_EQUAL(out[i], 0);
        CU_ASSERT_EQUAL(info.uniform_scale, 0);
        CU_ASSERT_EQUAL(info.nonzero, count_nonzero(out, sizeof out));

        /* A non-finite d is corruption, even in a block of zeros. */
        set_d(buf + 1 * bs, bs, 0x7e00);
        check_fails(b158_ternary_decode(type, buf, size, rows, k, out, rs, NULL), B158_ERR_FORMAT,
                    "NaN d");
        set_d(buf + 4 * bs, bs, 0xfc00);
        set_d(buf + 1 * bs, bs, 0x3800);
        check_fails(b158_ternary_decode(type, buf, size, rows, k, out, rs, NULL), B158_ERR_FORMAT,
                    "-inf d");
        free(buf);
    }
}

/* ---- float tensors -------------------------------------------------------------------------- */

/* Direct absmean ternarization as transformers' BitNet does it: gamma = mean|W| over the
 * tensor, W_t = clamp(round(W * (1 / max(gamma, 1e-5))), -1, 1) with ties to even, and the
 * weight's scale 1 / (1 / max(gamma, 1e-5)). */
static float ref_absmean(const float *x, size_t n, int8_t *w)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += fabs((double)x[i]);
    const float gamma = (float)(sum / (double)n);
    const float inv = 1.0f / fmaxf(gamma, 1e-5f);
    for (size_t i = 0; i < n; i++) {
        float q = nearbyintf(x[i] * inv);
        w[i] = (int8_t)fmaxf(-1.0f, fminf(1.0f, q));
    }
    return 1.0f / inv;
}

/* Stores floats as the given type; returns the values as the decoder sees them. */
static uint8_t *store_floats(uint32_t type, float *x, size_t n, size_t *size)
{
    *size = n * (type == B158_TT_F32 ? 4 : 2);
    uint8_t *buf = xmalloc(*size);
    for (size_t i = 0; i < n; i++) {
        if (type == B158_TT_F32) {
            memcpy(buf + i * 4, &x[i], 4);
            continue;
        }
        uint16_t h;
        if (type == B158_TT_F16) {
            h = b158_f32_to_f16(x[i]);
            x[i] = b158_f16_to_f32(h);
        } else {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            h = (uint16_t)(bits >> 16); /* truncation is as good as any bf16 for this test */
            x[i] = b158_bf16_to_f32(h);
        }
        buf[i * 2] = (uint8_t)h, buf[i * 2 + 1] = (uint8_t)(h >> 8);
    }
    return buf;
}

static void test_float_latent(void)
{
    static const uint32_t types[] = {B158_TT_F32, B158_TT_F16, B158_TT_BF16};
    static const struct {
        int64_t rows, k;
    } shapes[] = {{3, 256}, {7, 513}, {1, 4}, {40, 2560}, {2, 2}};
    for (int ti = 0; ti < 3; ti++)
        for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
            const int64_t rows = shapes[t].rows, k = shapes[t].k;
            const size_t n = (size_t)(rows * k);
            float *x = xmalloc(n * sizeof(float));
            int8_t *want = xmalloc(n);
            const float amp = b158_test_uniform(0.01f, 2.0f);
            for (size_t i = 0; i < n; i++)
                x[i] = b158_test_uniform(-amp, amp) * b158_test_uniform(0, 1);
            /* Three distinct magnitudes make sure the input is not exact ternary. */
            x[0] = 0, x[1] = amp * 0.5f, x[2] = -amp * 0.5f, x[3] = amp * 0.25f;
            size_t size;
            uint8_t *buf = store_floats(types[ti], x, n, &size);
            const float gamma = ref_absmean(x, n, want);
            decoded d = decode(types[ti], buf, size, rows, k);
            CU_ASSERT_EQUAL(d.info.ternarized, 1);
            CU_ASSERT_EQUAL(memcmp(d.w, want, n), 0);
            for (int64_t r = 0; r < rows; r++)
                CU_ASSERT_EQUAL(d.s[r], gamma);
            CU_ASSERT_EQUAL(d.info.uniform_scale, 1);
            CU_ASSERT_EQUAL(d.info.scale, gamma);
            CU_ASSERT_EQUAL(d.info.nonzero, count_nonzero(want, n));
            decoded_free(&d);
            free(buf), free(x), free(want);
        }

    /* Hand-checked rounding: mean|W| = 1: 1.5 -> 2 -> clamp 1, 0.5 -> 0 (ties to even),
     * -0.6 -> -1, 3.0 -> clamp 1, -0.4 -> 0 ... */
    const float x[8] = {1.5f, 0.5f, -0.6f, 3.0f, -0.4f, 0.0f, -1.0f, 1.0f};
    const int8_t want[8] = {1, 0, -1, 1, 0, 0, -1, 1};
    float rs;
    int8_t out[8];
    b158_ternary_info info;
    check_ok(b158_ternary_decode(B158_TT_F32, x, sizeof x, 1, 8, out, &rs, &info));
    CU_ASSERT_EQUAL(memcmp(out, want, 8), 0);
    CU_ASSERT_DOUBLE_EQUAL(rs, 1.0, 1e-6);
    CU_ASSERT_EQUAL(info.ternarized, 1);
}

static void test_float_exact(void)
{
    /* F16 exact ternary from a hand-built buffer: +-s and both signed zeros. */
    const uint16_t s16 = b158_f32_to_f16(0.0372f);
    const float s = b158_f16_to_f32(s16);
    uint16_t h[6] = {s16, (uint16_t)(s16 | 0x8000u), 0x0000, 0x8000, s16, s16};
    const int8_t want[6] = {1, -1, 0, 0, 1, 1};
    int8_t out[6];
    float rs[2];
    b158_ternary_info info;
    check_ok(b158_ternary_decode(B158_TT_F16, h, sizeof h, 2, 3, out, rs, &info));
    CU_ASSERT_EQUAL(memcmp(out, want, 6), 0);
    CU_ASSERT(rs[0] == s && rs[1] == s);
    CU_ASSERT_EQUAL(info.ternarized, 0);
    CU_ASSERT_EQUAL(info.nonzero, 4);

    /* One value off by one ulp makes it latent. */
    h[5] = (uint16_t)(s16 + 1);
    check_ok(b158_ternary_decode(B158_TT_F16, h, sizeof h, 2, 3, out, rs, &info));
    CU_ASSERT_EQUAL(info.ternarized, 1);

    /* All zero: no division by zero, scale 1, nothing ternarized. */
    float z[12] = {0};
    z[3] = -0.0f;
    int8_t zo[12];
    float zs[3];
    check_ok(b158_ternary_decode(B158_TT_F32, z, sizeof z, 3, 4, zo, zs, &info));
    for (int i = 0; i < 12; i++)
        CU_ASSERT_EQUAL(zo[i], 0);
    CU_ASSERT(zs[0] == 1.0f && zs[1] == 1.0f && zs[2] == 1.0f);
    CU_ASSERT_EQUAL(info.ternarized, 0);
    CU_ASSERT_EQUAL(info.nonzero, 0);

    /* NaN and infinity are corruption. */
    z[7] = NAN;
    check_fails(b158_ternary_decode(B158_TT_F32, z, sizeof z, 3, 4, zo, zs, NULL), B158_ERR_FORMAT,
                "NaN weight");
    z[7] = -INFINITY;
    check_fails(b158_ternary_decode(B158_TT_F32, z, sizeof z, 3, 4, zo, zs, NULL), B158_ERR_FORMAT,
                "inf weight");
    uint16_t bf[4] = {0x3f80, 0x7fc0, 0, 0};
    check_fails(b158_ternary_decode(B158_TT_BF16, bf, sizeof bf, 1, 4, zo, zs, NULL),
                B158_ERR_FORMAT, "bf16 NaN");
}

/* ---- float tables --------------------------------------------------------------------------- */

static void test_tables(void)
{
    const int64_t rows = 5, k = 96;
    const size_t n = (size_t)(rows * k);
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4);
    uint16_t *h = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++)
        x[i] =
            b158_test_uniform(-70000.0f, 70000.0f) * powf(2.0f, (float)-b158_test_randint(0, 30));

    /* F32 -> f32 identity, -> f16 the round-to-nearest-even conversion (inf past 65504). */
    check_ok(b158_tensor_to_f32(B158_TT_F32, x, n * 4, rows, k, y));
    CU_ASSERT_EQUAL(memcmp(x, y, n * 4), 0);
    check_ok(b158_tensor_to_f16(B158_TT_F32, x, n * 4, rows, k, h));
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(h[i], b158_f32_to_f16(x[i]));

    /* F16 copied; -> f32 exact. */
    uint16_t *h2 = xmalloc(n * 2);
    check_ok(b158_tensor_to_f16(B158_TT_F16, h, n * 2, rows, k, h2));
    CU_ASSERT_EQUAL(memcmp(h, h2, n * 2), 0);
    check_ok(b158_tensor_to_f32(B158_TT_F16, h, n * 2, rows, k, y));
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(y[i] == b158_f16_to_f32(h[i]) || (isnan(y[i]) && isnan(b158_f16_to_f32(h[i]))));

    /* Every f16 bit pattern reads as b158_f16_to_f32 gives it (NaNs as NaNs of the same bits). */
    uint16_t *all = xmalloc(65536 * 2);
    float *allf = xmalloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    check_ok(b158_tensor_to_f32(B158_TT_F16, all, 65536 * 2, 256, 256, allf));
    for (uint32_t i = 0; i < 65536; i++) {
        float want = b158_f16_to_f32((uint16_t)i);
        CU_ASSERT_EQUAL(memcmp(&allf[i], &want, 4), 0);
    }
    free(all), free(allf);

    /* BF16: top half of the f32 bits; to f16 with one rounding of the exact value. */
    uint16_t *bf = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bf[i] = (uint16_t)(bits >> 16);
    }
    check_ok(b158_tensor_to_f32(B158_TT_BF16, bf, n * 2, rows, k, y));
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(y[i], b158_bf16_to_f32(bf[i]));
    check_ok(b158_tensor_to_f16(B158_TT_BF16, bf, n * 2, rows, k, h));
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(h[i], b158_f32_to_f16(b158_bf16_to_f32(bf[i])));

    /* Q8_0 hand-built: block b has d = 2^-b (fp16 LE first), q = -128..127 pattern. */
    const size_t nb = n / 32;
    uint8_t *q8 = xmalloc(nb * 34);
    for (size_t b = 0; b < nb; b++) {
        uint16_t d = b158_f32_to_f16(ldexpf(1.0f, -(int)(b % 12)) * 1.25f);
        q8[b * 34] = (uint8_t)d, q8[b * 34 + 1] = (uint8_t)(d >> 8);
        for (int j = 0; j < 32; j++)
            q8[b * 34 + 2 + j] = (uint8_t)(int8_t)((int)((b * 37 + (size_t)j * 11) % 256) - 128);
    }
    check_ok(b158_tensor_to_f32(B158_TYPE_Q8_0, q8, nb * 34, rows, k, y));
    check_ok(b158_tensor_to_f16(B158_TYPE_Q8_0, q8, nb * 34, rows, k, h));
    for (size_t i = 0; i < n; i++) {
        const uint8_t *blk = q8 + i / 32 * 34;
        float d = b158_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
        float want = d * (float)(int8_t)blk[2 + i % 32];
        CU_ASSERT_EQUAL(y[i], want);
        CU_ASSERT_EQUAL(h[i], b158_f32_to_f16(want));
    }

    /* Errors: ternary types are not tables; sizes must match. */
    uint8_t tq[66] = {0};
    check_fails(b158_tensor_to_f32(B158_TT_TQ2_0, tq, 66, 1, 256, y), B158_ERR_UNSUPPORTED,
                "tq2 as table");
    check_fails(b158_tensor_to_f16(B158_TT_I2_S, tq, 64, 1, 128, h), B158_ERR_UNSUPPORTED,
                "i2s as table");
    check_fails(b158_tensor_to_f32(B158_TT_F32, x, n * 4 - 4, rows, k, y), B158_ERR_FORMAT,
                "short f32");
    check_fails(b158_tensor_to_f16(B158_TYPE_Q8_0, q8, nb * 34 + 1, rows, k, h), B158_ERR_FORMAT,
                "long q8");
    check_fails(b158_tensor_to_f16(B158_TT_F16, NULL, n * 2, rows, k, h), B158_ERR_INVALID_ARG,
                "NULL data");
    free(x), free(y), free(h), free(h2), free(bf), free(q8);
}

/* ---- malformed input ------------------------------------------------------------------------ */

static void test_malformed(void)
{
    static const uint32_t types[] = {B158_TT_TQ1_0, B158_TT_TQ2_0, B158_TT_I2_S,
                                     B158_TT_F32,   B158_TT_F16,   B158_TT_BF16};
    const int64_t rows = 3, k = 256;
    int8_t w[768], out[768];
    float s[3] = {0.5f, 0.5f, 0.5f}, rs[3];
    rand_ternary(w, sizeof w);

    /* Wrong data_size, one byte either way, for every type. */
    for (int ti = 0; ti < 6; ti++) {
        size_t size;
        uint8_t *buf = encode(types[ti], w, s, rows, k, &size);
        uint8_t *big = xmalloc(size + 1);
        memcpy(big, buf, size);
        check_fails(b158_ternary_decode(types[ti], buf, size - 1, rows, k, out, rs, NULL),
                    B158_ERR_FORMAT, "short data");
        check_fails(b158_ternary_decode(types[ti], big, size + 1, rows, k, out, rs, NULL),
                    B158_ERR_FORMAT, "long data");
        check_fails(b158_ternary_decode(types[ti], buf, size, rows, k, NULL, rs, NULL),
                    B158_ERR_INVALID_ARG, "NULL out");
        check_fails(b158_ternary_decode(types[ti], buf, size, rows, k, out, NULL, NULL),
                    B158_ERR_INVALID_ARG, "NULL scales");
        check_fails(b158_ternary_decode(types[ti], NULL, size, rows, k, out, rs, NULL),
                    B158_ERR_INVALID_ARG, "NULL data");
        free(buf), free(big);
    }

    /* Code 3 in TQ2_0 and I2_S. */
    size_t size;
    uint8_t *buf = encode(B158_TT_TQ2_0, w, s, rows, k, &size);
    buf[66 + 10] |= 0x30; /* row 1, element 2*32 + 10 */
    check_fails(b158_ternary_decode(B158_TT_TQ2_0, buf, size, rows, k, out, rs, NULL),
                B158_ERR_FORMAT, "tq2 code 3");
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "code 3"));
    free(buf);
    buf = encode(B158_TT_I2_S, w, s, rows, k, &size);
    buf[100] |= 0x03;
    check_fails(b158_ternary_decode(B158_TT_I2_S, buf, size, rows, k, out, rs, NULL),
                B158_ERR_FORMAT, "i2s code 3");

    /* I2_S scale: NaN is corruption; 0 means all zero; negative flips the codes. */
    float bad = NAN;
    memcpy(buf + 192, &bad, 4);
    buf[100] &= (uint8_t)~0x03;
    buf[100] |= 0x01;
    check_fails(b158_ternary_decode(B158_TT_I2_S, buf, size, rows, k, out, rs, NULL),
                B158_ERR_FORMAT, "i2s NaN scale");
    bad = -2.0f;
    memcpy(buf + 192, &bad, 4);
    check_ok(b158_ternary_decode(B158_TT_I2_S, buf, size, rows, k, out, rs, NULL));
    CU_ASSERT(rs[0] == 2.0f && rs[2] == 2.0f);
    for (int i = 0; i < 768; i++) /* element 3*128 + 96 + 4 was set to code 1 above */
        CU_ASSERT_EQUAL(out[i], i == 484 ? 0 : -w[i]);
    bad = 0.0f;
    memcpy(buf + 192, &bad, 4);
    check_ok(b158_ternary_decode(B158_TT_I2_S, buf, size, rows, k, out, rs, NULL));
    CU_ASSERT_EQUAL(count_nonzero(out, sizeof out), 0);
    CU_ASSERT_EQUAL(rs[2], 1.0f);
    free(buf);

    /* Shapes the formats cannot hold, and types that are not ternary weights. */
    uint8_t any[4096] = {0};
    check_fails(b158_ternary_decode(B158_TT_TQ2_0, any, 66, 1, 250, out, rs, NULL), B158_ERR_FORMAT,
                "tq2 k 250");
    check_fails(b158_ternary_decode(B158_TT_TQ1_0, any, 54, 2, 128, out, rs, NULL), B158_ERR_FORMAT,
                "tq1 k 128");
    check_fails(b158_ternary_decode(B158_TT_I2_S, any, 57, 3, 100, out, rs, NULL), B158_ERR_FORMAT,
                "i2s 300 elements");
    check_fails(b158_ternary_decode(B158_TYPE_Q8_0, any, 34, 1, 32, out, rs, NULL),
                B158_ERR_UNSUPPORTED, "q8_0 weights");
    check_fails(b158_ternary_decode(12, any, 144, 1, 256, out, rs, NULL), B158_ERR_UNSUPPORTED,
                "Q4_K");
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "Q4_K"));
    check_fails(b158_ternary_decode(38, any, 100, 1, 256, out, rs, NULL), B158_ERR_UNSUPPORTED,
                "TL1");
    check_fails(b158_ternary_decode(B158_TT_TQ2_0, any, 66, 0, 256, out, rs, NULL),
                B158_ERR_INVALID_ARG, "0 rows");

    /* Encoder arguments. */
    uint8_t enc[66 * 3];
    w[5] = 2;
    check_fails(b158_ternary_encode(B158_TT_TQ2_0, w, s, rows, k, enc, sizeof enc),
                B158_ERR_INVALID_ARG, "weight 2");
    w[5] = 0;
    s[2] = NAN;
    check_fails(b158_ternary_encode(B158_TT_TQ2_0, w, s, rows, k, enc, sizeof enc),
                B158_ERR_INVALID_ARG, "NaN row scale");
    s[2] = 0.5f;
    const float huge = 1e6f, neg = -1.0f;
    check_fails(b158_ternary_encode(B158_TT_F16, w, &huge, rows, k, any, sizeof any),
                B158_ERR_INVALID_ARG, "f16 scale overflow");
    check_fails(b158_ternary_encode(B158_TT_I2_S, w, &neg, rows, k, any, sizeof any),
                B158_ERR_INVALID_ARG, "negative scale");
    check_fails(b158_ternary_encode(B158_TT_TQ2_0, w, s, rows, k, enc, sizeof enc - 1),
                B158_ERR_INVALID_ARG, "small output");
    check_fails(b158_ternary_encode(B158_TYPE_Q8_0, w, s, rows, k, any, sizeof any),
                B158_ERR_UNSUPPORTED, "q8_0 encode");
}

/* Random bytes never crash a decoder (ASan build) and fail only with FORMAT / UNSUPPORTED. */
static void test_fuzz(void)
{
    static const uint32_t types[] = {B158_TT_TQ1_0, B158_TT_TQ2_0, B158_TT_I2_S,
                                     B158_TT_F32,   B158_TT_F16,   B158_TT_BF16};
    for (int iter = 0; iter < 300; iter++) {
        const uint32_t type = types[iter % 6];
        const int64_t rows = b158_test_randint(1, 4);
        const int64_t k = type == B158_TT_I2_S ? 128 * b158_test_randint(1, 3)
                          : type == B158_TT_TQ1_0 || type == B158_TT_TQ2_0
                              ? 256 * b158_test_randint(1, 3)
                              : b158_test_randint(1, 300);
        const size_t size = nbytes(type, rows, k);
        uint8_t *buf = xmalloc(size);
        const int density = b158_test_randint(0, 3); /* mostly-valid to pure noise */
        for (size_t i = 0; i < size; i++)
            buf[i] = density == 0   ? (uint8_t)b158_test_rand()
                     : density == 1 ? 0x55
                                    : (uint8_t)(b158_test_rand() & 0x55);
        if (density && (type == B158_TT_TQ1_0 || type == B158_TT_TQ2_0))
            for (int64_t b = 0; b < rows * k / 256; b++)
                set_d(buf + (size_t)b * (type == B158_TT_TQ1_0 ? 54 : 66),
                      type == B158_TT_TQ1_0 ? 54 : 66, 0x3c00);
        int8_t *out = xmalloc((size_t)(rows * k));
        float *rs = xmalloc((size_t)rows * sizeof(float));
        b158_status st = b158_ternary_decode(type, buf, size, rows, k, out, rs, NULL);
        CU_ASSERT(st == B158_OK || st == B158_ERR_FORMAT || st == B158_ERR_UNSUPPORTED);
        if (st == B158_OK)
            for (size_t i = 0; i < (size_t)(rows * k); i++)
                CU_ASSERT(out[i] >= -1 && out[i] <= 1);
        free(buf), free(out), free(rs);
    }
}

static void add_suites(void)
{
    b158_test_suite("names", (b158_test_case[]){{"names_sizes", test_names_sizes}, {NULL, NULL}});
    b158_test_suite("tq2_0", (b158_test_case[]){{"layout", test_tq2_0_layout},
                                                {"roundtrip", test_tq2_0_roundtrip},
                                                {NULL, NULL}});
    b158_test_suite("tq1_0", (b158_test_case[]){{"layout", test_tq1_0_layout},
                                                {"roundtrip", test_tq1_0_roundtrip},
                                                {NULL, NULL}});
    b158_test_suite("tq_scales", (b158_test_case[]){{"blocks", test_tq_scales}, {NULL, NULL}});
    b158_test_suite("i2_s", (b158_test_case[]){{"layout", test_i2_s_layout},
                                               {"roundtrip", test_i2_s_roundtrip},
                                               {NULL, NULL}});
    b158_test_suite("float", (b158_test_case[]){{"exact", test_float_exact},
                                                {"roundtrip", test_float_roundtrip},
                                                {"latent_absmean", test_float_latent},
                                                {NULL, NULL}});
    b158_test_suite("tables", (b158_test_case[]){{"f32_f16_q8_0", test_tables}, {NULL, NULL}});
    b158_test_suite(
        "malformed",
        (b158_test_case[]){{"errors", test_malformed}, {"fuzz", test_fuzz}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
