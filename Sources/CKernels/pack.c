// Packing of row-major weights into the panel layout of rwkvx_matmul (see the
// header). A load-time step, so it is scalar and the same on every level.
#include "internal.h"

size_t rwkvx_packed_bytes(rwkvx_dtype dtype, size_t rows, size_t cols) {
    return rows * rwkvx_panel_cols(cols) * rwkvx_element_size(dtype);
}

size_t rwkvx_q8_packed_bytes(size_t rows, size_t cols) {
    return rows * ((cols + RWKVX_Q8_PANEL_COLS - 1) / RWKVX_Q8_PANEL_COLS * RWKVX_Q8_PANEL_COLS);
}

// Copies row-major rows into the chunks of `packed`, whose padding is zeroed first.
static void pack(const rwkvx_matrix *packed, const void *src, size_t bytes) {
    memset((void *)packed->base, 0, bytes);
    const size_t esize = packed->esize, chunk = packed->chunk;
    for (size_t r = 0; r < packed->rows; r++) {
        const rwkvx_row row = rwkvx_matrix_row(packed, r);
        const char *from = (const char *)src + r * packed->cols * esize;
        for (size_t c = 0; c < packed->cols; c += chunk) {
            const size_t count = (packed->cols - c < chunk) ? packed->cols - c : chunk;
            memcpy((char *)row.start + (c / chunk) * row.stride, from + c * esize, count * esize);
        }
    }
}

void rwkvx_pack_panels(rwkvx_dtype dtype, const void *src, size_t rows, size_t cols, void *dst) {
    const rwkvx_matrix packed = rwkvx_packed_matrix(dtype, dst, rows, cols);
    pack(&packed, src, rwkvx_packed_bytes(dtype, rows, cols));
}

void rwkvx_pack_q8_panels(const int8_t *src, size_t rows, size_t cols, int8_t *dst) {
    const rwkvx_matrix packed = rwkvx_q8_packed_matrix(dst, rows, cols);
    pack(&packed, src, rwkvx_q8_packed_bytes(rows, cols));
}
