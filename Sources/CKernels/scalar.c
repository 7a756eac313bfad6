// Portable scalar kernels: the reference every SIMD level is tested against, and
// the fallback on CPUs without AVX2.
#include "internal.h"

static float load_element(rwkvx_dtype dtype, const void *base, size_t index) {
    switch (dtype) {
    case RWKVX_DTYPE_F32: return ((const float *)base)[index];
    case RWKVX_DTYPE_F16: return rwkvx_f16_to_f32(((const uint16_t *)base)[index]);
    case RWKVX_DTYPE_BF16: return rwkvx_bf16_to_f32(((const uint16_t *)base)[index]);
    case RWKVX_DTYPE_I8: return (float)((const int8_t *)base)[index];
    }
    return 0.0f;
}

// Dot product in 8 interleaved partial sums, added pairwise at the end: the same
// order for every call, so a row's result does not depend on the batch.
static float dot_row(rwkvx_dtype dtype, rwkvx_row row, const float *x, size_t n) {
    const size_t esize = rwkvx_element_size(dtype);
    float acc[8] = {0};
    size_t c = 0;
    for (; c + 8 <= n; c += 8) {
        const char *chunk = rwkvx_row_at(row, esize, c);
        for (int lane = 0; lane < 8; lane++) {
            acc[lane] += load_element(dtype, chunk, lane) * x[c + lane];
        }
    }
    for (int lane = 0; c < n; c++, lane++) {
        acc[lane] += load_element(dtype, rwkvx_row_at(row, esize, c), 0) * x[c];
    }
    float s01 = acc[0] + acc[1], s23 = acc[2] + acc[3];
    float s45 = acc[4] + acc[5], s67 = acc[6] + acc[7];
    return (s01 + s23) + (s45 + s67);
}

static void scalar_matmul(rwkvx_dtype dtype, const void *w, const float *scales, size_t rows, size_t cols,
                          const float *x, size_t n_tok, float *y, size_t ldy,
                          size_t row_begin, size_t row_end) {
    const rwkvx_matrix m = rwkvx_packed_matrix(dtype, w, rows, cols);
    for (size_t r = row_begin; r < row_end; r++) {
        const rwkvx_row row = rwkvx_matrix_row(&m, r);
        float scale = (dtype == RWKVX_DTYPE_I8) ? scales[r] : 1.0f;
        for (size_t t = 0; t < n_tok; t++) {
            y[t * ldy + r] = dot_row(dtype, row, x + t * cols, cols) * scale;
        }
    }
}

static void scalar_matmul_by_columns(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols,
                                    const float *x, size_t n_tok, float *y, size_t ldy,
                                    size_t row_begin, size_t row_end) {
    for (size_t t = 0; t < n_tok; t++) {
        for (size_t r = row_begin; r < row_end; r++) {
            float acc = 0.0f;
            for (size_t c = 0; c < cols; c++) acc = fmaf(x[t * cols + c], load_element(dtype, w, c * rows + r), acc);
            y[t * ldy + r] = acc;
        }
    }
}

static void scalar_dot_rows(rwkvx_dtype dtype, const float *a, const void *m, size_t ld, size_t n,
                            float *out, size_t row_begin, size_t row_end) {
    const rwkvx_matrix matrix = rwkvx_plain_matrix(dtype, m, ld);
    for (size_t r = row_begin; r < row_end; r++) {
        out[r - row_begin] = dot_row(dtype, rwkvx_matrix_row(&matrix, r), a, n);
    }
}

static void scalar_wkv7_step(size_t head_size, float *state,
                             const float *r, const float *w, const float *k, const float *v,
                             const float *kk, const float *a, float *y,
                             size_t h_begin, size_t h_end) {
    const size_t n = head_size;
    for (size_t h = h_begin; h < h_end; h++) {
        float *s = state + h * n * n;
        const size_t o = h * n;
        for (size_t i = 0; i < n; i++) {
            float *row = s + i * n;

            // sa = S[i] . kk (old state)
            float sa = 0.0f;
            for (size_t j = 0; j < n; j++) sa += row[j] * kk[o + j];

            // S'[i][j] = S[i][j] w[j] - sa kk[j] a[j] + v[i] k[j];  y[i] = S'[i] . r
            float out = 0.0f;
            const float vi = v[o + i];
            for (size_t j = 0; j < n; j++) {
                float updated = row[j] * w[o + j] - sa * (kk[o + j] * a[o + j]) + vi * k[o + j];
                row[j] = updated;
                out += updated * r[o + j];
            }
            y[o + i] = out;
        }
    }
}

static void scalar_attention(const float *q, const void *k_cache, const void *v_cache,
                             rwkvx_dtype cache_dtype, size_t ld, size_t head_size,
                             const size_t *ranges, size_t n_ranges, float scale,
                             float *scratch, float *y, size_t h_begin, size_t h_end) {
    for (size_t h = h_begin; h < h_end; h++) {
        const size_t col = h * head_size;

        // scores over every selected row, and their max for a stable softmax
        size_t n = 0;
        float max_score = -INFINITY;
        for (size_t g = 0; g < n_ranges; g++) {
            for (size_t row = ranges[2 * g]; row < ranges[2 * g + 1]; row++) {
                const rwkvx_row key = {(const char *)k_cache + (row * ld + col) * rwkvx_element_size(cache_dtype),
                                       RWKVX_PANEL_COLS * rwkvx_element_size(cache_dtype)};
                float s = dot_row(cache_dtype, key, q + col, head_size) * scale;
                scratch[n++] = s;
                if (s > max_score) max_score = s;
            }
        }

        float total = 0.0f;
        for (size_t i = 0; i < n; i++) {
            scratch[i] = expf(scratch[i] - max_score);
            total += scratch[i];
        }

        // weighted sum of the value rows
        float *out = y + col;
        for (size_t d = 0; d < head_size; d++) out[d] = 0.0f;
        size_t i = 0;
        for (size_t g = 0; g < n_ranges; g++) {
            for (size_t row = ranges[2 * g]; row < ranges[2 * g + 1]; row++, i++) {
                const float p = scratch[i] / total;
                for (size_t d = 0; d < head_size; d++) {
                    out[d] += p * load_element(cache_dtype, v_cache, row * ld + col + d);
                }
            }
        }
    }
}

// Each query takes the arithmetic of scalar_attention over one range. Rows are
// the outer loop, so each row is read once for all the queries that attend it.
// A weight normalised once in scratch is the same float as the weight divided
// by the total at each use.
static void scalar_attention_queries(const float *q, size_t ldq, size_t n_query,
                                     const void *k_cache, const void *v_cache, rwkvx_dtype cache_dtype,
                                     size_t ld, size_t head_size, size_t begin, const size_t *ends, float scale,
                                     float *scratch, float *y, size_t ldy, size_t h_begin, size_t h_end) {
    const size_t esize = rwkvx_element_size(cache_dtype);
    size_t last = begin;
    for (size_t j = 0; j < n_query; j++) last = ends[j] > last ? ends[j] : last;
    const size_t span = last - begin;

    for (size_t h = h_begin; h < h_end; h++) {
        const size_t col = h * head_size;

        // scores[j][i] of query j and row begin + i, for the rows it attends
        for (size_t row = begin; row < last; row++) {
            const rwkvx_row key = {(const char *)k_cache + (row * ld + col) * esize, RWKVX_PANEL_COLS * esize};
            for (size_t j = 0; j < n_query; j++) {
                if (row >= ends[j]) continue;
                scratch[j * span + row - begin] = dot_row(cache_dtype, key, q + j * ldq + col, head_size) * scale;
            }
        }

        // per query: softmax weights, max and total taken in row order
        for (size_t j = 0; j < n_query; j++) {
            float *p = scratch + j * span;
            const size_t n = ends[j] - begin;
            float max_score = -INFINITY;
            for (size_t i = 0; i < n; i++) {
                if (p[i] > max_score) max_score = p[i];
            }
            float total = 0.0f;
            for (size_t i = 0; i < n; i++) {
                p[i] = expf(p[i] - max_score);
                total += p[i];
            }
            for (size_t i = 0; i < n; i++) p[i] = p[i] / total;
        }

        // weighted sums of the value rows, each query over its own rows only
        for (size_t j = 0; j < n_query; j++) {
            for (size_t d = 0; d < head_size; d++) y[j * ldy + col + d] = 0.0f;
        }
        for (size_t row = begin; row < last; row++) {
            for (size_t j = 0; j < n_query; j++) {
                if (row >= ends[j]) continue;
                const float p = scratch[j * span + row - begin];
                float *out = y + j * ldy + col;
                for (size_t d = 0; d < head_size; d++) {
                    out[d] += p * load_element(cache_dtype, v_cache, row * ld + col + d);
                }
            }
        }
    }
}

static void scalar_exp(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

static float sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x));
}

static void scalar_tmix_prepare(size_t n, float *a, const float *a0, float *k, float *kk, const float *k_k,
                                const float *k_a, float *v, const float *v_first, const float *v0,
                                const float *v_gate, float *w, const float *w0) {
    float squares = 0.0f;
    for (size_t j = 0; j < n; j++) {
        a[j] = sigmoid(a0[j] + a[j]);
        kk[j] = k[j] * k_k[j];
        squares += kk[j] * kk[j];
        k[j] *= 1.0f + (a[j] - 1.0f) * k_a[j];
    }
    const float inv = 1.0f / fmaxf(sqrtf(squares), 1e-12f);
    for (size_t j = 0; j < n; j++) kk[j] *= inv;

    if (v0) {
        for (size_t j = 0; j < n; j++) v[j] += (v_first[j] - v[j]) * sigmoid(v0[j] + v_gate[j]);
    }
    for (size_t j = 0; j < n; j++) w[j] = expf(-0.606531f * sigmoid(w0[j] + w[j]));
}

static void scalar_tmix_finish(size_t n, float *y, const float *r, const float *k, const float *r_k, const float *v,
                               const float *g, const float *ln_w, const float *ln_b, float eps) {
    float mean = 0.0f, variance = 0.0f, bonus = 0.0f;
    for (size_t j = 0; j < n; j++) mean += y[j];
    mean /= (float)n;
    for (size_t j = 0; j < n; j++) variance += (y[j] - mean) * (y[j] - mean);
    variance /= (float)n;
    const float inv = 1.0f / sqrtf(variance + eps);

    for (size_t j = 0; j < n; j++) bonus += r[j] * k[j] * r_k[j];
    for (size_t j = 0; j < n; j++) y[j] = ((y[j] - mean) * inv * ln_w[j] + ln_b[j] + bonus * v[j]) * g[j];
}

static void scalar_wkv7_seq(size_t head_size, float *state, size_t n_tok, size_t ld,
                          const float *r, const float *w, const float *k, const float *v,
                          const float *kk, const float *a, float *y) {
    rwkvx_wkv7_seq_by_steps(scalar_wkv7_step, head_size, state, n_tok, ld, r, w, k, v, kk, a, y);
}

const rwkvx_kernel_table rwkvx_scalar_kernels = {
    .matmul = scalar_matmul,
    .matmul_by_columns = scalar_matmul_by_columns,
    .wkv7_step = scalar_wkv7_step,
    .wkv7_seq = scalar_wkv7_seq,
    .attention = scalar_attention,
    .attention_queries = scalar_attention_queries,
    .dot_rows = scalar_dot_rows,
    .exp = scalar_exp,
    .tmix_prepare = scalar_tmix_prepare,
    .tmix_finish = scalar_tmix_finish,
};
