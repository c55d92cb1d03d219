/* The block formats and entry points of quant.c and quant_x86.c (layouts: quant.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define QK 32              /* weights per block (and per block of the quantized activations) */
#define QK_K 256           /* weights per super-block of the K-quants */
#define PREFETCH_BYTES 2048 /* how far ahead the kernels prefetch the weights (quant_simd.h) */
#define QUANT_GROUP 8      /* rows of x that share a pass over a weight row's blocks */

/* ggml's type ids, as GGUF files name them. */
enum { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };
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

/* Q5_0 and Q5_1, as files store them (llama.cpp's quantizer falls back to Q5_0 for the Q4_K
 * matrices of a Q4_K_M file whose rows are not whole super-blocks of 256): Q4's nibbles, and
 * each weight's fifth bit in qh (bit i of the little-endian 32-bit word for weight i). */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_0;

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_1;

/* The K-quants, run as a file stores them (lmatlas does not make them): 256 weights in 8
 * sub-blocks of 32 (Q4_K, Q5_K) or 16 of 16 (Q6_K), each with its own scale. Layouts: quant_k.c. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 six-bit scales and 8 six-bit minimums, packed */
    uint8_t qs[QK_K / 2];
} block_q4_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; /* as Q4_K's */
    uint8_t qh[QK_K / 8]; /* the fifth bits: bit j of qh[l] for weight l of sub-block j */
    uint8_t qs[QK_K / 2]; /* as Q4_K's */
} block_q5_K;

typedef struct {
    uint8_t ql[QK_K / 2]; /* the low 4 bits */
    uint8_t qh[QK_K / 4]; /* the high 2 bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;

_Static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20 &&
                   sizeof(block_q5_0) == 22 && sizeof(block_q5_1) == 24 &&
                   sizeof(block_q4_K) == 144 && sizeof(block_q5_K) == 176 && sizeof(block_q6_K) == 210,
               "ggml's block sizes");

float quant_fp16(uint16_t h);
int quant_made_here(int type); /* Q8_0, Q4_0, Q4_1: the types lmatlas quantizes to */
int64_t quant_block_bytes(int type);
int64_t quant_block_weights(int type); /* 32, or 256 for the K-quants */

/* Weight i of a Q5 block, 0..31: its nibble and its bit of qh. */
static inline int q5_value(const uint8_t *qs, const uint8_t *qh, int i) {
    const int nibble = i < QK / 2 ? qs[i] & 15 : qs[i - QK / 2] >> 4;
    return nibble | ((qh[i / 8] >> (i % 8)) & 1) << 4;
}

/* What Q4_K and Q5_K share, of super-block sb of a row: d, dmin and the packed scales at the
 * same offsets, and the nibbles, which in Q5_K follow its fifth bits (qh; NULL for Q4_K). */
struct k4_fields {
    uint16_t d, dmin;
    const uint8_t *scales, *qs, *qh;
};

static inline struct k4_fields q4_k_fields(int type, const void *w, int64_t sb) {
    if (type == Q5_K) {
        const block_q5_K *b = (const block_q5_K *)w + sb;
        return (struct k4_fields){b->d, b->dmin, b->scales, b->qs, b->qh};
    }
    const block_q4_K *b = (const block_q4_K *)w + sb;
    return (struct k4_fields){b->d, b->dmin, b->scales, b->qs, NULL};
}

/* Q4_K's scale and minimum of sub-block j (ggml's get_scale_min_k4). */
static inline void q4_k_scale_min(int j, const uint8_t *q, int *scale, int *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* One weight row of K-quant super-blocks against one row of quantized activations (quant_k.c). */
float quant_row_k_scalar(int type, const uint8_t *w, const int8_t *q, const float *d, const float *s, int64_t supers);

/* The rows of y from the quantized activations (q: M x K int8; d, s: M x K/32 scales and
 * scale * sum of the block's q), one function per SIMD path: x w^T + bias, or with wu (not NULL)
 * silu(x w^T) * (x wu^T), a gated MLP's first half. */
#define QUANT_ROWS_ARGS                                                                                           \
    int type, const void *w, const void *wu, const int8_t *q, const float *d, const float *s, const float *bias, \
        float *y, int64_t M, int64_t N, int64_t K, int threads
void quant_rows_avx2(QUANT_ROWS_ARGS);
void quant_rows_avx512vnni(QUANT_ROWS_ARGS);
