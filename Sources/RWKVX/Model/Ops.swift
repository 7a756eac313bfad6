// Small fp32 operations of the block math, on row-major [T, C] buffers.
// Matrix products go through the C kernels; these loops are O(T * C).
import Foundation

enum Ops {
    /// LayerNorm of each of the `x.count / c` rows, eps 1e-5 (every layer norm of the model).
    static func layerNorm(_ x: [Float], _ w: LayerNormWeights, c: Int, eps: Float = 1e-5) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for t in 0..<(x.count / c) {
            normalize(x, into: &out, offset: t * c, count: c, weight: w.weight, bias: w.bias,
                      weightOffset: 0, eps: eps)
        }
        return out
    }

    /// Group norm over heads: each head-size slice of each row is normalised on its own
    /// (ln_x of the time mix, eps 64e-5 in the reference).
    static func groupNorm(_ x: inout [Float], _ w: LayerNormWeights, c: Int, groupSize: Int, eps: Float) {
        let input = x
        for t in 0..<(x.count / c) {
            for g in 0..<(c / groupSize) {
                normalize(input, into: &x, offset: t * c + g * groupSize, count: groupSize,
                          weight: w.weight, bias: w.bias, weightOffset: g * groupSize, eps: eps)
            }
        }
    }

    private static func normalize(_ x: [Float], into out: inout [Float], offset: Int, count: Int,
                                  weight: [Float], bias: [Float], weightOffset: Int, eps: Float) {
        var mean: Float = 0
        for i in 0..<count { mean += x[offset + i] }
        mean /= Float(count)
        var variance: Float = 0
        for i in 0..<count {
            let d = x[offset + i] - mean
            variance += d * d
        }
        variance /= Float(count)
        let inv = 1 / (variance + eps).squareRoot()
        for i in 0..<count {
            out[offset + i] = (x[offset + i] - mean) * inv * weight[weightOffset + i] + bias[weightOffset + i]
        }
    }

    /// Token shift over a batch: within each segment of rows (one session's tokens),
    /// xx[t] = x[t-1] - x[t], with x[-1] = that session's prev (its last token of the
    /// previous call).
    static func tokenShiftDelta(_ x: [Float], prev: [[Float]], segments: [Range<Int>], c: Int) -> [Float] {
        var xx = [Float](repeating: 0, count: x.count)
        for (s, rows) in segments.enumerated() {
            for t in rows {
                for i in 0..<c {
                    let before = t == rows.lowerBound ? prev[s][i] : x[(t - 1) * c + i]
                    xx[t * c + i] = before - x[t * c + i]
                }
            }
        }
        return xx
    }

    /// x + xx * mix, the mix vector broadcast over rows.
    static func mix(_ x: [Float], _ xx: [Float], _ mix: [Float], c: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for t in 0..<(x.count / c) {
            for i in 0..<c { out[t * c + i] = x[t * c + i] + xx[t * c + i] * mix[i] }
        }
        return out
    }

    static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// Row `t` of a [T, c] buffer.
    static func row(_ x: [Float], _ t: Int, c: Int) -> [Float] { Array(x[(t * c)..<((t + 1) * c)]) }

    static func add(_ a: inout [Float], _ b: [Float]) {
        for i in 0..<a.count { a[i] += b[i] }
    }
}

extension Matrix {
    /// Y = X Wᵀ for X [nTok, cols]; returns [nTok, rows], rows split over `pool`.
    func callAsFunction(_ x: [Float], pool: ThreadPool?) -> [Float] {
        let nTok = x.count / cols
        var y = [Float](repeating: 0, count: nTok * rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                let xb = xp.baseAddress!, yb = yp.baseAddress!
                if let pool, pool.threadCount > 1, rows >= 64 {
                    let x = SendablePointer(mutating: xb), y = SendablePointer(yb)
                    pool.parallelFor(rows, alignment: 16) { range in
                        self.apply(x.base, nTok: nTok, into: y.base, rows: range)
                    }
                } else {
                    apply(xb, nTok: nTok, into: yb, rows: 0..<rows)
                }
            }
        }
        return y
    }
}
