/* Linear layers on quantized weights, kept in llama.cpp's (ggml's) block formats, for the few
 * rows of a decoding step: y (M, N) = x (M, K) w^T + b, with 1 <= M <= 8 and K a multiple of 32.
 *
 * The weight is N rows of K / 32 blocks, each block 32 consecutive weights of a row, stored as
 * ggml stores them (little-endian, no padding):
 *
 *   Q8_0 (type 8)  34 bytes: fp16 d, int8 q[32]                 w[i] = d * q[i]
 *   Q4_0 (type 2)  18 bytes: fp16 d, uint8 qs[16]               w[i] = d * (nibble i - 8)
 *   Q4_1 (type 3)  20 bytes: fp16 d, fp16 m, uint8 qs[16]       w[i] = d * nibble i + m
 *
 * where nibble i is qs[i] & 15 for i < 16 and qs[i - 16] >> 4 for i >= 16 (ggml's order: the
 * low nibbles hold the block's first half, the high nibbles its second). And, as files store them
 * (lmatlas does not make them):
 *
 *   Q5_0 (type 6)  22 bytes: fp16 d, uint8 qh[4], uint8 qs[16]          w[i] = d * (v_i - 16)
 *   Q5_1 (type 7)  24 bytes: fp16 d, fp16 m, uint8 qh[4], uint8 qs[16]  w[i] = d * v_i + m
 *
 * with v_i = nibble i + 16 * (bit i of qh, a little-endian 32-bit word), and the K-quants Q4_K,
 * Q5_K and Q6_K (quant_k.c).
 *
 * As in ggml, the activations are quantized on the fly, each row's blocks of 32 to int8 with a
 * scale (a = da * qa, da = max |a| / 127, rounded half away from zero), so that a block's products
 * are integer multiply-adds: sum_i w[i] a[i] = dw * da * sum_i q[i] qa[i] (+ m * da * sum_i qa[i]
 * for Q4_1). Unlike ggml, which stores da in fp16, da and da * sum qa stay in float32: it costs
 * nothing and loses less. The integer sums are exact, so every path gives the same numbers up to
 * the order of the float32 sums.
 *
 * Three paths, one library: ``scalar`` (portable C), and in quant_x86.c ``avx2`` and
 * ``avx512vnni``, compiled with target attributes rather than -march=native (this file and
 * quant_x86.c are built without it: see runtime/native.py) and chosen at run time from what the
 * CPU supports (``quant_paths``). Threads: the output rows are shared among ``threads``.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

void lmatlas_note_team(void); /* team.c */

float quant_fp16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float32 */
        const float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 0x1F)
        bits = sign | 0x7F800000u | (man << 13); /* inf, nan */
    else
        bits = sign | ((exp + 112) << 23) | (man << 13); /* exponent bias 15 -> 127 */
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* float32 -> float16, rounded to nearest even (as numpy's astype(float16)). */
static uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t abs = x & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return sign | 0x7E00; /* nan */
    if (abs >= 0x477FF000u) return sign | 0x7C00; /* 65520 and beyond round to inf */
    if (abs < 0x38800000u) { /* below 2^-14: a subnormal half, in units of 2^-24 */
        float a;
        memcpy(&a, &abs, sizeof a);
        return sign | (uint16_t)nearbyintf(a * 0x1p24f);
    }
    const uint32_t h = abs - 0x38000000u; /* exponent bias 127 -> 15 */
    return sign | (uint16_t)((h + 0xFFFu + ((h >> 13) & 1)) >> 13);
}

/* A float matrix's blocks, to the bytes of the gguf package's quantize (its numpy code, step by
 * step in float32: the scale from the largest magnitude, or from max and min for Q4_1; 1 / d,
 * 0 for an all-zero block; values rounded half away from zero (Q8_0) or shifted and truncated). */
static void quantize_block(int type, const float *x, uint8_t *out) {
    if (type == Q8_0) {
        block_q8_0 *y = (block_q8_0 *)out;
        float amax = 0.0f;
        for (int i = 0; i < QK; ++i) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y->d = fp32_to_fp16(d);
        for (int i = 0; i < QK; ++i) y->qs[i] = (int8_t)roundf(x[i] * id);
    } else if (type == Q4_0) {
        block_q4_0 *y = (block_q4_0 *)out;
        int first = 0; /* the first of the largest magnitudes: its sign is the scale's */
        for (int i = 1; i < QK; ++i)
            if (fabsf(x[i]) > fabsf(x[first])) first = i;
        const float d = x[first] / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y->d = fp32_to_fp16(d);
        for (int i = 0; i < QK / 2; ++i) {
            const float lo = truncf(x[i] * id + 8.5f), hi = truncf(x[i + QK / 2] * id + 8.5f);
            y->qs[i] = (uint8_t)((lo > 15.0f ? 15 : (int)lo) | (hi > 15.0f ? 15 : (int)hi) << 4);
        }
    } else {
        block_q4_1 *y = (block_q4_1 *)out;
        float low = x[0], high = x[0];
        for (int i = 1; i < QK; ++i) {
            low = x[i] < low ? x[i] : low;
            high = x[i] > high ? x[i] : high;
        }
        const float d = (high - low) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y->d = fp32_to_fp16(d);
        y->m = fp32_to_fp16(low);
        for (int i = 0; i < QK / 2; ++i) {
            const float lo = truncf((x[i] - low) * id + 0.5f), hi = truncf((x[i + QK / 2] - low) * id + 0.5f);
            y->qs[i] = (uint8_t)((lo > 15.0f ? 15 : (int)lo) | (hi > 15.0f ? 15 : (int)hi) << 4);
        }
    }
}

int quant_quantize(int type, const float *x, int64_t rows, int64_t K, uint8_t *out, int threads) {
    const int64_t size = quant_block_bytes(type), nb = K / QK;
    if (!quant_made_here(type) || K % QK) return -1; /* the K-quants and Q5 are not made here */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < nb; ++b) quantize_block(type, x + r * K + b * QK, out + (r * nb + b) * size);
    return 0;
}

/* Blocks back to floats, as the gguf package's dequantize: d q (exact in float32), and d q + m for
 * Q4_1 (d q exact: one rounding, with or without a fused multiply-add). */
int quant_dequantize(int type, const uint8_t *w, int64_t rows, int64_t K, float *out, int threads) {
    const int64_t size = quant_block_bytes(type), nb = K / QK;
    if (!size || K % QK || quant_block_weights(type) != QK) return -1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t *blk = w + (r * nb + b) * size;
            float *y = out + r * K + b * QK;
            if (type == Q8_0) {
                const block_q8_0 *x = (const block_q8_0 *)blk;
                const float d = quant_fp16(x->d);
                for (int i = 0; i < QK; ++i) y[i] = (float)x->qs[i] * d;
            } else if (type == Q4_0) {
                const block_q4_0 *x = (const block_q4_0 *)blk;
                const float d = quant_fp16(x->d);
                for (int i = 0; i < QK / 2; ++i) {
                    y[i] = d * (float)((x->qs[i] & 15) - 8);
                    y[i + QK / 2] = d * (float)((x->qs[i] >> 4) - 8);
                }
            } else if (type == Q4_1) {
                const block_q4_1 *x = (const block_q4_1 *)blk;
                const float d = quant_fp16(x->d), m = quant_fp16(x->m);
                for (int i = 0; i < QK / 2; ++i) {
                    y[i] = d * (float)(x->qs[i] & 15) + m;
                    y[i + QK / 2] = d * (float)(x->qs[i] >> 4) + m;
                }
            } else { /* Q5_0, Q5_1: d (v - 16), or d v + m (d v exact: one rounding) */
                const int q5_1 = type == Q5_1;
                const uint8_t *qh = q5_1 ? ((const block_q5_1 *)blk)->qh : ((const block_q5_0 *)blk)->qh;
                const uint8_t *qs = q5_1 ? ((const block_q5_1 *)blk)->qs : ((const block_q5_0 *)blk)->qs;
                const float d = quant_fp16(q5_1 ? ((const block_q5_1 *)blk)->d : ((const block_q5_0 *)blk)->d);
                const float m = q5_1 ? quant_fp16(((const block_q5_1 *)blk)->m) : 0.0f;
                for (int i = 0; i < QK; ++i) {
                    const int v = q5_value(qs, qh, i);
                    y[i] = q5_1 ? d * (float)v + m : d * (float)(v - 16);
                }
            }
        }
    return 0;
}

void quant_activations(const float *x, int64_t M, int64_t K, int8_t *q, float *d, float *s) {
    const int64_t nb = K / QK;
    for (int64_t r = 0; r < M * nb; ++r) {
        const float *xb = x + r * QK;
        float amax = 0.0f;
        for (int i = 0; i < QK; ++i) amax = fmaxf(amax, fabsf(xb[i]));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK; ++i) {
            const int v = (int)roundf(xb[i] * id); /* |v| <= 127: half away from zero, as ggml */
            q[r * QK + i] = (int8_t)v;
            sum += v;
        }
        d[r] = db;
        s[r] = db * (float)sum;
    }
}

int quant_made_here(int type) { return type == Q8_0 || type == Q4_0 || type == Q4_1; }

int64_t quant_block_bytes(int type) {
    switch (type) {
    case Q8_0: return sizeof(block_q8_0);
    case Q4_0: return sizeof(block_q4_0);
    case Q4_1: return sizeof(block_q4_1);
    case Q5_0: return sizeof(block_q5_0);
    case Q5_1: return sizeof(block_q5_1);
    case Q4_K: return sizeof(block_q4_K);
    case Q5_K: return sizeof(block_q5_K);
    case Q6_K: return sizeof(block_q6_K);
    }
    return 0;
}

int64_t quant_block_weights(int type) { return type == Q4_K || type == Q5_K || type == Q6_K ? QK_K : QK; }

/* One weight row's blocks against one activation row, in plain C. */
static float row_dot_scalar(int type, const uint8_t *w, const int8_t *q, const float *d, const float *s, int64_t nb) {
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; ++b, q += QK) {
        int isum = 0;
        if (type == Q8_0) {
            const block_q8_0 *blk = (const block_q8_0 *)w + b;
            for (int i = 0; i < QK; ++i) isum += blk->qs[i] * q[i];
            sum += quant_fp16(blk->d) * d[b] * (float)isum;
        } else if (type == Q4_0) {
            const block_q4_0 *blk = (const block_q4_0 *)w + b;
            for (int i = 0; i < QK / 2; ++i)
                isum += ((blk->qs[i] & 15) - 8) * q[i] + ((blk->qs[i] >> 4) - 8) * q[i + QK / 2];
            sum += quant_fp16(blk->d) * d[b] * (float)isum;
        } else if (type == Q4_1) {
            const block_q4_1 *blk = (const block_q4_1 *)w + b;
            for (int i = 0; i < QK / 2; ++i) isum += (blk->qs[i] & 15) * q[i] + (blk->qs[i] >> 4) * q[i + QK / 2];
            sum += quant_fp16(blk->d) * d[b] * (float)isum + quant_fp16(blk->m) * s[b];
        } else if (type == Q5_0) {
            const block_q5_0 *blk = (const block_q5_0 *)w + b;
            for (int i = 0; i < QK; ++i) isum += (q5_value(blk->qs, blk->qh, i) - 16) * q[i];
            sum += quant_fp16(blk->d) * d[b] * (float)isum;
        } else {
            const block_q5_1 *blk = (const block_q5_1 *)w + b;
            for (int i = 0; i < QK; ++i) isum += q5_value(blk->qs, blk->qh, i) * q[i];
            sum += quant_fp16(blk->d) * d[b] * (float)isum + quant_fp16(blk->m) * s[b];
        }
    }
    return sum;
}

static void quant_rows_scalar(QUANT_ROWS_ARGS) {
    const int64_t nb = K / QK, row_bytes = K / quant_block_weights(type) * quant_block_bytes(type);
    const int k_quant = quant_block_weights(type) == QK_K;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < N; ++n) {
        if (n == 0) lmatlas_note_team();
        const uint8_t *wn = (const uint8_t *)w + n * row_bytes, *un = wu ? (const uint8_t *)wu + n * row_bytes : NULL;
        for (int64_t m = 0; m < M; ++m) {
            const int8_t *qm = q + m * K;
            const float *dm = d + m * nb, *sm = s + m * nb;
            const float dot = k_quant ? quant_row_k_scalar(type, wn, qm, dm, sm, K / QK_K)
                                      : row_dot_scalar(type, wn, qm, dm, sm, nb);
            if (un) {
                const float u = k_quant ? quant_row_k_scalar(type, un, qm, dm, sm, K / QK_K)
                                        : row_dot_scalar(type, un, qm, dm, sm, nb);
                y[m * N + n] = dot / (1.0f + expf(-dot)) * u;
            } else {
                y[m * N + n] = dot + (bias ? bias[n] : 0.0f);
            }
        }
    }
}

int quant_paths(void) {
    int paths = 1 << PATH_SCALAR;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2) paths |= 1 << PATH_AVX2;
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
        paths |= 1 << PATH_AVX512VNNI;
#endif
    return paths;
}

/* The activations quantized once for every output row, then the path's rows. */
static int quant_run(int path, int type, const float *x, const void *w, const void *wu, const float *bias, float *y,
                     int64_t M, int64_t N, int64_t K, int threads) {
    if (M < 1 || !quant_block_bytes(type) || K % quant_block_weights(type) || !(quant_paths() >> path & 1)) return -1;
    const int64_t nb = K / QK;
    int8_t *q = malloc((size_t)(M * K));
    float *d = malloc(sizeof(float) * (size_t)(2 * M * nb));
    if (!q || !d) {
        free(q);
        free(d);
        return -2;
    }
    float *s = d + M * nb;
    quant_activations(x, M, K, q, d, s);
    switch (path) {
#if defined(__x86_64__) || defined(__i386__)
    case PATH_AVX2: quant_rows_avx2(type, w, wu, q, d, s, bias, y, M, N, K, threads); break;
    case PATH_AVX512VNNI: quant_rows_avx512vnni(type, w, wu, q, d, s, bias, y, M, N, K, threads); break;
#endif
    default: quant_rows_scalar(type, w, wu, q, d, s, bias, y, M, N, K, threads);
    }
    free(q);
    free(d);
    return 0;
}

int quant_linear(int path, int type, const float *x, const void *w, const float *bias, float *y, int64_t M,
                 int64_t N, int64_t K, int threads) {
    return quant_run(path, type, x, w, NULL, bias, y, M, N, K, threads);
}

/* y = silu(x wg^T) * (x wu^T): a gated MLP's two products on one quantization of x. */
int quant_gated(int path, int type, const float *x, const void *wg, const void *wu, float *y, int64_t M, int64_t N,
                int64_t K, int threads) {
    return wu ? quant_run(path, type, x, wg, wu, NULL, y, M, N, K, threads) : -1;
}
