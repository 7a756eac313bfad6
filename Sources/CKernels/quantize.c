// Int8 weight quantisation at load time (not a hot path).
#include "internal.h"

void rwkvx_quantize_i8_rows(const float *w, size_t rows, size_t cols, int8_t *out, float *scales) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float max_abs = 0.0f;
        for (size_t c = 0; c < cols; c++) {
            float a = fabsf(row[c]);
            if (a > max_abs) max_abs = a;
        }
        float scale = max_abs / 127.0f;
        float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (size_t c = 0; c < cols; c++) {
            out[r * cols + c] = (int8_t)lrintf(row[c] * inverse);
        }
        scales[r] = scale;
    }
}
