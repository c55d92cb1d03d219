/* Evicting a buffer from every level of the caches, for timing a kernel as a decode runs it: a
 * decode's weights come from memory at each step (every other weight passed through the caches
 * since), while a candidate timed on a buffer that fits a large last-level cache would be timed
 * on the cache (lmatlas.runtime.calibrate). */
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

void lmatlas_evict(const void *p, int64_t bytes) {
#if defined(__x86_64__) || defined(__i386__)
    const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63);
    const char *end = (const char *)p + bytes;
    for (; c < end; c += 64) _mm_clflush(c);
    _mm_mfence();
#else
    (void)p, (void)bytes;
#endif
}
