// Symmetric per-row int8 quantisation of fp32 weights (the I8 matmul format).
// A load-time step, so it is scalar and the same on every level.
#include "internal.h"

void rwkvx_quantize_i8_rows(const float *w, size_t rows, size_t cols, int8_t *out, float *scales) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float max_abs = 0.0f;
        for (size_t c = 0; c < cols; c++) {
            const float magnitude = fabsf(row[c]);
            if (magnitude > max_abs) max_abs = magnitude;
        }

        const float scale = max_abs / 127.0f;
        scales[r] = scale;
        for (size_t c = 0; c < cols; c++) {
            float q = (scale > 0.0f) ? roundf(row[c] / scale) : 0.0f;
            // Rounding of the division could push |q| just past 127; clamp so the
            // stored value always fits.
            if (q != q) q = 0.0f;  // a NaN weight
            if (q > 127.0f) q = 127.0f;
            if (q < -127.0f) q = -127.0f;
            out[r * cols + c] = (int8_t)q;
        }
    }
}
