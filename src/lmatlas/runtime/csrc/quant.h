/* The block formats and entry points of quant.c and quant_x86.c (layouts: quant.c). */
#pragma once
#include <stdint.h>

#define QK 32              /* weights per block */
#define QUANT_GROUP 8      /* rows of x that share a pass over a weight row's blocks */

/* ggml's type ids, as GGUF files name them. */
enum { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };
enum { PATH_SCALAR = 0, PATH_AVX2 = 1, PATH_AVX512VNNI = 2 };

typedef struct {
    uint16_t d;
    int8_t qs[QK];
} block_q8_0;

typedef struct {
    uint16_t d;
    uint8_t qs[QK / 2];
} block_q4_0;

typedef struct {
    uint16_t d, m;
    uint8_t qs[QK / 2];
} block_q4_1;

_Static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20,
               "ggml's block sizes");

float quant_fp16(uint16_t h);
int64_t quant_block_bytes(int type);

/* The rows of y from the quantized activations (q: M x K int8; d, s: M x K/32 scales and
 * scale * sum of the block's q), one function per SIMD path. */
#define QUANT_ROWS_ARGS                                                                                           \
    int type, const void *w, const int8_t *q, const float *d, const float *s, const float *bias, float *y,        \
        int64_t M, int64_t N, int64_t K, int threads
void quant_rows_avx2(QUANT_ROWS_ARGS);
void quant_rows_avx512vnni(QUANT_ROWS_ARGS);
