// Machine-limit probes for `rwkvx bench`: a streaming read (memory bandwidth) and
// independent FMA chains (fp32 peak), at the best level this CPU supports. They
// are measurement tools, not model kernels, so they use the CPU's best level
// whatever rwkvx_set_level chose.
#include <immintrin.h>
#include "internal.h"

// Independent accumulator chains: enough to cover FMA latency (4 cycles) times the
// FMA pipes (2) of current x86 cores, with room to spare.
#define FMA_CHAINS 12

__attribute__((target("avx512f")))
static float read_avx512(const float *buffer, size_t count) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), c = _mm512_setzero_ps(), d = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= count; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(buffer + i));
        b = _mm512_add_ps(b, _mm512_load_ps(buffer + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(buffer + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(buffer + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

__attribute__((target("avx2")))
static float read_avx2(const float *buffer, size_t count) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(buffer + i));
        b = _mm256_add_ps(b, _mm256_load_ps(buffer + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(buffer + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(buffer + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

float rwkvx_bench_read(const float *buffer, size_t count) {
    switch (rwkvx_cpu_level()) {
    case RWKVX_LEVEL_AVX512: return read_avx512(buffer, count);
    case RWKVX_LEVEL_AVX2: return read_avx2(buffer, count);
    }
    float s[4] = {0};
    for (size_t i = 0; i + 4 <= count; i += 4) {
        for (int j = 0; j < 4; j++) s[j] += buffer[i + j];
    }
    return s[0] + s[1] + s[2] + s[3];
}

__attribute__((target("avx512f")))
static float fma_avx512(size_t iterations) {
    __m512 acc[FMA_CHAINS];
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
    for (size_t i = 0; i < iterations; i++) {
        for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, b);
    }
    __m512 s = acc[0];
    for (int j = 1; j < FMA_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma")))
static float fma_avx2(size_t iterations) {
    __m256 acc[FMA_CHAINS];
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
    for (size_t i = 0; i < iterations; i++) {
        for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, b);
    }
    __m256 s = acc[0];
    for (int j = 1; j < FMA_CHAINS; j++) s = _mm256_add_ps(s, acc[j]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[7];
}

double rwkvx_bench_fma(size_t iterations, float *sink) {
    switch (rwkvx_cpu_level()) {
    case RWKVX_LEVEL_AVX512:
        *sink = fma_avx512(iterations);
        return (double)iterations * FMA_CHAINS * 16 * 2;
    case RWKVX_LEVEL_AVX2:
        *sink = fma_avx2(iterations);
        return (double)iterations * FMA_CHAINS * 8 * 2;
    }
    float acc[FMA_CHAINS];
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = (float)j;
    for (size_t i = 0; i < iterations; i++) {
        for (int j = 0; j < FMA_CHAINS; j++) acc[j] = fmaf(acc[j], 0.999999f, 1e-6f);
    }
    *sink = acc[0] + acc[FMA_CHAINS - 1];
    return (double)iterations * FMA_CHAINS * 2;
}
