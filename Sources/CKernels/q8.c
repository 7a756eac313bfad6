// Int8 matrix products with int8 activations (the `int8` weight format).
//
// Weights are int8 with one fp32 scale per row (rwkvx_quantize_i8_rows), packed in
// panels with 64-column chunks (rwkvx_pack_q8_panels) so that a decode reads them
// as one stream. Chunks are zero-padded, so every load of a chunk is a full one.
// Activations are quantised per token in blocks of 32 columns, each block with
// its own fp32 scale, so one outlier costs precision in 32 values only. Inside
// a block the products are summed exactly in int32; blocks are then added in
// fp32: y[t][r] = scale[r] * sum_b sx[t][b] * sum_{c in b} w[r][c] * xq[t][c].
//
// Layout of one quantised token (rwkvx_q8_token_bytes(cols) bytes, cols padded
// with zeros to a multiple of 64): int8 xq[pad], then per 4-column lane an int32
// -128 * (sum of the lane's xq) and an fp32 block scale. The lane data serve
// the VNNI kernel: vpdpbusd multiplies unsigned by signed bytes, so it reads the
// weights as w ^ 0x80 = w + 128 and starts each lane at -128 * sum(xq), which
// makes the lane's int32 exactly sum(w * xq).
//
// Levels: scalar (reference), AVX2, AVX-512 with VNNI (where the CPU has it;
// otherwise the AVX-512 level runs the AVX2 code). Integer sums are exact, so
// levels differ only in the order of the fp32 block additions; within a level
// an output element's arithmetic does not depend on n_tok or the row range.
#include <immintrin.h>
#include "internal.h"

#define Q8_BLOCK 32

static size_t padded_cols(size_t cols) { return (cols + 63) / 64 * 64; }

size_t rwkvx_q8_token_bytes(size_t cols) { return 3 * padded_cols(cols); }

// Fills the lane data (corrections and block scales) of one quantised block.
static inline void q8_fill_lanes(const int8_t *q, size_t b, float scale, int32_t *corrections, float *lane_scales) {
    for (size_t lane = b / 4; lane < (b + Q8_BLOCK) / 4; lane++) {
        int32_t sum = 0;
        for (int i = 0; i < 4; i++) sum += q[lane * 4 + i];
        corrections[lane] = -128 * sum;
        lane_scales[lane] = scale;
    }
}

// Reference: per element roundf (halves away from zero), NaN to 0, clamp to +-127.
static void quantize_q8_scalar(const float *x, size_t n_tok, size_t cols, void *out) {
    const size_t pad = padded_cols(cols), stride = 3 * pad;
    for (size_t t = 0; t < n_tok; t++) {
        const float *row = x + t * cols;
        int8_t *q = (int8_t *)((char *)out + t * stride);
        int32_t *corrections = (int32_t *)(q + pad);
        float *lane_scales = (float *)(corrections + pad / 4);
        for (size_t b = 0; b < pad; b += Q8_BLOCK) {
            float max_abs = 0.0f;
            for (size_t c = b; c < b + Q8_BLOCK && c < cols; c++) {
                const float magnitude = fabsf(row[c]);
                if (magnitude > max_abs) max_abs = magnitude;
            }
            const float scale = max_abs / 127.0f;
            const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
            for (size_t c = b; c < b + Q8_BLOCK; c++) {
                float v = c < cols ? roundf(row[c] * inverse) : 0.0f;
                if (v != v) v = 0.0f;
                if (v > 127.0f) v = 127.0f;
                if (v < -127.0f) v = -127.0f;
                q[c] = (int8_t)v;
            }
            q8_fill_lanes(q, b, scale, corrections, lane_scales);
        }
    }
}

// AVX2 (also used by the AVX-512 level): bit-identical to the reference. The
// block maximum ignores NaN as the scalar compare does, and roundf is computed
// as trunc(v) plus sign(v) where |v - trunc(v)| >= 0.5, a difference that is exact.
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

static void quantize_q8_avx2(const float *x, size_t n_tok, size_t cols, void *out) {
    const size_t pad = padded_cols(cols), stride = 3 * pad;
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 high = _mm256_set1_ps(127.0f), low = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t t = 0; t < n_tok; t++) {
        const float *row = x + t * cols;
        int8_t *q = (int8_t *)((char *)out + t * stride);
        int32_t *corrections = (int32_t *)(q + pad);
        float *lane_scales = (float *)(corrections + pad / 4);
        for (size_t b = 0; b < pad; b += Q8_BLOCK) {
            __m256 v[4];
            if (b + Q8_BLOCK <= cols) {
                for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(row + b + 8 * i);
            } else {
                _Alignas(32) float tail[Q8_BLOCK] = {0};
                if (b < cols) memcpy(tail, row + b, (cols - b) * sizeof(float));
                for (int i = 0; i < 4; i++) v[i] = _mm256_load_ps(tail + 8 * i);
            }
            // max_ps returns its second operand when one is NaN, so NaN inputs are skipped.
            __m256 m = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) m = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), m);
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float scale = _mm_cvtss_f32(m4) / 127.0f;
            const __m256 inverse = _mm256_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
            __m256i n[4];
            for (int i = 0; i < 4; i++) {
                const __m256 s = _mm256_mul_ps(v[i], inverse);
                const __m256 whole = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
                const __m256 away = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(s, whole)), half, _CMP_GE_OQ);
                const __m256 step = _mm256_and_ps(away, _mm256_or_ps(_mm256_and_ps(s, sign), one));
                __m256 r = _mm256_and_ps(_mm256_add_ps(whole, step), _mm256_cmp_ps(s, s, _CMP_ORD_Q));
                r = _mm256_min_ps(_mm256_max_ps(r, low), high);
                n[i] = _mm256_cvttps_epi32(r);
            }
            // Pack 4 x 8 int32 to 32 int8. The packs work per 128-bit half, so a permute restores column order.
            const __m256i words = _mm256_packs_epi16(_mm256_packs_epi32(n[0], n[1]), _mm256_packs_epi32(n[2], n[3]));
            _mm256_storeu_si256((__m256i *)(q + b), _mm256_permutevar8x32_epi32(words, order));
            q8_fill_lanes(q, b, scale, corrections, lane_scales);
        }
    }
}

#pragma clang attribute pop

void rwkvx_quantize_q8_activations(const float *x, size_t n_tok, size_t cols, void *out) {
    if (rwkvx_get_level() >= RWKVX_LEVEL_AVX2) {
        quantize_q8_avx2(x, n_tok, cols, out);
    } else {
        quantize_q8_scalar(x, n_tok, cols, out);
    }
}

// ---------------------------------------------------------------------------
// Scalar reference: exact int32 per block, blocks added in order.

static float q8_dot_scalar(rwkvx_row row, const int8_t *xq, const float *lane_scales, size_t cols) {
    float acc = 0.0f;
    for (size_t b = 0; b < cols; b += Q8_BLOCK) {
        int32_t sum = 0;
        for (size_t c = b; c < b + Q8_BLOCK && c < cols; c++) {
            const int8_t w = (const int8_t)row.start[(c / RWKVX_Q8_PANEL_COLS) * row.stride + c % RWKVX_Q8_PANEL_COLS];
            sum += (int32_t)w * (int32_t)xq[c];
        }
        acc += (float)sum * lane_scales[b / 4];
    }
    return acc;
}

static void q8_matmul_scalar(const int8_t *w, const float *scales, size_t rows, size_t cols, const void *xq,
                             size_t n_tok, float *y, size_t ldy, size_t row_begin, size_t row_end) {
    const size_t pad = padded_cols(cols), stride = 3 * pad;
    const rwkvx_matrix m = rwkvx_q8_packed_matrix(w, rows, cols);
    for (size_t t = 0; t < n_tok; t++) {
        const int8_t *q = (const int8_t *)((const char *)xq + t * stride);
        const float *lane_scales = (const float *)(q + pad + pad);
        for (size_t r = row_begin; r < row_end; r++) {
            y[t * ldy + r] = q8_dot_scalar(rwkvx_matrix_row(&m, r), q, lane_scales, cols) * scales[r];
        }
    }
}

// ---------------------------------------------------------------------------
// AVX2: int16 multiply-adds (exact), one 8-lane fp32 accumulator per (row, token).

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// Exact int32 sums of w * x over 32 columns, in 8 lanes.
static inline __attribute__((always_inline)) __m256i block_dot_avx2(__m256i w, __m256i x) {
    const __m256i wl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
    const __m256i wh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
    const __m256i xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));
    const __m256i xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));
    return _mm256_add_epi32(_mm256_madd_epi16(wl, xl), _mm256_madd_epi16(wh, xh));
}

static inline __attribute__((always_inline)) float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void q8_matmul_avx2(const int8_t *w, const float *scales, size_t n_rows, size_t cols, const void *xq,
                           size_t n_tok, float *y, size_t ldy, size_t row_begin, size_t row_end) {
    const size_t pad = padded_cols(cols), stride = 3 * pad;
    const rwkvx_matrix m = rwkvx_q8_packed_matrix(w, n_rows, cols);
    enum { ROWS = 4 };
    for (size_t t = 0; t < n_tok; t++) {
        const int8_t *q = (const int8_t *)((const char *)xq + t * stride);
        const float *lane_scales = (const float *)(q + pad + pad);
        size_t r = row_begin;
        for (; r < row_end; r += ROWS) {
            const int rows = (row_end - r < ROWS) ? (int)(row_end - r) : ROWS;
            __m256 acc[ROWS];
            rwkvx_row walk[ROWS];
            for (int j = 0; j < ROWS; j++) acc[j] = _mm256_setzero_ps();
            for (int j = 0; j < rows; j++) walk[j] = rwkvx_matrix_row(&m, r + j);
            for (size_t b = 0; b < cols; b += Q8_BLOCK) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(q + b));
                const __m256 s = _mm256_set1_ps(lane_scales[b / 4]);
                for (int j = 0; j < rows; j++) {
                    const char *chunk = walk[j].start + (b / RWKVX_Q8_PANEL_COLS) * walk[j].stride;
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)(chunk + b % RWKVX_Q8_PANEL_COLS));
                    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot_avx2(wv, x)), s, acc[j]);
                }
            }
            for (int j = 0; j < rows; j++) y[t * ldy + r + j] = hsum8(acc[j]) * scales[r + j];
        }
    }
}

#pragma clang attribute pop

// ---------------------------------------------------------------------------
// AVX-512 VNNI: vpdpbusd on 64 columns (16 lanes of 4) per step.

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)

// One step for one (row, token): 64 weight bytes against the token's lanes.
static inline __attribute__((always_inline)) __m512 vnni_step(__m512 acc, __m512i w_offset, __m512i xq,
                                                              __m512i corrections, __m512 lane_scales) {
    const __m512i exact = _mm512_dpbusd_epi32(corrections, w_offset, xq);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), lane_scales, acc);
}

// Rows and tokens per register tile; a decode (one token) uses TILE_ROWS rows.
#define TILE_ROWS 4
#define TILE_TOKENS 4

static inline __attribute__((always_inline)) void vnni_tile(const rwkvx_matrix *m, const float *scales, size_t cols,
                                                            const char *xq, size_t stride, int tokens,
                                                            float *y, size_t ldy, size_t r, int rows) {
    const size_t pad = padded_cols(cols);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[TILE_ROWS][TILE_TOKENS];
    for (int j = 0; j < TILE_ROWS; j++)
        for (int t = 0; t < TILE_TOKENS; t++) acc[j][t] = _mm512_setzero_ps();

    rwkvx_row walk[TILE_ROWS];
    for (int j = 0; j < rows; j++) walk[j] = rwkvx_matrix_row(m, r + j);
    for (size_t c = 0, k = 0; c < cols; c += 64, k++) {
        __m512i wv[TILE_ROWS];
        for (int j = 0; j < rows; j++) {
            wv[j] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(walk[j].start + k * walk[j].stride)), flip);
        }
        for (int t = 0; t < tokens; t++) {
            const int8_t *q = (const int8_t *)(xq + t * stride);
            const __m512i x = _mm512_loadu_si512((const void *)(q + c));
            const __m512i corr = _mm512_loadu_si512((const void *)((const int32_t *)(q + pad) + c / 4));
            const __m512 s = _mm512_loadu_ps((const float *)(q + 2 * pad) + c / 4);
            for (int j = 0; j < rows; j++) acc[j][t] = vnni_step(acc[j][t], wv[j], x, corr, s);
        }
    }
    for (int j = 0; j < rows; j++) {
        for (int t = 0; t < tokens; t++) {
            y[t * ldy + r + j] = _mm512_reduce_add_ps(acc[j][t]) * scales[r + j];
        }
    }
}

// Decode: MATVEC_ROWS rows of one token that share a chunk stride (one panel: a
// sequential stream, as for the float kernels). Same per-element arithmetic as the tile.
#define MATVEC_ROWS 8

static inline __attribute__((always_inline)) void vnni_matvec_block(const rwkvx_row *walk, const float *scales,
                                                                    size_t cols, const int8_t *q, float *y,
                                                                    size_t r) {
    const size_t pad = padded_cols(cols), stride = walk[0].stride;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[MATVEC_ROWS];
    for (int j = 0; j < MATVEC_ROWS; j++) acc[j] = _mm512_setzero_ps();
    for (size_t c = 0, offset = 0; c < cols; c += 64, offset += stride) {
        const __m512i x = _mm512_loadu_si512((const void *)(q + c));
        const __m512i corr = _mm512_loadu_si512((const void *)((const int32_t *)(q + pad) + c / 4));
        const __m512 s = _mm512_loadu_ps((const float *)(q + 2 * pad) + c / 4);
        for (int j = 0; j < MATVEC_ROWS; j++) {
            const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512((const void *)(walk[j].start + offset)), flip);
            acc[j] = vnni_step(acc[j], wv, x, corr, s);
        }
    }
    for (int j = 0; j < MATVEC_ROWS; j++) y[r + j] = _mm512_reduce_add_ps(acc[j]) * scales[r + j];
}

static void q8_matmul_vnni(const int8_t *w, const float *scales, size_t rows, size_t cols, const void *xq,
                           size_t n_tok, float *y, size_t ldy, size_t row_begin, size_t row_end) {
    const size_t stride = rwkvx_q8_token_bytes(cols);
    const rwkvx_matrix m = rwkvx_q8_packed_matrix(w, rows, cols);
    const size_t tiled_tokens = n_tok - n_tok % TILE_TOKENS;
    for (size_t t0 = 0; t0 < tiled_tokens; t0 += TILE_TOKENS) {
        const char *q = (const char *)xq + t0 * stride;
        size_t r = row_begin;
        for (; r + TILE_ROWS <= row_end; r += TILE_ROWS) {
            vnni_tile(&m, scales, cols, q, stride, TILE_TOKENS, y + t0 * ldy, ldy, r, TILE_ROWS);
        }
        for (; r < row_end; r++) vnni_tile(&m, scales, cols, q, stride, TILE_TOKENS, y + t0 * ldy, ldy, r, 1);
    }
    // Leftover tokens (the whole of a decode) row block by row block.
    for (size_t t = tiled_tokens; t < n_tok; t++) {
        const int8_t *q = (const int8_t *)((const char *)xq + t * stride);
        size_t r = row_begin;
        while (r < row_end) {
            if (r + MATVEC_ROWS <= row_end) {
                rwkvx_row walk[MATVEC_ROWS];
                for (int j = 0; j < MATVEC_ROWS; j++) walk[j] = rwkvx_matrix_row(&m, r + j);
                if (walk[0].stride == walk[MATVEC_ROWS - 1].stride) {
                    vnni_matvec_block(walk, scales, cols, q, y + t * ldy, r);
                    r += MATVEC_ROWS;
                    continue;
                }
            }
            vnni_tile(&m, scales, cols, (const char *)q, stride, 1, y + t * ldy, ldy, r, 1);
            r++;
        }
    }
}

#pragma clang attribute pop

static int has_vnni(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512vnni") ? 1 : 0;
    }
    return cached;
}

int rwkvx_has_vnni(void) { return has_vnni(); }

void rwkvx_matmul_q8(const int8_t *w, const float *scales, size_t rows, size_t cols, const void *xq, size_t n_tok,
                     float *y, size_t ldy, size_t row_begin, size_t row_end) {
    switch (rwkvx_get_level()) {
    case RWKVX_LEVEL_AVX512:
        if (has_vnni()) {
            q8_matmul_vnni(w, scales, rows, cols, xq, n_tok, y, ldy, row_begin, row_end);
            return;
        }
        q8_matmul_avx2(w, scales, rows, cols, xq, n_tok, y, ldy, row_begin, row_end);
        return;
    case RWKVX_LEVEL_AVX2:
        q8_matmul_avx2(w, scales, rows, cols, xq, n_tok, y, ldy, row_begin, row_end);
        return;
    default:
        q8_matmul_scalar(w, scales, rows, cols, xq, n_tok, y, ldy, row_begin, row_end);
    }
}
