/* GGUF constants shared by the reader, the writer and the weight codecs (REFERENCE.md s.2). */
#ifndef B158_HOST_GGUF_TYPES_H
#define B158_HOST_GGUF_TYPES_H

#define B158_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define B158_GGUF_VERSION 3u
#define B158_GGUF_DEFAULT_ALIGNMENT 32u
#define B158_GGUF_MAX_DIMS 4

/* Metadata value types. */
enum b158_gguf_vtype {
    B158_GGUF_U8 = 0,
    B158_GGUF_I8 = 1,
    B158_GGUF_U16 = 2,
    B158_GGUF_I16 = 3,
    B158_GGUF_U32 = 4,
    B158_GGUF_I32 = 5,
    B158_GGUF_F32 = 6,
    B158_GGUF_BOOL = 7,
    B158_GGUF_STRING = 8,
    B158_GGUF_ARRAY = 9,
    B158_GGUF_U64 = 10,
    B158_GGUF_I64 = 11,
    B158_GGUF_F64 = 12,
    B158_GGUF_VTYPE_COUNT = 13,
};

/* Bytes of a scalar metadata value type; 0 for string, array and unknown types. */
static inline unsigned b158_gguf_vtype_size(unsigned t)
{
    switch (t) {
    case B158_GGUF_U8:
    case B158_GGUF_I8:
    case B158_GGUF_BOOL:
        return 1;
    case B158_GGUF_U16:
    case B158_GGUF_I16:
        return 2;
    case B158_GGUF_U32:
    case B158_GGUF_I32:
    case B158_GGUF_F32:
        return 4;
    case B158_GGUF_U64:
    case B158_GGUF_I64:
    case B158_GGUF_F64:
        return 8;
    }
    return 0;
}

/* Tensor types the GGUF reader accepts (ggml numbering; I2_S is bitnet.cpp's id 36). Ids 4,
 * 5 and 31..33 are retired in ggml; the IQ* types are not listed and are rejected. */
enum b158_gguf_ttype {
    B158_TT_F32 = 0,
    B158_TT_F16 = 1,
    B158_TT_Q4_0 = 2,
    B158_TT_Q4_1 = 3,
    B158_TT_Q5_0 = 6,
    B158_TT_Q5_1 = 7,
    B158_TT_Q8_0 = 8,
    B158_TT_Q8_1 = 9,
    B158_TT_Q2_K = 10,
    B158_TT_Q3_K = 11,
    B158_TT_Q4_K = 12,
    B158_TT_Q5_K = 13,
    B158_TT_Q6_K = 14,
    B158_TT_Q8_K = 15,
    B158_TT_I8 = 24,
    B158_TT_I16 = 25,
    B158_TT_I32 = 26,
    B158_TT_I64 = 27,
    B158_TT_F64 = 28,
    B158_TT_BF16 = 30,
    B158_TT_TQ1_0 = 34,
    B158_TT_TQ2_0 = 35,
    B158_TT_I2_S = 36,
};

#define B158_QK_K 256       /* TQ1_0 / TQ2_0 block size in elements */
#define B158_TQ2_0_BYTES 66 /* qs[64] + fp16 d */
#define B158_TQ1_0_BYTES 54 /* qs[48] + qh[4] + fp16 d */
#define B158_I2S_BLOCK 128  /* I2_S x86 block in elements (32 bytes of codes) */

#endif
