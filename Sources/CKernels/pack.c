// Packing of row-major weights into the panel layout of rwkvx_matmul (see the
// header). A load-time step, so it is scalar and the same on every level.
#include "internal.h"

size_t rwkvx_packed_bytes(rwkvx_dtype dtype, size_t rows, size_t cols) {
    return rows * rwkvx_panel_cols(cols) * rwkvx_element_size(dtype);
}

void rwkvx_pack_panels(rwkvx_dtype dtype, const void *src, size_t rows, size_t cols, void *dst) {
    const size_t esize = rwkvx_element_size(dtype);
    const rwkvx_matrix packed = rwkvx_packed_matrix(dtype, dst, rows, cols);
    memset(dst, 0, rwkvx_packed_bytes(dtype, rows, cols));
    for (size_t r = 0; r < rows; r++) {
        const rwkvx_row row = rwkvx_matrix_row(&packed, r);
        const char *from = (const char *)src + r * cols * esize;
        for (size_t c = 0; c < cols; c += RWKVX_PANEL_COLS) {
            const size_t count = (cols - c < RWKVX_PANEL_COLS) ? cols - c : RWKVX_PANEL_COLS;
            memcpy((char *)rwkvx_row_at(row, esize, c), from + c * esize, count * esize);
        }
    }
}
