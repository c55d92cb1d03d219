/* The x86 SIMD paths of quant.c's linear layers: one body (quant_simd.h) compiled twice, each
 * under its own target pragma rather than -march=native, so that one library holds both and
 * quant.c picks one at run time (``quant_paths``).
 *
 * - avx2: AVX2 + FMA + F16C (Haswell, Zen). The byte products go through vpmaddubsw (pairs of
 *   u8 x s8 into int16: at most 2 x 128 x 127, which does not saturate) and vpmaddwd by ones
 *   (pairs of int16 into int32).
 * - avx512vnni: AVX-512 VNNI: vpdpbusd multiplies u8 x s8 and adds each four into int32 in one
 *   instruction, without the int16 step; two blocks at a time on 512-bit registers
 *   (``pairs_avx512vnni``), a last odd block on 256-bit ones (the EVEX form, with AVX512VL).
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

void lmatlas_note_team(void); /* team.c */

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define SIMD avx2
#define DOT32(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "quant_simd.h"
#undef SIMD
#undef DOT32
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")

/* (x0 x 8, x1 x 8): a scale for each of two blocks, over the 16 int32 sums of the pair. */
static inline __attribute__((always_inline)) __m512 pair_ps(float x0, float x1) {
    return _mm512_shuffle_f32x4(_mm512_set1_ps(x0), _mm512_set1_ps(x1), 0);
}

/* Two Q4 blocks' nibbles, one per byte, in the activations' order (see quant_simd.h's nibbles). */
static inline __attribute__((always_inline)) __m512i nibbles_pair(const uint8_t *qs0, const uint8_t *qs1) {
    const __m256i packed = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)qs1), _mm_loadu_si128((const __m128i *)qs0));
    /* 128-bit lanes (lo0, lo1, hi0, hi1), reordered to (lo0, hi0, lo1, hi1) */
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1);
    return _mm512_and_si512(_mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(15));
}

/* The blocks of one weight row two at a time, 64 bytes of weights and of each activation row per
 * vpdpbusd: half the instructions of a block at a time. AVX-512 has no vpsignb: the activations
 * are negated under the mask of the weights' sign bits instead (vpmovb2m, a masked vpsubb), and
 * the weights' magnitudes taken with vpabsb. The pair's two scales, dw * da, go into the halves of
 * one register. The sums are added into the 256-bit accumulators of the caller; returns the
 * number of blocks done. */
static inline __attribute__((always_inline)) int64_t pairs_avx512vnni(const int type, const int M, const uint8_t *w,
                                                                      const int8_t *q, const float *d, const float *s,
                                                                      int64_t nb, int64_t K, __m256 *acc, float *mins) {
    const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i upper = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    __m512 wide[QUANT_GROUP];
    __m128 low[QUANT_GROUP]; /* Q4_1: four blocks' m * (da * sum qa), added lane by lane */
    for (int m = 0; m < M; ++m) {
        wide[m] = _mm512_setzero_ps();
        low[m] = _mm_setzero_ps();
    }
    int64_t b = 0;
    /* Four blocks at a time first: their four weight scales (and Q4_1's minimums) converted from
     * fp16 in one instruction and multiplied with the activations' four scales in one more, where
     * two pairs would take a scalar conversion and a multiplication each. Then pairs. */
    for (; b + 3 < nb; b += 4) {
        __m512i wq0, wq1;
        __m128 dw, mw = _mm_setzero_ps();
        if (type == Q8_0) {
            const block_q8_0 *blk = (const block_q8_0 *)w + b;
            wq0 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)blk[0].qs)),
                                     _mm256_loadu_si256((const __m256i *)blk[1].qs), 1);
            wq1 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)blk[2].qs)),
                                     _mm256_loadu_si256((const __m256i *)blk[3].qs), 1);
            dw = _mm_cvtph_ps(_mm_setr_epi16((short)blk[0].d, (short)blk[1].d, (short)blk[2].d, (short)blk[3].d, 0, 0, 0, 0));
        } else if (type == Q4_0) {
            const block_q4_0 *blk = (const block_q4_0 *)w + b;
            wq0 = _mm512_sub_epi8(nibbles_pair(blk[0].qs, blk[1].qs), _mm512_set1_epi8(8));
            wq1 = _mm512_sub_epi8(nibbles_pair(blk[2].qs, blk[3].qs), _mm512_set1_epi8(8));
            dw = _mm_cvtph_ps(_mm_setr_epi16((short)blk[0].d, (short)blk[1].d, (short)blk[2].d, (short)blk[3].d, 0, 0, 0, 0));
        } else {
            const block_q4_1 *blk = (const block_q4_1 *)w + b;
            wq0 = nibbles_pair(blk[0].qs, blk[1].qs);
            wq1 = nibbles_pair(blk[2].qs, blk[3].qs);
            dw = _mm_cvtph_ps(_mm_setr_epi16((short)blk[0].d, (short)blk[1].d, (short)blk[2].d, (short)blk[3].d, 0, 0, 0, 0));
            mw = _mm_cvtph_ps(_mm_setr_epi16((short)blk[0].m, (short)blk[1].m, (short)blk[2].m, (short)blk[3].m, 0, 0, 0, 0));
        }
        const __mmask64 negative0 = _mm512_movepi8_mask(wq0), negative1 = _mm512_movepi8_mask(wq1);
        const __m512i u0 = type == Q4_1 ? wq0 : _mm512_abs_epi8(wq0), u1 = type == Q4_1 ? wq1 : _mm512_abs_epi8(wq1);
        for (int m = 0; m < M; ++m) {
            const int8_t *qm = q + m * K + b * QK;
            const __m512i a0 = _mm512_loadu_si512((const void *)qm), a1 = _mm512_loadu_si512((const void *)(qm + 2 * QK));
            const __m512i sa0 = type == Q4_1 ? a0 : _mm512_mask_sub_epi8(a0, negative0, _mm512_setzero_si512(), a0);
            const __m512i sa1 = type == Q4_1 ? a1 : _mm512_mask_sub_epi8(a1, negative1, _mm512_setzero_si512(), a1);
            const __m512 sums0 = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, sa0));
            const __m512 sums1 = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, sa1));
            /* dw * da for the four blocks, each spread over its block's eight sums */
            const __m512 scales = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_loadu_ps(d + m * nb + b)));
            wide[m] = _mm512_fmadd_ps(_mm512_permutexvar_ps(halves, scales), sums0, wide[m]);
            wide[m] = _mm512_fmadd_ps(_mm512_permutexvar_ps(upper, scales), sums1, wide[m]);
            if (type == Q4_1) low[m] = _mm_fmadd_ps(mw, _mm_loadu_ps(s + m * nb + b), low[m]);
        }
    }
    if (type == Q4_1)
        for (int m = 0; m < M; ++m) {
            __m128 r = _mm_add_ps(low[m], _mm_movehl_ps(low[m], low[m]));
            mins[m] += _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
        }
    for (; b + 1 < nb; b += 2) {
        __m512i wq;
        __m512 dw;
        float mw0 = 0.0f, mw1 = 0.0f;
        if (type == Q8_0) {
            const block_q8_0 *blk = (const block_q8_0 *)w + b;
            wq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)blk[0].qs)),
                                    _mm256_loadu_si256((const __m256i *)blk[1].qs), 1);
            dw = pair_ps(_cvtsh_ss(blk[0].d), _cvtsh_ss(blk[1].d));
        } else if (type == Q4_0) {
            const block_q4_0 *blk = (const block_q4_0 *)w + b;
            wq = _mm512_sub_epi8(nibbles_pair(blk[0].qs, blk[1].qs), _mm512_set1_epi8(8));
            dw = pair_ps(_cvtsh_ss(blk[0].d), _cvtsh_ss(blk[1].d));
        } else {
            const block_q4_1 *blk = (const block_q4_1 *)w + b;
            wq = nibbles_pair(blk[0].qs, blk[1].qs);
            dw = pair_ps(_cvtsh_ss(blk[0].d), _cvtsh_ss(blk[1].d));
            mw0 = _cvtsh_ss(blk[0].m);
            mw1 = _cvtsh_ss(blk[1].m);
        }
        const __mmask64 negative = _mm512_movepi8_mask(wq);
        const __m512i u = type == Q4_1 ? wq : _mm512_abs_epi8(wq);
        for (int m = 0; m < M; ++m) {
            const __m512i a = _mm512_loadu_si512((const void *)(q + m * K + b * QK));
            const __m512i sa = type == Q4_1 ? a : _mm512_mask_sub_epi8(a, negative, _mm512_setzero_si512(), a);
            const __m512 sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, sa));
            /* the two blocks' activation scales, adjacent in d, spread over the halves */
            const __m128 da = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(d + m * nb + b)));
            const __m512 scale = _mm512_mul_ps(dw, _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(da)));
            wide[m] = _mm512_fmadd_ps(scale, sums, wide[m]);
            if (type == Q4_1) mins[m] += mw0 * s[m * nb + b] + mw1 * s[m * nb + b + 1];
        }
    }
    for (int m = 0; m < M; ++m) {
        const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(wide[m]), 1));
        acc[m] = _mm256_add_ps(acc[m], _mm256_add_ps(_mm512_castps512_ps256(wide[m]), high));
    }
    return b;
}

#define SIMD avx512vnni
#define DOT32(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#define PAIRS pairs_avx512vnni
#include "quant_simd.h"
#undef SIMD
#undef DOT32
#undef PAIRS
#pragma GCC pop_options
#endif
