// rwkvx CPU kernels: the one header between the Swift engine and the hot loops.
//
// Every function is a plain loop over pointers and sizes. Callers pass the slice
// of work to do (a row range or a head range) and own the threads; kernels never
// allocate and never start threads.
//
// Each operation has a portable scalar implementation, which is the reference the
// tests hold the SIMD ones against, and SIMD implementations chosen at run time by
// CPU features (never by the build machine). Within one level the arithmetic of an
// output element does not depend on how many tokens or sessions are in the call or
// on the row/head split, so results are batch- and thread-invariant.
#ifndef RWKVX_KERNELS_H
#define RWKVX_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Element type of a weight matrix or a cache. I8 weights carry one fp32 scale per row.
typedef enum {
    RWKVX_DTYPE_F32 = 0,
    RWKVX_DTYPE_F16 = 1,
    RWKVX_DTYPE_BF16 = 2,
    RWKVX_DTYPE_I8 = 3,
} rwkvx_dtype;

// Kernel levels, lowest first.
typedef enum {
    RWKVX_LEVEL_SCALAR = 0,
    RWKVX_LEVEL_AVX2 = 1,    // AVX2 + FMA + F16C
    RWKVX_LEVEL_AVX512 = 2,  // AVX-512 F/BW/VL/DQ (+ BF16 and VNNI where present)
} rwkvx_level;

// The best level this CPU supports (CPUID and XGETBV, checked once).
int rwkvx_cpu_level(void);

// The level in use; starts at rwkvx_cpu_level() unless RWKVX_KERNEL_LEVEL is set to
// scalar, avx2 or avx512. rwkvx_set_level clamps to what the CPU supports and
// returns the level actually set. Not meant to change while kernels run.
int rwkvx_get_level(void);
int rwkvx_set_level(int level);
const char *rwkvx_level_name(int level);

// Packed ("panel") layout of the weights rwkvx_matmul takes. Rows are grouped in
// panels of RWKVX_PANEL_ROWS, and the last panel may have fewer. Inside a panel the
// rows are interleaved in chunks of RWKVX_PANEL_COLS columns: chunk 0 of every row
// of the panel, then chunk 1, and so on. Columns are zero-padded to a multiple of
// RWKVX_PANEL_COLS. A one-token pass then reads the matrix as one sequential
// stream, which the hardware prefetchers follow, instead of eight short row
// streams. On a 2-vCPU Zen 4 VM that raised a bf16 matrix-vector pass over 283 MB
// from 39 to 50 GB/s (median of 7). A row's products are added in the same order
// as over a row-major row, so packing changes no result bit.
#define RWKVX_PANEL_ROWS 8
#define RWKVX_PANEL_COLS 16

static inline size_t rwkvx_panel_cols(size_t cols) {
    return (cols + RWKVX_PANEL_COLS - 1) / RWKVX_PANEL_COLS * RWKVX_PANEL_COLS;
}

// Returns the bytes of a packed [rows, cols] matrix of `dtype`.
size_t rwkvx_packed_bytes(rwkvx_dtype dtype, size_t rows, size_t cols);

// Packs a row-major [rows, cols] matrix of `dtype` into rwkvx_packed_bytes() bytes
// at dst (same dtype, no conversion).
void rwkvx_pack_panels(rwkvx_dtype dtype, const void *src, size_t rows, size_t cols, void *dst);

// Matrix product with a packed weight of [rows, cols] (PyTorch Linear: [out, in]):
//   y[t * ldy + r] = sum_c w[r][c] * x[t * cols + c]
// for t in [0, n_tok) and r in [row_begin, row_end).
// scales: per-row fp32 scale for RWKVX_DTYPE_I8 (NULL otherwise).
void rwkvx_matmul(rwkvx_dtype dtype, const void *w, const float *scales, size_t rows, size_t cols,
                  const float *x, size_t n_tok, float *y, size_t ldy,
                  size_t row_begin, size_t row_end);

// Matrix product with a weight stored input-major, w[c * rows + r] ([cols, rows]
// row-major, as the x @ W LoRA factors are stored), F32, F16 or BF16:
//   y[t * ldy + r] = sum_c x[t * cols + c] * w[c][r]
// for t in [0, n_tok) and r in [row_begin, row_end). An output's products are
// added one after another in column order: not rwkvx_matmul's order, but the same
// for any n_tok and row range. It is meant for few columns (the LoRA up factors,
// 32-128), where rwkvx_matmul spends more on its per-output horizontal sums than on
// the products. Here output rows fill the vector lanes, so nothing is summed across lanes.
void rwkvx_matmul_by_columns(rwkvx_dtype dtype, const void *w, size_t rows, size_t cols,
                             const float *x, size_t n_tok, float *y, size_t ldy,
                             size_t row_begin, size_t row_end);

// Converts n elements of a stored dtype (F32, F16, BF16) to fp32.
void rwkvx_to_f32(rwkvx_dtype dtype, const void *src, float *dst, size_t n);

// Converts n fp32 values to F32, F16 or BF16, rounding to nearest even (overflow
// gives infinity; NaN stays NaN). The result does not depend on the kernel level.
void rwkvx_from_f32(rwkvx_dtype dtype, const float *src, void *dst, size_t n);

// One token of the RWKV-7 WKV recurrence for heads [h_begin, h_end).
// state: [n_head, head_size, head_size] fp32, state[h][i][j] with i the value index
// and j the key index. r, w, k, v, kk, a, y: [n_head * head_size].
//   S'[i][j] = S[i][j] * w[j] - (sum_m S[i][m] * kk[m]) * kk[j] * a[j] + v[i] * k[j]
//   y[i]     = sum_j S'[i][j] * r[j]
void rwkvx_wkv7_step(size_t head_size, float *state,
                     const float *r, const float *w, const float *k, const float *v,
                     const float *kk, const float *a, float *y,
                     size_t h_begin, size_t h_end);

// Runs the WKV-7 recurrence of one head over n_tok tokens, with exactly the arithmetic of
// n_tok rwkvx_wkv7_step calls for that head, so a prefill gives the bits of a decode.
// state: [head_size, head_size] of the head. r, w, k, v, kk, a, y point at the head's
// columns of token 0; token t's values are t * ld floats later.
void rwkvx_wkv7_seq(size_t head_size, float *state, size_t n_tok, size_t ld,
                    const float *r, const float *w, const float *k, const float *v,
                    const float *kk, const float *a, float *y);

// Computes the RWKV-7 time-mix activations of one head of one token, in place; n = head_size,
// weight vectors point at the head's slice:
//   a  = sigmoid(a0 + a)
//   kk = (k * k_k) / max(|k * k_k|, 1e-12)      (from k before its update)
//   k  = k * (1 + (a - 1) * k_a)
//   v  = v + (v_first - v) * sigmoid(v0 + v_gate)   (skipped when v0 is NULL)
//   w  = exp(-0.606531 * sigmoid(w0 + w))
void rwkvx_tmix_prepare(size_t n, float *a, const float *a0, float *k, float *kk, const float *k_k,
                        const float *k_a, float *v, const float *v_first, const float *v0, const float *v_gate,
                        float *w, const float *w0);

// Computes the time-mix output of one head after its WKV step, in place:
//   y = layer_norm(y) * ln_w + ln_b   (over the head, variance + eps)
//   y = (y + (sum_j r k r_k) * v) * g
void rwkvx_tmix_finish(size_t n, float *y, const float *r, const float *k, const float *r_k, const float *v,
                       const float *g, const float *ln_w, const float *ln_b, float eps);

// Softmax attention of one query over selected cache rows, for heads [h_begin, h_end).
// q: [n_embd]; k_cache, v_cache: [rows, ld] of cache_dtype (F32 or F16), head h in
// columns [h * head_size, (h + 1) * head_size); ranges: n_ranges pairs
// [begin, end) of row indices, visited in order as one softmax; scale multiplies
// q . k. scratch: at least (h_end - h_begin) * (sum of range lengths) floats, per
// calling thread. y: [n_embd], written for the heads in range. A head's result
// does not depend on the other heads of the call; a call over several heads reads
// the cache rows once per pass instead of once per head, which is faster.
void rwkvx_attention(const float *q, const void *k_cache, const void *v_cache,
                     rwkvx_dtype cache_dtype, size_t ld, size_t head_size,
                     const size_t *ranges, size_t n_ranges, float scale,
                     float *scratch, float *y, size_t h_begin, size_t h_end);

// Softmax attention of n_query queries that attend row ranges with a common begin,
// for heads [h_begin, h_end): the causal rows of a prefill.
// Query j is q + j * ldq (an [n_embd] row), attends cache rows [begin, ends[j]) and
// writes y + j * ldy for the heads in range. Its result is bit for bit what
// rwkvx_attention gives for that query alone with the one range {begin, ends[j]},
// at the same level. Other fields as in rwkvx_attention.
// A head's K and V rows are read once per tile of queries instead of once per
// query: tiles of up to 4 queries at the AVX-512 level, of up to 4 (K) and 2 (V)
// at AVX2, and the whole call at the scalar level.
// Invariants: ends[j] >= begin, in any order; rows [begin, max_j ends[j]) are all
// in the cache (a query's score of a row past its own end may be computed and
// dropped, but no such row enters its softmax or value sum).
// scratch: at least n_query * (max_j ends[j] - begin) floats, per calling thread.
void rwkvx_attention_queries(const float *q, size_t ldq, size_t n_query,
                             const void *k_cache, const void *v_cache, rwkvx_dtype cache_dtype,
                             size_t ld, size_t head_size, size_t begin, const size_t *ends, float scale,
                             float *scratch, float *y, size_t ldy, size_t h_begin, size_t h_end);

// y[i] = exp(x[i]) for i in [0, n): expf in the scalar level, a polynomial in the
// SIMD levels (relative error below 1e-6 where the result is a normal float). The
// softmax of rwkvx_attention uses the same exp as this function at each level.
void rwkvx_exp(const float *x, float *y, size_t n);

// Computes y[i] = 1 / (1 + exp(-x[i])) and y[i] = tanh(x[i]) = 1 - 2 / (exp(2 x[i]) + 1) for i
// in [0, n), with rwkvx_exp (so a polynomial exp at the SIMD levels). x may equal y.
void rwkvx_sigmoid(const float *x, float *y, size_t n);
void rwkvx_tanh(const float *x, float *y, size_t n);

// Dot products of one fp32 vector with rows of a matrix:
// out[r - row_begin] = sum_c a[c] * m[r * ld + c] for c in [0, n), r in [row_begin, row_end).
void rwkvx_dot_rows(rwkvx_dtype dtype, const float *a, const void *m, size_t ld, size_t n,
                    float *out, size_t row_begin, size_t row_end);

// Quantises a row-major [rows, cols] fp32 matrix to int8 with one symmetric scale
// per row: scales[r] = max_c |w[r][c]| / 127 and out[r][c] = round(w[r][c] / scales[r])
// (halves away from zero), so |out| <= 127. An all-zero row gets scale 0 and zeros.
void rwkvx_quantize_i8_rows(const float *w, size_t rows, size_t cols, int8_t *out, float *scales);

// Int8 weights times int8 activations (the int8 weight format; see q8.c).
// Weights are packed in panels as for rwkvx_matmul, with chunks of
// RWKVX_Q8_PANEL_COLS columns (one 64-byte vector of a row), by rwkvx_pack_q8_panels.
// Activations are quantised per token in 32-column blocks with one fp32 scale
// each; rwkvx_q8_token_bytes(cols) bytes per token, 64-byte aligned rows work best.
//   y[t * ldy + r] = scales[r] * sum_b sx[t][b] * sum_{c in b} w[r][c] * xq[t][c]
// for t in [0, n_tok) and r in [row_begin, row_end); in-block sums are exact int32.
// The AVX-512 level uses VNNI (vpdpbusd) where rwkvx_has_vnni() reports that the CPU has it.
size_t rwkvx_q8_token_bytes(size_t cols);
void rwkvx_quantize_q8_activations(const float *x, size_t n_tok, size_t cols, void *out);
#define RWKVX_Q8_PANEL_COLS 64
size_t rwkvx_q8_packed_bytes(size_t rows, size_t cols);
void rwkvx_pack_q8_panels(const int8_t *src, size_t rows, size_t cols, int8_t *dst);
void rwkvx_matmul_q8(const int8_t *w, const float *scales, size_t rows, size_t cols, const void *xq, size_t n_tok,
                     float *y, size_t ldy, size_t row_begin, size_t row_end);
int rwkvx_has_vnni(void);

// Machine-limit probes for benchmarks (best level of this CPU, not the active one).
// rwkvx_bench_read sums count floats of a 64-byte aligned buffer (count a multiple
// of 64) with vector loads; the sum only keeps the loads alive.
// rwkvx_bench_fma runs `iterations` rounds of independent fp32 FMA chains, stores
// a value derived from them in *sink and returns the floating-point operations done
// (2 per FMA lane).
float rwkvx_bench_read(const float *buffer, size_t count);
double rwkvx_bench_fma(size_t iterations, float *sink);

// A pause hint for spin-wait loops (x86 PAUSE; nothing elsewhere).
static inline void rwkvx_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#ifdef __cplusplus
}
#endif

#endif
