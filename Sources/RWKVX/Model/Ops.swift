// Small fp32 operations of the block math on row-major [T, C] buffers, written
// over raw pointers so the hot path neither allocates nor checks bounds. Matrix
// products go through the C kernels; these loops are O(T * C). Each output
// element is computed from its own row only, in a fixed order, so any split of
// the rows over threads gives the same bits.
import Foundation

enum Ops {
    /// LayerNorm of one row of `count` values, eps added to the variance:
    /// out = (x - mean) / sqrt(var + eps) * weight + bias. `out` may equal `x`.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float) {
        var mean: Float = 0
        for i in 0..<count { mean += x[i] }
        mean /= Float(count)
        var variance: Float = 0
        for i in 0..<count {
            let d = x[i] - mean
            variance += d * d
        }
        variance /= Float(count)
        let inv = 1 / (variance + eps).squareRoot()
        for i in 0..<count {
            out[i] = (x[i] - mean) * inv * weight[i] + bias[i]
        }
    }

    /// LayerNorm (eps 1e-5, every layer norm of the model) of rows `rows` of x [T, c] into out.
    static func layerNorm(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, rows: Range<Int>,
                          _ w: LayerNormWeights, c: Int) {
        for t in rows {
            normalize(x + t * c, into: out + t * c, count: c, weight: w.weight.base, bias: w.bias.base, eps: 1e-5)
        }
    }

    /// LayerNorm of whole arrays of rows: [T, c] in, [T, c] out.
    static func layerNorm(_ x: [Float], _ w: LayerNormWeights, c: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                layerNorm(xp.baseAddress!, into: op.baseAddress!, rows: 0..<(x.count / c), w, c: c)
            }
        }
        return out
    }

    /// Token-shift mixes of rows `rows`: with xx = x[t-1] - x[t] (x[-1] of a session
    /// is `prev[s]`, its last row of the previous call), out_m[t] = x[t] + xx * mix_m.
    static func tokenShiftMix(_ x: UnsafePointer<Float>, rows: Range<Int>, c: Int, ws: Workspace,
                              prev: [UnsafeMutablePointer<Float>?],
                              _ mixes: [(FloatVector, UnsafeMutablePointer<Float>)]) {
        for t in rows {
            let s = ws.rowSession[t]
            let before = t == ws.segments[s].lowerBound ? UnsafePointer(prev[s]!) : x + (t - 1) * c
            let row = x + t * c
            for (mix, out) in mixes {
                let m = mix.base, o = out + t * c
                for i in 0..<c { o[i] = row[i] + (before[i] - row[i]) * m[i] }
            }
        }
    }

    /// Copies each session's last row of x [T, c] into prev[s].
    static func saveLastRows(_ x: UnsafePointer<Float>, c: Int, ws: Workspace, into prev: [UnsafeMutablePointer<Float>?]) {
        for (s, rows) in ws.segments.enumerated() {
            prev[s]!.update(from: x + (rows.upperBound - 1) * c, count: c)
        }
    }

    static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// Row `t` of a [T, c] buffer.
    static func row(_ x: [Float], _ t: Int, c: Int) -> [Float] { Array(x[(t * c)..<((t + 1) * c)]) }
}
