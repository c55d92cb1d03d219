/* The x86 SIMD paths of quant.c's linear layers: one body (quant_simd.h) compiled twice, each
 * under its own target pragma rather than -march=native, so that one library holds both and
 * quant.c picks one at run time (``quant_paths``).
 *
 * - avx2: AVX2 + FMA + F16C (Haswell, Zen). The byte products go through vpmaddubsw (pairs of
 *   u8 x s8 into int16: at most 2 x 128 x 127, which does not saturate) and vpmaddwd by ones
 *   (pairs of int16 into int32).
 * - avx512vnni: AVX-512 VNNI on 256-bit registers (its EVEX form needs AVX512VL): vpdpbusd
 *   multiplies u8 x s8 and adds each four into int32 in one instruction, without the int16 step.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#include "quant.h"

void lmatlas_note_team(void); /* team.c */

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define SIMD avx2
#define DOT32(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "quant_simd.h"
#undef SIMD
#undef DOT32
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")
#define SIMD avx512vnni
#define DOT32(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "quant_simd.h"
#undef SIMD
#undef DOT32
#pragma GCC pop_options
#endif
