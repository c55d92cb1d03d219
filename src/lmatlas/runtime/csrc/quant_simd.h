/* The body of one SIMD path of the quantized linear layers (formats and sums: quant.c), on 256-bit
 * registers: one block of 32 weights per register. quant_x86.c includes it once per path, under
 * that path's target pragma, with SIMD (the path's name, a suffix of every function here) and
 * DOT32(u, s) defined: the eight int32 sums of four products each of 32 unsigned bytes u and 32
 * signed bytes s (the one instruction that differs between the paths); and optionally PAIRS, a
 * function that takes the blocks two at a time first and returns how many it took.
 *
 * For each output row, each block is unpacked once into 32 bytes and multiplied with every row of
 * the activations; each row keeps eight float32 partial sums, summed across at the row's end.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SIMD)

static inline __attribute__((always_inline)) float FN(hsum)(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

/* A Q4 block's 16 bytes as its 32 weights' nibbles, one per byte, in the activations' order:
 * the low nibbles (weights 0-15) in the low half, the high nibbles (16-31) in the high half. */
static inline __attribute__((always_inline)) __m256i FN(nibbles)(const uint8_t *qs) {
    const __m128i packed = _mm_loadu_si128((const __m128i *)qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* One weight row (nb blocks of ``type``) against the M rows of quantized activations. */
static inline __attribute__((always_inline)) void FN(row)(const int type, const int M, const uint8_t *w,
                                                          const int8_t *q, const float *d, const float *s,
                                                          int64_t nb, int64_t K, float *out) {
    __m256 acc[QUANT_GROUP];
    float mins[QUANT_GROUP];
    for (int m = 0; m < M; ++m) {
        acc[m] = _mm256_setzero_ps();
        mins[m] = 0.0f;
    }
    int64_t b = 0;
#ifdef PAIRS
    b = PAIRS(type, M, w, q, d, s, nb, K, acc, mins); /* the blocks two at a time on 512-bit registers */
#endif
    for (; b < nb; ++b) {
        __m256i wq;
        float dw, mw = 0.0f;
        if (type == Q8_0) {
            const block_q8_0 *blk = (const block_q8_0 *)w + b;
            wq = _mm256_loadu_si256((const __m256i *)blk->qs);
            dw = _cvtsh_ss(blk->d);
        } else if (type == Q4_0) {
            const block_q4_0 *blk = (const block_q4_0 *)w + b;
            wq = _mm256_sub_epi8(FN(nibbles)(blk->qs), _mm256_set1_epi8(8));
            dw = _cvtsh_ss(blk->d);
        } else {
            const block_q4_1 *blk = (const block_q4_1 *)w + b;
            wq = FN(nibbles)(blk->qs);
            dw = _cvtsh_ss(blk->d);
            mw = _cvtsh_ss(blk->m);
        }
        /* The byte multiply-adds (vpmaddubsw, vpdpbusd) take one unsigned operand: signed
         * weights go in as |w|, with their sign moved onto the activations (vpsignb: a, -a or 0).
         * Q4_1's nibbles are unsigned already. */
        const __m256i u = type == Q4_1 ? wq : _mm256_sign_epi8(wq, wq);
        for (int m = 0; m < M; ++m) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(q + m * K + b * QK));
            const __m256i sa = type == Q4_1 ? a : _mm256_sign_epi8(a, wq);
            const __m256 sums = _mm256_cvtepi32_ps(DOT32(u, sa));
            acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[m * nb + b]), sums, acc[m]);
            if (type == Q4_1) mins[m] += mw * s[m * nb + b];
        }
    }
    for (int m = 0; m < M; ++m) out[m] = FN(hsum)(acc[m]) + mins[m];
}

/* Every output row against every row of x, eight rows of x at a time (a weight row's blocks,
 * a few KB, stay in the L1 cache from one group of eight to the next); each (type, row count of
 * the last group) gets its own copy of the loops, with the row loop unrolled. */
static inline __attribute__((always_inline)) void FN(rows)(const int type, const int tail, const uint8_t *w,
                                                           const int8_t *q, const float *d, const float *s,
                                                           const float *bias, float *y, int64_t M, int64_t N,
                                                           int64_t K, int threads) {
    const int64_t nb = K / QK, row_bytes = nb * quant_block_bytes(type), whole = M - tail;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < N; ++n) {
        if (n == 0) lmatlas_note_team();
        const uint8_t *wn = w + n * row_bytes;
        float out[QUANT_GROUP];
        for (int64_t m0 = 0; m0 < M; m0 += QUANT_GROUP) {
            const int64_t off = m0 * nb;
            if (m0 < whole)
                FN(row)(type, QUANT_GROUP, wn, q + m0 * K, d + off, s + off, nb, K, out);
            else
                FN(row)(type, tail, wn, q + m0 * K, d + off, s + off, nb, K, out);
            const int rows = m0 < whole ? QUANT_GROUP : tail;
            for (int m = 0; m < rows; ++m) y[(m0 + m) * N + n] = out[m] + (bias ? bias[n] : 0.0f);
        }
    }
}

#define FOR_ROWS(T)                                                                                               \
    switch (M % QUANT_GROUP) {                                                                                    \
    case 0: FN(rows)(T, QUANT_GROUP, w, q, d, s, bias, y, M, N, K, threads); break;                               \
    case 1: FN(rows)(T, 1, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    case 2: FN(rows)(T, 2, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    case 3: FN(rows)(T, 3, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    case 4: FN(rows)(T, 4, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    case 5: FN(rows)(T, 5, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    case 6: FN(rows)(T, 6, w, q, d, s, bias, y, M, N, K, threads); break;                                         \
    default: FN(rows)(T, 7, w, q, d, s, bias, y, M, N, K, threads);                                               \
    }

void FN(quant_rows)(QUANT_ROWS_ARGS) {
    switch (type) {
    case Q8_0: FOR_ROWS(Q8_0); break;
    case Q4_0: FOR_ROWS(Q4_0); break;
    default: FOR_ROWS(Q4_1);
    }
}

#undef FOR_ROWS
#undef FN
#undef CAT
#undef CAT_
