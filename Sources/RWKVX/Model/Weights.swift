// Weights of each block, read from a checkpoint with every shape checked against
// ModelConfig. Only the tensors of the requested blocks are touched, so a pipeline
// stage reads just its own part of the file.

/// Reads named tensors of one checkpoint and checks their shapes.
struct WeightReader {
    let checkpoint: Checkpoint
    let format: WeightFormat

    func view(_ name: String, shape expected: [Int]) throws -> TensorView {
        let view = try checkpoint.tensor(name)
        // Per-channel vectors are stored as [1, 1, C]; compare without leading 1s.
        let actual = Array(view.shape.drop { $0 == 1 && view.shape.count > expected.count })
        if actual != expected {
            throw CheckpointError.wrongShape(path: checkpoint.path, tensor: name, expected: expected, actual: view.shape)
        }
        return view
    }

    func vector(_ name: String, _ count: Int) throws -> FloatVector {
        let v = try checkpoint.tensor(name)
        if v.count != count || v.shape.dropFirst(0).filter({ $0 != 1 }).count > 1 {
            throw CheckpointError.wrongShape(path: checkpoint.path, tensor: name, expected: [count], actual: v.shape)
        }
        return FloatVector(v.toFloat32())
    }

    /// Reads a Linear weight stored [out, in].
    func linear(_ name: String, out: Int, in inputs: Int) throws -> Matrix {
        Matrix(try view(name, shape: [out, inputs]), keepAlive: checkpoint, format: format)
    }

    /// A LoRA factor stored [in, out] and used as x @ W, transposed. Kept in bf16 when
    /// stored so (except with --dtype fp32), else in fp32. The int8 format leaves LoRAs unquantised.
    func lora(_ name: String, in inputs: Int, out: Int) throws -> Matrix {
        Matrix.transposed(try view(name, shape: [inputs, out]), keepBF16: format != .float32)
    }

    /// Reads a LoRA up factor (rank to n_embd) and keeps it [in, out] as stored, for
    /// rwkvx_matmul_by_columns. Half precision stays as stored except with --dtype fp32.
    func loraUp(_ name: String, in inputs: Int, out: Int) throws -> Matrix {
        Matrix.inputMajor(try view(name, shape: [inputs, out]), keepHalf: format != .float32)
    }
}

/// A per-channel fp32 weight vector in owned, 64-byte aligned memory, so hot loops
/// read it through a pointer without bounds checks or array retains.
final class FloatVector: @unchecked Sendable {
    /// Immutable after init.
    let base: UnsafeMutablePointer<Float>
    let count: Int

    init(_ values: [Float]) {
        count = values.count
        base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: max(count, 1))
        values.withUnsafeBufferPointer { base.update(from: $0.baseAddress!, count: count) }
    }

    deinit { base.deallocate() }

    subscript(i: Int) -> Float { base[i] }
}

struct LayerNormWeights: Sendable {
    let weight: FloatVector
    let bias: FloatVector

    init(_ reader: WeightReader, _ prefix: String, _ c: Int) throws {
        weight = try reader.vector(prefix + ".weight", c)
        bias = try reader.vector(prefix + ".bias", c)
    }
}

/// RWKV-7 channel mix (the FFN of both block kinds).
struct ChannelMixWeights: Sendable {
    let xK: FloatVector      // [C] token-shift mix
    let key: Matrix          // [F, C]
    let value: Matrix        // [C, F]

    init(_ reader: WeightReader, _ prefix: String, _ config: ModelConfig) throws {
        let c = config.nEmbd, f = config.ffnSize
        xK = try reader.vector(prefix + "x_k", c)
        key = try reader.linear(prefix + "key.weight", out: f, in: c)
        value = try reader.linear(prefix + "value.weight", out: c, in: f)
    }
}

/// RWKV-7 time mix of block `layer`.
struct TimeMixWeights: Sendable {
    let xR, xW, xK, xV, xA, xG: FloatVector   // [C] token-shift mixes
    let w0, a0: FloatVector                   // [C] biases of the decay and in-context rate LoRAs
    let v0: FloatVector?                      // [C], absent in block 0
    let w1, w2, a1, a2, g1, g2: Matrix    // LoRA factors, [out, in] fp32
    let v1, v2: Matrix?                   // absent in block 0
    let kK, kA: FloatVector               // [C]
    let rK: FloatVector                   // [H * N] bonus weights
    let receptance, key, value, output: Matrix  // [C, C]
    let lnX: LayerNormWeights             // group norm, H groups

    init(_ reader: WeightReader, _ prefix: String, layer: Int, _ config: ModelConfig) throws {
        let c = config.nEmbd
        xR = try reader.vector(prefix + "x_r", c)
        xW = try reader.vector(prefix + "x_w", c)
        xK = try reader.vector(prefix + "x_k", c)
        xV = try reader.vector(prefix + "x_v", c)
        xA = try reader.vector(prefix + "x_a", c)
        xG = try reader.vector(prefix + "x_g", c)
        w0 = try reader.vector(prefix + "w0", c)
        a0 = try reader.vector(prefix + "a0", c)
        w1 = try reader.lora(prefix + "w1", in: c, out: config.loraDecay)
        w2 = try reader.loraUp(prefix + "w2", in: config.loraDecay, out: c)
        a1 = try reader.lora(prefix + "a1", in: c, out: config.loraA)
        a2 = try reader.loraUp(prefix + "a2", in: config.loraA, out: c)
        g1 = try reader.lora(prefix + "g1", in: c, out: config.loraGate)
        g2 = try reader.loraUp(prefix + "g2", in: config.loraGate, out: c)
        if layer == 0 {
            v0 = nil
            v1 = nil
            v2 = nil
        } else {
            v0 = try reader.vector(prefix + "v0", c)
            v1 = try reader.lora(prefix + "v1", in: c, out: config.loraValue)
            v2 = try reader.loraUp(prefix + "v2", in: config.loraValue, out: c)
        }
        kK = try reader.vector(prefix + "k_k", c)
        kA = try reader.vector(prefix + "k_a", c)
        rK = FloatVector(try reader.view(prefix + "r_k", shape: [config.nHead, config.headSize]).toFloat32())
        receptance = try reader.linear(prefix + "receptance.weight", out: c, in: c)
        key = try reader.linear(prefix + "key.weight", out: c, in: c)
        value = try reader.linear(prefix + "value.weight", out: c, in: c)
        output = try reader.linear(prefix + "output.weight", out: c, in: c)
        lnX = try LayerNormWeights(reader, prefix + "ln_x", c)
    }
}

struct RWKVBlockWeights: Sendable {
    let layer: Int
    let ln1, ln2: LayerNormWeights
    let att: TimeMixWeights
    let ffn: ChannelMixWeights

    init(_ reader: WeightReader, layer: Int, _ config: ModelConfig) throws {
        self.layer = layer
        let p = config.rwkvPrefix + "blocks.\(layer)."
        ln1 = try LayerNormWeights(reader, p + "ln1", config.nEmbd)
        ln2 = try LayerNormWeights(reader, p + "ln2", config.nEmbd)
        att = try TimeMixWeights(reader, p + "att.", layer: layer, config)
        ffn = try ChannelMixWeights(reader, p + "ffn.", config)
    }
}

struct SparseBlockWeights: Sendable {
    let index: Int
    let ln1, ln2: LayerNormWeights
    let receptance, key, value, output: Matrix  // [C, C], no bias
    let ffn: ChannelMixWeights

    init(_ reader: WeightReader, index: Int, _ config: ModelConfig) throws {
        self.index = index
        let c = config.nEmbd
        let p = "moba.\(index)."
        ln1 = try LayerNormWeights(reader, p + "ln1", c)
        ln2 = try LayerNormWeights(reader, p + "ln2", c)
        receptance = try reader.linear(p + "att.receptance.weight", out: c, in: c)
        key = try reader.linear(p + "att.key.weight", out: c, in: c)
        value = try reader.linear(p + "att.value.weight", out: c, in: c)
        output = try reader.linear(p + "att.output.weight", out: c, in: c)
        ffn = try ChannelMixWeights(reader, p + "ffn.", config)
    }
}

/// Token embedding with block 0's ln0 applied at lookup.
struct EmbeddingWeights: Sendable {
    let table: TensorView          // [V, C], rows read on demand
    let ln0: LayerNormWeights
    let keepAlive: Checkpoint

    init(_ reader: WeightReader, _ config: ModelConfig) throws {
        table = try reader.view(config.rwkvPrefix + "emb.weight", shape: [config.vocabSize, config.nEmbd])
        ln0 = try LayerNormWeights(reader, config.rwkvPrefix + "blocks.0.ln0", config.nEmbd)
        keepAlive = reader.checkpoint
    }
}

/// Final layer norm and output projection.
struct HeadWeights: Sendable {
    let lnOut: LayerNormWeights
    let head: Matrix               // [V, C]

    init(_ reader: WeightReader, _ config: ModelConfig) throws {
        lnOut = try LayerNormWeights(reader, config.rwkvPrefix + "ln_out", config.nEmbd)
        head = try reader.linear(config.rwkvPrefix + "head.weight", out: config.vocabSize, in: config.nEmbd)
    }
}
