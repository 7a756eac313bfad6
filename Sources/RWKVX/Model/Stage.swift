// A contiguous slice of the execution order with its weights: the unit a pipeline
// stage runs. The whole model is the stage that spans every block. The first stage
// owns the embedding, the last one the head.
import Foundation
import Synchronization

public final class Stage: @unchecked Sendable {
    public let config: ModelConfig
    /// Positions in `config.executionOrder` this stage runs.
    public let positions: Range<Int>
    public let blocks: [BlockID]
    public var options: AttentionOptions
    public let pool: ThreadPool?

    let embedding: EmbeddingWeights?
    let head: HeadWeights?
    let rwkvWeights: [Int: RWKVBlockWeights]
    let sparseWeights: [Int: SparseBlockWeights]
    /// Idle workspaces; a call takes one (or makes one) and puts it back.
    private let workspaces = Mutex<[Workspace]>([])

    public var hasEmbedding: Bool { embedding != nil }
    public var hasHead: Bool { head != nil }

    /// Weight bytes one decoded token reads in this stage (every matrix once, plus an
    /// embedding row).
    public var weightBytesPerToken: Int {
        var total = head?.head.byteCount ?? 0
        for w in rwkvWeights.values {
            total += [w.att.receptance, w.att.key, w.att.value, w.att.output, w.ffn.key, w.ffn.value,
                      w.att.w1, w.att.w2, w.att.a1, w.att.a2, w.att.g1, w.att.g2].reduce(0) { $0 + $1.byteCount }
            total += (w.att.v1?.byteCount ?? 0) + (w.att.v2?.byteCount ?? 0)
        }
        for w in sparseWeights.values {
            total += [w.receptance, w.key, w.value, w.output, w.ffn.key, w.ffn.value].reduce(0) { $0 + $1.byteCount }
        }
        return total
    }

    /// Matrices one token passes through in this stage's blocks (not the head).
    private var blockMatrices: [Matrix] {
        var out: [Matrix] = []
        for w in rwkvWeights.values {
            out += [w.att.receptance, w.att.key, w.att.value, w.att.output, w.ffn.key, w.ffn.value,
                    w.att.w1, w.att.w2, w.att.a1, w.att.a2, w.att.g1, w.att.g2]
            if let v1 = w.att.v1, let v2 = w.att.v2 { out += [v1, v2] }
        }
        for w in sparseWeights.values {
            out += [w.receptance, w.key, w.value, w.output, w.ffn.key, w.ffn.value]
        }
        return out
    }

    /// Floating-point operations of the matrix products of one token in this
    /// stage's blocks (2 per weight), without the head and without attention.
    public var blockMatmulFlopsPerToken: Int {
        blockMatrices.reduce(0) { $0 + 2 * $1.rows * $1.cols }
    }

    /// Floating-point operations of the head for one row of logits (0 without the head).
    public var headFlopsPerRow: Int {
        head.map { 2 * $0.head.rows * $0.head.cols } ?? 0
    }

    /// Loads the weights of execution positions `positions` only.
    public init(checkpoint: Checkpoint, config: ModelConfig, positions: Range<Int>,
                options: AttentionOptions = AttentionOptions(), format: WeightFormat = .stored,
                pool: ThreadPool? = nil) throws {
        let order = config.executionOrder
        precondition(positions.lowerBound >= 0 && positions.upperBound <= order.count && !positions.isEmpty,
                     "stage positions \(positions) outside 0..<\(order.count)")
        try options.validate()
        self.config = config
        self.positions = positions
        self.blocks = Array(order[positions])
        self.options = options
        self.pool = pool

        let reader = WeightReader(checkpoint: checkpoint, format: format)
        var rwkv: [Int: RWKVBlockWeights] = [:]
        var sparse: [Int: SparseBlockWeights] = [:]
        for block in blocks {
            switch block {
            case .rwkv(let i): rwkv[i] = try RWKVBlockWeights(reader, layer: i, config)
            case .sparse(let j): sparse[j] = try SparseBlockWeights(reader, index: j, config)
            }
        }
        rwkvWeights = rwkv
        sparseWeights = sparse
        embedding = positions.lowerBound == 0 ? try EmbeddingWeights(reader, config) : nil
        head = positions.upperBound == order.count ? try HeadWeights(reader, config) : nil
    }

    /// Creates a fresh state for this stage's blocks.
    public func makeState() -> SessionState { SessionState(config: config, blocks: blocks) }

    /// Embedding rows of `tokens` with ln0 applied: [T, C]. Needs the first stage.
    /// Several sessions' tokens may be concatenated: each row depends on its token only.
    public func embed(_ tokens: [Int]) throws -> [Float] {
        guard let embedding else { preconditionFailure("embed called on a stage without the embedding") }
        let c = config.nEmbd
        var x = [Float](repeating: 0, count: tokens.count * c)
        try x.withUnsafeMutableBufferPointer { xp in
            for (t, token) in tokens.enumerated() {
                guard token >= 0 && token < config.vocabSize else {
                    throw ConfigurationError(message: "invalid token id \(token): the vocabulary has ids 0..<\(config.vocabSize)")
                }
                let row = TensorView(name: embedding.table.name, dtype: embedding.table.dtype, shape: [c],
                                     strides: [embedding.table.strides[1]],
                                     base: embedding.table.base + token * embedding.table.strides[0] * embedding.table.dtype.byteSize)
                // Quirk copied: ln0 is folded into the embedding (eps 1e-5); applying it per
                // row at lookup gives the same values without converting the whole table.
                row.toFloat32().withUnsafeBufferPointer { values in
                    Ops.normalize(values.baseAddress!, into: xp.baseAddress! + t * c, count: c,
                                  weight: embedding.ln0.weight.base, bias: embedding.ln0.bias.base, eps: 1e-5)
                }
            }
        }
        return x
    }

    /// Runs this stage's blocks on x [T, C] of one session. vFirst [T, C] is empty until
    /// RWKV block 0 has run and must be passed on to later stages.
    public func forward(_ x: inout [Float], vFirst: inout [Float], state: inout SessionState) {
        var states = [state]
        state = SessionState()
        forwardBatch(&x, vFirst: &vFirst, tokenCounts: [x.count / config.nEmbd], states: &states)
        state = states[0]
    }

    /// Runs this stage's blocks on a batch of sessions in one pass over the weights.
    /// x and vFirst are [rows, C] with session s owning the next `tokenCounts[s]` rows;
    /// `states[s]` is session s's state. Each session's result is bit-identical to
    /// running it alone, at any thread count: every kernel and every parallel split
    /// computes an output element independently of the other rows and of the split.
    ///
    /// `pieces[s]`, when set, marks session s's rows as are one piece of a longer prefill
    /// call, so its sparse blocks decide as for the whole call (see PrefillPiece).
    public func forwardBatch(_ x: inout [Float], vFirst: inout [Float], tokenCounts: [Int],
                             states: inout [SessionState], pieces: [PrefillPiece?]? = nil) {
        precondition(tokenCounts.count == states.count && tokenCounts.allSatisfy { $0 > 0 })
        let pieces = pieces ?? Array(repeating: nil, count: tokenCounts.count)
        precondition(pieces.count == tokenCounts.count)
        for (piece, n) in zip(pieces, tokenCounts) {
            if let piece { precondition(piece.isValid(tokens: n), "invalid prefill piece \(piece) for \(n) tokens") }
        }
        precondition(tokenCounts.reduce(0, +) * config.nEmbd == x.count, "x does not match the token counts")
        let runsFirstBlock = blocks.contains(.rwkv(0))
        if runsFirstBlock && vFirst.count != x.count {
            vFirst = [Float](repeating: 0, count: x.count)
        }
        if tokenCounts.count > Stage.maxSessionsPerPass {
            forwardInParts(&x, vFirst: &vFirst, tokenCounts: tokenCounts, states: &states, pieces: pieces)
            return
        }
        precondition(vFirst.count == x.count || !blocks.contains { if case .rwkv = $0 { return true } else { return false } },
                     "vFirst must hold the [rows, C] output of RWKV block 0 (from an earlier stage)")

        let ws = takeWorkspace()
        defer { returnWorkspace(ws) }
        ws.prepare(tokenCounts: tokenCounts, pieces: pieces, threads: pool?.threadCount ?? 1)

        x.withUnsafeMutableBufferPointer { xb in
            vFirst.withUnsafeMutableBufferPointer { vb in
                let xp = xb.baseAddress!
                for block in blocks {
                    switch block {
                    case .rwkv(let i):
                        runRWKVBlock(i, x: xp, vFirst: vb.baseAddress, states: &states, ws: ws)
                    case .sparse(let j):
                        runSparseBlock(j, x: xp, states: &states, ws: ws)
                    }
                }
            }
        }
    }

    /// Maximum sessions of one pass. Pinning a block's states nests three closures per
    /// session (withPinnedStates), so a pass over thousands of sessions would overflow
    /// the stack. Larger batches run as consecutive passes, which changes no result
    /// because each session's rows are computed independently.
    public static let maxSessionsPerPass = 512

    private func forwardInParts(_ x: inout [Float], vFirst: inout [Float], tokenCounts: [Int],
                                states: inout [SessionState], pieces: [PrefillPiece?]) {
        let c = config.nEmbd
        var firstSession = 0, firstRow = 0
        while firstSession < tokenCounts.count {
            let sessions = firstSession..<min(firstSession + Stage.maxSessionsPerPass, tokenCounts.count)
            let counts = Array(tokenCounts[sessions])
            let values = (firstRow * c)..<((firstRow + counts.reduce(0, +)) * c)
            var partX = Array(x[values])
            var partVFirst = vFirst.count == x.count ? Array(vFirst[values]) : []
            var partStates = Array(states[sessions])
            forwardBatch(&partX, vFirst: &partVFirst, tokenCounts: counts, states: &partStates,
                         pieces: Array(pieces[sessions]))
            x.replaceSubrange(values, with: partX)
            if vFirst.count == x.count { vFirst.replaceSubrange(values, with: partVFirst) }
            states.replaceSubrange(sessions, with: partStates)
            firstSession = sessions.upperBound
            firstRow += counts.reduce(0, +)
        }
    }

    /// Takes block i's state out of every session (so it is mutated in place), runs
    /// the block and puts the states back.
    private func runRWKVBlock(_ i: Int, x: UnsafeMutablePointer<Float>, vFirst: UnsafeMutablePointer<Float>?,
                              states: inout [SessionState], ws: Workspace) {
        var layer = ws.rwkvLayers
        ws.rwkvLayers = []
        for s in states.indices {
            layer.append(states[s].rwkv.removeValue(forKey: i) ?? RWKVLayerState(config: config))
        }
        layer.withUnsafeMutableBufferPointer { lp in
            withPinnedStates(lp, ws: ws) {
                rwkvBlock(x, vFirst: vFirst!, weights: rwkvWeights[i]!, ws: ws, pool: pool)
            }
        }
        for s in states.indices { states[s].rwkv[i] = layer[s] }
        layer.removeAll(keepingCapacity: true)
        ws.rwkvLayers = layer
    }

    private func runSparseBlock(_ j: Int, x: UnsafeMutablePointer<Float>, states: inout [SessionState], ws: Workspace) {
        var layer = ws.sparseLayers
        ws.sparseLayers = []
        for s in states.indices {
            layer.append(states[s].sparse.removeValue(forKey: j) ?? SparseLayerState(config: config))
        }
        layer.withUnsafeMutableBufferPointer { lp in
            withPinnedStates(lp, ws: ws) {
                sparseBlock(x, states: lp, weights: sparseWeights[j]!, options: options, ws: ws, pool: pool)
            }
        }
        for s in states.indices { states[s].sparse[j] = layer[s] }
        layer.removeAll(keepingCapacity: true)
        ws.sparseLayers = layer
    }

    private func takeWorkspace() -> Workspace {
        workspaces.withLock { $0.popLast() } ?? Workspace(config: config)
    }

    private func returnWorkspace(_ ws: Workspace) {
        workspaces.withLock { $0.append(ws) }
    }

    /// Logits of the last token, or of every token when `fullOutput`: [V] or [T, V].
    /// Needs the last stage.  `logits(rows:)` takes any set of rows of a batch.
    public func logits(_ x: [Float], fullOutput: Bool) -> [Float] {
        let c = config.nEmbd
        let tokens = x.count / c
        return logits(rows: fullOutput ? x : Ops.row(x, tokens - 1, c: c))
    }

    /// Logits [n, V] of n rows [n, C] of the residual stream, head rows split over the pool.
    public func logits(rows: [Float]) -> [Float] {
        guard let head else { preconditionFailure("logits called on a stage without the head") }
        var normed = Ops.layerNorm(rows, head.lnOut, c: config.nEmbd)
        let n = rows.count / config.nEmbd
        var out = [Float](repeating: 0, count: n * config.vocabSize)
        normed.withUnsafeMutableBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { yp in
                runMatmuls([MatmulTask(head.head, xp.baseAddress!, yp.baseAddress!)], nTok: n, pool: pool)
            }
        }
        return out
    }
}
