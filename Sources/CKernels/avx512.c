// AVX-512 kernels (F, BW, VL, DQ with FMA and F16C), 16 fp32 lanes.
//
// Every dot product, whatever the batch, runs the same arithmetic: one 16-lane
// accumulator per (row, token), fused multiply-adds over the columns in order, a
// zero-masked tail, then the fixed reduction tree of sum4(). Register tiles only
// change how many of these independent accumulators are live at once, so a row's
// result does not depend on n_tok, on the row range or on the other rows.
//
// Weights are converted to fp32 in registers (F16 by vcvtph2ps, BF16 by a 16-bit
// shift, I8 by sign extension), which is exact, so the only difference from the
// scalar reference is the order of the additions.
//
// NOTE: AVX512_BF16 (vdpbf16ps) is not used: it needs the activations rounded to
// bf16, which moves results by about 1e-3 relative instead of the 1e-6 the fp32
// reference allows. VNNI (vpdpbusd) serves the int8 weight format in q8.c,
// which quantises the activations too.
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)

#define LANES 16

// Rows and tokens in one prefill register tile: 16 accumulators, 4 converted
// weight vectors and 4 activation vectors fit the 32 zmm registers.
#define TILE_ROWS 4
#define TILE_TOKENS 4

// Rows of a single-token (matrix-vector) pass: 8 independent FMA chains.
#define MATVEC_ROWS 8

// Matrix-vector passes prefetch, into L2, the rows this many 8-row blocks ahead
// at the current column. Without it, a weight read from DRAM converts too slowly
// for the out-of-order window to keep enough cache misses in flight: bf16 at
// 65536 x 768 went from 11 to 20 GB/s (one Zen 4 vCPU, plain reads reach 22-25).
// Addresses past the last row are harmless: prefetches never fault.
#define PREFETCH_BLOCKS 2

// How far ahead matmul tiles prefetch weights, and into which cache. At 16 tokens
// with weights streamed from DRAM (60 bf16 3072 x 768 matrices, 2 threads), two
// panels into L2 ran at 164-166 GFLOP/s against 135-137 for one panel into L1 and
// 118-135 with no prefetch.
#define PREFETCH_PANELS 2
#define PREFETCH_HINT _MM_HINT_T1

// Loads 16 elements of base[i...] as fp32.
static inline __attribute__((always_inline)) __m512 load16(rwkvx_dtype dt, const void *base, size_t i) {
    switch (dt) {
    case RWKVX_DTYPE_F32:
        return _mm512_loadu_ps((const float *)base + i);
    case RWKVX_DTYPE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
    case RWKVX_DTYPE_BF16: {
        __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    case RWKVX_DTYPE_I8:
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)base + i))));
    }
    return _mm512_setzero_ps();
}

// Loads the elements of base[i...] selected by mask as fp32, zero elsewhere;
// masked-off elements are not read, so the tail never touches memory past the row.
static inline __attribute__((always_inline)) __m512 load16_masked(rwkvx_dtype dt, const void *base, size_t i, __mmask16 mask) {
    switch (dt) {
    case RWKVX_DTYPE_F32:
        return _mm512_maskz_loadu_ps(mask, (const float *)base + i);
    case RWKVX_DTYPE_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)base + i));
    case RWKVX_DTYPE_BF16: {
        __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)base + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    case RWKVX_DTYPE_I8:
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, (const int8_t *)base + i)));
    }
    return _mm512_setzero_ps();
}

static inline __mmask16 tail_mask(size_t remaining) {
    return (__mmask16)((1u << remaining) - 1u);
}

// The first `count` (at most 16) lanes.
static inline __mmask16 tail_mask16(size_t count) {
    return count >= LANES ? (__mmask16)0xffff : tail_mask(count);
}

// Horizontal sums of four accumulators, returned as [sum a, sum b, sum c, sum d].
// The tree is fixed: lane i + lane i+8, then i + i+4, then i + i+2, then i + i+1.
// sum1() feeds the same vector four times, so a lone sum has identical rounding.
static inline __attribute__((always_inline)) __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 abcd = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    abcd = _mm512_add_ps(abcd, _mm512_permute_ps(abcd, _MM_SHUFFLE(1, 0, 3, 2)));
    abcd = _mm512_add_ps(abcd, _mm512_permute_ps(abcd, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(firsts, abcd));
}

static inline __attribute__((always_inline)) float sum1(__m512 a) {
    return _mm_cvtss_f32(sum4(a, a, a, a));
}

// ---------------------------------------------------------------------------
// Matrix-vector passes: one token against rows of a matrix (see rwkvx_matrix);
// out[j] = row j . x over n columns.

// MATVEC_ROWS rows that share a chunk stride. `ahead`: bytes past each chunk to
// prefetch into L2, or 0 for none.
static inline __attribute__((always_inline)) void dot_block(rwkvx_dtype dt, const rwkvx_row *rows, size_t n,
                                                            const float *x, float *out, size_t ahead) {
    const size_t esize = rwkvx_element_size(dt), stride = rows[0].stride;
    const char *chunk[MATVEC_ROWS];
    for (int j = 0; j < MATVEC_ROWS; j++) chunk[j] = rows[j].start;

    __m512 acc[MATVEC_ROWS];
    for (int j = 0; j < MATVEC_ROWS; j++) acc[j] = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + LANES <= n; c += LANES) {
        const __m512 xv = _mm512_loadu_ps(x + c);
        for (int j = 0; j < MATVEC_ROWS; j++) {
            if (ahead && (c * esize) % 64 == 0) _mm_prefetch(chunk[j] + ahead, _MM_HINT_T1);
            acc[j] = _mm512_fmadd_ps(load16(dt, chunk[j], 0), xv, acc[j]);
            chunk[j] += stride;
        }
    }
    if (c < n) {
        const __mmask16 mask = tail_mask(n - c);
        const __m512 xv = _mm512_maskz_loadu_ps(mask, x + c);
        for (int j = 0; j < MATVEC_ROWS; j++) {
            acc[j] = _mm512_fmadd_ps(load16_masked(dt, chunk[j], 0, mask), xv, acc[j]);
        }
    }
    for (int j = 0; j < MATVEC_ROWS; j += 4) {
        _mm_storeu_ps(out + j, sum4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]));
    }
}

static inline __attribute__((always_inline)) float dot_one(rwkvx_dtype dt, rwkvx_row row, size_t n, const float *x) {
    const char *chunk = row.start;
    __m512 acc = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + LANES <= n; c += LANES, chunk += row.stride) {
        acc = _mm512_fmadd_ps(load16(dt, chunk, 0), _mm512_loadu_ps(x + c), acc);
    }
    if (c < n) {
        const __mmask16 mask = tail_mask(n - c);
        acc = _mm512_fmadd_ps(load16_masked(dt, chunk, 0, mask), _mm512_maskz_loadu_ps(mask, x + c), acc);
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
    const size_t stride = rows[0].stride;
    __m512 acc[TILE_ROWS][TILE_TOKENS];
    for (int j = 0; j < nrows; j++)
        for (int t = 0; t < TILE_TOKENS; t++) acc[j][t] = _mm512_setzero_ps();

    size_t c = 0, offset = 0;
    for (; c + LANES <= cols; c += LANES, offset += stride) {
        __m512 xv[TILE_TOKENS];
        for (int t = 0; t < TILE_TOKENS; t++) xv[t] = _mm512_loadu_ps(x + t * cols + c);
        if (ahead) {
            _mm_prefetch(rows[0].start + offset + ahead, PREFETCH_HINT);
            _mm_prefetch(rows[0].start + offset + ahead + 64, PREFETCH_HINT);
        }
        for (int j = 0; j < nrows; j++) {
            const __m512 wv = load16(dt, rows[j].start + offset, 0);
            for (int t = 0; t < TILE_TOKENS; t++) acc[j][t] = _mm512_fmadd_ps(wv, xv[t], acc[j][t]);
        }
    }
    if (c < cols) {
        const __mmask16 mask = tail_mask(cols - c);
        __m512 xv[TILE_TOKENS];
        for (int t = 0; t < TILE_TOKENS; t++) xv[t] = _mm512_maskz_loadu_ps(mask, x + t * cols + c);
        for (int j = 0; j < nrows; j++) {
            const __m512 wv = load16_masked(dt, rows[j].start + offset, 0, mask);
            for (int t = 0; t < TILE_TOKENS; t++) acc[j][t] = _mm512_fmadd_ps(wv, xv[t], acc[j][t]);
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
            // The first token tile of a row group prefetches the same rows
            // PREFETCH_PANELS panels ahead (while those panels are full height), so
            // weights streamed from DRAM arrive before the tile needs them.
            const size_t panel_bytes = RWKVX_PANEL_ROWS * rwkvx_panel_cols(cols) * m.esize;
            const size_t ahead_row = r + PREFETCH_PANELS * RWKVX_PANEL_ROWS;
            const size_t ahead = (ahead_row + RWKVX_PANEL_ROWS <= rows) ? PREFETCH_PANELS * panel_bytes : 0;
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

static void avx512_matmul(rwkvx_dtype dtype, const void *w, const float *scales, size_t rows, size_t cols,
                          const float *x, size_t n_tok, float *y, size_t ldy,
                          size_t row_begin, size_t row_end) {
    switch (dtype) {
    case RWKVX_DTYPE_F32: matmul_typed(RWKVX_DTYPE_F32, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_F16: matmul_typed(RWKVX_DTYPE_F16, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_BF16: matmul_typed(RWKVX_DTYPE_BF16, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    case RWKVX_DTYPE_I8: matmul_typed(RWKVX_DTYPE_I8, w, scales, rows, cols, x, n_tok, y, ldy, row_begin, row_end); break;
    }
}

static void avx512_dot_rows(rwkvx_dtype dtype, const float *a, const void *m, size_t ld, size_t n,
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
// Input-major products (rwkvx_matmul_by_columns): up to 64 output rows in the lanes
// of four vectors and up to 4 tokens, one FMA chain per output over the columns in
// order. Rows past `width` are masked off.

#define COLUMN_VECTORS 4
#define COLUMN_TOKENS 4

static inline __attribute__((always_inline)) void by_columns_tile(rwkvx_dtype dt, const char *w, size_t rows,
                                                                  size_t cols, const float *x, int tokens,
                                                                  float *y, size_t ldy, size_t r, size_t width) {
    const size_t esize = rwkvx_element_size(dt);
    __mmask16 masks[COLUMN_VECTORS];
    for (int v = 0; v < COLUMN_VECTORS; v++) {
        const size_t first = (size_t)v * LANES;
        masks[v] = width > first ? tail_mask16(width - first) : 0;
    }
    __m512 acc[COLUMN_TOKENS][COLUMN_VECTORS];
    for (int t = 0; t < tokens; t++)
        for (int v = 0; v < COLUMN_VECTORS; v++) acc[t][v] = _mm512_setzero_ps();

    for (size_t c = 0; c < cols; c++) {
        const char *column = w + (c * rows + r) * esize;
        __m512 wv[COLUMN_VECTORS];
        for (int v = 0; v < COLUMN_VECTORS; v++) wv[v] = load16_masked(dt, column, (size_t)v * LANES, masks[v]);
        for (int t = 0; t < tokens; t++) {
            const __m512 xv = _mm512_set1_ps(x[(size_t)t * cols + c]);
            for (int v = 0; v < COLUMN_VECTORS; v++) acc[t][v] = _mm512_fmadd_ps(xv, wv[v], acc[t][v]);
        }
    }
    for (int t = 0; t < tokens; t++) {
        for (int v = 0; v < COLUMN_VECTORS; v++) {
            _mm512_mask_storeu_ps(y + (size_t)t * ldy + r + (size_t)v * LANES, masks[v], acc[t][v]);
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

static void avx512_matmul_by_columns(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols,
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

static inline __attribute__((always_inline)) __mmask16 chunk_mask(size_t n, size_t j) {
    return (n - j >= LANES) ? (__mmask16)0xffff : tail_mask(n - j);
}

// One value row: sa = S[i] . kk, then S'[i] = S[i] w - sa kk a + v[i] k; returns S'[i] . r.
static inline __attribute__((always_inline)) __m512 wkv7_row_sa(const float *row, const float *kk, size_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 mask = chunk_mask(n, j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, row + j), _mm512_maskz_loadu_ps(mask, kk + j), acc);
    }
    return acc;
}

static inline __attribute__((always_inline)) __m512 wkv7_row_update(float *row, float sa, float vi, const float *w,
                                                                    const float *k, const float *kk, const float *a,
                                                                    const float *r, size_t n) {
    const __m512 sav = _mm512_set1_ps(sa), viv = _mm512_set1_ps(vi);
    __m512 out = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 mask = chunk_mask(n, j);
        const __m512 kka = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, kk + j), _mm512_maskz_loadu_ps(mask, a + j));
        __m512 s = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, row + j), _mm512_maskz_loadu_ps(mask, w + j));
        s = _mm512_fnmadd_ps(sav, kka, s);
        s = _mm512_fmadd_ps(viv, _mm512_maskz_loadu_ps(mask, k + j), s);
        _mm512_mask_storeu_ps(row + j, mask, s);
        out = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(mask, r + j), out);
    }
    return out;
}

static void avx512_wkv7_step(size_t head_size, float *state,
                             const float *r, const float *w, const float *k, const float *v,
                             const float *kk, const float *a, float *y,
                             size_t h_begin, size_t h_end) {
    const size_t n = head_size;
    for (size_t h = h_begin; h < h_end; h++) {
        float *s = state + h * n * n;
        const size_t o = h * n;
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            float sa[4], out[4];
            _mm_storeu_ps(sa, sum4(wkv7_row_sa(s + i * n, kk + o, n), wkv7_row_sa(s + (i + 1) * n, kk + o, n),
                                   wkv7_row_sa(s + (i + 2) * n, kk + o, n), wkv7_row_sa(s + (i + 3) * n, kk + o, n)));
            __m512 acc[4];
            for (int u = 0; u < 4; u++) {
                acc[u] = wkv7_row_update(s + (i + u) * n, sa[u], v[o + i + u], w + o, k + o, kk + o, a + o, r + o, n);
            }
            _mm_storeu_ps(out, sum4(acc[0], acc[1], acc[2], acc[3]));
            for (int u = 0; u < 4; u++) y[o + i + u] = out[u];
        }
        for (; i < n; i++) {
            const float sa = sum1(wkv7_row_sa(s + i * n, kk + o, n));
            y[o + i] = sum1(wkv7_row_update(s + i * n, sa, v[o + i], w + o, k + o, kk + o, a + o, r + o, n));
        }
    }
}

// ---------------------------------------------------------------------------
// exp over 16 lanes: x = n ln2 + r with n = round(x log2 e) and |r| <= ln2 / 2
// (ln2 split in two constants, so r is exact to about 1e-10), exp(r) from the
// degree-7 minimax polynomial of the Cephes expf, then scalef multiplies by 2^n,
// which rounds subnormal results correctly and gives 0 below about -103.97 and
// +inf above 88.72. Relative error against expf is below 3e-7 (KernelTests).
static inline __attribute__((always_inline)) __m512 exp16(__m512 x) {
    // NaN stays NaN: max and min return their second operand when it is NaN.
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static void avx512_exp(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i += LANES) {
        const __mmask16 mask = (n - i >= LANES) ? (__mmask16)0xffff : tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, mask, exp16(_mm512_maskz_loadu_ps(mask, x + i)));
    }
}

// A head of 64 (WKV_SEQ_CHUNKS x 16) columns over n_tok tokens, with four state rows
// at a time kept in registers across the tokens. Each token gets the arithmetic of
// avx512_wkv7_step (the same FMAs in the same order, the same sum4 trees), without
// the state's load and store per token.
#define WKV_SEQ_CHUNKS 4

static void avx512_wkv7_seq(size_t head_size, float *state, size_t n_tok, size_t ld,
                            const float *r, const float *w, const float *k, const float *v,
                            const float *kk, const float *a, float *y) {
    const size_t n = head_size;
    if (n != WKV_SEQ_CHUNKS * LANES) {
        rwkvx_wkv7_seq_by_steps(avx512_wkv7_step, head_size, state, n_tok, ld, r, w, k, v, kk, a, y);
        return;
    }
    for (size_t i = 0; i < n; i += 4) {
        __m512 s[4][WKV_SEQ_CHUNKS];
        for (int u = 0; u < 4; u++)
            for (int c = 0; c < WKV_SEQ_CHUNKS; c++) s[u][c] = _mm512_loadu_ps(state + (i + u) * n + c * LANES);

        for (size_t t = 0; t < n_tok; t++) {
            const size_t o = t * ld;
            __m512 acc[4];
            for (int u = 0; u < 4; u++) {
                acc[u] = _mm512_setzero_ps();
                for (int c = 0; c < WKV_SEQ_CHUNKS; c++) {
                    acc[u] = _mm512_fmadd_ps(s[u][c], _mm512_loadu_ps(kk + o + c * LANES), acc[u]);
                }
            }
            float sa[4], out[4];
            _mm_storeu_ps(sa, sum4(acc[0], acc[1], acc[2], acc[3]));

            __m512 y_acc[4];
            for (int u = 0; u < 4; u++) {
                const __m512 sav = _mm512_set1_ps(sa[u]), viv = _mm512_set1_ps(v[o + i + u]);
                y_acc[u] = _mm512_setzero_ps();
                for (int c = 0; c < WKV_SEQ_CHUNKS; c++) {
                    const size_t j = o + c * LANES;
                    const __m512 kka = _mm512_mul_ps(_mm512_loadu_ps(kk + j), _mm512_loadu_ps(a + j));
                    __m512 next = _mm512_mul_ps(s[u][c], _mm512_loadu_ps(w + j));
                    next = _mm512_fnmadd_ps(sav, kka, next);
                    next = _mm512_fmadd_ps(viv, _mm512_loadu_ps(k + j), next);
                    s[u][c] = next;
                    y_acc[u] = _mm512_fmadd_ps(next, _mm512_loadu_ps(r + j), y_acc[u]);
                }
            }
            _mm_storeu_ps(out, sum4(y_acc[0], y_acc[1], y_acc[2], y_acc[3]));
            for (int u = 0; u < 4; u++) y[o + i + u] = out[u];
        }

        for (int u = 0; u < 4; u++)
            for (int c = 0; c < WKV_SEQ_CHUNKS; c++) _mm512_storeu_ps(state + (i + u) * n + c * LANES, s[u][c]);
    }
}

// ---------------------------------------------------------------------------
// Time-mix activations of one head (see rwkvx_tmix_prepare and _finish).

static inline __attribute__((always_inline)) __m512 sigmoid16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

static void avx512_tmix_prepare(size_t n, float *a, const float *a0, float *k, float *kk, const float *k_k,
                                const float *k_a, float *v, const float *v_first, const float *v0,
                                const float *v_gate, float *w, const float *w0) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 squares = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        const __m512 av = sigmoid16(_mm512_add_ps(_mm512_maskz_loadu_ps(m, a0 + j), _mm512_maskz_loadu_ps(m, a + j)));
        _mm512_mask_storeu_ps(a + j, m, av);
        const __m512 kv = _mm512_maskz_loadu_ps(m, k + j);
        const __m512 kkv = _mm512_mul_ps(kv, _mm512_maskz_loadu_ps(m, k_k + j));
        _mm512_mask_storeu_ps(kk + j, m, kkv);
        squares = _mm512_fmadd_ps(kkv, kkv, squares);
        const __m512 factor = _mm512_fmadd_ps(_mm512_sub_ps(av, one), _mm512_maskz_loadu_ps(m, k_a + j), one);
        _mm512_mask_storeu_ps(k + j, m, _mm512_mul_ps(kv, factor));
    }
    const float norm = sqrtf(sum1(squares));
    const __m512 inv = _mm512_set1_ps(1.0f / (norm > 1e-12f ? norm : 1e-12f));
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        _mm512_mask_storeu_ps(kk + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, kk + j), inv));
    }

    const __m512 decay_scale = _mm512_set1_ps(-0.606531f);
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        if (v0) {
            const __m512 vv = _mm512_maskz_loadu_ps(m, v + j);
            const __m512 mix = sigmoid16(_mm512_add_ps(_mm512_maskz_loadu_ps(m, v0 + j),
                                                       _mm512_maskz_loadu_ps(m, v_gate + j)));
            const __m512 delta = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, v_first + j), vv);
            _mm512_mask_storeu_ps(v + j, m, _mm512_fmadd_ps(delta, mix, vv));
        }
        const __m512 gate = sigmoid16(_mm512_add_ps(_mm512_maskz_loadu_ps(m, w0 + j), _mm512_maskz_loadu_ps(m, w + j)));
        _mm512_mask_storeu_ps(w + j, m, exp16(_mm512_mul_ps(decay_scale, gate)));
    }
}

static void avx512_tmix_finish(size_t n, float *y, const float *r, const float *k, const float *r_k, const float *v,
                               const float *g, const float *ln_w, const float *ln_b, float eps) {
    __m512 total = _mm512_setzero_ps(), bonus_v = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        total = _mm512_add_ps(total, _mm512_maskz_loadu_ps(m, y + j));
        const __m512 rk = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, r + j), _mm512_maskz_loadu_ps(m, k + j));
        bonus_v = _mm512_fmadd_ps(rk, _mm512_maskz_loadu_ps(m, r_k + j), bonus_v);
    }
    const __m512 mean = _mm512_set1_ps(sum1(total) / (float)n);
    __m512 squares = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + j), mean);
        squares = _mm512_fmadd_ps(d, d, squares);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(sum1(squares) / (float)n + eps));
    const __m512 bonus = _mm512_set1_ps(sum1(bonus_v));
    for (size_t j = 0; j < n; j += LANES) {
        const __mmask16 m = chunk_mask(n, j);
        const __m512 normed = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + j), mean), inv);
        __m512 out = _mm512_fmadd_ps(normed, _mm512_maskz_loadu_ps(m, ln_w + j), _mm512_maskz_loadu_ps(m, ln_b + j));
        out = _mm512_fmadd_ps(bonus, _mm512_maskz_loadu_ps(m, v + j), out);
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(out, _mm512_maskz_loadu_ps(m, g + j)));
    }
}

// ---------------------------------------------------------------------------
// Attention of one query over selected cache rows.
//
// Scores are computed 16 rows at a time, with one accumulator per row (FMAs over
// the head's columns in order). One transposing reduction then turns the 16
// accumulators into a vector of 16 scores, so there is no horizontal sum per row.
// Every row takes the same arithmetic whatever block it falls in (rows missing
// from a short block repeat a valid row and are dropped), and the blocks depend
// only on the ranges, so a (query, head) result does not depend on the batch or
// on the head split.

// Rows of one score block, and how many rows ahead the passes prefetch into L2.
// Cache rows are ld elements apart, so the hardware prefetchers see one short
// run per row. On one Zen 4 vCPU, over four 64000-row caches (beyond L3), 16
// rows into L2 read 1.3-1.5x faster than 32 rows into L1 and 1.5-2.5x faster
// than no prefetch.
#define ATTENTION_ROWS 16
#define ATTENTION_PREFETCH_ROWS 16

// Lane j of the result is the sum of the lanes of a[j]. Every row uses one tree:
// lanes m, m+4, m+8, m+12 first ((m + m+8) + (m+4 + m+12)), then (0 + 2) + (1 + 3).
static inline __attribute__((always_inline)) __m512 sum16x16(const __m512 a[16]) {
    __m512 b[8], c[4], e[2];
    for (int i = 0; i < 8; i++) {
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; i++) {
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    // c[i] contains rows 4i..4i+3, one per 128-bit lane, 4 partial sums each.
    for (int i = 0; i < 2; i++) {
        e[i] = _mm512_add_ps(_mm512_unpacklo_ps(c[2 * i], c[2 * i + 1]), _mm512_unpackhi_ps(c[2 * i], c[2 * i + 1]));
    }
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(e[0]), _mm512_castps_pd(e[1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(e[0]), _mm512_castps_pd(e[1]));
    const __m512 f = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    // f[4L + k] is row L + 4k.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, f);
}

// Scores of rows [row, row + count) (count <= 16) of one head: out[j] = scale * q . k[row + j].
static inline __attribute__((always_inline)) void attention_score_block(rwkvx_dtype dt, const char *k_head,
                                                                        size_t row_bytes, size_t head_size,
                                                                        const float *q, size_t row, size_t count,
                                                                        float scale, float *out) {
    const size_t esize = rwkvx_element_size(dt);
    const char *rows[ATTENTION_ROWS];
    for (size_t j = 0; j < ATTENTION_ROWS; j++) rows[j] = k_head + (row + (j < count ? j : 0)) * row_bytes;
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;

    __m512 acc[ATTENTION_ROWS];
    for (int j = 0; j < ATTENTION_ROWS; j++) acc[j] = _mm512_setzero_ps();
    for (size_t c = 0; c < head_size; c += LANES) {
        const __mmask16 mask = chunk_mask(head_size, c);
        const __m512 qv = _mm512_maskz_loadu_ps(mask, q + c);
        for (int j = 0; j < ATTENTION_ROWS; j++) {
            if ((c * esize) % 64 == 0) _mm_prefetch(rows[j] + ahead + c * esize, _MM_HINT_T1);
            acc[j] = _mm512_fmadd_ps(load16_masked(dt, rows[j], c, mask), qv, acc[j]);
        }
    }
    const __mmask16 valid = tail_mask16(count);
    const __m512 scores = _mm512_mul_ps(sum16x16(acc), _mm512_set1_ps(scale));
    _mm512_mask_storeu_ps(out, valid, scores);
}

// The n scores at p become softmax weights, in place: the max (for a stable
// softmax), weights exp(s - max), their total in a fixed tree, then the weights
// normalised. Every score's weight depends only on the n scores and their order.
static inline __attribute__((always_inline)) void attention_softmax(float *p, size_t n) {
    __m512 max_v = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += LANES) {
        const __mmask16 mask = chunk_mask(n, i);
        max_v = _mm512_mask_max_ps(max_v, mask, max_v, _mm512_maskz_loadu_ps(mask, p + i));
    }
    const __m512 max_vec = _mm512_set1_ps(_mm512_reduce_max_ps(max_v));
    __m512 total_v = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += LANES) {
        const __mmask16 mask = chunk_mask(n, i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p + i), max_vec));
        _mm512_mask_storeu_ps(p + i, mask, e);
        total_v = _mm512_add_ps(total_v, _mm512_maskz_mov_ps(mask, e));
    }
    const __m512 total = _mm512_set1_ps(sum1(total_v));
    for (size_t i = 0; i < n; i += LANES) {
        const __mmask16 mask = chunk_mask(n, i);
        _mm512_mask_storeu_ps(p + i, mask, _mm512_div_ps(_mm512_maskz_loadu_ps(mask, p + i), total));
    }
}

// Heads whose value sums share one pass over the rows: 6 heads x 4 vectors of
// 16 columns are 24 accumulators, which leave room in the 32 zmm registers.
#define ATTENTION_VALUE_HEADS 6

// For heads [h0, h0 + heads) (heads <= 6) and 64 columns from d0 of each
// (masked past head_size): y[h][d0 + d] = sum over the rows, in order, of
// p[h][i] * v[row][h][d0 + d]. Each (head, column) has its own accumulator, so
// a head's result does not depend on the other heads of the pass.
static inline __attribute__((always_inline)) void attention_value_pass(rwkvx_dtype dt, const char *v_cache,
                                                                       size_t row_bytes, size_t head_size,
                                                                       size_t h0, size_t heads, size_t d0,
                                                                       const size_t *ranges, size_t n_ranges,
                                                                       const float *p, size_t p_stride, float *y) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    __mmask16 masks[4];
    for (int u = 0; u < 4; u++) {
        const size_t d = d0 + (size_t)u * LANES;
        masks[u] = d < head_size ? chunk_mask(head_size, d) : 0;
    }
    __m512 acc[ATTENTION_VALUE_HEADS][4];
    for (int g = 0; g < ATTENTION_VALUE_HEADS; g++)
        for (int u = 0; u < 4; u++) acc[g][u] = _mm512_setzero_ps();

    // Bytes of the pass within a row, for the prefetches.
    const size_t first_byte = (h0 * head_size + d0) * esize;
    const size_t last_byte = ((h0 + heads - 1) * head_size + d0 + 4 * LANES) * esize;
    size_t i = 0;
    for (size_t g_range = 0; g_range < n_ranges; g_range++) {
        for (size_t row = ranges[2 * g_range]; row < ranges[2 * g_range + 1]; row++, i++) {
            const char *vr = v_cache + row * row_bytes;
            for (size_t byte = first_byte & ~(size_t)63; byte < last_byte; byte += 64) {
                _mm_prefetch(vr + ahead + byte, _MM_HINT_T1);
            }
            for (int g = 0; g < ATTENTION_VALUE_HEADS; g++) {
                if ((size_t)g >= heads) break;
                const __m512 pv = _mm512_set1_ps(p[(size_t)g * p_stride + i]);
                const char *vh = vr + ((h0 + (size_t)g) * head_size) * esize;
                for (int u = 0; u < 4; u++) {
                    acc[g][u] = _mm512_fmadd_ps(pv, load16_masked(dt, vh, d0 + (size_t)u * LANES, masks[u]), acc[g][u]);
                }
            }
        }
    }
    for (int g = 0; g < ATTENTION_VALUE_HEADS; g++) {
        if ((size_t)g >= heads) break;
        for (int u = 0; u < 4; u++) {
            _mm512_mask_storeu_ps(y + (h0 + (size_t)g) * head_size + d0 + (size_t)u * LANES, masks[u], acc[g][u]);
        }
    }
}

// Heads [h_begin, h_end) are done together, so that each pass reads one
// contiguous slice of every cache row instead of one head's 64 columns. Rows are
// far apart (ld elements), and one slice per row and pass keeps the TLB misses
// and DRAM page openings per row down. scratch gets one row of scores per head.
static inline __attribute__((always_inline)) void attention_typed(rwkvx_dtype dt, const float *q, const void *k_cache,
                                                                  const void *v_cache, size_t ld, size_t head_size,
                                                                  const size_t *ranges, size_t n_ranges, float scale,
                                                                  float *scratch, float *y, size_t h_begin, size_t h_end) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t row_bytes = ld * esize;
    size_t n = 0;
    for (size_t g = 0; g < n_ranges; g++) n += ranges[2 * g + 1] - ranges[2 * g];
    const size_t heads = h_end - h_begin;

    // Scores of every selected row for every head.
    size_t done = 0;
    for (size_t g = 0; g < n_ranges; g++) {
        for (size_t row = ranges[2 * g]; row < ranges[2 * g + 1]; row += ATTENTION_ROWS) {
            const size_t left = ranges[2 * g + 1] - row;
            const size_t count = left < ATTENTION_ROWS ? left : ATTENTION_ROWS;
            for (size_t h = h_begin; h < h_end; h++) {
                const size_t col = h * head_size;
                attention_score_block(dt, (const char *)k_cache + col * esize, row_bytes, head_size, q + col, row,
                                      count, scale, scratch + (h - h_begin) * n + done);
            }
            done += count;
        }
    }

    // Softmax weights of every head.
    for (size_t h = h_begin; h < h_end; h++) attention_softmax(scratch + (h - h_begin) * n, n);

    // Weighted sums of the value rows: up to 6 heads and 64 columns per pass over the rows.
    for (size_t h0 = h_begin; h0 < h_end; h0 += ATTENTION_VALUE_HEADS) {
        const size_t group = (h_end - h0 < ATTENTION_VALUE_HEADS) ? h_end - h0 : ATTENTION_VALUE_HEADS;
        for (size_t d0 = 0; d0 < head_size; d0 += 4 * LANES) {
            attention_value_pass(dt, (const char *)v_cache, row_bytes, head_size, h0, group, d0, ranges, n_ranges,
                                 scratch + (h0 - h_begin) * n, n, y);
        }
    }
}

static void avx512_attention(const float *q, const void *k_cache, const void *v_cache,
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
// A score tile has `queries` x `rows` = 16 accumulators: accumulator a * rows + j
// is query a against row j, with the FMAs of attention_score_block, and sum16x16
// reduces every lane by the same tree, so each score is that of the one-query
// kernel. A K chunk loaded once then serves every query of the tile. Each query's
// softmax is attention_softmax over its own scores. A value tile keeps one
// accumulator per (query, column), like attention_value_pass, and adds each
// query's rows in order.

// Queries of one tile, at most: 16 score and 16 value accumulators, 4 query
// (or value) vectors and one K vector fit the 32 zmm registers.
#define ATTENTION_QUERIES 4

// Scores of `queries` queries (queries * rows == 16) against rows [begin, last) of
// one head: out[a][row - begin] = scale * q[a] . k[row]. Rows missing from the last
// tile repeat its first row and are dropped.
static inline __attribute__((always_inline)) void attention_score_queries(rwkvx_dtype dt, const char *k_head,
                                                                          size_t row_bytes, size_t head_size,
                                                                          const float *const *q, int queries, int rows,
                                                                          size_t begin, size_t last, float scale,
                                                                          float *const *out) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    const __m512i first_lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t row = begin; row < last; row += (size_t)rows) {
        const size_t count = last - row < (size_t)rows ? last - row : (size_t)rows;
        const char *keys[ATTENTION_ROWS];
        for (int j = 0; j < rows; j++) keys[j] = k_head + (row + ((size_t)j < count ? (size_t)j : 0)) * row_bytes;

        __m512 acc[ATTENTION_ROWS];
        for (int j = 0; j < ATTENTION_ROWS; j++) acc[j] = _mm512_setzero_ps();
        for (size_t c = 0; c < head_size; c += LANES) {
            const __mmask16 mask = chunk_mask(head_size, c);
            __m512 qv[ATTENTION_QUERIES];
            for (int a = 0; a < queries; a++) qv[a] = _mm512_maskz_loadu_ps(mask, q[a] + c);
            for (int j = 0; j < rows; j++) {
                if ((c * esize) % 64 == 0) _mm_prefetch(keys[j] + ahead + c * esize, _MM_HINT_T1);
                const __m512 kv = load16_masked(dt, keys[j], c, mask);
                for (int a = 0; a < queries; a++) acc[a * rows + j] = _mm512_fmadd_ps(kv, qv[a], acc[a * rows + j]);
            }
        }

        // Lanes [a * rows, a * rows + count) are query a's scores.
        const __m512 scores = _mm512_mul_ps(sum16x16(acc), _mm512_set1_ps(scale));
        const __mmask16 valid = tail_mask16(count);
        for (int a = 0; a < queries; a++) {
            const __m512i lanes = _mm512_add_epi32(first_lanes, _mm512_set1_epi32(a * rows));
            _mm512_mask_storeu_ps(out[a] + (row - begin), valid, _mm512_permutexvar_ps(lanes, scores));
        }
    }
}

// For `queries` queries (at most 4), one head and 64 columns from d0 (masked past
// head_size): y[a][d0 + d] = sum over rows [begin, ends[a]) in order of
// p[a][row - begin] * v[row][d0 + d]. Rows that every query of the tile attends are
// loaded once for all of them. The other rows go to their own queries only: adding
// a row with weight 0 could still turn -0 into +0 or carry a NaN or an infinity of
// the value row.
static inline __attribute__((always_inline)) void attention_value_queries(rwkvx_dtype dt, const char *v_head,
                                                                          size_t row_bytes, size_t head_size, size_t d0,
                                                                          size_t begin, const size_t *ends, int queries,
                                                                          const float *const *p, float *const *y) {
    const size_t esize = rwkvx_element_size(dt);
    const size_t ahead = ATTENTION_PREFETCH_ROWS * row_bytes;
    __mmask16 masks[4];
    for (int u = 0; u < 4; u++) {
        const size_t d = d0 + (size_t)u * LANES;
        masks[u] = d < head_size ? chunk_mask(head_size, d) : 0;
    }
    __m512 acc[ATTENTION_QUERIES][4];
    for (int a = 0; a < ATTENTION_QUERIES; a++)
        for (int u = 0; u < 4; u++) acc[a][u] = _mm512_setzero_ps();
    size_t common = ends[0];
    for (int a = 1; a < queries; a++) common = ends[a] < common ? ends[a] : common;

    // Rows every query of the tile attends.
    const size_t last_byte = (d0 + 4 * LANES < head_size ? d0 + 4 * LANES : head_size) * esize;
    for (size_t row = begin; row < common; row++) {
        const char *vr = v_head + row * row_bytes;
        for (size_t byte = (d0 * esize) & ~(size_t)63; byte < last_byte; byte += 64) {
            _mm_prefetch(vr + ahead + byte, _MM_HINT_T1);
        }
        __m512 v[4];
        for (int u = 0; u < 4; u++) v[u] = load16_masked(dt, vr, d0 + (size_t)u * LANES, masks[u]);
        for (int a = 0; a < queries; a++) {
            const __m512 pv = _mm512_set1_ps(p[a][row - begin]);
            for (int u = 0; u < 4; u++) acc[a][u] = _mm512_fmadd_ps(pv, v[u], acc[a][u]);
        }
    }

    // Each query's own remaining rows.
    for (int a = 0; a < queries; a++) {
        for (size_t row = common; row < ends[a]; row++) {
            const char *vr = v_head + row * row_bytes;
            const __m512 pv = _mm512_set1_ps(p[a][row - begin]);
            for (int u = 0; u < 4; u++) {
                acc[a][u] = _mm512_fmadd_ps(pv, load16_masked(dt, vr, d0 + (size_t)u * LANES, masks[u]), acc[a][u]);
            }
        }
    }

    for (int a = 0; a < queries; a++) {
        for (int u = 0; u < 4; u++) _mm512_mask_storeu_ps(y[a] + d0 + (size_t)u * LANES, masks[u], acc[a][u]);
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
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 4, 4, begin, tile_last, scale, out);
                break;
            case 2:
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 2, 8, begin, tile_last, scale, out);
                break;
            default:
                attention_score_queries(dt, k_head, row_bytes, head_size, qs, 1, 16, begin, tile_last, scale, out);
                break;
            }
            j0 += queries;
        }

        // Each query's softmax over its own rows.
        for (size_t j = 0; j < n_query; j++) attention_softmax(scratch + j * span, ends[j] - begin);

        // Value sums, 64 columns per pass over the rows.
        for (size_t j0 = 0; j0 < n_query;) {
            const size_t queries = attention_tile_queries(n_query - j0, ATTENTION_QUERIES);
            const float *p[ATTENTION_QUERIES];
            float *out[ATTENTION_QUERIES];
            for (size_t a = 0; a < queries; a++) {
                p[a] = scratch + (j0 + a) * span;
                out[a] = y + (j0 + a) * ldy + col;
            }
            for (size_t d0 = 0; d0 < head_size; d0 += 4 * LANES) {
                switch (queries) {
                case 4:
                    attention_value_queries(dt, v_head, row_bytes, head_size, d0, begin, ends + j0, 4, p, out);
                    break;
                case 2:
                    attention_value_queries(dt, v_head, row_bytes, head_size, d0, begin, ends + j0, 2, p, out);
                    break;
                default:
                    attention_value_queries(dt, v_head, row_bytes, head_size, d0, begin, ends + j0, 1, p, out);
                    break;
                }
            }
            j0 += queries;
        }
    }
}

static void avx512_attention_queries(const float *q, size_t ldq, size_t n_query,
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

const rwkvx_kernel_table rwkvx_avx512_kernels = {
    .matmul = avx512_matmul,
    .matmul_by_columns = avx512_matmul_by_columns,
    .wkv7_step = avx512_wkv7_step,
    .wkv7_seq = avx512_wkv7_seq,
    .attention = avx512_attention,
    .attention_queries = avx512_attention_queries,
    .dot_rows = avx512_dot_rows,
    .exp = avx512_exp,
    .tmix_prepare = avx512_tmix_prepare,
    .tmix_finish = avx512_tmix_finish,
};
