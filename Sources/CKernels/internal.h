// Declarations shared by the kernel levels; not part of the public header.
#ifndef RWKVX_KERNELS_INTERNAL_H
#define RWKVX_KERNELS_INTERNAL_H

#include <math.h>
#include <string.h>
#include "rwkvx_kernels.h"

static inline float rwkvx_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// IEEE half to single, exact for every input (subnormals, infinities, NaN).
static inline float rwkvx_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            // subnormal half: normalise into a single-precision normal
            int e = -1;
            do { mant <<= 1; e++; } while ((mant & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// Single to IEEE half, rounding to nearest even: subnormal halves are rounded
// correctly, values past the largest half become infinity, and NaN keeps its
// sign and top payload bits with the quiet bit set, as vcvtps2ph does.
static inline uint16_t rwkvx_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    const uint32_t exp = (bits >> 23) & 0xff;
    uint32_t mant = bits & 0x7fffff;
    if (exp == 0xff) {
        if (mant == 0) return sign | 0x7c00;
        return sign | 0x7e00 | (uint16_t)(mant >> 13);
    }
    const int e = (int)exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00;
    if (e <= 0) {
        // Subnormal half (or zero): shift the mantissa with its implicit bit into place.
        if (e < -10) return sign;
        mant |= 0x800000;
        const uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift;
        const uint32_t rest = mant & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fff;
    // A carry out of the mantissa moves into the exponent, up to infinity: still correct.
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) half++;
    return sign | (uint16_t)half;
}

static inline uint16_t rwkvx_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffff) > 0x7f800000) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

static inline size_t rwkvx_element_size(rwkvx_dtype dtype) {
    switch (dtype) {
    case RWKVX_DTYPE_F32: return 4;
    case RWKVX_DTYPE_F16:
    case RWKVX_DTYPE_BF16: return 2;
    case RWKVX_DTYPE_I8: return 1;
    }
    return 4;
}

// Location of one weight row: its columns come in chunks (RWKVX_PANEL_COLS columns
// for the float layouts), and chunk k starts `k * stride` bytes after `start`. A
// row-major row's stride is one chunk, and a packed row's stride is its panel's
// height times a chunk (see rwkvx_pack_panels).
typedef struct {
    const char *start;
    size_t stride;
} rwkvx_row;

// A matrix as the kernels walk it: packed panels of `rows` x `cols` with chunks of
// `chunk` columns (RWKVX_PANEL_COLS, or RWKVX_Q8_PANEL_COLS for rwkvx_matmul_q8), or
// row-major rows `ld` elements apart.
typedef struct {
    const char *base;
    size_t esize;
    size_t rows;
    size_t cols;
    size_t ld;
    size_t chunk;
    int packed;
} rwkvx_matrix;

static inline rwkvx_matrix rwkvx_packed_matrix(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols) {
    rwkvx_matrix m = {(const char *)w, rwkvx_element_size(dtype), rows, cols, 0, RWKVX_PANEL_COLS, 1};
    return m;
}

static inline rwkvx_matrix rwkvx_q8_packed_matrix(const int8_t *w, size_t rows, size_t cols) {
    rwkvx_matrix m = {(const char *)w, 1, rows, cols, 0, RWKVX_Q8_PANEL_COLS, 1};
    return m;
}

static inline rwkvx_matrix rwkvx_plain_matrix(rwkvx_dtype dtype, const void *m, size_t ld) {
    rwkvx_matrix matrix = {(const char *)m, rwkvx_element_size(dtype), 0, 0, ld, RWKVX_PANEL_COLS, 0};
    return matrix;
}

static inline rwkvx_row rwkvx_matrix_row(const rwkvx_matrix *m, size_t r) {
    rwkvx_row row;
    if (m->packed) {
        const size_t padded = (m->cols + m->chunk - 1) / m->chunk * m->chunk;
        const size_t first = r / RWKVX_PANEL_ROWS * RWKVX_PANEL_ROWS;
        const size_t height = (m->rows - first < RWKVX_PANEL_ROWS) ? m->rows - first : RWKVX_PANEL_ROWS;
        row.start = m->base + (first * padded + (r - first) * m->chunk) * m->esize;
        row.stride = height * m->chunk * m->esize;
    } else {
        row.start = m->base + r * m->ld * m->esize;
        row.stride = m->chunk * m->esize;
    }
    return row;
}

// Returns the address of column c of a row in a RWKVX_PANEL_COLS layout.
static inline const char *rwkvx_row_at(rwkvx_row row, size_t esize, size_t c) {
    return row.start + (c / RWKVX_PANEL_COLS) * row.stride + (c % RWKVX_PANEL_COLS) * esize;
}

// One implementation of every public operation, per level.
typedef struct {
    void (*matmul)(rwkvx_dtype, const void *, const float *, size_t, size_t, const float *, size_t,
                   float *, size_t, size_t, size_t);
    void (*matmul_by_columns)(rwkvx_dtype, const void *, size_t, size_t, const float *, size_t, float *, size_t,
                              size_t, size_t);
    void (*wkv7_step)(size_t, float *, const float *, const float *, const float *,
                      const float *, const float *, const float *, float *, size_t, size_t);
    void (*attention)(const float *, const void *, const void *, rwkvx_dtype, size_t, size_t,
                      const size_t *, size_t, float, float *, float *, size_t, size_t);
    void (*attention_queries)(const float *, size_t, size_t, const void *, const void *, rwkvx_dtype, size_t,
                              size_t, size_t, const size_t *, float, float *, float *, size_t, size_t, size_t);
    void (*dot_rows)(rwkvx_dtype, const float *, const void *, size_t, size_t, float *,
                     size_t, size_t);
    void (*exp)(const float *, float *, size_t);
    void (*wkv7_seq)(size_t, float *, size_t, size_t, const float *, const float *, const float *, const float *,
                     const float *, const float *, float *);
    void (*tmix_prepare)(size_t, float *, const float *, float *, float *, const float *, const float *, float *,
                         const float *, const float *, const float *, float *, const float *);
    void (*tmix_finish)(size_t, float *, const float *, const float *, const float *, const float *,
                        const float *, const float *, const float *, float);
} rwkvx_kernel_table;

// Runs rwkvx_wkv7_seq as n_tok single steps. This is the reference, and the path of
// levels and head sizes without a register-resident version.
static inline void rwkvx_wkv7_seq_by_steps(void (*step)(size_t, float *, const float *, const float *,
                                                        const float *, const float *, const float *,
                                                        const float *, float *, size_t, size_t),
                                           size_t head_size, float *state, size_t n_tok, size_t ld,
                                           const float *r, const float *w, const float *k, const float *v,
                                           const float *kk, const float *a, float *y) {
    for (size_t t = 0; t < n_tok; t++) {
        const size_t o = t * ld;
        step(head_size, state, r + o, w + o, k + o, v + o, kk + o, a + o, y + o, 0, 1);
    }
}

extern const rwkvx_kernel_table rwkvx_scalar_kernels;
extern const rwkvx_kernel_table rwkvx_avx2_kernels;
extern const rwkvx_kernel_table rwkvx_avx512_kernels;

#endif
