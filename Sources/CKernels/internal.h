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

// One implementation of every public operation, per level.
typedef struct {
    void (*matmul)(rwkvx_dtype, const void *, const float *, size_t, const float *, size_t,
                   float *, size_t, size_t, size_t);
    void (*wkv7_step)(size_t, float *, const float *, const float *, const float *,
                      const float *, const float *, const float *, float *, size_t, size_t);
    void (*attention)(const float *, const void *, const void *, rwkvx_dtype, size_t, size_t,
                      const size_t *, size_t, float, float *, float *, size_t, size_t);
    void (*dot_rows)(rwkvx_dtype, const float *, const void *, size_t, size_t, float *,
                     size_t, size_t);
    void (*exp)(const float *, float *, size_t);
} rwkvx_kernel_table;

extern const rwkvx_kernel_table rwkvx_scalar_kernels;
extern const rwkvx_kernel_table rwkvx_avx2_kernels;
extern const rwkvx_kernel_table rwkvx_avx512_kernels;

#endif
