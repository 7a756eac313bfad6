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

/// Pins every session's channel-mix shift state of one sparse block, stores the
/// base addresses in ws.ffnPrev and runs `body`.
func withPinnedStates(_ states: UnsafeMutableBufferPointer<SparseLayerState>, ws: Workspace, from index: Int = 0,
                      _ body: () -> Void) {
    if index == states.count {
        body()
        return
    }
    states[index].ffnXPrev.withUnsafeMutableBufferPointer { ffn in
        ws.ffnPrev[index] = ffn.baseAddress!
        withPinnedStates(states, ws: ws, from: index + 1, body)
    }
}

/// Pins every session's KV cache, stores the base addresses and element types in
/// ws.kCache, ws.vCache and ws.cacheDType and runs `body`. The caches must not
/// change while pinned.
private func withPinnedCaches(_ states: UnsafeMutableBufferPointer<SparseLayerState>, ws: Workspace,
                              from index: Int = 0, _ body: () -> Void) {
    if index == states.count {
        body()
        return
    }
    states[index].withCacheBytes { k, v, dtype in
        ws.kCache[index] = k
        ws.vCache[index] = v
        ws.cacheDType[index] = dtype
        withPinnedCaches(states, ws: ws, from: index + 1, body)
    }
}

/// Runs sparse block `w.index` on the batch in ws: x [rows, C] is the residual
/// stream, updated in place; `states[s]` is session s's state (its ffnXPrev pinned).
/// Quirk copied: the reference routes a single token (an int, or a one-element list)
/// to forward_one, so a session with one token takes the decode path even in a prefill,
/// unless its token is a piece of a longer prefill call (ws.pieces).
func sparseBlock(_ x: UnsafeMutablePointer<Float>, states: UnsafeMutableBufferPointer<SparseLayerState>,
                 weights w: SparseBlockWeights, options: AttentionOptions, ws: Workspace, pool: ThreadPool?) {
    let c = ws.config.nEmbd, rows = ws.rows
    let xp = UncheckedSendable(x)

    // q, k, v of every token of every session from ln1(x)
    forEachChunk(rows, pool: pool, minimumPerThread: 8) { range in
        Ops.layerNorm(xp.value, into: ws.normed.base, rows: range, w.ln1, c: c)
    }
    ws.tasks.append(MatmulTask(w.receptance, ws.normed.base, ws.r.base))
    ws.tasks.append(MatmulTask(w.key, ws.normed.base, ws.k.base))
    ws.tasks.append(MatmulTask(w.value, ws.normed.base, ws.v.base))
    ws.runQueuedMatmuls(pool: pool)

    // per session: compress the cache if needed, plan the attended rows, append k and v
    var scoreRows = 1
    for (s, segment) in ws.segments.enumerated() {
        states[s].convertCache(to: options.kvCacheDType, nEmbd: c)
        if segment.count == 1 && ws.pieces[s] == nil {
            planDecode(session: s, row: segment.lowerBound, state: &states[s], options: options, ws: ws)
            scoreRows = max(scoreRows, stride(from: 0, to: ws.attentionRanges[s].count, by: 2).reduce(0) {
                $0 + ws.attentionRanges[s][$1 + 1] - ws.attentionRanges[s][$1]
            })
        } else {
            let piece = ws.pieces[s] ?? PrefillPiece(callTokens: segment.count, offset: 0)
            planPrefill(session: s, rows: segment, piece: piece, state: &states[s], options: options, ws: ws)
            scoreRows = max(scoreRows, ws.cacheRowsBefore[s] + segment.count)
        }
    }
    planAttentionBlocks(options: options, ws: ws)
    let threads = pool?.threadCount ?? 1
    // One group of heads per thread reads each long cache row once per thread. Over
    // few rows, single heads balance better when a pool thread starts late.
    ws.attentionGroupHeads = scoreRows >= 1024 ? (ws.config.nHead + threads - 1) / threads : 1
    ws.reserveScores(scoreRows * max(ws.attentionGroupHeads, attentionBlockRows), threads: threads)

    // attention of every (row, head), then x += output(y)
    withPinnedCaches(states, ws: ws) {
        attendAll(options: options, ws: ws, pool: pool)
    }
    ws.tasks.append(MatmulTask(w.output, ws.y.base, ws.projection.base, .addInto(x)))
    ws.runQueuedMatmuls(pool: pool)

    // channel mix on ln2(x), with its own shift state
    channelMix(x, weights: w.ffn, ln: w.ln2, ws: ws, pool: pool)
}

/// Decode of one token (forward_one): compresses the cache when it is over its
/// limit (with this token's q as the only query), chooses the attended ranges
/// into ws.attentionRanges[s], then appends the token's k and v to the cache.
private func planDecode(session s: Int, row t: Int, state: inout SparseLayerState, options: AttentionOptions,
                        ws: Workspace) {
    let c = ws.config.nEmbd
    let q = UnsafeBufferPointer(start: ws.r.base + t * c, count: c)

    if options.maxKVCacheSize > 0 && state.rows(nEmbd: c) > options.maxKVCacheSize {
        compressKVCache(&state, queries: Array(q), options: options, config: ws.config)
    }
    let ct = state.rows(nEmbd: c)

    ws.attentionRanges[s].removeAll(keepingCapacity: true)
    if options.decodeAttendsWholeCache(cachedRows: ct) {
        // every cached row plus the current token
        ws.attentionRanges[s] += [0, ct + 1]
    } else {
        // top-k complete chunks (by q . mean key over all heads at once, unscaled),
        // then the incomplete tail of the cache and the current token
        let remainder = ct % options.chunkSize
        let chunks = (ct - remainder) / options.chunkSize
        selectChunks(q: q, state: &state, chunks: chunks, options: options, c: c, into: &ws.attentionRanges[s])
        ws.attentionRanges[s] += [ct - remainder, ct + 1]
    }

    // The current k/v row is appended before attending; it is also the newest cache row.
    state.appendRows(keys: ws.k.base + t * c, values: ws.v.base + t * c, count: c)
}

/// Appends the ranges [chunk * size, (chunk + 1) * size) of the top `options.topK` of
/// the first `chunks` complete chunks to `ranges`, best first; ties go to the lower
/// chunk index.
private func selectChunks(q: UnsafeBufferPointer<Float>, state: inout SparseLayerState, chunks: Int,
                          options: AttentionOptions, c: Int, into ranges: inout [Int]) {
    updateChunkKeySums(&state, chunks: chunks, chunkSize: options.chunkSize, c: c)
    let inverse = 1 / Float(options.chunkSize)
    withUnsafeTemporaryAllocation(of: Float.self, capacity: chunks) { scores in
        state.chunkKeySums.withUnsafeBufferPointer { sums in
            for chunk in 0..<chunks {
                var s: Float = 0
                for i in 0..<c { s += q[i] * (sums[chunk * c + i] * inverse) }
                scores[chunk] = s
            }
        }
        // Selection of the best remaining chunk, topK times: the order of a stable
        // sort by descending score.
        for _ in 0..<min(options.topK, chunks) {
            var best = -1
            for chunk in 0..<chunks where !scores[chunk].isNaN {
                if best < 0 || scores[chunk] > scores[best] { best = chunk }
            }
            if best < 0 { break }
            ranges += [best * options.chunkSize, (best + 1) * options.chunkSize]
            scores[best] = .nan
        }
    }
}

/// Extends the per-chunk key sums to `chunks` complete chunks; each chunk is summed once.
private func updateChunkKeySums(_ state: inout SparseLayerState, chunks: Int, chunkSize: Int, c: Int) {
    var have = state.chunkKeySums.count / c
    if have > chunks {
        state.chunkKeySums.removeAll(keepingCapacity: true)
        have = 0
    }
    if have == chunks { return }
    var sums = state.chunkKeySums
    state.chunkKeySums = []
    sums.append(contentsOf: repeatElement(0, count: (chunks - have) * c))
    let dtype: rwkvx_dtype = state.cacheDType == .fp16 ? RWKVX_DTYPE_F16 : RWKVX_DTYPE_F32
    let elementSize = state.cacheDType == .fp16 ? 2 : 4
    state.withCacheBytes { k, _, _ in
        sums.withUnsafeMutableBufferPointer { sums in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { row in
                for chunk in have..<chunks {
                    let sum = sums.baseAddress! + chunk * c
                    for r in (chunk * chunkSize)..<((chunk + 1) * chunkSize) {
                        rwkvx_to_f32(dtype, k! + r * c * elementSize, row.baseAddress!, c)
                        for i in 0..<c { sum[i] += row[i] }
                    }
                }
            }
        }
    }
    state.chunkKeySums = sums
}

/// Prefill (forward_seq) of the rows of one piece of a call of T > 1 tokens:
/// compresses the cache if needed, records the cache length before the piece and at
/// the start of the call, and whether the whole call fits the window, then appends
/// the piece's k and v. A call run as several pieces gives the same result as one
/// piece, because every decision depends on the call, not on the piece.
private func planPrefill(session s: Int, rows: Range<Int>, piece: PrefillPiece, state: inout SparseLayerState,
                         options: AttentionOptions, ws: Workspace) {
    let c = ws.config.nEmbd

    // Quirk copied: compression in a prefill uses the ln1 output x of the new tokens
    // as the queries, not q = receptance(x). It happens once, at the start of the call,
    // so callers only split calls that cannot compress (see PrefillPiece).
    if piece.offset == 0 && options.maxKVCacheSize > 0 && state.rows(nEmbd: c) > options.maxKVCacheSize {
        let queries = Array(UnsafeBufferPointer(start: ws.normed.base + rows.lowerBound * c, count: rows.count * c))
        compressKVCache(&state, queries: queries, options: options, config: ws.config)
    }
    let ct = state.rows(nEmbd: c)
    ws.cacheRowsBefore[s] = ct
    ws.callStartRows[s] = ct - piece.offset
    ws.shortSequence[s] = piece.callTokens + ws.callStartRows[s] <= options.windowSize
    state.appendRows(keys: ws.k.base + rows.lowerBound * c, values: ws.v.base + rows.lowerBound * c,
                     count: rows.count * c)
}

/// Maximum prefill rows per rwkvx_attention_queries call. The AVX-512 kernel reads
/// a head's K and V rows once per tile of 4 rows. Blocks of 4, 8 and 16 rows took
/// the same attention time in a 512-token prefill of the 0.2B model (perf samples,
/// 2 threads on a 2-vCPU Zen 4 VM), and 8 keeps the pool's items small.
private let attentionBlockRows = 8

/// Batch rows that one attention kernel call serves.
struct AttentionBlock {
    var session: Int
    /// Consecutive rows of the session's segment.
    var rows: Range<Int>
    /// The first cache row that every row of a prefill block attends. A decode row
    /// has nil and attends ws.attentionRanges[session].
    var begin: Int?
}

/// Returns the cache rows [begin, end) that row t of session s's prefill attends.
private func prefillRange(row t: Int, session s: Int, options: AttentionOptions, ws: Workspace) -> Range<Int> {
    // Short sequences attend to the whole cache plus the new tokens causally.
    // Quirk copied: longer ones attend causally inside chunks of the new tokens
    // only (chunks counted from the first new token), ignoring the cache entirely.
    // Positions count from the start of the call, whatever piece this is.
    let start = ws.callStartRows[s]
    let i = ws.cacheRowsBefore[s] - start + (t - ws.segments[s].lowerBound)
    let begin = ws.shortSequence[s] ? 0 : start + (i / options.chunkSize) * options.chunkSize
    return begin..<(start + i + 1)
}

/// Splits the batch rows into ws.attentionBlocks: each decode row alone, and each
/// session's prefill rows into runs of up to `attentionBlockRows` consecutive rows
/// whose ranges have the same begin (a chunk boundary of a long sequence ends a run).
private func planAttentionBlocks(options: AttentionOptions, ws: Workspace) {
    ws.attentionBlocks.removeAll(keepingCapacity: true)
    for (s, segment) in ws.segments.enumerated() {
        if segment.count == 1 && ws.pieces[s] == nil {
            ws.attentionBlocks.append(AttentionBlock(session: s, rows: segment, begin: nil))
            continue
        }
        var first = segment.lowerBound
        while first < segment.upperBound {
            let begin = prefillRange(row: first, session: s, options: options, ws: ws).lowerBound
            var end = first + 1
            while end < segment.upperBound && end - first < attentionBlockRows
                && prefillRange(row: end, session: s, options: options, ws: ws).lowerBound == begin {
                end += 1
            }
            ws.attentionBlocks.append(AttentionBlock(session: s, rows: first..<end, begin: begin))
            first = end
        }
    }
}

/// Softmax attention of every (row, head) of the batch over its session's cache,
/// split over the pool by (block of rows, group of heads); y [rows, C] gets the
/// result. A decode row is one rwkvx_attention call over its planned ranges, which
/// over a group of heads reads each cache row once per pass. A prefill block is one
/// rwkvx_attention_queries call, which reads each cache row once for several rows.
/// Either kernel gives a (row, head) the same bits whatever its block, group or
/// thread, so the split does not change the output.
private func attendAll(options: AttentionOptions, ws: Workspace, pool: ThreadPool?) {
    let c = ws.config.nEmbd, n = ws.config.headSize, heads = ws.config.nHead
    let scale = 1 / Float(n).squareRoot()
    let groupHeads = ws.attentionGroupHeads
    let groups = (heads + groupHeads - 1) / groupHeads
    let items = ws.attentionBlocks.count * groups
    let run: @Sendable (Range<Int>, Int) -> Void = { chunk, thread in
        let scratch = ws.scores.base + thread * ws.scoreStride
        withUnsafeTemporaryAllocation(of: Int.self, capacity: attentionBlockRows) { ends in
            for item in chunk {
                let block = ws.attentionBlocks[item / groups]
                let firstHead = (item % groups) * groupHeads, endHead = min(heads, firstHead + groupHeads)
                let s = block.session
                let q = ws.r.base + block.rows.lowerBound * c, y = ws.y.base + block.rows.lowerBound * c
                if let begin = block.begin {
                    for (j, t) in block.rows.enumerated() {
                        ends[j] = prefillRange(row: t, session: s, options: options, ws: ws).upperBound
                    }
                    rwkvx_attention_queries(q, c, block.rows.count, ws.kCache[s]!, ws.vCache[s]!, ws.cacheDType[s],
                                            c, n, begin, ends.baseAddress!, scale, scratch, y, c, firstHead, endHead)
                } else {
                    let ranges = ws.attentionRanges[s]
                    rwkvx_attention(q, ws.kCache[s]!, ws.vCache[s]!, ws.cacheDType[s], c, n, ranges, ranges.count / 2,
                                    scale, scratch, y, firstHead, endHead)
                }
            }
        }
    }
    if let pool, pool.threadCount > 1 {
        pool.parallelFor(items, alignment: 1, run)
    } else {
        run(0..<items, 0)
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

    var order: [[Int]] = []
    var scores = [Float](repeating: 0, count: past)
    for head in 0..<config.nHead {
        let col = head * n

        // vote[p] = sum over queries of softmax_p(q . k[p] / sqrt(N))
        var vote = [Float](repeating: 0, count: past)
        for qt in 0..<queryCount {
            queries.withUnsafeBufferPointer { qp in
                state.withCacheBytes { k, _, dtype in
                    let elementSize = dtype == RWKVX_DTYPE_F16 ? 2 : 4
                    scores.withUnsafeMutableBufferPointer { sp in
                        rwkvx_dot_rows(dtype, qp.baseAddress! + qt * c + col, k! + col * elementSize, c, n,
                                       sp.baseAddress!, 0, past)
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
        order.append(Array((0..<past).sorted { vote[$0] > vote[$1] || (vote[$0] == vote[$1] && $0 < $1) }.prefix(keep)))
    }

    // the window rows follow unchanged
    state.gatherRows(order: order, keep: keep, window: window, nEmbd: c, headSize: n)
}
