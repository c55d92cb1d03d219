/* One pre-norm decoder layer's decoding step for one token (batch 1), in one call:
 *
 *     h = norm1(x); q, k, v = qkv(h); rotate q and k; append k, v to the cache;
 *     x += out(attention(q, cache)); h = norm2(x); x += fc_out(act(gate(h)) * fc_in(h))
 *
 * (without the gate: act(fc_in(h))). A step of a small model spends as long in Python between
 * its products as in them (about 130 µs a layer: the modules, the checks, a dozen operators,
 * each starting cold after the weights streamed through the caches); here the layer costs one
 * call. The products are the ones the layer's modules would run: float32 or bfloat16 weights
 * through the one-row kernel (gemv.c), quantized ones through the integer kernels (quant.c, with
 * the gated pair in one pass where both are quantized alike and the activation is SiLU); a
 * float32 step's attention is attention.c's. Norms, rotation and activations follow PyTorch's
 * formulas in float32 (norm statistics summed in double), so a step differs from the modules' by
 * rounding only. A bfloat16 step (layer_step_bf16) rounds to bfloat16 wherever the modules hold
 * a bfloat16 tensor (each operator's output), computing in float32 between.
 * lmatlas.runtime.layer_step builds the plan and decides where this applies.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

int gemv(int path, int dtype, const void *x, const void *w, const void *b, void *y, int64_t N, int64_t K,
         int threads);
int quant_linear(int path, int type, const float *x, const void *w, const float *bias, float *y, int64_t M,
                 int64_t N, int64_t K, int threads);
int quant_gated(int path, int type, const float *x, const void *wg, const void *wu, float *y, int64_t M, int64_t N,
                int64_t K, int threads);
void decode_step_attention(const float *q, int64_t q_stride, const float *k_cache, const float *v_cache,
                           const uint8_t *mask, float *out, float *work, float scale, int64_t batch,
                           int64_t heads, int64_t kv_heads, int64_t max_length, int64_t length, int64_t D,
                           int threads);

#define DENSE_WEIGHTS -1 /* a product's type: weights of the step's dtype through gemv, else a ggml type id */
#define NORM_LAYER 0
#define NORM_RMS 1
#define ACT_GELU 0
#define ACT_GELU_TANH 1
#define ACT_SILU 2
#define ACT_RELU 3


/* f rounded to bfloat16 and back: what a bfloat16 tensor holds of it */
static inline float bf(float f) { return bf16_to_float(float_to_bf16(f)); }

/* A product y = w x + b: w (n, k) float32 or ggml blocks; bias float32 or NULL. */
struct product {
    int64_t type;
    const void *w;
    const float *bias;
    int64_t n, k;
};

/* Mirrored by lmatlas.runtime.layer_step.Plan (ctypes): int64 and double fields only. */
struct layer_plan {
    int64_t norm;
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* NULL where the norm has none */
    double eps1, eps2;
    struct product qkv, out, fc_in, gate, fc_out; /* gate.w NULL: not gated */
    int64_t gated_kernel;                         /* gate and fc_in in one quant_gated pass */
    int64_t act;
    int64_t heads, kv_heads, dim, hidden, inner;
    double scale;
    int64_t gemv_path, quant_path;
    struct product qkv_rest[2]; /* the q/k/v product's further runs of rows (w NULL: none), each
                                   writing the rows after the last: a fused projection kept in
                                   parts of different block types */
};

static void norm(int64_t kind, const float *x, const float *w, const float *b, double eps, float *y, int64_t n) {
    double mean = 0.0, var = 0.0;
    if (kind == NORM_LAYER) {
        for (int64_t i = 0; i < n; ++i) mean += x[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; ++i) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    } else {
        for (int64_t i = 0; i < n; ++i) var += (double)x[i] * x[i];
    }
    const float m = (float)mean, rstd = (float)(1.0 / sqrt(var / (double)n + eps));
    for (int64_t i = 0; i < n; ++i) {
        const float v = (x[i] - m) * rstd;
        y[i] = w ? (b ? v * w[i] + b[i] : v * w[i]) : v;
    }
}

static int product(const struct layer_plan *p, const struct product *f, const float *x, float *y, int threads) {
    if (f->type == DENSE_WEIGHTS) return gemv((int)p->gemv_path, 0, x, f->w, f->bias, y, f->n, f->k, threads);
    return quant_linear((int)p->quant_path, (int)f->type, x, f->w, f->bias, y, 1, f->n, f->k, threads);
}

static float activate(int64_t act, float v) {
    switch (act) {
    case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACT_SILU: return v / (1.0f + expf(-v));
    default: return v > 0.0f ? v : 0.0f;
    }
}

/* "Rotate half" (GPT-NeoX, Llama): in each of `heads` rows of `dim`, pairs (i, i + rot/2) of the
 * first `rot` values turn by the angles whose cos and sin (rot values each, the half repeated)
 * are given; the rest pass through. */
static void rotate(float *x, int64_t heads, int64_t dim, int64_t rot, const float *cos, const float *sin) {
    const int64_t half = rot / 2;
    for (int64_t h = 0; h < heads; ++h) {
        float *r = x + h * dim;
        for (int64_t i = 0; i < half; ++i) {
            const float a = r[i], b = r[i + half];
            r[i] = a * cos[i] + -b * sin[i];
            r[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

/* x (hidden): the layer's input; out (hidden): its output. The caches are (kv_heads,
 * max_length, dim), filled up to `start`; the new key and value go to `start`. cos and sin:
 * `rot` values each (rot 0: no rotation). Returns 0, or -1 where a kernel refused (no change to
 * the cache is undone: the caller's fallback recomputes the whole layer from x). */
int layer_step(const struct layer_plan *p, const float *x, float *out, float *k_cache, float *v_cache,
               int64_t max_length, int64_t start, int64_t rot, const float *cos, const float *sin, int threads) {
    const int64_t H = p->hidden, D = p->dim, qd = p->heads * D, kvd = p->kv_heads * D, inner = p->inner;
    const int64_t length = start + 1;
    float *buf = malloc(sizeof(float) * (size_t)(3 * H + qd + 2 * kvd + qd + 2 * inner + p->heads * length));
    if (!buf) return -1;
    float *h = buf, *res = h + H, *x2 = res + H, *qkv = x2 + H, *att = qkv + qd + 2 * kvd, *a = att + qd,
          *g = a + inner, *work = g + inner;
    int failed = 0;

    norm(p->norm, x, p->norm1_w, p->norm1_b, p->eps1, h, H);
    failed |= product(p, &p->qkv, h, qkv, threads);
    for (int64_t i = 0, at = p->qkv.n; i < 2 && p->qkv_rest[i].w; at += p->qkv_rest[i].n, ++i)
        failed |= product(p, &p->qkv_rest[i], h, qkv + at, threads);
    if (failed) goto done;
    if (rot) rotate(qkv, p->heads + p->kv_heads, D, rot, cos, sin);
    for (int64_t j = 0; j < p->kv_heads; ++j) {
        memcpy(k_cache + (j * max_length + start) * D, qkv + qd + j * D, sizeof(float) * (size_t)D);
        memcpy(v_cache + (j * max_length + start) * D, qkv + qd + kvd + j * D, sizeof(float) * (size_t)D);
    }
    decode_step_attention(qkv, qd, k_cache, v_cache, NULL, att, work, (float)p->scale, 1, p->heads, p->kv_heads,
                          max_length, length, D, threads);
    failed |= product(p, &p->out, att, res, threads);
    if (failed) goto done;
    for (int64_t i = 0; i < H; ++i) x2[i] = x[i] + res[i];

    norm(p->norm, x2, p->norm2_w, p->norm2_b, p->eps2, h, H);
    if (p->gated_kernel) {
        failed |= quant_gated((int)p->quant_path, (int)p->gate.type, h, p->gate.w, p->fc_in.w, a, 1, inner, H, threads);
    } else if (p->gate.w) {
        failed |= product(p, &p->gate, h, g, threads) | product(p, &p->fc_in, h, a, threads);
        if (!failed)
            for (int64_t i = 0; i < inner; ++i) a[i] = activate(p->act, g[i]) * a[i];
    } else {
        failed |= product(p, &p->fc_in, h, a, threads);
        if (!failed)
            for (int64_t i = 0; i < inner; ++i) a[i] = activate(p->act, a[i]);
    }
    if (failed) goto done;
    failed |= product(p, &p->fc_out, a, res, threads);
    if (failed) goto done;
    for (int64_t i = 0; i < H; ++i) out[i] = x2[i] + res[i];
done:
    free(buf);
    return failed ? -1 : 0;
}

/* The norm of a bfloat16 row, in float32, rounded to bfloat16 (PyTorch's bfloat16 LayerNorm and
 * the RMSNorm module compute in float32 and round once; their weights are bfloat16). */
static void norm_bf16(int64_t kind, const uint16_t *x, const uint16_t *w, const uint16_t *b, double eps, uint16_t *y,
                      int64_t n) {
    double mean = 0.0, var = 0.0;
    if (kind == NORM_LAYER) {
        for (int64_t i = 0; i < n; ++i) mean += bf16_to_float(x[i]);
        mean /= (double)n;
        for (int64_t i = 0; i < n; ++i) var += (bf16_to_float(x[i]) - mean) * (bf16_to_float(x[i]) - mean);
    } else {
        for (int64_t i = 0; i < n; ++i) var += (double)bf16_to_float(x[i]) * bf16_to_float(x[i]);
    }
    const float m = (float)mean, rstd = (float)(1.0 / sqrt(var / (double)n + eps));
    for (int64_t i = 0; i < n; ++i) {
        const float v = (bf16_to_float(x[i]) - m) * rstd;
        float o = v;
        if (kind == NORM_LAYER) {
            if (w) o = b ? v * bf16_to_float(w[i]) + bf16_to_float(b[i]) : v * bf16_to_float(w[i]);
        } else if (w) {
            o = bf16_to_float(w[i]) * bf(v); /* RMSNorm: weight * (normalized, rounded) */
        }
        y[i] = float_to_bf16(o);
    }
}

/* One query per head over the cache, bfloat16 in and out, float32 between, rounded where
 * PyTorch's SDPA rounds for bfloat16 on the CPU: the scores and their softmax in float32, the
 * unnormalised weights rounded to bfloat16 where they meet the values, the sum of the weighted
 * values divided by the sum of the weights (taken before rounding) at the end, and the output
 * rounded once. The heads are shared among the threads; work holds `length` scores per head. */
static void attend_bf16(const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache, uint16_t *out,
                        float *work, float scale, int64_t heads, int64_t kv_heads, int64_t max_length, int64_t length,
                        int64_t D, int threads) {
    const int64_t per_kv = heads / kv_heads;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t h = 0; h < heads; ++h) {
        const uint16_t *k = k_cache + (h / per_kv) * max_length * D, *v = v_cache + (h / per_kv) * max_length * D;
        float qf[256], acc[256], *sc = work + h * length;
        for (int64_t d = 0; d < D; ++d) qf[d] = bf16_to_float(q[h * D + d]);
        float mx = -FLT_MAX, sum = 0.0f;
        for (int64_t s = 0; s < length; ++s) {
            const uint16_t *row = k + s * D;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < D; ++d) dot += qf[d] * bf16_to_float(row[d]);
            sc[s] = dot * scale;
            mx = sc[s] > mx ? sc[s] : mx;
        }
        for (int64_t s = 0; s < length; ++s) {
            const float e = expf(sc[s] - mx);
            sum += e;
            sc[s] = bf(e); /* the weights meet the values as bfloat16, unnormalised */
        }
        for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
        for (int64_t s = 0; s < length; ++s) {
            const uint16_t *row = v + s * D;
            const float w = sc[s];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) acc[d] += w * bf16_to_float(row[d]);
        }
        for (int64_t d = 0; d < D; ++d) out[h * D + d] = float_to_bf16(acc[d] / sum);
    }
}

static int product_bf16(const struct layer_plan *p, const struct product *f, const uint16_t *x, uint16_t *y,
                        int threads) {
    if (f->type != DENSE_WEIGHTS) return -1; /* no quantized products in a bfloat16 step */
    return gemv((int)p->gemv_path, 1, x, f->w, f->bias, y, f->n, f->k, threads);
}

/* layer_step for a bfloat16 layer: x, the caches, cos and sin, the norms' parameters and the
 * weights all bfloat16 (the plan's pointers to them). */
int layer_step_bf16(const struct layer_plan *p, const uint16_t *x, uint16_t *out, uint16_t *k_cache,
                    uint16_t *v_cache, int64_t max_length, int64_t start, int64_t rot, const uint16_t *cos,
                    const uint16_t *sin, int threads) {
    if (p->qkv_rest[0].w) return -1; /* parts are quantized: a float32 step's */
    const int64_t H = p->hidden, D = p->dim, qd = p->heads * D, kvd = p->kv_heads * D, inner = p->inner;
    const int64_t length = start + 1;
    if (D > 256) return -1;
    uint16_t *buf = malloc(sizeof(uint16_t) * (size_t)(3 * H + qd + 2 * kvd + qd + 2 * inner));
    float *work = malloc(sizeof(float) * (size_t)(p->heads * length));
    int failed = !buf || !work;
    if (failed) goto done;
    uint16_t *h = buf, *res = h + H, *x2 = res + H, *qkv = x2 + H, *att = qkv + qd + 2 * kvd, *a = att + qd,
             *g = a + inner;

    norm_bf16(p->norm, x, (const uint16_t *)p->norm1_w, (const uint16_t *)p->norm1_b, p->eps1, h, H);
    failed |= product_bf16(p, &p->qkv, h, qkv, threads);
    if (failed) goto done;
    if (rot) {
        const int64_t half = rot / 2;
        for (int64_t j = 0; j < p->heads + p->kv_heads; ++j) {
            uint16_t *r = qkv + j * D;
            for (int64_t i = 0; i < half; ++i) {
                const float a0 = bf16_to_float(r[i]), b0 = bf16_to_float(r[i + half]);
                const float c0 = bf16_to_float(cos[i]), s0 = bf16_to_float(sin[i]);
                const float c1 = bf16_to_float(cos[i + half]), s1 = bf16_to_float(sin[i + half]);
                r[i] = float_to_bf16(bf(a0 * c0) + bf(-b0 * s0));
                r[i + half] = float_to_bf16(bf(b0 * c1) + bf(a0 * s1));
            }
        }
    }
    for (int64_t j = 0; j < p->kv_heads; ++j) {
        memcpy(k_cache + (j * max_length + start) * D, qkv + qd + j * D, sizeof(uint16_t) * (size_t)D);
        memcpy(v_cache + (j * max_length + start) * D, qkv + qd + kvd + j * D, sizeof(uint16_t) * (size_t)D);
    }
    attend_bf16(qkv, k_cache, v_cache, att, work, (float)p->scale, p->heads, p->kv_heads, max_length, length, D,
                threads);
    failed |= product_bf16(p, &p->out, att, res, threads);
    if (failed) goto done;
    for (int64_t i = 0; i < H; ++i) x2[i] = float_to_bf16(bf16_to_float(x[i]) + bf16_to_float(res[i]));

    norm_bf16(p->norm, x2, (const uint16_t *)p->norm2_w, (const uint16_t *)p->norm2_b, p->eps2, h, H);
    if (p->gate.w) {
        failed |= product_bf16(p, &p->gate, h, g, threads) | product_bf16(p, &p->fc_in, h, a, threads);
        if (!failed)
            for (int64_t i = 0; i < inner; ++i)
                a[i] = float_to_bf16(bf(activate(p->act, bf16_to_float(g[i]))) * bf16_to_float(a[i]));
    } else {
        failed |= product_bf16(p, &p->fc_in, h, a, threads);
        if (!failed)
            for (int64_t i = 0; i < inner; ++i) a[i] = float_to_bf16(activate(p->act, bf16_to_float(a[i])));
    }
    if (failed) goto done;
    failed |= product_bf16(p, &p->fc_out, a, res, threads);
    if (failed) goto done;
    for (int64_t i = 0; i < H; ++i) out[i] = float_to_bf16(bf16_to_float(x2[i]) + bf16_to_float(res[i]));
done:
    free(buf);
    free(work);
    return failed ? -1 : 0;
}
