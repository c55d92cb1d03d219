/* The one-row product of a bfloat16 linear layer (batch-1 decoding of a bfloat16 model):
 * y (N) = w (N x K) x (K) + b, every operand bfloat16, the sums in float32 and y rounded to
 * bfloat16 once (to nearest even), as PyTorch's bfloat16 linear does.
 *
 * A step reads every weight once, so the product is bound by memory if the loop keeps up: two
 * bytes a weight. Two paths in one library, compiled by target attributes rather than
 * -march=native (runtime/native.py builds this file for the baseline) and chosen at run time:
 *
 * - avx512bf16: vdpbf16ps multiplies 32 pairs of bfloat16 and adds them into 16 float32 sums;
 * - avx2: each bfloat16 widened to float32 (its 16 bits shifted to the top), then FMA.
 *
 * Four weight rows at a time share each load of x; software prefetch runs 2 KB ahead. The
 * threads take contiguous runs of rows; each run is a function of its own outside the parallel
 * region (OpenMP outlines a region's body before constants reach it).
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

void lmatlas_note_team(void); /* team.c */

#define BF16_PATH_AVX2 1
#define BF16_PATH_AVX512 2
#define ROWS 4

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

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
static inline float hsum256(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

static inline __m256 widen8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static __attribute__((noinline)) void run_avx2(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y,
                                               int64_t n0, int64_t n1, int64_t K) {
    const int64_t body = K / 8 * 8;
    int64_t n = n0;
    for (; n + ROWS <= n1; n += ROWS) {
        const uint16_t *w0 = w + n * K;
        __m256 acc[ROWS];
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
        for (int64_t k = 0; k < body; k += 8) {
            for (int r = 0; r < ROWS; ++r) __builtin_prefetch(w0 + r * K + k + 1024);
            const __m256 xv = widen8(x + k);
            for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_fmadd_ps(widen8(w0 + r * K + k), xv, acc[r]);
        }
        for (int r = 0; r < ROWS; ++r) {
            float sum = hsum256(acc[r]);
            for (int64_t k = body; k < K; ++k) sum += bf16_to_float(w0[r * K + k]) * bf16_to_float(x[k]);
            y[n + r] = float_to_bf16(sum + (b ? bf16_to_float(b[n + r]) : 0.0f));
        }
    }
    for (; n < n1; ++n) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t k = 0; k < body; k += 8) acc = _mm256_fmadd_ps(widen8(w + n * K + k), widen8(x + k), acc);
        float sum = hsum256(acc);
        for (int64_t k = body; k < K; ++k) sum += bf16_to_float(w[n * K + k]) * bf16_to_float(x[k]);
        y[n] = float_to_bf16(sum + (b ? bf16_to_float(b[n]) : 0.0f));
    }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")
static __attribute__((noinline)) void run_avx512(const uint16_t *x, const uint16_t *w, const uint16_t *b,
                                                 uint16_t *y, int64_t n0, int64_t n1, int64_t K) {
    const int64_t body = K / 32 * 32;
    const __mmask32 tail = (__mmask32)((1ull << (K - body)) - 1);
    int64_t n = n0;
    for (; n + ROWS <= n1; n += ROWS) {
        const uint16_t *w0 = w + n * K;
        __m512 acc[ROWS];
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_setzero_ps();
        for (int64_t k = 0; k < body; k += 32) {
            for (int r = 0; r < ROWS; ++r) __builtin_prefetch(w0 + r * K + k + 1024);
            const __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(x + k));
            for (int r = 0; r < ROWS; ++r)
                acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512((const void *)(w0 + r * K + k)), xv);
        }
        if (tail) {
            const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + body);
            for (int r = 0; r < ROWS; ++r)
                acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_maskz_loadu_epi16(tail, w0 + r * K + body), xv);
        }
        for (int r = 0; r < ROWS; ++r)
            y[n + r] = float_to_bf16(_mm512_reduce_add_ps(acc[r]) + (b ? bf16_to_float(b[n + r]) : 0.0f));
    }
    for (; n < n1; ++n) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < body; k += 32)
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512((const void *)(w + n * K + k)),
                                   (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
        if (tail)
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(tail, w + n * K + body),
                                   (__m512bh)_mm512_maskz_loadu_epi16(tail, x + body));
        y[n] = float_to_bf16(_mm512_reduce_add_ps(acc) + (b ? bf16_to_float(b[n]) : 0.0f));
    }
}
#pragma GCC pop_options
#endif

/* Which paths this CPU runs: bit BF16_PATH_AVX2, bit BF16_PATH_AVX512. */
int bf16_paths(void) {
    int paths = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) paths |= 1 << BF16_PATH_AVX2;
    if ((paths >> BF16_PATH_AVX2 & 1) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16"))
        paths |= 1 << BF16_PATH_AVX512;
#endif
    return paths;
}

/* x: K, w: N x K, b: N or NULL, y: N; all bfloat16 (uint16). Returns -1 for a path this CPU
 * lacks. */
int bf16_gemv(int path, const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y, int64_t N, int64_t K,
              int threads) {
    if (!(bf16_paths() >> path & 1)) return -1;
#if defined(__x86_64__) || defined(__i386__)
#pragma omp parallel num_threads(threads)
    {
        /* Runs of whole groups of rows, as even as they come. */
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t groups = (N + ROWS - 1) / ROWS, share = groups / team, extra = groups % team;
        const int64_t g0 = t * share + (t < extra ? t : extra), g1 = g0 + share + (t < extra ? 1 : 0);
        const int64_t n0 = g0 * ROWS, n1 = g1 * ROWS < N ? g1 * ROWS : N;
        if (t == 0) lmatlas_note_team();
        if (n0 < n1) {
            if (path == BF16_PATH_AVX512)
                run_avx512(x, w, b, y, n0, n1, K);
            else
                run_avx2(x, w, b, y, n0, n1, K);
        }
    }
    return 0;
#else
    (void)x, (void)w, (void)b, (void)y, (void)N, (void)K, (void)threads;
    return -1;
#endif
}
