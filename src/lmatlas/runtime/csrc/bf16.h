/* bfloat16 as PyTorch stores it (the top 16 bits of a float32), and its rounding from float32
 * (to nearest even, nan kept nan), for the kernels that read or write bfloat16. */
#ifndef LMATLAS_BF16_H
#define LMATLAS_BF16_H

#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40); /* nan stays nan */
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

#endif
