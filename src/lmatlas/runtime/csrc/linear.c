/* A linear layer for the few rows of a decoding step (batched or beam decoding), on the CPU, in
 * float32: y = x w^T + b for M <= 8 rows, reading the weight once, front to back.
 *
 * The weight is stored in blocks of 16 outputs, (blocks, K, 16) (``lmatlas.runtime.native.block_weight``,
 * zero rows pad the last block), so that each step along K reads 64 contiguous bytes that every
 * row multiplies into its 16 running sums: no horizontal sums, no reordering of x. Two blocks are
 * computed at a time, each thread taking a contiguous run of blocks, with software prefetch 2 KB
 * ahead in both streams (with 8 rows, four blocks at a time without prefetch streamed at half the
 * speed). (Figures: benchmarks/README.md.)
 */
#include <stdint.h>

void lmatlas_note_team(void); /* team.c */

#define BLOCK 16
#define MAX_LINEAR_ROWS 8

static inline __attribute__((always_inline)) void linear_blocks(const float *x, const float *wp,
                                                               const float *bias, float *y, const int M,
                                                               int64_t N, int64_t K, int threads) {
    const int64_t blocks = (N + BLOCK - 1) / BLOCK, pairs = (blocks + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t pair = 0; pair < pairs; ++pair) {
        if (pair == 0) lmatlas_note_team();
        const int64_t j0 = 2 * pair, j1 = j0 + 1 < blocks ? j0 + 1 : j0;
        const float *w0 = wp + j0 * K * BLOCK, *w1 = wp + j1 * K * BLOCK;
        float acc0[MAX_LINEAR_ROWS][BLOCK], acc1[MAX_LINEAR_ROWS][BLOCK];
        for (int m = 0; m < M; ++m)
            for (int l = 0; l < BLOCK; ++l) acc0[m][l] = acc1[m][l] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            __builtin_prefetch(w0 + (k + 32) * BLOCK);
            __builtin_prefetch(w1 + (k + 32) * BLOCK);
            const float *a = w0 + k * BLOCK, *c = w1 + k * BLOCK;
            for (int m = 0; m < M; ++m) {
                const float xm = x[m * K + k];
#pragma omp simd
                for (int l = 0; l < BLOCK; ++l) {
                    acc0[m][l] += xm * a[l];
                    acc1[m][l] += xm * c[l];
                }
            }
        }
        for (int m = 0; m < M; ++m)
            for (int l = 0; l < BLOCK; ++l) {
                const int64_t n0 = j0 * BLOCK + l, n1 = j1 * BLOCK + l;
                if (n0 < N) y[m * N + n0] = acc0[m][l] + (bias ? bias[n0] : 0.0f);
                if (j1 != j0 && n1 < N) y[m * N + n1] = acc1[m][l] + (bias ? bias[n1] : 0.0f);
            }
    }
}

/* x: (M, K); wp: (ceil(N / 16), K, 16); bias: (N) or NULL; y: (M, N). 1 <= M <= 8. Each row
 * count gets its own copy of the loop, with the row loop unrolled and the sums in registers. */
void linear_rows(const float *x, const float *wp, const float *bias, float *y, int64_t M, int64_t N,
                 int64_t K, int threads) {
    switch (M) {
    case 1: linear_blocks(x, wp, bias, y, 1, N, K, threads); break;
    case 2: linear_blocks(x, wp, bias, y, 2, N, K, threads); break;
    case 3: linear_blocks(x, wp, bias, y, 3, N, K, threads); break;
    case 4: linear_blocks(x, wp, bias, y, 4, N, K, threads); break;
    case 5: linear_blocks(x, wp, bias, y, 5, N, K, threads); break;
    case 6: linear_blocks(x, wp, bias, y, 6, N, K, threads); break;
    case 7: linear_blocks(x, wp, bias, y, 7, N, K, threads); break;
    case 8: linear_blocks(x, wp, bias, y, 8, N, K, threads); break;
    }
}
