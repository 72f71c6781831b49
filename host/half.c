/* FP16 and BF16 conversions for FP16 storage (embedding, LM head, KV cache) on the host. */
#include <string.h>

#include "half.h"

uint16_t b158_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) {   /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) /* < 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(absx >> 23); /* 14..24 */
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx >> 13) - (112u << 10)); /* rebias exponent 127 -> 15 */
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* Branch-free: the exponent is rebiased by a multiply by 2^112, exact for normal and subnormal
 * halves; inf and NaN are patched. (Branches mispredict on tensors of random zeros.) */
float b158_f16_to_f32(uint16_t h)
{
    const uint32_t em = h & 0x7fffu;
    uint32_t x = em << 13;
    float f;
    memcpy(&f, &x, 4);
    f *= 0x1p112f;
    memcpy(&x, &f, 4);
    x = em >= 0x7c00u ? 0x7f800000u | ((em & 0x3ffu) << 13) : x;
    x |= (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t b158_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN stays a quiet NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16); /* ties to even */
}

float b158_bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}
