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
} rwkvx_kernel_table;

extern const rwkvx_kernel_table rwkvx_scalar_kernels;
extern const rwkvx_kernel_table rwkvx_avx2_kernels;
extern const rwkvx_kernel_table rwkvx_avx512_kernels;

#endif
