// Run-time choice of the kernel level by CPU features, and the public entry points.
#include <stdlib.h>
#include <strings.h>
#include <stdio.h>
#include "internal.h"

static int detected_level = -1;
static int active_level = -1;

static int detect_level(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("f16c");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512) return RWKVX_LEVEL_AVX512;
    if (avx2) return RWKVX_LEVEL_AVX2;
#endif
    return RWKVX_LEVEL_SCALAR;
}

static int level_from_env(int detected) {
    const char *name = getenv("RWKVX_KERNEL_LEVEL");
    if (name == NULL || *name == '\0') return detected;
    int wanted = detected;
    if (strcasecmp(name, "scalar") == 0) wanted = RWKVX_LEVEL_SCALAR;
    else if (strcasecmp(name, "avx2") == 0) wanted = RWKVX_LEVEL_AVX2;
    else if (strcasecmp(name, "avx512") == 0) wanted = RWKVX_LEVEL_AVX512;
    else fprintf(stderr, "rwkvx: ignoring invalid RWKVX_KERNEL_LEVEL=%s: expected scalar, avx2 or avx512\n", name);
    return wanted < detected ? wanted : detected;
}

int rwkvx_cpu_level(void) {
    if (detected_level < 0) detected_level = detect_level();
    return detected_level;
}

int rwkvx_get_level(void) {
    if (active_level < 0) active_level = level_from_env(rwkvx_cpu_level());
    return active_level;
}

int rwkvx_set_level(int level) {
    int best = rwkvx_cpu_level();
    if (level < 0) level = 0;
    active_level = level < best ? level : best;
    return active_level;
}

const char *rwkvx_level_name(int level) {
    switch (level) {
    case RWKVX_LEVEL_SCALAR: return "scalar";
    case RWKVX_LEVEL_AVX2: return "avx2";
    case RWKVX_LEVEL_AVX512: return "avx512";
    }
    return "unknown";
}

static const rwkvx_kernel_table *table(void) {
    switch (rwkvx_get_level()) {
    case RWKVX_LEVEL_AVX512: return &rwkvx_avx512_kernels;
    case RWKVX_LEVEL_AVX2: return &rwkvx_avx2_kernels;
    default: return &rwkvx_scalar_kernels;
    }
}

void rwkvx_matmul(rwkvx_dtype dtype, const void *w, const float *scales, size_t rows, size_t cols,
                  const float *x, size_t n_tok, float *y, size_t ldy,
                  size_t row_begin, size_t row_end) {
    table()->matmul(dtype, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end);
}

void rwkvx_matmul_by_columns(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols,
                             const float *x, size_t n_tok, float *y, size_t ldy,
                             size_t row_begin, size_t row_end) {
    table()->matmul_by_columns(dtype, w, rows, cols, x, n_tok, y, ldy, row_begin, row_end);
}

void rwkvx_wkv7_step(size_t head_size, float *state,
                     const float *r, const float *w, const float *k, const float *v,
                     const float *kk, const float *a, float *y, size_t h_begin, size_t h_end) {
    table()->wkv7_step(head_size, state, r, w, k, v, kk, a, y, h_begin, h_end);
}

void rwkvx_attention(const float *q, const void *k_cache, const void *v_cache,
                     rwkvx_dtype cache_dtype, size_t ld, size_t head_size,
                     const size_t *ranges, size_t n_ranges, float scale,
                     float *scratch, float *y, size_t h_begin, size_t h_end) {
    table()->attention(q, k_cache, v_cache, cache_dtype, ld, head_size, ranges, n_ranges, scale,
                       scratch, y, h_begin, h_end);
}

void rwkvx_attention_queries(const float *q, size_t ldq, size_t n_query,
                             const void *k_cache, const void *v_cache, rwkvx_dtype cache_dtype,
                             size_t ld, size_t head_size, size_t begin, const size_t *ends, float scale,
                             float *scratch, float *y, size_t ldy, size_t h_begin, size_t h_end) {
    table()->attention_queries(q, ldq, n_query, k_cache, v_cache, cache_dtype, ld, head_size, begin, ends, scale,
                               scratch, y, ldy, h_begin, h_end);
}

void rwkvx_dot_rows(rwkvx_dtype dtype, const float *a, const void *m, size_t ld, size_t n,
                    float *out, size_t row_begin, size_t row_end) {
    table()->dot_rows(dtype, a, m, ld, n, out, row_begin, row_end);
}

void rwkvx_exp(const float *x, float *y, size_t n) {
    table()->exp(x, y, n);
}

// Both run rwkvx_exp over blocks of a stack buffer. The element-wise loops around
// it are plain C, compiled for the baseline CPU.
#define ACTIVATION_BLOCK 256

void rwkvx_sigmoid(const float *x, float *y, size_t n) {
    float e[ACTIVATION_BLOCK];
    for (size_t i = 0; i < n; i += ACTIVATION_BLOCK) {
        const size_t m = (n - i < ACTIVATION_BLOCK) ? n - i : ACTIVATION_BLOCK;
        for (size_t j = 0; j < m; j++) e[j] = -x[i + j];
        rwkvx_exp(e, e, m);
        for (size_t j = 0; j < m; j++) y[i + j] = 1.0f / (1.0f + e[j]);
    }
}

void rwkvx_tanh(const float *x, float *y, size_t n) {
    float e[ACTIVATION_BLOCK];
    for (size_t i = 0; i < n; i += ACTIVATION_BLOCK) {
        const size_t m = (n - i < ACTIVATION_BLOCK) ? n - i : ACTIVATION_BLOCK;
        for (size_t j = 0; j < m; j++) e[j] = 2.0f * x[i + j];
        rwkvx_exp(e, e, m);
        for (size_t j = 0; j < m; j++) y[i + j] = 1.0f - 2.0f / (e[j] + 1.0f);
    }
}

void rwkvx_wkv7_seq(size_t head_size, float *state, size_t n_tok, size_t ld,
                    const float *r, const float *w, const float *k, const float *v,
                    const float *kk, const float *a, float *y) {
    table()->wkv7_seq(head_size, state, n_tok, ld, r, w, k, v, kk, a, y);
}

void rwkvx_tmix_prepare(size_t n, float *a, const float *a0, float *k, float *kk, const float *k_k,
                        const float *k_a, float *v, const float *v_first, const float *v0, const float *v_gate,
                        float *w, const float *w0) {
    table()->tmix_prepare(n, a, a0, k, kk, k_k, k_a, v, v_first, v0, v_gate, w, w0);
}

void rwkvx_tmix_finish(size_t n, float *y, const float *r, const float *k, const float *r_k, const float *v,
                       const float *g, const float *ln_w, const float *ln_b, float eps) {
    table()->tmix_finish(n, y, r, k, r_k, v, g, ln_w, ln_b, eps);
}

void rwkvx_to_f32(rwkvx_dtype dtype, const void *src, float *dst, size_t n) {
    switch (dtype) {
    case RWKVX_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case RWKVX_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = rwkvx_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case RWKVX_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = rwkvx_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case RWKVX_DTYPE_I8:
        for (size_t i = 0; i < n; i++) dst[i] = (float)((const int8_t *)src)[i];
        break;
    }
}

void rwkvx_from_f32(rwkvx_dtype dtype, const float *src, void *dst, size_t n) {
    switch (dtype) {
    case RWKVX_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case RWKVX_DTYPE_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = rwkvx_f32_to_f16(src[i]);
        break;
    case RWKVX_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = rwkvx_f32_to_bf16(src[i]);
        break;
    case RWKVX_DTYPE_I8:
        break;
    }
}
