// AVX2 kernels (with FMA and F16C), 8 fp32 lanes.
//
// Every dot product, whatever the batch, runs the same arithmetic: one 8-lane
// accumulator per (row, token), fused multiply-adds over the columns in order, a
// zero-padded tail, then the fixed reduction tree of sum4(). Register tiles only
// change how many of these independent accumulators are live at once, so a row's
// result does not depend on n_tok, on the row range or on the other rows.
//
// Weights are converted to fp32 in registers (F16 by vcvtph2ps, BF16 by a 16-bit
// shift, I8 by sign extension), which is exact, so the only difference from the
// scalar reference is the order of the additions.
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#define LANES 8

// Rows and tokens in one prefill register tile: 8 accumulators, 2 converted
// weight vectors and 4 activation vectors leave room in the 16 ymm registers.
#define TILE_ROWS 2
#define TILE_TOKENS 4

// Rows of a single-token (matrix-vector) pass: 8 independent FMA chains.
#define MATVEC_ROWS 8

// Matrix-vector passes prefetch, into L2, the rows this many 8-row blocks ahead
// at the current column. Without it, a weight read from DRAM converts too slowly
// for the out-of-order window to keep enough cache misses in flight: bf16 at
// 65536 x 768 went from 11 to 20 GB/s (one Zen 4 vCPU, plain reads reach 22-25).
// Addresses past the last row are harmless: prefetches never fault.
#define PREFETCH_BLOCKS 2

// Loads 8 elements of base[i...] as fp32.
static inline __attribute__((always_inline)) __m256 load8(rwkvx_dtype dt, const void *base, size_t i) {
    switch (dt) {
    case RWKVX_DTYPE_F32:
        return _mm256_loadu_ps((const float *)base + i);
    case RWKVX_DTYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    case RWKVX_DTYPE_BF16: {
        __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    case RWKVX_DTYPE_I8:
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + i))));
    }
    return _mm256_setzero_ps();
}

// Loads the `count` (< 8) elements of base[i...] as fp32, zero in the other lanes,
// without reading past them: they are copied into a zeroed buffer first.
static inline __attribute__((always_inline)) __m256 load8_partial(rwkvx_dtype dt, const void *base, size_t i,
                                                                  size_t count) {
    _Alignas(32) unsigned char buffer[LANES * sizeof(float)] = {0};
    const size_t esize = rwkvx_element_size(dt);
    memcpy(buffer, (const char *)base + i * esize, count * esize);
    return load8(dt, buffer, 0);
}

static const float lane_ones[LANES] = {1, 1, 1, 1, 1, 1, 1, 1};

// Loads 8 elements of base[i...] as fp32, or only the first `count` (< 8) of them.
static inline __attribute__((always_inline)) __m256 load8_upto(rwkvx_dtype dt, const void *base, size_t i,
                                                               size_t count) {
    return count >= LANES ? load8(dt, base, i) : load8_partial(dt, base, i, count);
}

// The up to 8 fp32 values of p[0..count) as a vector, zero past them.
static inline __attribute__((always_inline)) __m256 load_head(const float *p, size_t count) {
    return load8_upto(RWKVX_DTYPE_F32, p, 0, count);
}

// Stores the first min(count, 8) lanes of v at p, and nothing past them.
static inline __attribute__((always_inline)) void store_head(float *p, __m256 v, size_t count) {
    if (count >= LANES) {
        _mm256_storeu_ps(p, v);
        return;
    }
    _Alignas(32) float lanes[LANES];
    _mm256_store_ps(lanes, v);
    memcpy(p, lanes, count * sizeof(float));
}

// Horizontal sums of four accumulators, returned as [sum a, sum b, sum c, sum d].
// The tree is fixed: lane i + lane i+4, then pairs (0+1, 2+3), then their sum.
// sum1() feeds the same vector four times, so a lone sum has identical rounding.
static inline __attribute__((always_inline)) __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    __m256 pairs = _mm256_hadd_ps(ab, cd);     // [a01 a23 c01 c23 | b01 b23 d01 d23]
    __m256 sums = _mm256_hadd_ps(pairs, pairs); // [a c a c | b d b d]
    return _mm_unpacklo_ps(_mm256_castps256_ps128(sums), _mm256_extractf128_ps(sums, 1));
}

static inline __attribute__((always_inline)) float sum1(__m256 a) {
    return _mm_cvtss_f32(sum4(a, a, a, a));
}

// ---------------------------------------------------------------------------
// Matrix-vector passes: one token against rows of a matrix (see rwkvx_matrix);
// out[j] = row j . x over n columns. A chunk of RWKVX_PANEL_COLS columns is two
// 8-lane steps, taken in column order, so the order of the additions is that of
// a row-major walk.

// MATVEC_ROWS rows that share a chunk stride. `ahead`: bytes past each chunk to
// prefetch into L2, or 0 for none.
static inline __attribute__((always_inline)) void dot_block(rwkvx_dtype dt, const rwkvx_row *rows, size_t n,
                                                            const float *x, float *out, size_t ahead) {
    const size_t esize = rwkvx_element_size(dt), stride = rows[0].stride;
    __m256 acc[MATVEC_ROWS];
    for (int j = 0; j < MATVEC_ROWS; j++) acc[j] = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + LANES <= n; c += LANES) {
        const size_t offset = (c / RWKVX_PANEL_COLS) * stride + (c % RWKVX_PANEL_COLS) * esize;
        const __m256 xv = _mm256_loadu_ps(x + c);
        for (int j = 0; j < MATVEC_ROWS; j++) {
            if (ahead && (c * esize) % 64 == 0) _mm_prefetch(rows[j].start + offset + ahead, _MM_HINT_T1);
            acc[j] = _mm256_fmadd_ps(load8(dt, rows[j].start + offset, 0), xv, acc[j]);
        }
    }
    if (c < n) {
        const size_t offset = (c / RWKVX_PANEL_COLS) * stride + (c % RWKVX_PANEL_COLS) * esize;
        const __m256 xv = load8_partial(RWKVX_DTYPE_F32, x, c, n - c);
        for (int j = 0; j < MATVEC_ROWS; j++) {
            acc[j] = _mm256_fmadd_ps(load8_partial(dt, rows[j].start + offset, 0, n - c), xv, acc[j]);
        }
    }
    for (int j = 0; j < MATVEC_ROWS; j += 4) {
        _mm_storeu_ps(out + j, sum4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]));
    }
}

static inline __attribute__((always_inline)) float dot_one(rwkvx_dtype dt, rwkvx_row row, size_t n, const float *x) {
    const size_t esize = rwkvx_element_size(dt);
    __m256 acc = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + LANES <= n; c += LANES) {
        acc = _mm256_fmadd_ps(load8(dt, rwkvx_row_at(row, esize, c), 0), _mm256_loadu_ps(x + c), acc);
    }
    if (c < n) {
        acc = _mm256_fmadd_ps(load8_partial(dt, rwkvx_row_at(row, esize, c), 0, n - c),
                              load8_partial(RWKVX_DTYPE_F32, x, c, n - c), acc);
    }
    return sum1(acc);
}

// Rows [r_begin, r_end) of m; out[r - r_begin]. Row-major rows prefetch the rows
// PREFETCH_BLOCKS blocks ahead; packed panels are one sequential stream and need no hint.
static inline __attribute__((always_inline)) void matvec_typed(rwkvx_dtype dt, const rwkvx_matrix *m, size_t n,
                                                               const float *x, float *out,
                                                               size_t r_begin, size_t r_end) {
    const size_t ahead = m->packed ? 0 : PREFETCH_BLOCKS * MATVEC_ROWS * m->ld * m->esize;
    size_t r = r_begin;
    while (r < r_end) {
        if (r + MATVEC_ROWS <= r_end) {
            rwkvx_row rows[MATVEC_ROWS];
            for (int j = 0; j < MATVEC_ROWS; j++) rows[j] = rwkvx_matrix_row(m, r + j);
            if (rows[0].stride == rows[MATVEC_ROWS - 1].stride) {
                dot_block(dt, rows, n, x, out + (r - r_begin), ahead);
                r += MATVEC_ROWS;
                continue;
            }
        }
        out[r - r_begin] = dot_one(dt, rwkvx_matrix_row(m, r), n, x);
        r++;
    }
}

// ---------------------------------------------------------------------------
// Prefill tile: TILE_TOKENS tokens against `nrows` (1 or TILE_ROWS) rows that share
// a chunk stride. Each weight vector is converted once and used for every token.

static inline __attribute__((always_inline)) void matmul_tile(rwkvx_dtype dt, const rwkvx_row *rows, int nrows,
                                                              size_t cols, const float *x, float *y, size_t ldy,
                                                              size_t r, const float *scales, size_t ahead) {
    const size_t esize = rwkvx_element_size(dt), stride = rows[0].stride;
    __m256 acc[TILE_ROWS][TILE_TOKENS];
    for (int j = 0; j < nrows; j++)
        for (int t = 0; t < TILE_TOKENS; t++) acc[j][t] = _mm256_setzero_ps();

    size_t c = 0;
    for (; c + LANES <= cols; c += LANES) {
        const size_t offset = (c / RWKVX_PANEL_COLS) * stride + (c % RWKVX_PANEL_COLS) * esize;
        if (ahead && c % RWKVX_PANEL_COLS == 0) {
            _mm_prefetch(rows[0].start + offset + ahead, _MM_HINT_T1);
            _mm_prefetch(rows[0].start + offset + ahead + 64, _MM_HINT_T1);
        }
        __m256 wv[TILE_ROWS];
        for (int j = 0; j < nrows; j++) wv[j] = load8(dt, rows[j].start + offset, 0);
        for (int t = 0; t < TILE_TOKENS; t++) {
            const __m256 xv = _mm256_loadu_ps(x + t * cols + c);
            for (int j = 0; j < nrows; j++) acc[j][t] = _mm256_fmadd_ps(wv[j], xv, acc[j][t]);
        }
    }
    if (c < cols) {
        const size_t offset = (c / RWKVX_PANEL_COLS) * stride + (c % RWKVX_PANEL_COLS) * esize;
        __m256 wv[TILE_ROWS];
        for (int j = 0; j < nrows; j++) wv[j] = load8_partial(dt, rows[j].start + offset, 0, cols - c);
        for (int t = 0; t < TILE_TOKENS; t++) {
            const __m256 xv = load8_partial(RWKVX_DTYPE_F32, x + t * cols, c, cols - c);
            for (int j = 0; j < nrows; j++) acc[j][t] = _mm256_fmadd_ps(wv[j], xv, acc[j][t]);
        }
    }

    for (int j = 0; j < nrows; j++) {
        float sums[TILE_TOKENS];
        _mm_storeu_ps(sums, sum4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
        const float scale = (dt == RWKVX_DTYPE_I8) ? scales[r + j] : 1.0f;
        for (int t = 0; t < TILE_TOKENS; t++) {
            y[t * ldy + r + j] = (dt == RWKVX_DTYPE_I8) ? sums[t] * scale : sums[t];
        }
    }
}

// Tokens per outer block: the block's activations (at most 64 x cols x 4 bytes)
// stay in L2 while the weight rows of the range stream past them once.
#define TOKEN_BLOCK 64

static inline __attribute__((always_inline)) void matmul_typed(rwkvx_dtype dt, const void *w, const float *scales,
                                                               size_t rows, size_t cols, const float *x, size_t n_tok,
                                                               float *y, size_t ldy,
                                                               size_t row_begin, size_t row_end) {
    const rwkvx_matrix m = rwkvx_packed_matrix(dt, w, rows, cols);
    const size_t tiled_tokens = n_tok - n_tok % TILE_TOKENS;
    for (size_t t0 = 0; t0 < tiled_tokens; t0 += TOKEN_BLOCK) {
        const size_t t_end = (t0 + TOKEN_BLOCK < tiled_tokens) ? t0 + TOKEN_BLOCK : tiled_tokens;
        size_t r = row_begin;
        while (r < row_end) {
            rwkvx_row tile[TILE_ROWS];
            int nrows = 1;
            tile[0] = rwkvx_matrix_row(&m, r);
            if (r + TILE_ROWS <= row_end) {
                for (int j = 1; j < TILE_ROWS; j++) tile[j] = rwkvx_matrix_row(&m, r + j);
                if (tile[TILE_ROWS - 1].stride == tile[0].stride) nrows = TILE_ROWS;
            }
            // As in avx512.c: the first token tile of a row group prefetches the same
            // rows two panels ahead into L2.
            const size_t panel_bytes = RWKVX_PANEL_ROWS * rwkvx_panel_cols(cols) * m.esize;
            const size_t ahead = (r + 3 * RWKVX_PANEL_ROWS <= rows) ? 2 * panel_bytes : 0;
            for (size_t t = t0; t < t_end; t += TILE_TOKENS) {
                const size_t hint = (t == t0) ? ahead : 0;
                if (nrows == TILE_ROWS) {
                    matmul_tile(dt, tile, TILE_ROWS, cols, x + t * cols, y + t * ldy, ldy, r, scales, hint);
                } else {
                    matmul_tile(dt, tile, 1, cols, x + t * cols, y + t * ldy, ldy, r, scales, hint);
                }
            }
            r += (size_t)nrows;
        }
    }

    // Leftover tokens (and the whole of a decode call) take the matrix-vector pass.
    for (size_t t = tiled_tokens; t < n_tok; t++) {
        float *yt = y + t * ldy;
        matvec_typed(dt, &m, cols, x + t * cols, yt + row_begin, row_begin, row_end);
        if (dt == RWKVX_DTYPE_I8) {
            for (size_t r = row_begin; r < row_end; r++) yt[r] *= scales[r];
        }
    }
}

static void avx2_matmul(rwkvx_dtype dtype, const void *w, const float *scales, size_t rows, size_t cols,
                        const float *x, size_t n_tok, float *y, size_t ldy,
                        size_t row_begin, size_t row_end) {
    switch (dtype) {
    case RWKVX_DTYPE_F32: matmul_typed(RWKVX_DTYPE_F32, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_F16: matmul_typed(RWKVX_DTYPE_F16, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_BF16: matmul_typed(RWKVX_DTYPE_BF16, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_I8: matmul_typed(RWKVX_DTYPE_I8, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    }
}

static void avx2_dot_rows(rwkvx_dtype dtype, const float *a, const void *m, size_t ld, size_t n,
                          float *out, size_t row_begin, size_t row_end) {
    const rwkvx_matrix matrix = rwkvx_plain_matrix(dtype, m, ld);
    switch (dtype) {
    case RWKVX_DTYPE_F32: matvec_typed(RWKVX_DTYPE_F32, &matrix, n, a, out, row_begin, row_end); break;
    case RWKVX_DTYPE_F16: matvec_typed(RWKVX_DTYPE_F16, &matrix, n, a, out, row_begin, row_end); break;
    case RWKVX_DTYPE_BF16: matvec_typed(RWKVX_DTYPE_BF16, &matrix, n, a, out, row_begin, row_end); break;
    case RWKVX_DTYPE_I8: matvec_typed(RWKVX_DTYPE_I8, &matrix, n, a, out, row_begin, row_end); break;
    }
}

// ---------------------------------------------------------------------------
// Input-major products (rwkvx_matmul_by_columns): up to 16 output rows in the lanes
// of two vectors and up to 4 tokens, one FMA chain per output over the columns in
// order. Rows past `width` read as zero and are not stored.

#define COLUMN_VECTORS 2
#define COLUMN_TOKENS 4

static inline __attribute__((always_inline)) void by_columns_tile(rwkvx_dtype dt, const char *w, size_t rows,
                                                                  size_t cols, const float *x, int tokens,
                                                                  float *y, size_t ldy, size_t r, size_t width) {
    const size_t esize = rwkvx_element_size(dt);
    // Rows of each vector that exist: LANES, fewer in the last vector, 0 past it.
    size_t counts[COLUMN_VECTORS];
    for (int v = 0; v < COLUMN_VECTORS; v++) {
        const size_t first = (size_t)v * LANES;
        size_t count = 0;
        if (width > first) count = width - first;
        if (count > LANES) count = LANES;
        counts[v] = count;
    }
    __m256 acc[COLUMN_TOKENS][COLUMN_VECTORS];
    for (int t = 0; t < tokens; t++)
        for (int v = 0; v < COLUMN_VECTORS; v++) acc[t][v] = _mm256_setzero_ps();

    for (size_t c = 0; c < cols; c++) {
        const char *column = w + (c * rows + r) * esize;
        __m256 wv[COLUMN_VECTORS];
        for (int v = 0; v < COLUMN_VECTORS; v++) {
            if (counts[v] == LANES) {
                wv[v] = load8(dt, column, (size_t)v * LANES);
            } else if (counts[v] > 0) {
                wv[v] = load8_partial(dt, column, (size_t)v * LANES, counts[v]);
            } else {
                wv[v] = _mm256_setzero_ps();
            }
        }
        for (int t = 0; t < tokens; t++) {
            const __m256 xv = _mm256_set1_ps(x[(size_t)t * cols + c]);
            for (int v = 0; v < COLUMN_VECTORS; v++) acc[t][v] = _mm256_fmadd_ps(xv, wv[v], acc[t][v]);
        }
    }
    for (int t = 0; t < tokens; t++) {
        for (int v = 0; v < COLUMN_VECTORS; v++) {
            if (counts[v]) store_head(y + (size_t)t * ldy + r + (size_t)v * LANES, acc[t][v], counts[v]);
        }
    }
}

static inline __attribute__((always_inline)) void by_columns_typed(rwkvx_dtype dt, const void *w, size_t rows,
                                                                   size_t cols, const float *x, size_t n_tok,
                                                                   float *y, size_t ldy,
                                                                   size_t row_begin, size_t row_end) {
    const size_t block = COLUMN_VECTORS * LANES;
    for (size_t r = row_begin; r < row_end; r += block) {
        const size_t width = (row_end - r < block) ? row_end - r : block;
        size_t t = 0;
        for (; t + COLUMN_TOKENS <= n_tok; t += COLUMN_TOKENS) {
            by_columns_tile(dt, (const char *)w, rows, cols, x + t * cols, COLUMN_TOKENS, y + t * ldy, ldy, r, width);
        }
        for (; t < n_tok; t++) by_columns_tile(dt, (const char *)w, rows, cols, x + t * cols, 1, y + t * ldy, ldy, r, width);
    }
}

static void avx2_matmul_by_columns(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols,
                                   const float *x, size_t n_tok, float *y, size_t ldy,
                                   size_t row_begin, size_t row_end) {
    switch (dtype) {
    case RWKVX_DTYPE_F32: by_columns_typed(RWKVX_DTYPE_F32, w, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_F16: by_columns_typed(RWKVX_DTYPE_F16, w, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_BF16: by_columns_typed(RWKVX_DTYPE_BF16, w, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_I8: by_columns_typed(RWKVX_DTYPE_I8, w, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    }
}

// ---------------------------------------------------------------------------
// WKV-7, vectorised over the key index j; four value rows i share one reduction.
// A head size that is not a multiple of 8 finishes each row with the scalar
// formula below, which is the same for every call.

static inline __attribute__((always_inline)) float wkv7_row_sa(const float *row, const float *kk, size_t n,
                                                               __m256 *acc_out) {
    __m256 acc = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + LANES <= n; j += LANES) acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(kk + j), acc);
    *acc_out = acc;
    float tail = 0.0f;
    for (; j < n; j++) tail += row[j] * kk[j];
    return tail;
}

static inline __attribute__((always_inline)) float wkv7_row_update(float *row, float sa, float vi, const float *w,
                                                                   const float *k, const float *kk, const float *a,
                                                                   const float *r, size_t n, __m256 *acc_out) {
    const __m256 sav = _mm256_set1_ps(sa), viv = _mm256_set1_ps(vi);
    __m256 out = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        const __m256 kka = _mm256_mul_ps(_mm256_loadu_ps(kk + j), _mm256_loadu_ps(a + j));
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(w + j));
        s = _mm256_fnmadd_ps(sav, kka, s);
        s = _mm256_fmadd_ps(viv, _mm256_loadu_ps(k + j), s);
        _mm256_storeu_ps(row + j, s);
        out = _mm256_fmadd_ps(s, _mm256_loadu_ps(r + j), out);
    }
    *acc_out = out;
    float tail = 0.0f;
    for (; j < n; j++) {
        const float updated = row[j] * w[j] - sa * (kk[j] * a[j]) + vi * k[j];
        row[j] = updated;
        tail += updated * r[j];
    }
    return tail;
}

static void avx2_wkv7_step(size_t head_size, float *state,
                           const float *r, const float *w, const float *k, const float *v,
                           const float *kk, const float *a, float *y,
                           size_t h_begin, size_t h_end) {
    const size_t n = head_size;
    for (size_t h = h_begin; h < h_end; h++) {
        float *s = state + h * n * n;
        const size_t o = h * n;
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            __m256 acc[4];
            float tails[4], sa[4], out[4];
            for (int u = 0; u < 4; u++) tails[u] = wkv7_row_sa(s + (i + u) * n, kk + o, n, &acc[u]);
            _mm_storeu_ps(sa, sum4(acc[0], acc[1], acc[2], acc[3]));
            for (int u = 0; u < 4; u++) {
                tails[u] = wkv7_row_update(s + (i + u) * n, sa[u] + tails[u], v[o + i + u], w + o, k + o, kk + o,
                                           a + o, r + o, n, &acc[u]);
            }
            _mm_storeu_ps(out, sum4(acc[0], acc[1], acc[2], acc[3]));
            for (int u = 0; u < 4; u++) y[o + i + u] = out[u] + tails[u];
        }
        for (; i < n; i++) {
            __m256 acc;
            const float sa_tail = wkv7_row_sa(s + i * n, kk + o, n, &acc);
            const float sa = sum1(acc) + sa_tail;
            const float y_tail = wkv7_row_update(s + i * n, sa, v[o + i], w + o, k + o, kk + o, a + o, r + o, n, &acc);
            y[o + i] = sum1(acc) + y_tail;
        }
    }
}

// ---------------------------------------------------------------------------
// exp over 8 lanes: x = n ln2 + r with n = round(x log2 e) and |r| <= ln2 / 2
// (ln2 split in two constants), exp(r) from the degree-7 minimax polynomial of the
// Cephes expf, then two multiplications by 2^(n/2) and 2^(n - n/2), each a normal
// float, so subnormal results round correctly, x below about -103.97 gives 0 and
// above 88.72 gives +inf. Relative error against expf is below 3e-7 (KernelTests).
static inline __attribute__((always_inline)) __m256 exp8(__m256 x) {
    // NaN stays NaN: max and min return their second operand when it is NaN.
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // n is in [-150, 128]; both halves are in [-75, 64].
    const __m256i whole = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(whole, 1);
    const __m256i rest = _mm256_sub_epi32(whole, half);
    const __m256 scale_a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    const __m256 scale_b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, scale_a), scale_b);
}

static void avx2_exp(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) store_head(y + i, exp8(load8_partial(RWKVX_DTYPE_F32, x, i, n - i)), n - i);
}

// ---------------------------------------------------------------------------
// Time-mix activations of one head (see rwkvx_tmix_prepare and _finish).

static inline __attribute__((always_inline)) __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static void avx2_tmix_prepare(size_t n, float *a, const float *a0, float *k, float *kk, const float *k_k,
                              const float *k_a, float *v, const float *v_first, const float *v0,
                              const float *v_gate, float *w, const float *w0) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 squares = _mm256_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const size_t count = n - j;
        const __m256 av = sigmoid8(_mm256_add_ps(load_head(a0 + j, count), load_head(a + j, count)));
        store_head(a + j, av, count);
        const __m256 kv = load_head(k + j, count);
        const __m256 kkv = _mm256_mul_ps(kv, load_head(k_k + j, count));
        store_head(kk + j, kkv, count);
        squares = _mm256_fmadd_ps(kkv, kkv, squares);
        const __m256 factor = _mm256_fmadd_ps(_mm256_sub_ps(av, one), load_head(k_a + j, count), one);
        store_head(k + j, _mm256_mul_ps(kv, factor), count);
    }
    const float norm = sqrtf(sum1(squares));
    const __m256 inv = _mm256_set1_ps(1.0f / (norm > 1e-12f ? norm : 1e-12f));
    for (size_t j = 0; j < n; j += LANES) {
        store_head(kk + j, _mm256_mul_ps(load_head(kk + j, n - j), inv), n - j);
    }

    const __m256 decay_scale = _mm256_set1_ps(-0.606531f);
    for (size_t j = 0; j < n; j += LANES) {
        const size_t count = n - j;
        if (v0) {
            const __m256 vv = load_head(v + j, count);
            const __m256 mix = sigmoid8(_mm256_add_ps(load_head(v0 + j, count), load_head(v_gate + j, count)));
            const __m256 delta = _mm256_sub_ps(load_head(v_first + j, count), vv);
            store_head(v + j, _mm256_fmadd_ps(delta, mix, vv), count);
        }
        const __m256 gate = sigmoid8(_mm256_add_ps(load_head(w0 + j, count), load_head(w + j, count)));
        store_head(w + j, exp8(_mm256_mul_ps(decay_scale, gate)), count);
    }
}

static void avx2_tmix_finish(size_t n, float *y, const float *r, const float *k, const float *r_k, const float *v,
                             const float *g, const float *ln_w, const float *ln_b, float eps) {
    __m256 total = _mm256_setzero_ps(), bonus_v = _mm256_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const size_t count = n - j;
        total = _mm256_add_ps(total, load_head(y + j, count));
        const __m256 rk = _mm256_mul_ps(load_head(r + j, count), load_head(k + j, count));
        bonus_v = _mm256_fmadd_ps(rk, load_head(r_k + j, count), bonus_v);
    }
    const float mean_value = sum1(total) / (float)n;
    const __m256 mean = _mm256_set1_ps(mean_value);
    __m256 squares = _mm256_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const size_t count = n - j;
        // Lanes past the head read as zero; remove them from the sum of squares.
        __m256 d = _mm256_sub_ps(load_head(y + j, count), mean);
        if (count < LANES) d = _mm256_mul_ps(d, load_head(lane_ones, count));
        squares = _mm256_fmadd_ps(d, d, squares);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sqrtf(sum1(squares) / (float)n + eps));
    const __m256 bonus = _mm256_set1_ps(sum1(bonus_v));
    for (size_t j = 0; j < n; j += LANES) {
        const size_t count = n - j;
        const __m256 normed = _mm256_mul_ps(_mm256_sub_ps(load_head(y + j, count), mean), inv);
        __m256 out = _mm256_fmadd_ps(normed, load_head(ln_w + j, count), load_head(ln_b + j, count));
        out = _mm256_fmadd_ps(bonus, load_head(v + j, count), out);
        store_head(y + j, _mm256_mul_ps(out, load_head(g + j, count)), count);
    }
}

// ---------------------------------------------------------------------------
// Attention of one query over selected cache rows.
//
// Scores are computed 8 rows at a time, with one accumulator per row (FMAs over
// the head's columns in order). One transposing reduction then turns the 8
// accumulators into a vector of 8 scores, so there is no horizontal sum per row.
// Every row takes the same arithmetic whatever block it falls in (rows missing
// from a short block repeat a valid row and are dropped), and the blocks depend
// only on the ranges, so a (query, head) result does not depend on the batch or
// on the head split.

// Rows of one score block, and how many rows ahead the passes prefetch into L2
// (measured at the AVX-512 level; see avx512.c).
#define ATTENTION_ROWS 8
#define ATTENTION_PREFETCH_ROWS 16

// Lane j of the result is the sum of the lanes of a[j], by one tree for every row:
// ((0 + 4) + (1 + 5)) + ((2 + 6) + (3 + 7)).
static inline __attribute__((always_inline)) __m256 sum8x8(const __m256 a[8]) {
    __m256 b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x31));
    }
    const __m256 c0 = _mm256_hadd_ps(b[0], b[1]);  // [r0 r0 r2 r2 | r1 r1 r3 r3]
    const __m256 c1 = _mm256_hadd_ps(b[2], b[3]);  // [r4 r4 r6 r6 | r5 r5 r7 r7]
    const __m256 d = _mm256_hadd_ps(c0, c1);       // [r0 r2 r4 r6 | r1 r3 r5 r7]
    return _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}


// Scores of rows [row, row + count) (count <= 8) of one head: out[j] = scale * q . k[row + j];
// max_v takes the lane-wise max of the scores (lanes past count get -inf).
static inline __attribute__((always_inline)) void attention_score_block(rwkvx_dtype dt, const char *k_head,
                                                                        size_t row_bytes, size_t head_size,
                                                                        const float *q, size_t row, size_t count,
                                                                        float scale, float *out, __m256 *max_v) {
    const size_t esize = rwkvx_element_size(dt);
    const char *rows[ATTENTION_ROWS];
    for (size_t j = 0; j < ATTENTION_ROWS; j++) rows[j] = k_head + (row + (j < count ? j : 0)) * row_bytes;
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;

    __m256 acc[ATTENTION_ROWS];
    for (int j = 0; j < ATTENTION_ROWS; j++) acc[j] = _mm256_setzero_ps();
    for (size_t c = 0; c < head_size; c += LANES) {
        const size_t width = head_size - c;
        const __m256 qv = load8_upto(RWKVX_DTYPE_F32, q, c, width);
        for (int j = 0; j < ATTENTION_ROWS; j++) {
            if ((c * esize) % 64 == 0) _mm_prefetch(rows[j] + ahead + c * esize, _MM_HINT_T1);
            acc[j] = _mm256_fmadd_ps(load8_upto(dt, rows[j], c, width), qv, acc[j]);
        }
    }
    _Alignas(32) float scores[ATTENTION_ROWS];
    const __m256 s = _mm256_mul_ps(sum8x8(acc), _mm256_set1_ps(scale));
    _mm256_store_ps(scores, s);
    memcpy(out, scores, count * sizeof(float));
    for (size_t j = count; j < ATTENTION_ROWS; j++) scores[j] = -INFINITY;
    *max_v = _mm256_max_ps(*max_v, _mm256_load_ps(scores));
}

// The n scores at p become softmax weights, in place, given max_v, the lane-wise
// max that attention_score_block gathered over them: weights exp(s - max), their
// total in a fixed tree, then normalised.
static inline __attribute__((always_inline)) void attention_softmax(float *p, size_t n, __m256 max_v) {
    _Alignas(32) float lanes[LANES];
    _mm256_store_ps(lanes, max_v);
    float max_score = lanes[0];
    for (int j = 1; j < LANES; j++) max_score = lanes[j] > max_score ? lanes[j] : max_score;
    const __m256 max_vec = _mm256_set1_ps(max_score);

    __m256 total_v = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i), max_vec));
        _mm256_storeu_ps(p + i, e);
        total_v = _mm256_add_ps(total_v, e);
    }
    if (i < n) {
        _mm256_store_ps(lanes, exp8(_mm256_sub_ps(load8_partial(RWKVX_DTYPE_F32, p, i, n - i), max_vec)));
        for (size_t j = n - i; j < LANES; j++) lanes[j] = 0.0f;
        memcpy(p + i, lanes, (n - i) * sizeof(float));
        total_v = _mm256_add_ps(total_v, _mm256_load_ps(lanes));
    }
    const float total = sum1(total_v);
    for (i = 0; i < n; i++) p[i] /= total;
}

// y[d0 + d] = sum over the rows of p[i] * v[row][d0 + d] for 32 columns from d0
// (fewer past head_size); two sets of accumulators take alternate rows of a range.
static inline __attribute__((always_inline)) void attention_value_group(rwkvx_dtype dt, const char *v_head,
                                                                        size_t row_bytes, size_t head_size, size_t d0,
                                                                        const size_t *ranges, size_t n_ranges,
                                                                        const float *p, float *y) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    size_t widths[4];
    __m256 even[4], odd[4];
    for (int u = 0; u < 4; u++) {
        const size_t d = d0 + (size_t)u * LANES;
        widths[u] = d < head_size ? head_size - d : 0;
        even[u] = _mm256_setzero_ps();
        odd[u] = _mm256_setzero_ps();
    }
    size_t i = 0;
    for (size_t g = 0; g < n_ranges; g++) {
        size_t row = ranges[2 * g];
        const size_t end = ranges[2 * g + 1];
        for (; row + 2 <= end; row += 2, i += 2) {
            const char *r0 = v_head + row * row_bytes, *r1 = r0 + row_bytes;
            const __m256 p0 = _mm256_set1_ps(p[i]), p1 = _mm256_set1_ps(p[i + 1]);
            for (int u = 0; u < 4; u++) {
                if (widths[u] == 0) continue;
                const size_t d = d0 + (size_t)u * LANES;
                if ((d * esize) % 64 == 0) {
                    _mm_prefetch(r0 + ahead + d * esize, _MM_HINT_T1);
                    _mm_prefetch(r1 + ahead + d * esize, _MM_HINT_T1);
                }
                even[u] = _mm256_fmadd_ps(p0, load8_upto(dt, r0, d, widths[u]), even[u]);
                odd[u] = _mm256_fmadd_ps(p1, load8_upto(dt, r1, d, widths[u]), odd[u]);
            }
        }
        if (row < end) {
            const char *r0 = v_head + row * row_bytes;
            const __m256 p0 = _mm256_set1_ps(p[i]);
            for (int u = 0; u < 4; u++) {
                if (widths[u] == 0) continue;
                even[u] = _mm256_fmadd_ps(p0, load8_upto(dt, r0, d0 + (size_t)u * LANES, widths[u]), even[u]);
            }
            i++;
        }
    }
    for (int u = 0; u < 4; u++) {
        if (widths[u] == 0) continue;
        _Alignas(32) float lanes[LANES];
        _mm256_store_ps(lanes, _mm256_add_ps(even[u], odd[u]));
        memcpy(y + d0 + (size_t)u * LANES, lanes, (widths[u] < LANES ? widths[u] : LANES) * sizeof(float));
    }
}

static inline __attribute__((always_inline)) void attention_typed(rwkvx_dtype dt, const float *q, const void *k_cache,
                                                                  const void *v_cache, size_t ld, size_t head_size,
                                                                  const size_t *ranges, size_t n_ranges, float scale,
                                                                  float *scratch, float *y, size_t h_begin, size_t h_end) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t row_bytes = ld * esize;
    for (size_t h = h_begin; h < h_end; h++) {
        const size_t col = h * head_size;

        // Scores of every selected row, and their max for a stable softmax.
        const char *k_head = (const char *)k_cache + col * esize;
        size_t n = 0;
        __m256 max_v = _mm256_set1_ps(-INFINITY);
        for (size_t g = 0; g < n_ranges; g++) {
            for (size_t row = ranges[2 * g]; row < ranges[2 * g + 1]; row += ATTENTION_ROWS) {
                const size_t left = ranges[2 * g + 1] - row;
                const size_t count = left < ATTENTION_ROWS ? left : ATTENTION_ROWS;
                attention_score_block(dt, k_head, row_bytes, head_size, q + col, row, count, scale, scratch + n, &max_v);
                n += count;
            }
        }
        attention_softmax(scratch, n, max_v);

        // Weighted sum of the value rows, 32 columns per pass over the rows.
        const char *v_head = (const char *)v_cache + col * esize;
        for (size_t d0 = 0; d0 < head_size; d0 += 4 * LANES) {
            attention_value_group(dt, v_head, row_bytes, head_size, d0, ranges, n_ranges, scratch, y + col);
        }
    }
}

static void avx2_attention(const float *q, const void *k_cache, const void *v_cache,
                           rwkvx_dtype cache_dtype, size_t ld, size_t head_size,
                           const size_t *ranges, size_t n_ranges, float scale,
                           float *scratch, float *y, size_t h_begin, size_t h_end) {
    switch (cache_dtype) {
    case RWKVX_DTYPE_F32:
        attention_typed(RWKVX_DTYPE_F32, q, k_cache, v_cache, ld, head_size, ranges, n_ranges, scale, scratch, y, h_begin, h_end);
        break;
    case RWKVX_DTYPE_F16:
        attention_typed(RWKVX_DTYPE_F16, q, k_cache, v_cache, ld, head_size, ranges, n_ranges, scale, scratch, y, h_begin, h_end);
        break;
    case RWKVX_DTYPE_BF16:
        attention_typed(RWKVX_DTYPE_BF16, q, k_cache, v_cache, ld, head_size, ranges, n_ranges, scale, scratch, y, h_begin, h_end);
        break;
    case RWKVX_DTYPE_I8:
        attention_typed(RWKVX_DTYPE_I8, q, k_cache, v_cache, ld, head_size, ranges, n_ranges, scale, scratch, y, h_begin, h_end);
        break;
    }
}

// ---------------------------------------------------------------------------
// Attention of several queries with one range start each (the causal rows of a
// prefill), each bit for bit as attention_typed gives it for that query alone.
//
// A score tile has `queries` x `rows` = 8 accumulators: accumulator a * rows + j
// is query a against row j, with the FMAs of attention_score_block, and sum8x8
// reduces every lane by the same tree. The lane-wise max and the softmax are
// those of the one-query kernel over each query's own scores. A value tile keeps,
// per query, the two accumulator sets of attention_value_group with the same
// pairing of rows from begin.

// Queries of one score tile, at most: 8 accumulators, 4 query vectors and one K
// vector leave room in the 16 ymm registers.
#define ATTENTION_QUERIES 4

// Queries of one value tile, at most: 2 queries x 16 columns x 2 row parities are
// 8 accumulators, beside 2 value vectors and 4 broadcast weights.
#define ATTENTION_VALUE_QUERIES 2

// Scores of `queries` queries (queries * rows == 8) against rows [begin, last) of
// one head: out[a][row - begin] = scale * q[a] . k[row]. Rows missing from the last
// tile repeat its first row and are dropped.
static inline __attribute__((always_inline)) void attention_score_queries(rwkvx_dtype dt, const char *k_head,
                                                                          size_t row_bytes, size_t head_size,
                                                                          const float *const *q, int queries, int rows,
                                                                          size_t begin, size_t last, float scale,
                                                                          float *const *out) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    for (size_t row = begin; row < last; row += (size_t)rows) {
        const size_t count = last - row < (size_t)rows ? last - row : (size_t)rows;
        const char *keys[ATTENTION_ROWS];
        for (int j = 0; j < rows; j++) keys[j] = k_head + (row + ((size_t)j < count ? (size_t)j : 0)) * row_bytes;

        __m256 acc[ATTENTION_ROWS];
        for (int j = 0; j < ATTENTION_ROWS; j++) acc[j] = _mm256_setzero_ps();
        for (size_t c = 0; c < head_size; c += LANES) {
            const size_t width = head_size - c;
            __m256 qv[ATTENTION_QUERIES];
            for (int a = 0; a < queries; a++) qv[a] = load8_upto(RWKVX_DTYPE_F32, q[a], c, width);
            for (int j = 0; j < rows; j++) {
                if ((c * esize) % 64 == 0) _mm_prefetch(keys[j] + ahead + c * esize, _MM_HINT_T1);
                const __m256 kv = load8_upto(dt, keys[j], c, width);
                for (int a = 0; a < queries; a++) acc[a * rows + j] = _mm256_fmadd_ps(kv, qv[a], acc[a * rows + j]);
            }
        }

        // Lanes [a * rows, a * rows + count) are query a's scores.
        _Alignas(32) float scores[ATTENTION_ROWS];
        _mm256_store_ps(scores, _mm256_mul_ps(sum8x8(acc), _mm256_set1_ps(scale)));
        for (int a = 0; a < queries; a++) memcpy(out[a] + (row - begin), scores + a * rows, count * sizeof(float));
    }
}

// The lane-wise max that attention_score_block gathers over one range of n scores:
// blocks of 8 from the range start, lanes past the end of the last block at -inf.
static inline __attribute__((always_inline)) __m256 attention_max_lanes(const float *p, size_t n) {
    __m256 max_v = _mm256_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += ATTENTION_ROWS) {
        _Alignas(32) float scores[ATTENTION_ROWS];
        const size_t count = n - i < ATTENTION_ROWS ? n - i : ATTENTION_ROWS;
        memcpy(scores, p + i, count * sizeof(float));
        for (size_t j = count; j < ATTENTION_ROWS; j++) scores[j] = -INFINITY;
        max_v = _mm256_max_ps(max_v, _mm256_load_ps(scores));
    }
    return max_v;
}

// For `queries` queries (at most 2), one head and 16 columns from d0 (fewer past
// head_size): y[a][d0 + d] = sum over rows [begin, ends[a]) of
// p[a][row - begin] * v[row][d0 + d], by the arithmetic of attention_value_group:
// rows begin + 2m go to the even and begin + 2m + 1 to the odd accumulators, a
// last unpaired row to the even ones, and the two sets are added at the end.
// Row pairs that every query of the tile attends are loaded once for all of them.
// The other rows go to their own queries only: adding a row with weight 0 could
// still turn -0 into +0 or carry a NaN or an infinity of the value row.
static inline __attribute__((always_inline)) void attention_value_queries(rwkvx_dtype dt, const char *v_head,
                                                                          size_t row_bytes, size_t head_size, size_t d0,
                                                                          size_t begin, const size_t *ends, int queries,
                                                                          const float *const *p, float *const *y) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    size_t widths[2];
    __m256 even[ATTENTION_VALUE_QUERIES][2], odd[ATTENTION_VALUE_QUERIES][2];
    for (int u = 0; u < 2; u++) {
        const size_t d = d0 + (size_t)u * LANES;
        widths[u] = d < head_size ? head_size - d : 0;
        for (int a = 0; a < ATTENTION_VALUE_QUERIES; a++) {
            even[a][u] = _mm256_setzero_ps();
            odd[a][u] = _mm256_setzero_ps();
        }
    }
    size_t common = ends[0];
    for (int a = 1; a < queries; a++) common = ends[a] < common ? ends[a] : common;
    const size_t paired = begin + (common - begin) / 2 * 2;

    // Row pairs every query of the tile attends.
    for (size_t row = begin; row < paired; row += 2) {
        const char *r0 = v_head + row * row_bytes, *r1 = r0 + row_bytes;
        const size_t i = row - begin;
        for (int u = 0; u < 2; u++) {
            if (widths[u] == 0) continue;
            const size_t d = d0 + (size_t)u * LANES;
            if ((d * esize) % 64 == 0) {
                _mm_prefetch(r0 + ahead + d * esize, _MM_HINT_T1);
                _mm_prefetch(r1 + ahead + d * esize, _MM_HINT_T1);
            }
            const __m256 v0 = load8_upto(dt, r0, d, widths[u]), v1 = load8_upto(dt, r1, d, widths[u]);
            for (int a = 0; a < queries; a++) {
                even[a][u] = _mm256_fmadd_ps(_mm256_set1_ps(p[a][i]), v0, even[a][u]);
                odd[a][u] = _mm256_fmadd_ps(_mm256_set1_ps(p[a][i + 1]), v1, odd[a][u]);
            }
        }
    }

    // Each query's own remaining rows, paired as they would be for it alone.
    for (int a = 0; a < queries; a++) {
        size_t row = paired;
        for (; row + 2 <= ends[a]; row += 2) {
            const char *r0 = v_head + row * row_bytes, *r1 = r0 + row_bytes;
            const __m256 p0 = _mm256_set1_ps(p[a][row - begin]), p1 = _mm256_set1_ps(p[a][row - begin + 1]);
            for (int u = 0; u < 2; u++) {
                if (widths[u] == 0) continue;
                const size_t d = d0 + (size_t)u * LANES;
                even[a][u] = _mm256_fmadd_ps(p0, load8_upto(dt, r0, d, widths[u]), even[a][u]);
                odd[a][u] = _mm256_fmadd_ps(p1, load8_upto(dt, r1, d, widths[u]), odd[a][u]);
            }
        }
        if (row < ends[a]) {
            const char *r0 = v_head + row * row_bytes;
            const __m256 p0 = _mm256_set1_ps(p[a][row - begin]);
            for (int u = 0; u < 2; u++) {
                if (widths[u] == 0) continue;
                even[a][u] = _mm256_fmadd_ps(p0, load8_upto(dt, r0, d0 + (size_t)u * LANES, widths[u]), even[a][u]);
            }
        }
    }

    for (int a = 0; a < queries; a++) {
        for (int u = 0; u < 2; u++) {
            if (widths[u] == 0) continue;
            store_head(y[a] + d0 + (size_t)u * LANES, _mm256_add_ps(even[a][u], odd[a][u]), widths[u]);
        }
    }
}

// Queries of the next tile, at most `limit` (a power of two): the largest power
// of two that is left, so that no tile computes a query twice.
static inline size_t attention_tile_queries(size_t left, size_t limit) {
    size_t queries = limit;
    while (queries > left) queries /= 2;
    return queries;
}

// One head at a time: scores of every query, their softmax, then the value sums.
// scratch has a row of span scores for each query.
static inline __attribute__((always_inline)) void attention_queries_typed(rwkvx_dtype dt, const float *q, size_t ldq,
                                                                          size_t n_query, const void *k_cache,
                                                                          const void *v_cache, size_t ld,
                                                                          size_t head_size, size_t begin,
                                                                          const size_t *ends, float scale,
                                                                          float *scratch, float *y, size_t ldy,
                                                                          size_t h_begin, size_t h_end) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t row_bytes = ld * esize;
    size_t last = begin;
    for (size_t j = 0; j < n_query; j++) last = ends[j] > last ? ends[j] : last;
    const size_t span = last - begin;

    for (size_t h = h_begin; h < h_end; h++) {
        const size_t col = h * head_size;
        const char *k_head = (const char *)k_cache + col * esize;
        const char *v_head = (const char *)v_cache + col * esize;

        // Scores of each tile of queries over the rows up to the tile's last end.
        for (size_t j0 = 0; j0 < n_query;) {
            const size_t queries = attention_tile_queries(n_query - j0, ATTENTION_QUERIES);
            const float *qs[ATTENTION_QUERIES];
            float *out[ATTENTION_QUERIES];
            size_t tile_last = begin;
            for (size_t a = 0; a < queries; a++) {
                qs[a] = q + (j0 + a) * ldq + col;
                out[a] = scratch + (j0 + a) * span;
                tile_last = ends[j0 + a] > tile_last ? ends[j0 + a] : tile_last;
            }
            switch (queries) {
            case 4:
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 4, 2, begin, tile_last, scale, out);
                break;
            case 2:
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 2, 4, begin, tile_last, scale, out);
                break;
            default:
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 1, 8, begin, tile_last, scale, out);
                break;
            }
            j0 += queries;
        }

        // Each query's softmax over its own rows.
        for (size_t j = 0; j < n_query; j++) {
            float *p = scratch + j * span;
            const size_t n = ends[j] - begin;
            attention_softmax(p, n, attention_max_lanes(p, n));
        }

        // Value sums, 16 columns per pass over the rows.
        for (size_t j0 = 0; j0 < n_query;) {
            const size_t queries = attention_tile_queries(n_query - j0, ATTENTION_VALUE_QUERIES);
            const float *p[ATTENTION_VALUE_QUERIES];
            float *out[ATTENTION_VALUE_QUERIES];
            for (size_t a = 0; a < queries; a++) {
                p[a] = scratch + (j0 + a) * span;
                out[a] = y + (j0 + a) * ldy + col;
            }
            for (size_t d0 = 0; d0 < head_size; d0 += 2 * LANES) {
                if (queries == 2) {
                    attention_value_queries(dt, v_head, row_bytes, head_size, d0, begin, ends + j0, 2, p, out);
                } else {
                    attention_value_queries(dt, v_head, row_bytes, head_size, d0, begin, ends + j0, 1, p, out);
                }
            }
            j0 += queries;
        }
    }
}

static void avx2_attention_queries(const float *q, size_t ldq, size_t n_query,
                                   const void *k_cache, const void *v_cache, rwkvx_dtype cache_dtype,
                                   size_t ld, size_t head_size, size_t begin, const size_t *ends, float scale,
                                   float *scratch, float *y, size_t ldy, size_t h_begin, size_t h_end) {
    switch (cache_dtype) {
    case RWKVX_DTYPE_F32:
        attention_queries_typed(RWKVX_DTYPE_F32, q, ldq, n_query, k_cache, v_cache, ld, head_size, begin, ends, scale,
                                scratch, y, ldy, h_begin, h_end);
        break;
    case RWKVX_DTYPE_F16:
        attention_queries_typed(RWKVX_DTYPE_F16, q, ldq, n_query, k_cache, v_cache, ld, head_size, begin, ends, scale,
                                scratch, y, ldy, h_begin, h_end);
        break;
    case RWKVX_DTYPE_BF16:
        attention_queries_typed(RWKVX_DTYPE_BF16, q, ldq, n_query, k_cache, v_cache, ld, head_size, begin, ends, scale,
                                scratch, y, ldy, h_begin, h_end);
        break;
    case RWKVX_DTYPE_I8:
        attention_queries_typed(RWKVX_DTYPE_I8, q, ldq, n_query, k_cache, v_cache, ld, head_size, begin, ends, scale,
                                scratch, y, ldy, h_begin, h_end);
        break;
    }
}

#pragma clang attribute pop

static void avx2_wkv7_seq(size_t head_size, float *state, size_t n_tok, size_t ld,
                          const float *r, const float *w, const float *k, const float *v,
                          const float *kk, const float *a, float *y) {
    rwkvx_wkv7_seq_by_steps(avx2_wkv7_step, head_size, state, n_tok, ld, r, w, k, v, kk, a, y);
}

const rwkvx_kernel_table rwkvx_avx2_kernels = {
    .matmul = avx2_matmul,
    .matmul_by_columns = avx2_matmul_by_columns,
    .wkv7_step = avx2_wkv7_step,
    .wkv7_seq = avx2_wkv7_seq,
    .attention = avx2_attention,
    .attention_queries = avx2_attention_queries,
    .dot_rows = avx2_dot_rows,
    .exp = avx2_exp,
    .tmix_prepare = avx2_tmix_prepare,
    .tmix_finish = avx2_tmix_finish,
};
