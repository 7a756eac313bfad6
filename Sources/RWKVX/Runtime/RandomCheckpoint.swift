// Random checkpoints in the official layout, for demos, tests and benchmarks.
// The values follow the spirit of the official RWKV-7 init (token-shift ratios,
// decay speeds, layer norms near 1) with every matrix small, random and non-zero,
// so every code path shapes the logits. Random weights generate noise, not text.
//
// NOTE: LoRA factors are scaled Gaussians, not the orthogonal matrices of the
// official init; the layout and shapes are exact.
import Foundation

public struct RandomCheckpointSpec: Sendable {
    public var nRWKVLayer: Int
    public var nSparseLayer: Int
    public var nEmbd: Int
    public var vocabSize: Int
    public var dtype: TensorDType
    public var seed: UInt64
    /// Plain RWKV-7 layout (no `rwkv.` prefix); needs nSparseLayer == 0.
    public var plain: Bool

    public init(nRWKVLayer: Int, nSparseLayer: Int, nEmbd: Int, vocabSize: Int, dtype: TensorDType,
                seed: UInt64, plain: Bool = false) {
        self.nRWKVLayer = nRWKVLayer
        self.nSparseLayer = nSparseLayer
        self.nEmbd = nEmbd
        self.vocabSize = vocabSize
        self.dtype = dtype
        self.seed = seed
        self.plain = plain
    }

    public func validate() throws {
        func fail(_ m: String) -> ConfigurationError { ConfigurationError(message: m) }
        if nRWKVLayer < 1 { throw fail("invalid --layers \(nRWKVLayer): need at least 1 RWKV layer") }
        if nSparseLayer < 0 { throw fail("invalid --sparse-layers \(nSparseLayer): must not be negative") }
        if nSparseLayer > 1 && nRWKVLayer < nSparseLayer {
            throw fail("invalid --sparse-layers \(nSparseLayer): at most --layers (\(nRWKVLayer)) sparse layers, or exactly 1")
        }
        if nEmbd < 64 || nEmbd % 64 != 0 { throw fail("invalid --embd \(nEmbd): must be a positive multiple of 64 (head size)") }
        if vocabSize < 2 { throw fail("invalid --vocab \(vocabSize): must be at least 2") }
        if plain && nSparseLayer != 0 { throw fail("a plain RWKV-7 layout cannot have sparse layers") }
    }

    /// LoRA ranks of the official formula for n_embd (decay, a, value, gate).
    public var loraRanks: (Int, Int, Int, Int) {
        let c = Double(nEmbd)
        func rank(_ x: Double) -> Int { max(32, Int((x / 32).rounded()) * 32) }
        return (rank(1.8 * c.squareRoot()), rank(1.8 * c.squareRoot()), rank(1.3 * c.squareRoot()),
                rank(0.6 * pow(c, 0.8)))
    }
}

/// One tensor to generate: its name, shape and how to fill it.
public struct GeneratedTensor {
    public enum Fill {
        case normal(mean: Float, std: Float)
        case uniform(bound: Float)
        /// value(i) for element i, plus Gaussian noise of `noise` std.
        case formula(noise: Float, (Int) -> Float)
    }

    public let name: String
    public let shape: [Int]
    public let fill: Fill
}

extension RandomCheckpointSpec {
    /// Every tensor of the checkpoint in the official order.
    public func tensors() -> [GeneratedTensor] {
        let c = nEmbd, h = nEmbd / 64
        let (dw, da, dv, dg) = loraRanks
        let pre = plain ? "" : "rwkv."
        var out: [GeneratedTensor] = []
        func add(_ name: String, _ shape: [Int], _ fill: GeneratedTensor.Fill) {
            out.append(GeneratedTensor(name: name, shape: shape, fill: fill))
        }
        func layerNorm(_ p: String) {
            add(p + ".weight", [c], .normal(mean: 1, std: 0.1))
            add(p + ".bias", [c], .normal(mean: 0, std: 0.05))
        }
        let sc = Float(c).squareRoot()

        add(pre + "emb.weight", [vocabSize, c], .normal(mean: 0, std: 0.5))
        for i in 0..<nRWKVLayer {
            let b = "\(pre)blocks.\(i)."
            let ratio01 = nRWKVLayer > 1 ? Float(i) / Float(nRWKVLayer - 1) : 0
            let ratio10 = 1 - Float(i) / Float(nRWKVLayer)
            func shift(_ power: Float, _ offset: Float = 0) -> GeneratedTensor.Fill {
                .formula(noise: 0.03) { 1 - (pow(Float($0) / Float(c), power) + offset) }
            }
            if i == 0 { layerNorm(b + "ln0") }
            layerNorm(b + "ln1")
            layerNorm(b + "ln2")
            add(b + "att.x_r", [1, 1, c], shift(0.2 * ratio10))
            add(b + "att.x_w", [1, 1, c], shift(0.9 * ratio10))
            add(b + "att.x_k", [1, 1, c], shift(0.9 * ratio10, 0.4 * ratio01))
            add(b + "att.x_v", [1, 1, c], shift(0.4 * ratio10, 0.6 * ratio01))
            add(b + "att.x_a", [1, 1, c], shift(0.9 * ratio10))
            add(b + "att.x_g", [1, 1, c], shift(0.2 * ratio10))
            add(b + "att.w0", [1, 1, c], .formula(noise: 0.2) {
                -7 + 5 * pow(Float($0) / Float(max(c - 1, 1)), 0.85 + ratio01.squareRoot()) + 0.5
            })
            add(b + "att.w1", [c, dw], .normal(mean: 0, std: 0.5 / sc))
            add(b + "att.w2", [dw, c], .normal(mean: 0, std: 1 / Float(dw).squareRoot()))
            add(b + "att.a0", [1, 1, c], .normal(mean: 0, std: 0.3))
            add(b + "att.a1", [c, da], .normal(mean: 0, std: 0.5 / sc))
            add(b + "att.a2", [da, c], .normal(mean: 0, std: 1 / Float(da).squareRoot()))
            if i != 0 {
                add(b + "att.v0", [1, 1, c], .normal(mean: 1, std: 0.3))
                add(b + "att.v1", [c, dv], .normal(mean: 0, std: 0.5 / sc))
                add(b + "att.v2", [dv, c], .normal(mean: 0, std: 1 / Float(dv).squareRoot()))
            }
            add(b + "att.g1", [c, dg], .normal(mean: 0, std: 0.5 / sc))
            add(b + "att.g2", [dg, c], .normal(mean: 0, std: 1.5 / Float(dg).squareRoot()))
            add(b + "att.k_k", [1, 1, c], .normal(mean: 0.85, std: 0.1))
            add(b + "att.k_a", [1, 1, c], .normal(mean: 1, std: 0.1))
            add(b + "att.r_k", [h, 64], .normal(mean: 0, std: 0.2))
            add(b + "att.receptance.weight", [c, c], .uniform(bound: 0.5 / sc))
            add(b + "att.key.weight", [c, c], .uniform(bound: 0.3 / sc))
            add(b + "att.value.weight", [c, c], .uniform(bound: 0.5 / sc))
            add(b + "att.output.weight", [c, c], .uniform(bound: 0.5 / sc))
            layerNorm(b + "att.ln_x")
            add(b + "ffn.x_k", [1, 1, c], shift(pow(ratio10, 4)))
            add(b + "ffn.key.weight", [4 * c, c], .uniform(bound: 0.5 / sc))
            add(b + "ffn.value.weight", [c, 4 * c], .uniform(bound: 0.5 / (2 * sc)))
        }
        layerNorm(pre + "ln_out")
        add(pre + "head.weight", [vocabSize, c], .normal(mean: 0, std: 1.5 / sc))
        for j in 0..<nSparseLayer {
            let b = "moba.\(j)."
            layerNorm(b + "ln1")
            layerNorm(b + "ln2")
            add(b + "att.receptance.weight", [c, c], .normal(mean: 0, std: 1 / sc))
            add(b + "att.key.weight", [c, c], .normal(mean: 0, std: 1 / sc))
            add(b + "att.value.weight", [c, c], .normal(mean: 0, std: 1 / sc))
            add(b + "att.output.weight", [c, c], .uniform(bound: 0.5 / sc))
            let ratio10 = 1 - Float(j) / Float(max(nRWKVLayer, 1))
            add(b + "ffn.x_k", [1, 1, c], .formula(noise: 0.03) { 1 - pow(Float($0) / Float(c), pow(ratio10, 4)) })
            add(b + "ffn.key.weight", [4 * c, c], .uniform(bound: 0.5 / sc))
            add(b + "ffn.value.weight", [c, 4 * c], .uniform(bound: 0.5 / (2 * sc)))
        }
        return out
    }

    /// The payloads to write, each filled on demand from its own seeded generator, so
    /// the values do not depend on the order or the format they are written in.
    public func payloads() -> [TensorPayload] {
        let dtype = self.dtype
        return tensors().enumerated().map { index, t in
            let seed = self.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index + 1)
            return TensorPayload(name: t.name, dtype: dtype, shape: t.shape) { buffer in
                var rng = Xoshiro256StarStar(seed: seed)
                let count = t.shape.reduce(1, *)
                var values = [Float](repeating: 0, count: count)
                switch t.fill {
                case .normal(let mean, let std):
                    for i in 0..<count { values[i] = mean + std * rng.nextGaussian() }
                case .uniform(let bound):
                    for i in 0..<count { values[i] = bound * Float(2 * rng.nextUnitInterval() - 1) }
                case .formula(let noise, let f):
                    for i in 0..<count { values[i] = f(i) + noise * rng.nextGaussian() }
                }
                encodeFloats(values, as: dtype, into: buffer)
            }
        }
    }
}

extension Xoshiro256StarStar {
    /// A standard normal sample (Box-Muller).
    mutating func nextGaussian() -> Float {
        let u1 = max(nextUnitInterval(), 1e-300), u2 = nextUnitInterval()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// Writes fp32 values as `dtype` (bf16 and fp16 rounded to nearest even).
public func encodeFloats(_ values: [Float], as dtype: TensorDType, into buffer: UnsafeMutableRawBufferPointer) {
    switch dtype {
    case .float32:
        values.withUnsafeBytes { buffer.copyMemory(from: $0) }
    case .bfloat16:
        let out = buffer.bindMemory(to: UInt16.self)
        for (i, v) in values.enumerated() { out[i] = bfloat16Bits(v).littleEndian }
    case .float16:
        let out = buffer.bindMemory(to: UInt16.self)
        for (i, v) in values.enumerated() { out[i] = Float16(v).bitPattern.littleEndian }
    }
}

/// Round-to-nearest-even bf16 bits of an fp32 value (NaN stays NaN).
public func bfloat16Bits(_ v: Float) -> UInt16 {
    let bits = v.bitPattern
    if v.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}
