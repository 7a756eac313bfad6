// RWKV-X sparse-attention block: attention over a bounded KV cache, followed by
// an RWKV-7 channel mix. Follows the reference inference code (rwkv-x 0.1.3,
// CausalSparseAttention.forward_one / forward_seq / update_kv_cache) including its
// quirks, each marked where it is copied. 64-wide heads, no bias, no positional
// encoding, scale 1/sqrt(head_size), no output norm.
//
// Left out: the training-time MoBA prefill (per-head chunk choice for every query);
// the reference inference code does not run it either.
import CKernels
import Foundation

/// State of one sparse block: the KV cache and the channel-mix shift.
public struct SparseLayerState: Sendable {
    /// [rows, C] keys and values in the order the reference keeps them (after a
    /// compression each head holds its own permutation of past tokens).
    public var kCache: [Float]
    public var vCache: [Float]
    /// [C] ln2 output of the last token.
    public var ffnXPrev: [Float]
    /// [chunks, C] sums of the keys of each complete chunk, in cache-row order.
    /// Derived from kCache; kept so that choosing chunks costs O(chunks), not O(rows).
    var chunkKeySums: [Float] = []

    public init(config: ModelConfig) {
        kCache = []
        vCache = []
        ffnXPrev = [Float](repeating: 0, count: config.nEmbd)
    }

    public func rows(nEmbd: Int) -> Int { kCache.count / nEmbd }
}

extension SparseLayerState: Equatable {
    public static func == (a: SparseLayerState, b: SparseLayerState) -> Bool {
        a.kCache == b.kCache && a.vCache == b.vCache && a.ffnXPrev == b.ffnXPrev
    }
}

/// Runs sparse block `w.index` on a batch: x [rows, C] is the residual stream of
/// every session's tokens, `segments[s]` the rows of session s, `states[s]` its state.
/// Quirk copied: the reference routes a single token (an int, or a one-element list)
/// to forward_one, so a session with one token takes the decode path even in a prefill.
func sparseBlock(_ x: inout [Float], segments: [Range<Int>], states: inout [SparseLayerState],
                 weights w: SparseBlockWeights, options: AttentionOptions, config: ModelConfig,
                 pool: ThreadPool?) {
    let c = config.nEmbd

    // q, k, v of every token of every session from ln1(x)
    let xa = Ops.layerNorm(x, w.ln1, c: c)
    let q = w.receptance(xa, pool: pool), k = w.key(xa, pool: pool), v = w.value(xa, pool: pool)

    // attention per session, then one output projection for the batch
    var y = [Float](repeating: 0, count: x.count)
    for (s, rows) in segments.enumerated() {
        let slice = (rows.lowerBound * c)..<(rows.upperBound * c)
        let out: [Float]
        if rows.count == 1 {
            out = sparseAttentionDecode(q: Array(q[slice]), k: Array(k[slice]), v: Array(v[slice]),
                                        state: &states[s], options: options, config: config)
        } else {
            out = sparseAttentionPrefill(x: Array(xa[slice]), q: Array(q[slice]), k: Array(k[slice]),
                                         v: Array(v[slice]), state: &states[s], options: options, config: config)
        }
        y.replaceSubrange(slice, with: out)
    }
    Ops.add(&x, w.output(y, pool: pool))

    // channel mix on ln2(x), with its own shift state
    let xf = Ops.layerNorm(x, w.ln2, c: c)
    var prev = states.map { $0.ffnXPrev }
    let ffn = channelMix(xf, prev: &prev, segments: segments, weights: w.ffn, c: c, pool: pool)
    for s in states.indices { states[s].ffnXPrev = prev[s] }
    Ops.add(&x, ffn)
}

/// Decode of one token (forward_one): q, k, v [C]. Returns the attention output [C]
/// before the output projection.
func sparseAttentionDecode(q: [Float], k: [Float], v: [Float], state: inout SparseLayerState,
                           options: AttentionOptions, config: ModelConfig) -> [Float] {
    let c = config.nEmbd

    // Compress first when the cache is over its limit, with this token's q as the only query.
    if options.maxKVCacheSize > 0 && state.rows(nEmbd: c) > options.maxKVCacheSize {
        compressKVCache(&state, queries: q, options: options, config: config)
    }
    let ct = state.rows(nEmbd: c)

    var ranges: [Int]
    if ct <= options.windowSize || options.mode == .full {
        // every cached row plus the current token
        ranges = [0, ct + 1]
    } else {
        // top-k complete chunks (by q . mean key over all heads at once, unscaled),
        // then the incomplete tail of the cache and the current token
        let remainder = ct % options.chunkSize
        let chunks = (ct - remainder) / options.chunkSize
        let selected = selectChunks(q: q, state: &state, chunks: chunks, options: options, c: c)
        ranges = []
        for chunk in selected {
            ranges += [chunk * options.chunkSize, (chunk + 1) * options.chunkSize]
        }
        ranges += [ct - remainder, ct + 1]
    }

    // The current k/v row is appended before attending; it is also the newest cache row.
    state.kCache += k
    state.vCache += v
    var y = [Float](repeating: 0, count: c)
    attend(q: q, state: state, ranges: ranges, into: &y, config: config)
    return y
}

/// Chooses the top `options.topK` of the first `chunks` complete chunks of the cache.
/// Ties go to the lower chunk index.
private func selectChunks(q: [Float], state: inout SparseLayerState, chunks: Int,
                          options: AttentionOptions, c: Int) -> [Int] {
    updateChunkKeySums(&state, chunks: chunks, chunkSize: options.chunkSize, c: c)
    var scores = [Float](repeating: 0, count: chunks)
    let inverse = 1 / Float(options.chunkSize)
    for chunk in 0..<chunks {
        var s: Float = 0
        for i in 0..<c { s += q[i] * (state.chunkKeySums[chunk * c + i] * inverse) }
        scores[chunk] = s
    }
    let order = (0..<chunks).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
    return Array(order.prefix(options.topK))
}

/// Extends the per-chunk key sums to `chunks` complete chunks; each chunk is summed once.
private func updateChunkKeySums(_ state: inout SparseLayerState, chunks: Int, chunkSize: Int, c: Int) {
    var have = state.chunkKeySums.count / c
    if have > chunks {
        state.chunkKeySums.removeAll(keepingCapacity: true)
        have = 0
    }
    while have < chunks {
        var sum = [Float](repeating: 0, count: c)
        for row in (have * chunkSize)..<((have + 1) * chunkSize) {
            for i in 0..<c { sum[i] += state.kCache[row * c + i] }
        }
        state.chunkKeySums += sum
        have += 1
    }
}

/// Prefill of T > 1 tokens (forward_seq): x [T, C] is the ln1 output, q, k, v its
/// projections. Returns the attention output [T, C] before the output projection.
func sparseAttentionPrefill(x: [Float], q: [Float], k: [Float], v: [Float], state: inout SparseLayerState,
                            options: AttentionOptions, config: ModelConfig) -> [Float] {
    let c = config.nEmbd
    let tokens = x.count / c

    // Quirk copied: compression in a prefill uses the ln1 output x of the new tokens
    // as the queries, not q = receptance(x).
    if options.maxKVCacheSize > 0 && state.rows(nEmbd: c) > options.maxKVCacheSize {
        compressKVCache(&state, queries: x, options: options, config: config)
    }
    let ct = state.rows(nEmbd: c)
    state.kCache += k
    state.vCache += v

    // Short sequences attend to the whole cache plus the new tokens causally. Quirk
    // copied: longer ones attend causally inside chunks of the new tokens only
    // (chunks counted from the first new token), ignoring the cache entirely.
    let shortSequence = tokens + ct <= options.windowSize
    var y = [Float](repeating: 0, count: x.count)
    var out = [Float](repeating: 0, count: c)
    for t in 0..<tokens {
        let begin = shortSequence ? 0 : ct + (t / options.chunkSize) * options.chunkSize
        attend(q: Ops.row(q, t, c: c), state: state, ranges: [begin, ct + t + 1], into: &out, config: config)
        y.replaceSubrange((t * c)..<((t + 1) * c), with: out)
    }
    return y
}

/// Softmax attention of one query [C] over the cache rows in `ranges` (pairs of
/// [begin, end)), all heads, scale 1/sqrt(head_size).
private func attend(q: [Float], state: SparseLayerState, ranges: [Int], into y: inout [Float], config: ModelConfig) {
    var total = 0
    for g in stride(from: 0, to: ranges.count, by: 2) { total += ranges[g + 1] - ranges[g] }
    var scratch = [Float](repeating: 0, count: max(total, 1))
    let scale = 1 / Float(config.headSize).squareRoot()
    q.withUnsafeBufferPointer { qp in
        state.kCache.withUnsafeBytes { kp in
            state.vCache.withUnsafeBytes { vp in
                y.withUnsafeMutableBufferPointer { yp in
                    rwkvx_attention(qp.baseAddress!, kp.baseAddress!, vp.baseAddress!, RWKVX_DTYPE_F32,
                                    config.nEmbd, config.headSize, ranges, ranges.count / 2, scale,
                                    &scratch, yp.baseAddress!, 0, config.nHead)
                }
            }
        }
    }
}

/// Shrinks the KV cache as the reference update_kv_cache does: the newest
/// `kvCacheWindowSize` rows stay; of the older rows each head keeps the ones with
/// the largest attention "vote" (softmax over past rows per query, summed over the
/// queries). Quirk copied: kept rows are in descending vote order, not token order,
/// so heads keep different tokens and rows are permuted.
func compressKVCache(_ state: inout SparseLayerState, queries: [Float], options: AttentionOptions,
                     config: ModelConfig) {
    let c = config.nEmbd, n = config.headSize
    let rows = state.rows(nEmbd: c)
    if options.minKVCacheSize >= rows { return }
    let window = options.kvCacheWindowSize
    let past = rows - window
    let keep = min(options.minKVCacheSize - window, past)
    let queryCount = queries.count / c
    let scale = 1 / Float(n).squareRoot()

    var newK = [Float](repeating: 0, count: (keep + window) * c)
    var newV = newK
    var scores = [Float](repeating: 0, count: past)
    for head in 0..<config.nHead {
        let col = head * n

        // vote[p] = sum over queries of softmax_p(q . k[p] / sqrt(N))
        var vote = [Float](repeating: 0, count: past)
        for qt in 0..<queryCount {
            queries.withUnsafeBufferPointer { qp in
                state.kCache.withUnsafeBytes { kp in
                    scores.withUnsafeMutableBufferPointer { sp in
                        rwkvx_dot_rows(RWKVX_DTYPE_F32, qp.baseAddress! + qt * c + col,
                                       kp.baseAddress! + col * 4, c, n, sp.baseAddress!, 0, past)
                    }
                }
            }
            var maxScore = -Float.infinity
            for p in 0..<past {
                scores[p] *= scale
                maxScore = max(maxScore, scores[p])
            }
            var sum: Float = 0
            for p in 0..<past {
                scores[p] = exp(scores[p] - maxScore)
                sum += scores[p]
            }
            for p in 0..<past { vote[p] += scores[p] / sum }
        }

        // keep the highest votes, in descending vote order (ties: lower row first)
        let order = (0..<past).sorted { vote[$0] > vote[$1] || (vote[$0] == vote[$1] && $0 < $1) }
        for (row, source) in order.prefix(keep).enumerated() {
            for d in 0..<n {
                newK[row * c + col + d] = state.kCache[source * c + col + d]
                newV[row * c + col + d] = state.vCache[source * c + col + d]
            }
        }
    }

    // the window rows follow unchanged
    for row in 0..<window {
        for i in 0..<c {
            newK[(keep + row) * c + i] = state.kCache[(past + row) * c + i]
            newV[(keep + row) * c + i] = state.vCache[(past + row) * c + i]
        }
    }
    state.kCache = newK
    state.vCache = newV
    state.chunkKeySums.removeAll(keepingCapacity: true)
}
