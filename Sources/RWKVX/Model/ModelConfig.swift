// The one place that names the model's dimensions. Everything is inferred from
// tensor shapes, as the reference loader does; derived sizes are computed here.
//
// Layouts: RWKV-X checkpoints prefix the RWKV-7 part with `rwkv.` and add sparse
// blocks as `moba.{j}.*`; plain RWKV-7 checkpoints have no prefix and no sparse blocks.

/// A block of the network, numbered as in the checkpoint.
public enum BlockID: Hashable, Sendable, CustomStringConvertible, Codable {
    case rwkv(Int)
    case sparse(Int)

    public var description: String {
        switch self {
        case .rwkv(let i): return "rwkv.\(i)"
        case .sparse(let j): return "moba.\(j)"
        }
    }
}

public enum CheckpointLayout: String, Sendable, Codable {
    case rwkvX = "rwkv-x"
    case plainRWKV7 = "rwkv-7"
}

public struct ModelConfig: Sendable, Codable, Equatable {
    public var layout: CheckpointLayout
    public var nEmbd: Int            // C
    public var headSize: Int         // N, 64 for every released RWKV-7 and RWKV-X model
    public var nRWKVLayer: Int
    public var nSparseLayer: Int
    public var vocabSize: Int        // V
    public var ffnSize: Int          // channel-mix hidden size, 4C in released models
    public var loraDecay: Int        // Dw: rank of w1/w2
    public var loraA: Int            // Da: rank of a1/a2
    public var loraValue: Int        // Dv: rank of v1/v2 (0 when there is one RWKV block)
    public var loraGate: Int         // Dg: rank of g1/g2

    public init(layout: CheckpointLayout, nEmbd: Int, headSize: Int = 64, nRWKVLayer: Int,
                nSparseLayer: Int, vocabSize: Int, ffnSize: Int, loraDecay: Int, loraA: Int,
                loraValue: Int, loraGate: Int) {
        self.layout = layout
        self.nEmbd = nEmbd
        self.headSize = headSize
        self.nRWKVLayer = nRWKVLayer
        self.nSparseLayer = nSparseLayer
        self.vocabSize = vocabSize
        self.ffnSize = ffnSize
        self.loraDecay = loraDecay
        self.loraA = loraA
        self.loraValue = loraValue
        self.loraGate = loraGate
    }

    /// H: heads of the RWKV time mix and of the sparse attention (both 64 wide).
    public var nHead: Int { nEmbd / headSize }

    /// Tensor name prefix of the RWKV-7 part.
    public var rwkvPrefix: String { layout == .rwkvX ? "rwkv." : "" }

    /// Order in which the blocks run, as the reference `get_block_exe_order`:
    /// with S sparse blocks and interval = n_rwkv / S, each sparse block follows
    /// `interval` RWKV blocks; a single sparse block runs after all RWKV blocks.
    /// Quirk copied: the trailing n_rwkv mod S RWKV blocks are loaded but never run.
    public var executionOrder: [BlockID] {
        if nSparseLayer == 0 { return (0..<nRWKVLayer).map { .rwkv($0) } }
        if nSparseLayer == 1 { return (0..<nRWKVLayer).map { .rwkv($0) } + [.sparse(0)] }
        let interval = nRWKVLayer / nSparseLayer
        var order: [BlockID] = []
        for j in 0..<nSparseLayer {
            order += (j * interval..<(j + 1) * interval).map { .rwkv($0) }
            order.append(.sparse(j))
        }
        return order
    }

    /// Parameter count, for logs and `inspect`.
    public var parameterCount: Int {
        let c = nEmbd
        let lora = c * (2 * loraDecay + 2 * loraA + 2 * loraGate)
        let rwkvBlock = 4 * c * c + 2 * c * ffnSize + lora + 16 * c
        let sparseBlock = 4 * c * c + 2 * c * ffnSize + 5 * c
        let valueLora = max(nRWKVLayer - 1, 0) * (2 * c * loraValue + c)
        return 2 * vocabSize * c + nRWKVLayer * rwkvBlock + valueLora + nSparseLayer * sparseBlock
    }
}

extension ModelConfig {
    /// Infers the configuration from a checkpoint's tensor names and shapes.
    public static func infer(from checkpoint: Checkpoint) throws -> ModelConfig {
        let names = checkpoint.tensorNames
        let layout: CheckpointLayout = names.contains("rwkv.emb.weight") ? .rwkvX : .plainRWKV7
        let prefix = layout == .rwkvX ? "rwkv." : ""

        func shape(_ name: String) throws -> [Int] {
            try checkpoint.tensor(name).shape
        }

        let emb = try shape(prefix + "emb.weight")
        guard emb.count == 2 else {
            throw CheckpointError.wrongShape(path: checkpoint.path, tensor: prefix + "emb.weight",
                                             expected: [-1, -1], actual: emb)
        }
        let vocab = emb[0], nEmbd = emb[1]
        let rk = try shape(prefix + "blocks.0.att.r_k")
        guard rk.count == 2, rk[0] * rk[1] == nEmbd else {
            throw CheckpointError.wrongShape(path: checkpoint.path, tensor: prefix + "blocks.0.att.r_k",
                                             expected: [nEmbd / 64, 64], actual: rk)
        }
        let headSize = rk[1]

        // Count layers by their distinct indices, as the reference loader does.
        var rwkvLayers = Set<Int>(), sparseLayers = Set<Int>()
        for name in names {
            if name.hasPrefix(prefix + "blocks.") {
                let rest = name.dropFirst((prefix + "blocks.").count)
                if let i = Int(rest.prefix { $0 != "." }) { rwkvLayers.insert(i) }
            } else if layout == .rwkvX, name.hasPrefix("moba.") {
                if let j = Int(name.dropFirst(5).prefix { $0 != "." }) { sparseLayers.insert(j) }
            }
        }
        let nRWKV = rwkvLayers.count, nSparse = sparseLayers.count
        for (set, what) in [(rwkvLayers, prefix + "blocks"), (sparseLayers, "moba")] where set != Set(0..<set.count) {
            let missing = Set(0..<(set.max()! + 1)).subtracting(set).min()!
            throw CheckpointError.missingTensor(path: checkpoint.path, tensor: "\(what).\(missing).*")
        }

        let ffn = try shape(prefix + "blocks.0.ffn.key.weight")[0]
        let dw = try shape(prefix + "blocks.0.att.w1").last ?? 0
        let da = try shape(prefix + "blocks.0.att.a1").last ?? 0
        let dg = try shape(prefix + "blocks.0.att.g1").last ?? 0
        let dv = nRWKV > 1 ? (try shape(prefix + "blocks.1.att.v1").last ?? 0) : 0

        return ModelConfig(layout: layout, nEmbd: nEmbd, headSize: headSize, nRWKVLayer: nRWKV,
                           nSparseLayer: nSparse, vocabSize: vocab, ffnSize: ffn, loraDecay: dw,
                           loraA: da, loraValue: dv, loraGate: dg)
    }
}
