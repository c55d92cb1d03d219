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
#include <omp.h>
#include <stdint.h>

void lmatlas_note_team(void); /* team.c */

#define BLOCK 16
#define MAX_LINEAR_ROWS 8

/* Blocks b0 to b1 (pairs of blocks of 16 outputs) for M rows, called with a literal M from
 * linear_run so that each row count gets its own loop, its sums in registers. */
static inline __attribute__((always_inline)) void linear_blocks(const float *x, const float *wp,
                                                               const float *bias, float *y, const int M,
                                                               int64_t N, int64_t K, int64_t p0, int64_t p1) {
    const int64_t blocks = (N + BLOCK - 1) / BLOCK;
    for (int64_t pair = p0; pair < p1; ++pair) {
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

/* One thread's pairs of blocks. A function of its own, outside the parallel region: OpenMP
 * outlines a region's body before constants reach it, so M switched on inside the region would
 * stay a variable (the sums on the stack). */
static __attribute__((noinline)) void linear_run(const float *x, const float *wp, const float *bias, float *y,
                                                 int64_t M, int64_t N, int64_t K, int64_t p0, int64_t p1) {
    switch (M) {
    case 1: linear_blocks(x, wp, bias, y, 1, N, K, p0, p1); break;
    case 2: linear_blocks(x, wp, bias, y, 2, N, K, p0, p1); break;
    case 3: linear_blocks(x, wp, bias, y, 3, N, K, p0, p1); break;
    case 4: linear_blocks(x, wp, bias, y, 4, N, K, p0, p1); break;
    case 5: linear_blocks(x, wp, bias, y, 5, N, K, p0, p1); break;
    case 6: linear_blocks(x, wp, bias, y, 6, N, K, p0, p1); break;
    case 7: linear_blocks(x, wp, bias, y, 7, N, K, p0, p1); break;
    case 8: linear_blocks(x, wp, bias, y, 8, N, K, p0, p1); break;
    }
}

/* x: (M, K); wp: (ceil(N / 16), K, 16); bias: (N) or NULL; y: (M, N). 1 <= M <= 8. The pairs of
 * blocks in one contiguous run per thread, as a static schedule gives them. */
void linear_rows(const float *x, const float *wp, const float *bias, float *y, int64_t M, int64_t N,
                 int64_t K, int threads) {
    const int64_t pairs = ((N + BLOCK - 1) / BLOCK + 1) / 2;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t share = pairs / team, extra = pairs % team;
        const int64_t p0 = t * share + (t < extra ? t : extra), p1 = p0 + share + (t < extra ? 1 : 0);
        if (t == 0) lmatlas_note_team();
        if (p0 < p1) linear_run(x, wp, bias, y, M, N, K, p0, p1);
    }
}
