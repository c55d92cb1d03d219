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

/* A Q5 block's fifth bits (qh: bit i for weight i) as 32 bytes, 16 where the bit is set and 0
 * elsewhere: each byte takes the qh byte of its weight (a shuffle within each 128-bit half, where
 * the broadcast word holds all four) and tests its own bit. */
static inline __attribute__((always_inline)) __m256i FN(fifth_bits)(const uint8_t *qh) {
    uint32_t word;
    memcpy(&word, qh, sizeof word);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)word),
                                               _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(16));
}

/* One weight row of K-quant super-blocks (layouts: quant_k.c) against the M rows of quantized
 * activations: each sub-block of 32 is unpacked into 32 bytes in the activations' order, as a
 * block of the other types. */
static inline __attribute__((always_inline)) void FN(row_k)(const int type, const int M, const uint8_t *w,
                                                            const int8_t *q, const float *d, const float *s,
                                                            int64_t K, __m256 *acc, float *mins) {
    const int64_t nb = K / QK, supers = K / QK_K;
    const __m256i low4 = _mm256_set1_epi8(15), low2 = _mm256_set1_epi8(3);
    for (int64_t sb = 0; sb < supers; ++sb) {
        if (type == Q4_K || type == Q5_K) {
            const struct k4_fields f = q4_k_fields(type, w, sb);
            const float dd = _cvtsh_ss(f.d), dmin = _cvtsh_ss(f.dmin);
            const __m256i high = f.qh ? _mm256_loadu_si256((const __m256i *)f.qh) : _mm256_setzero_si256();
            for (int c = 0; c < 4; ++c) { /* 32 bytes: sub-blocks 2c (low nibbles) and 2c + 1 (high) */
                const __m256i packed = _mm256_loadu_si256((const __m256i *)(f.qs + 32 * c));
                for (int half = 0; half < 2; ++half) {
                    const int j = 2 * c + half;
                    int scale, min;
                    q4_k_scale_min(j, f.scales, &scale, &min);
                    __m256i u = _mm256_and_si256(half ? _mm256_srli_epi16(packed, 4) : packed, low4);
                    /* bit j of each qh byte as bit 4 (16-bit shifts: the mask keeps each byte's own bit) */
                    if (f.qh)
                        u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, j),
                                                                                  _mm256_set1_epi8(1)), 4));
                    const int64_t b = sb * 8 + j;
                    const float ds = dd * (float)scale, dm = dmin * (float)min;
                    for (int m = 0; m < M; ++m) {
                        const __m256i a = _mm256_loadu_si256((const __m256i *)(q + m * K + b * QK));
                        const __m256 sums = _mm256_cvtepi32_ps(DOT32(u, a));
                        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(ds * d[m * nb + b]), sums, acc[m]);
                        mins[m] -= dm * s[m * nb + b];
                    }
                }
            }
        } else {
            const block_q6_K *blk = (const block_q6_K *)w + sb;
            const float dd = _cvtsh_ss(blk->d);
            for (int h = 0; h < 2; ++h) {
                const __m256i first = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
                const __m256i second = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
                const __m256i high = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                const int8_t *scales = blk->scales + 8 * h;
                for (int k = 0; k < 4; ++k) {
                    const __m256i ql = (k & 1) ? second : first;
                    const __m256i nibble = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
                    /* bits 2k, 2k + 1 of each qh byte as bits 4, 5 (16-bit shifts: the masks keep
                     * each byte's own bits) */
                    const __m256i top = _mm256_and_si256(_mm256_srli_epi16(high, 2 * k), low2);
                    const __m256i wq = _mm256_sub_epi8(_mm256_or_si256(nibble, _mm256_slli_epi16(top, 4)),
                                                       _mm256_set1_epi8(32));
                    const __m256i u = _mm256_sign_epi8(wq, wq);
                    /* the int32 sums 0-3 cover weights 0-15, 4-7 weights 16-31: one scale each */
                    const __m256 scale = _mm256_set_m128(_mm_set1_ps(dd * (float)scales[2 * k + 1]),
                                                         _mm_set1_ps(dd * (float)scales[2 * k]));
                    const int64_t b = sb * 8 + 4 * h + k;
                    for (int m = 0; m < M; ++m) {
                        const __m256i a = _mm256_loadu_si256((const __m256i *)(q + m * K + b * QK));
                        const __m256 sums = _mm256_cvtepi32_ps(DOT32(u, _mm256_sign_epi8(a, wq)));
                        acc[m] = _mm256_fmadd_ps(_mm256_mul_ps(scale, _mm256_set1_ps(d[m * nb + b])), sums, acc[m]);
                    }
                }
            }
        }
    }
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
    if (type == Q4_K || type == Q5_K || type == Q6_K) {
        FN(row_k)(type, M, w, q, d, s, K, acc, mins);
        b = nb;
    }
#ifdef PAIRS
    else if (type != Q5_0 && type != Q5_1)
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
        } else if (type == Q4_1) {
            const block_q4_1 *blk = (const block_q4_1 *)w + b;
            wq = FN(nibbles)(blk->qs);
            dw = _cvtsh_ss(blk->d);
            mw = _cvtsh_ss(blk->m);
        } else if (type == Q5_0) {
            const block_q5_0 *blk = (const block_q5_0 *)w + b;
            wq = _mm256_sub_epi8(_mm256_or_si256(FN(nibbles)(blk->qs), FN(fifth_bits)(blk->qh)), _mm256_set1_epi8(16));
            dw = _cvtsh_ss(blk->d);
        } else {
            const block_q5_1 *blk = (const block_q5_1 *)w + b;
            wq = _mm256_or_si256(FN(nibbles)(blk->qs), FN(fifth_bits)(blk->qh));
            dw = _cvtsh_ss(blk->d);
            mw = _cvtsh_ss(blk->m);
        }
        /* The byte multiply-adds (vpmaddubsw, vpdpbusd) take one unsigned operand: signed
         * weights go in as |w|, with their sign moved onto the activations (vpsignb: a, -a or 0).
         * Q4_1's and Q5_1's values are unsigned already, and add m times the activations' sum. */
        const int offset = type == Q4_1 || type == Q5_1;
        const __m256i u = offset ? wq : _mm256_sign_epi8(wq, wq);
        for (int m = 0; m < M; ++m) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(q + m * K + b * QK));
            const __m256i sa = offset ? a : _mm256_sign_epi8(a, wq);
            const __m256 sums = _mm256_cvtepi32_ps(DOT32(u, sa));
            acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[m * nb + b]), sums, acc[m]);
            if (offset) mins[m] += mw * s[m * nb + b];
        }
    }
    for (int m = 0; m < M; ++m) out[m] = FN(hsum)(acc[m]) + mins[m];
}

/* Output rows n0 to n1 against every row of x, eight rows of x at a time (a weight row's blocks,
 * a few KB, stay in the L1 cache from one group of eight to the next). With ``gated`` (a gated
 * MLP's first half), each output is silu(x wg^T) * (x wu^T): w is wg, and the row of wu beside
 * it is read in the same pass, on the same quantized x. Called with literal type, tail (the row
 * count of the last group) and gated from FN(run), so each gets its own copy of the loops, the
 * row loop unrolled and the accumulators in registers. */
static inline __attribute__((always_inline)) void FN(rows)(const int type, const int tail, const int gated,
                                                           int64_t n0, int64_t n1, const uint8_t *w,
                                                           const uint8_t *wu, const int8_t *q, const float *d,
                                                           const float *s, const float *bias, float *y, int64_t M,
                                                           int64_t N, int64_t K) {
    const int64_t nb = K / QK, row_bytes = K / quant_block_weights(type) * quant_block_bytes(type), whole = M - tail;
    /* Software prefetch PREFETCH_BYTES ahead of the row being read, within the thread's run of
     * rows: the weights come from memory, once, and the hardware prefetcher alone leaves the
     * loop waiting on them (half the speed in a decode). */
    const int64_t ahead = (PREFETCH_BYTES + row_bytes - 1) / row_bytes;
    const int64_t last = n1 * row_bytes;
    for (int64_t n = n0; n < n1; ++n) {
        const int64_t at = n * row_bytes;
        for (int64_t o = at + ahead * row_bytes, stop = o + row_bytes; o < stop && o < last; o += 64) {
            __builtin_prefetch(w + o);
            if (gated) __builtin_prefetch(wu + o);
        }
        float out[QUANT_GROUP], up[QUANT_GROUP];
        for (int64_t m0 = 0; m0 < M; m0 += QUANT_GROUP) {
            const int64_t off = m0 * nb;
            const int rows = m0 < whole ? QUANT_GROUP : tail;
            if (m0 < whole) {
                FN(row)(type, QUANT_GROUP, w + at, q + m0 * K, d + off, s + off, nb, K, out);
                if (gated) FN(row)(type, QUANT_GROUP, wu + at, q + m0 * K, d + off, s + off, nb, K, up);
            } else {
                FN(row)(type, tail, w + at, q + m0 * K, d + off, s + off, nb, K, out);
                if (gated) FN(row)(type, tail, wu + at, q + m0 * K, d + off, s + off, nb, K, up);
            }
            for (int m = 0; m < rows; ++m)
                y[(m0 + m) * N + n] = gated ? out[m] / (1.0f + expf(-out[m])) * up[m] : out[m] + (bias ? bias[n] : 0.0f);
        }
    }
}

#define FOR_ROWS(T, G)                                                                                            \
    switch (M % QUANT_GROUP) {                                                                                    \
    case 0: FN(rows)(T, QUANT_GROUP, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                         \
    case 1: FN(rows)(T, 1, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    case 2: FN(rows)(T, 2, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    case 3: FN(rows)(T, 3, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    case 4: FN(rows)(T, 4, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    case 5: FN(rows)(T, 5, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    case 6: FN(rows)(T, 6, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K); break;                                   \
    default: FN(rows)(T, 7, G, n0, n1, w, wu, q, d, s, bias, y, M, N, K);                                         \
    }

#define FOR_TYPES(G)                                                                                              \
    switch (type) {                                                                                               \
    case Q8_0: FOR_ROWS(Q8_0, G); break;                                                                          \
    case Q4_0: FOR_ROWS(Q4_0, G); break;                                                                          \
    case Q5_0: FOR_ROWS(Q5_0, G); break;                                                                          \
    case Q5_1: FOR_ROWS(Q5_1, G); break;                                                                          \
    case Q4_K: FOR_ROWS(Q4_K, G); break;                                                                          \
    case Q5_K: FOR_ROWS(Q5_K, G); break;                                                                          \
    case Q6_K: FOR_ROWS(Q6_K, G); break;                                                                          \
    default: FOR_ROWS(Q4_1, G);                                                                                   \
    }

/* One thread's output rows. A function of its own, outside the parallel region: OpenMP outlines a
 * region's body before constants reach it, so the type and tail switched on here would be
 * variables inside the region (every block would then test its type, and the accumulators live
 * on the stack). */
static __attribute__((noinline)) void FN(run)(int type, int64_t n0, int64_t n1, const uint8_t *w, const uint8_t *wu,
                                              const int8_t *q, const float *d, const float *s, const float *bias,
                                              float *y, int64_t M, int64_t N, int64_t K) {
    if (wu) {
        FOR_TYPES(1)
    } else {
        FOR_TYPES(0)
    }
}

void FN(quant_rows)(QUANT_ROWS_ARGS) {
    /* The output rows in one contiguous run per thread, as a static schedule gives them. */
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t share = N / team, extra = N % team;
        const int64_t n0 = t * share + (t < extra ? t : extra), n1 = n0 + share + (t < extra ? 1 : 0);
        if (t == 0) lmatlas_note_team();
        if (n0 < n1) FN(run)(type, n0, n1, (const uint8_t *)w, (const uint8_t *)wu, q, d, s, bias, y, M, N, K);
    }
}

#undef FOR_TYPES
#undef FOR_ROWS
#undef FN
#undef CAT
#undef CAT_
