/* FP16 and BF16 storage: conversions to and from FP32 (host/half.c). */
#ifndef B158_HOST_HALF_H
#define B158_HOST_HALF_H

#include <stdint.h>

uint16_t b158_f32_to_f16(float f); /* round to nearest even, like vstore_half */
float b158_f16_to_f32(uint16_t h);
float b158_bf16_to_f32(uint16_t h);
uint16_t b158_f32_to_bf16(float f); /* round to nearest even, as torch and ggml */

#endif
