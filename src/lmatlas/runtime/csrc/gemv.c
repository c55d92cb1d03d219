/* The one-row product of a linear layer (batch-1 decoding): y (N) = w (N x K) x (K) + b, for
 * float32 and for bfloat16 (every operand of one dtype). The sums are float32; a bfloat16 y is
 * rounded once (to nearest even), as PyTorch's bfloat16 linear does.
 *
 * A step reads every weight once, so the product is bound by memory if the loop keeps up. What
 * decides how close it comes is how many independent streams of cache lines are in flight: a
 * core reading one run of rows front to back (as MKL's GEMV does) leaves bandwidth unused that
 * several runs read side by side take (measured on GPT-2's matrices from memory, two threads:
 * one run 28-30 GB/s, eight 31-33). So each thread splits its rows into ROWS equal parts and
 * takes one row of each part per pass: ROWS streams, far apart, sharing each load of x.
 *
 * Two paths per dtype in one library, compiled by target attributes rather than -march=native
 * (runtime/native.py builds this file for the baseline) and chosen at run time:
 *
 * - avx512: float32 FMA on 16 lanes; for bfloat16, AVX512-BF16's vdpbf16ps (32 pairs into 16
 *   float32 sums);
 * - avx2: float32 FMA on 8 lanes; bfloat16 widened to float32 (its 16 bits shifted to the top).
 *
 * The threads take contiguous runs of rows; the parallel region calls a function per path (OpenMP
 * outlines a region's body before constants reach it).
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"

void lmatlas_note_team(void); /* team.c */

#define GEMV_PATH_AVX2 1
#define GEMV_PATH_AVX512 2
#define GEMV_FLOAT32 0
#define GEMV_BFLOAT16 1
#define ROWS 8


/* Sums of ROWS rows (w[r] each of K values) with x, or of one row. */
typedef void (*dot_rows_fn)(const void *x, const void *const *w, int64_t K, float *out);
typedef float (*dot_one_fn)(const void *x, const void *w, int64_t K);

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

static void f32_rows_avx2(const void *xv, const void *const *wv, int64_t K, float *out) {
    const float *x = xv, *w[ROWS];
    for (int r = 0; r < ROWS; ++r) w[r] = wv[r];
    const int64_t body = K / 8 * 8;
    __m256 acc[ROWS];
    for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < body; k += 8) {
        const __m256 xk = _mm256_loadu_ps(x + k);
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + k), xk, acc[r]);
    }
    for (int r = 0; r < ROWS; ++r) {
        float sum = hsum256(acc[r]);
        for (int64_t k = body; k < K; ++k) sum += w[r][k] * x[k];
        out[r] = sum;
    }
}

static float f32_one_avx2(const void *xv, const void *wv, int64_t K) {
    const float *x = xv, *w = wv;
    const int64_t body = K / 8 * 8;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < body; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), acc);
    float sum = hsum256(acc);
    for (int64_t k = body; k < K; ++k) sum += w[k] * x[k];
    return sum;
}

static void bf16_rows_avx2(const void *xv, const void *const *wv, int64_t K, float *out) {
    const uint16_t *x = xv, *w[ROWS];
    for (int r = 0; r < ROWS; ++r) w[r] = wv[r];
    const int64_t body = K / 8 * 8;
    __m256 acc[ROWS];
    for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < body; k += 8) {
        const __m256 xk = widen8(x + k);
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_fmadd_ps(widen8(w[r] + k), xk, acc[r]);
    }
    for (int r = 0; r < ROWS; ++r) {
        float sum = hsum256(acc[r]);
        for (int64_t k = body; k < K; ++k) sum += bf16_to_float(w[r][k]) * bf16_to_float(x[k]);
        out[r] = sum;
    }
}

static float bf16_one_avx2(const void *xv, const void *wv, int64_t K) {
    const uint16_t *x = xv, *w = wv;
    const int64_t body = K / 8 * 8;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < body; k += 8) acc = _mm256_fmadd_ps(widen8(w + k), widen8(x + k), acc);
    float sum = hsum256(acc);
    for (int64_t k = body; k < K; ++k) sum += bf16_to_float(w[k]) * bf16_to_float(x[k]);
    return sum;
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")
static void f32_rows_avx512(const void *xv, const void *const *wv, int64_t K, float *out) {
    const float *x = xv, *w[ROWS];
    for (int r = 0; r < ROWS; ++r) w[r] = wv[r];
    const int64_t body = K / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (K - body)) - 1);
    __m512 acc[ROWS];
    for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 16) {
        const __m512 xk = _mm512_loadu_ps(x + k);
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w[r] + k), xk, acc[r]);
    }
    if (tail) {
        const __m512 xk = _mm512_maskz_loadu_ps(tail, x + body);
        for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w[r] + body), xk, acc[r]);
    }
    for (int r = 0; r < ROWS; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

static float f32_one_avx512(const void *xv, const void *wv, int64_t K) {
    const float *x = xv, *w = wv;
    const int64_t body = K / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (K - body)) - 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc);
    if (tail) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + body), _mm512_maskz_loadu_ps(tail, x + body), acc);
    return _mm512_reduce_add_ps(acc);
}

static void bf16_rows_avx512(const void *xv, const void *const *wv, int64_t K, float *out) {
    const uint16_t *x = xv, *w[ROWS];
    for (int r = 0; r < ROWS; ++r) w[r] = wv[r];
    const int64_t body = K / 32 * 32;
    const __mmask32 tail = (__mmask32)((1ull << (K - body)) - 1);
    __m512 acc[ROWS];
    for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 32) {
        const __m512bh xk = (__m512bh)_mm512_loadu_si512((const void *)(x + k));
        for (int r = 0; r < ROWS; ++r)
            acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512((const void *)(w[r] + k)), xk);
    }
    if (tail) {
        const __m512bh xk = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + body);
        for (int r = 0; r < ROWS; ++r)
            acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_maskz_loadu_epi16(tail, w[r] + body), xk);
    }
    for (int r = 0; r < ROWS; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

static float bf16_one_avx512(const void *xv, const void *wv, int64_t K) {
    const uint16_t *x = xv, *w = wv;
    const int64_t body = K / 32 * 32;
    const __mmask32 tail = (__mmask32)((1ull << (K - body)) - 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 32)
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512((const void *)(w + k)),
                               (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
    if (tail)
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(tail, w + body),
                               (__m512bh)_mm512_maskz_loadu_epi16(tail, x + body));
    return _mm512_reduce_add_ps(acc);
}
#pragma GCC pop_options
#endif

/* Rows n0..n1 of y: the run cut into ROWS parts of q rows, pass i taking row i of each part;
 * the rows past ROWS * q one at a time. */
static void run(dot_rows_fn dot_rows, dot_one_fn dot_one, int dtype, const void *x, const void *w, const void *b,
                void *y, int64_t n0, int64_t n1, int64_t K) {
    const size_t row_bytes = (size_t)K * (dtype == GEMV_BFLOAT16 ? 2 : 4);
    const int64_t q = (n1 - n0) / ROWS;
    float sums[ROWS];
    const void *rows[ROWS];
    int64_t index[ROWS];
    for (int64_t i = 0; i < q + (n1 - n0) % ROWS; ++i) {
        int count;
        if (i < q) {
            for (int r = 0; r < ROWS; ++r) index[r] = n0 + r * q + i;
            count = ROWS;
        } else {
            index[0] = n0 + ROWS * q + (i - q);
            count = 1;
        }
        for (int r = 0; r < count; ++r) rows[r] = (const char *)w + (size_t)index[r] * row_bytes;
        if (count == ROWS)
            dot_rows(x, rows, K, sums);
        else
            sums[0] = dot_one(x, rows[0], K);
        for (int r = 0; r < count; ++r) {
            const int64_t n = index[r];
            if (dtype == GEMV_BFLOAT16)
                ((uint16_t *)y)[n] = float_to_bf16(sums[r] + (b ? bf16_to_float(((const uint16_t *)b)[n]) : 0.0f));
            else
                ((float *)y)[n] = sums[r] + (b ? ((const float *)b)[n] : 0.0f);
        }
    }
}

/* Which paths this CPU runs for a dtype: bit GEMV_PATH_AVX2, bit GEMV_PATH_AVX512. */
int gemv_paths(int dtype) {
    int paths = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) paths |= 1 << GEMV_PATH_AVX2;
    if ((paths >> GEMV_PATH_AVX2 & 1) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && (dtype == GEMV_FLOAT32 || __builtin_cpu_supports("avx512bf16")))
        paths |= 1 << GEMV_PATH_AVX512;
#else
    (void)dtype;
#endif
    return paths;
}

/* x: K, w: N x K, b: N or NULL, y: N; all of ``dtype`` (float32, or bfloat16 as uint16).
 * Returns -1 for a path this CPU lacks or an unknown dtype. */
int gemv(int path, int dtype, const void *x, const void *w, const void *b, void *y, int64_t N, int64_t K,
         int threads) {
    if ((dtype != GEMV_FLOAT32 && dtype != GEMV_BFLOAT16) || !(gemv_paths(dtype) >> path & 1)) return -1;
#if defined(__x86_64__) || defined(__i386__)
    dot_rows_fn dot_rows;
    dot_one_fn dot_one;
    if (path == GEMV_PATH_AVX512) {
        dot_rows = dtype == GEMV_FLOAT32 ? f32_rows_avx512 : bf16_rows_avx512;
        dot_one = dtype == GEMV_FLOAT32 ? f32_one_avx512 : bf16_one_avx512;
    } else {
        dot_rows = dtype == GEMV_FLOAT32 ? f32_rows_avx2 : bf16_rows_avx2;
        dot_one = dtype == GEMV_FLOAT32 ? f32_one_avx2 : bf16_one_avx2;
    }
#pragma omp parallel num_threads(threads)
    {
        /* Contiguous runs of rows, as even as they come. */
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t share = N / team, extra = N % team;
        const int64_t n0 = t * share + (t < extra ? t : extra), n1 = n0 + share + (t < extra ? 1 : 0);
        if (t == 0) lmatlas_note_team();
        if (n0 < n1) run(dot_rows, dot_one, dtype, x, w, b, y, n0, n1, K);
    }
    return 0;
#else
    (void)x, (void)w, (void)b, (void)y, (void)N, (void)K, (void)threads;
    return -1;
#endif
}
