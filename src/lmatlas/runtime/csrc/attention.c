/* Cross-attention of a few query rows over a whole source, on the CPU, in float32.
 *
 * A decoding step of an encoder-decoder attends from a few rows (the beams of one source, one
 * token each) to every encoded source token. The source's keys and values are read cold every
 * step (the weights streamed through the caches since the last one), and BLAS's small batched
 * products read them at a fraction of the memory bandwidth. Here each (source, head) pair reads
 * its keys and its values once, front to back:
 *
 *   scores[g][s] = scale * sum_d q[g][d] * kT[d][s]    (one pass over kT, row by row)
 *   p[g][s]      = softmax over s, masked keys at -FLT_MAX (an all-padding source averages)
 *   out[g][d]    = sum_s p[g][s] * v[s][d]              (one pass over v, row by row)
 *
 * Layouts (all contiguous): q and out are (sources * G, heads, D), the query projection's own
 * output and the output projection's input; kT is (sources, heads, D, S), v is (sources, heads,
 * S, D); mask is (sources, S) bytes or NULL; work is (sources * heads, G, S) scratch. G <= 16,
 * D <= 256 (checked by the caller). Built by lmatlas.runtime.native with the system C compiler.
 */
#include <float.h>
#include <stdint.h>

void lmatlas_note_team(void); /* team.c */
#include <string.h>

#define MAX_ROWS 16
#define MAX_DIM 256

/* e^x for x <= 0: 2^n * e^y with n = round(x / ln 2), |y| <= ln(2) / 2, and a degree-7 Taylor
 * polynomial for e^y (relative error below 1e-7, as float32 rounding). Written so that the
 * compiler vectorises it; the rounding adds and subtracts 1.5 * 2^23. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float y = x - n * 0.693147180559945309f;
    float p = 1.0f + y * (1.0f + y * (0.5f + y * (1.0f / 6 + y * (1.0f / 24 + y * (1.0f / 120 +
              y * (1.0f / 720 + y * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

void few_queries_attention(const float *q, const float *kT, const float *v, const uint8_t *mask,
                           float *out, float *work, float scale, int64_t sources, int64_t heads,
                           int64_t G, int64_t S, int64_t D, int threads) {
    const int64_t tasks = sources * heads;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t task = 0; task < tasks; ++task) {
        if (task == 0) lmatlas_note_team();
        const int64_t src = task / heads, h = task % heads;
        const float *k = kT + task * D * S, *val = v + task * S * D;
        float *sc = work + task * G * S;
        float acc[MAX_ROWS * MAX_DIM];

        for (int64_t i = 0; i < G * S; ++i) sc[i] = 0.0f;
        for (int64_t d = 0; d < D; ++d) {
            const float *krow = k + d * S;
            for (int64_t g = 0; g < G; ++g) {
                const float qd = q[((src * G + g) * heads + h) * D + d] * scale;
                float *row = sc + g * S;
#pragma omp simd
                for (int64_t s = 0; s < S; ++s) row[s] += qd * krow[s];
            }
        }
        for (int64_t g = 0; g < G; ++g) {
            float *row = sc + g * S;
            if (mask) {
                const uint8_t *m = mask + src * S;
                for (int64_t s = 0; s < S; ++s)
                    if (!m[s]) row[s] = -FLT_MAX;
            }
            float mx = -FLT_MAX, sum = 0.0f;
#pragma omp simd reduction(max : mx)
            for (int64_t s = 0; s < S; ++s) mx = row[s] > mx ? row[s] : mx;
#pragma omp simd reduction(+ : sum)
            for (int64_t s = 0; s < S; ++s) {
                row[s] = exp_nonpositive(row[s] - mx);
                sum += row[s];
            }
            const float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t s = 0; s < S; ++s) row[s] *= inv;
        }
        for (int64_t i = 0; i < G * D; ++i) acc[i] = 0.0f;
        for (int64_t s = 0; s < S; ++s) {
            const float *vrow = val + s * D;
            for (int64_t g = 0; g < G; ++g) {
                const float p = sc[g * S + s];
                float *a = acc + g * D;
#pragma omp simd
                for (int64_t d = 0; d < D; ++d) a[d] += p * vrow[d];
            }
        }
        for (int64_t g = 0; g < G; ++g)
            memcpy(out + ((src * G + g) * heads + h) * D, acc + g * D, D * sizeof(float));
    }
}

/* Self-attention of a decoding step: one new query row per sequence over that sequence's cached
 * keys and values (its first `length` positions), without a position bias.
 *
 * q is (batch, heads, D) at a row stride of `q_stride` floats (a view into the fused q/k/v
 * projection's output); the caches are (batch, kv_heads, max_length, D), heads sharing a
 * key/value head in groups (grouped-query attention); mask is (batch, length) bytes or NULL;
 * out is (batch, heads, D), the output projection's input; work is (batch * heads, length).
 * D <= 256. SDPA's blocked kernel spends most of such a step on setting up blocks for a
 * single query.
 */
void decode_step_attention(const float *q, int64_t q_stride, const float *k_cache, const float *v_cache,
                           const uint8_t *mask, float *out, float *work, float scale, int64_t batch,
                           int64_t heads, int64_t kv_heads, int64_t max_length, int64_t length, int64_t D,
                           int threads) {
    const int64_t tasks = batch * heads, per_kv = heads / kv_heads;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t task = 0; task < tasks; ++task) {
        if (task == 0) lmatlas_note_team();
        const int64_t b = task / heads, h = task % heads;
        const float *qq = q + b * q_stride + h * D;
        const int64_t base = (b * kv_heads + h / per_kv) * max_length * D;
        const float *k = k_cache + base, *val = v_cache + base;
        const uint8_t *m = mask ? mask + b * length : NULL;
        float *sc = work + task * length;
        float acc[MAX_DIM];

        float mx = -FLT_MAX;
        for (int64_t s = 0; s < length; ++s) {
            const float *krow = k + s * D;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < D; ++d) dot += qq[d] * krow[d];
            sc[s] = (m && !m[s]) ? -FLT_MAX : dot * scale;
            mx = sc[s] > mx ? sc[s] : mx;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t s = 0; s < length; ++s) {
            sc[s] = exp_nonpositive(sc[s] - mx);
            sum += sc[s];
        }
        const float inv = 1.0f / sum;
        for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
        for (int64_t s = 0; s < length; ++s) {
            const float *vrow = val + s * D;
            const float p = sc[s] * inv;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) acc[d] += p * vrow[d];
        }
        memcpy(out + task * D, acc, D * sizeof(float));
    }
}
