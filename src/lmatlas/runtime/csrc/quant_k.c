/* The K-quants of llama.cpp (Q4_K, Q5_K, Q6_K), as GGUF files store most models' matrices, run as stored
 * in the portable path; the SIMD paths are in quant_simd.h. Each super-block of 256 weights meets
 * eight blocks of 32 quantized activations (quant.c), one per sub-block of 32:
 *
 *   Q4_K (type 12) 144 bytes: fp16 d, fp16 dmin, 12 bytes of 6-bit scales sc[8] and minimums m[8],
 *        qs[128]. Sub-block j holds weights 32j..32j+31: the low nibbles of qs[32 (j / 2) + i]
 *        for even j, the high ones for odd j; w = d sc[j] q - dmin m[j]. Against activations
 *        a = da qa: d sc[j] da sum(q qa) - dmin m[j] (da sum qa).
 *   Q5_K (type 13) 176 bytes: Q4_K's d, dmin and scales, then qh[32], then Q4_K's qs[128]. Weight l of
 *        sub-block j is Q4_K's nibble plus 16 times bit j of qh[l]; w = d sc[j] q - dmin m[j].
 *   Q6_K (type 14) 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], fp16 d.
 *        In each half h of 128 weights (ql + 64h, qh + 32h, scales + 8h), block k of 32 (k < 4)
 *        takes for weight l the low (k < 2) or high nibble of ql[l + 32 (k & 1)] and bits 2k, 2k+1
 *        of qh[l]; w = d scales[2k + l / 16] (q - 32): two scales per block of 32.
 */
#include "quant.h"

float quant_row_k_scalar(int type, const uint8_t *w, const int8_t *q, const float *d, const float *s, int64_t supers) {
    float sum = 0.0f;
    for (int64_t sb = 0; sb < supers; ++sb) {
        if (type == Q4_K || type == Q5_K) {
            const struct k4_fields f = q4_k_fields(type, w, sb);
            const float dd = quant_fp16(f.d), dmin = quant_fp16(f.dmin);
            for (int j = 0; j < 8; ++j) {
                int scale, min;
                q4_k_scale_min(j, f.scales, &scale, &min);
                const int64_t b = sb * 8 + j;
                const uint8_t *qs = f.qs + 32 * (j / 2);
                const int8_t *a = q + b * QK;
                int isum = 0;
                for (int i = 0; i < QK; ++i) {
                    const int v = ((qs[i] >> (4 * (j % 2))) & 15) | (f.qh ? ((f.qh[i] >> j) & 1) << 4 : 0);
                    isum += v * a[i];
                }
                sum += dd * (float)scale * d[b] * (float)isum - dmin * (float)min * s[b];
            }
        } else {
            const block_q6_K *blk = (const block_q6_K *)w + sb;
            const float dd = quant_fp16(blk->d);
            for (int h = 0; h < 2; ++h) {
                const uint8_t *ql = blk->ql + 64 * h, *qh = blk->qh + 32 * h;
                const int8_t *scales = blk->scales + 8 * h;
                for (int k = 0; k < 4; ++k) {
                    const int64_t b = sb * 8 + 4 * h + k;
                    const int8_t *a = q + b * QK;
                    int first = 0, second = 0; /* weights 0-15 and 16-31: two scales */
                    for (int l = 0; l < QK; ++l) {
                        const int low = ql[l + 32 * (k & 1)] >> (k < 2 ? 0 : 4) & 15;
                        const int v = (low | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
                        if (l < 16)
                            first += v * a[l];
                        else
                            second += v * a[l];
                    }
                    sum += dd * d[b] * (float)(scales[2 * k] * first + scales[2 * k + 1] * second);
                }
            }
        }
    }
    return sum;
}
