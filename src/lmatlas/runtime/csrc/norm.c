/* The residual sum and LayerNorm of a post-norm layer (the Transformer, BART, BERT), for the few
 * rows of a decoding step, in float32: out = LayerNorm(x + y). One call instead of two operators:
 * after every weight stream each operator starts cold, and a step has three of these per layer.
 * Mean and variance are taken over the sum as rounded to float32, in float32, as PyTorch does.
 */
#include <math.h>
#include <stdint.h>

void add_layer_norm(const float *x, const float *y, const float *weight, const float *bias, float *out,
                    int64_t rows, int64_t dim, float eps) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *a = x + r * dim, *b = y + r * dim;
        float *o = out + r * dim;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < dim; ++i) {
            o[i] = a[i] + b[i];
            sum += o[i];
        }
        const float mean = sum / (float)dim;
        float var = 0.0f;
#pragma omp simd reduction(+ : var)
        for (int64_t i = 0; i < dim; ++i) {
            const float d = o[i] - mean;
            var += d * d;
        }
        const float rstd = 1.0f / sqrtf(var / (float)dim + eps);
#pragma omp simd
        for (int64_t i = 0; i < dim; ++i) {
            const float n = (o[i] - mean) * rstd;
            o[i] = weight ? n * weight[i] + (bias ? bias[i] : 0.0f) : n;
        }
    }
}
