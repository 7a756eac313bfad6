// RWKV-7 block: time mix and channel mix as plain functions over explicit state.
// Follows the reference inference code (rwkv-x 0.1.3, RWKV_x070_TMix_seq/_one and
// RWKV_x070_CMix); prefill and decode are the same computation for these blocks.
import CKernels
import Foundation

/// Recurrent state of one RWKV block.
public struct RWKVLayerState: Sendable, Equatable {
    /// [C] ln1 output of the last token (not the residual stream: reference quirk).
    public var attXPrev: [Float]
    /// [H, N, N] fp32, wkv[h][i][j] with i the value index and j the key index.
    public var wkv: [Float]
    /// [C] ln2 output of the last token.
    public var ffnXPrev: [Float]

    public init(config: ModelConfig) {
        attXPrev = [Float](repeating: 0, count: config.nEmbd)
        wkv = [Float](repeating: 0, count: config.nHead * config.headSize * config.headSize)
        ffnXPrev = [Float](repeating: 0, count: config.nEmbd)
    }
}

/// Runs RWKV block `w.layer` on x [T, C] (the residual stream), updating `state`.
/// vFirst [T, C] is set by block 0 and read by every later block.
func rwkvBlock(_ x: inout [Float], vFirst: inout [Float], state: inout RWKVLayerState,
               weights w: RWKVBlockWeights, config: ModelConfig, pool: ThreadPool?) {
    let c = config.nEmbd

    // time mix on ln1(x)
    let xa = Ops.layerNorm(x, w.ln1, c: c)
    let att = timeMix(xa, vFirst: &vFirst, state: &state, weights: w.att, layer: w.layer, config: config, pool: pool)
    Ops.add(&x, att)

    // channel mix on ln2(x)
    let xf = Ops.layerNorm(x, w.ln2, c: c)
    let ffn = channelMix(xf, prev: &state.ffnXPrev, weights: w.ffn, c: c, pool: pool)
    Ops.add(&x, ffn)
}

/// RWKV-7 time mix over x [T, C] (already layer-normed). Returns [T, C].
func timeMix(_ x: [Float], vFirst: inout [Float], state: inout RWKVLayerState,
             weights w: TimeMixWeights, layer: Int, config: ModelConfig, pool: ThreadPool?) -> [Float] {
    let c = config.nEmbd, n = config.headSize, h = config.nHead
    let tokens = x.count / c

    // token shift: xx = x_prev - x, then one mix per projection
    let xx = Ops.tokenShiftDelta(x, prev: state.attXPrev, c: c)
    let xr = Ops.mix(x, xx, w.xR, c: c), xw = Ops.mix(x, xx, w.xW, c: c)
    let xk = Ops.mix(x, xx, w.xK, c: c), xv = Ops.mix(x, xx, w.xV, c: c)
    let xa = Ops.mix(x, xx, w.xA, c: c), xg = Ops.mix(x, xx, w.xG, c: c)
    state.attXPrev = Ops.row(x, tokens - 1, c: c)

    // projections: r, k, v [T, C]
    let r = w.receptance(xr, pool: pool)
    var k = w.key(xk, pool: pool)
    var v = w.value(xv, pool: pool)

    // LoRAs: decay w = tanh(xw W1) W2, in-context rate a = sigmoid(a0 + xa A1 A2), gate g = sigmoid(xg G1) G2
    var wDecay = w.w2(w.w1(xw, pool: nil).map { tanh($0) }, pool: nil)
    var a = w.a2(w.a1(xa, pool: nil), pool: nil)
    let g = w.g2(w.g1(xg, pool: nil).map { Ops.sigmoid($0) }, pool: nil)
    for t in 0..<tokens {
        for i in 0..<c { a[t * c + i] = Ops.sigmoid(w.a0[i] + a[t * c + i]) }
    }

    // kk = L2-normalize(k * k_k) per head (eps 1e-12), computed from the unmodified k
    var kk = [Float](repeating: 0, count: k.count)
    for t in 0..<tokens {
        for head in 0..<h {
            let o = t * c + head * n
            var sumSquares: Float = 0
            for j in 0..<n {
                let value = k[o + j] * w.kK[head * n + j]
                kk[o + j] = value
                sumSquares += value * value
            }
            let inv = 1 / max(sumSquares.squareRoot(), 1e-12)
            for j in 0..<n { kk[o + j] *= inv }
        }
    }

    // k = k * (1 + (a - 1) * k_a)
    for t in 0..<tokens {
        for i in 0..<c { k[t * c + i] *= 1 + (a[t * c + i] - 1) * w.kA[i] }
    }

    // value residual: block 0 defines v_first; later blocks mix towards it
    if layer == 0 {
        vFirst = v
    } else if let v0 = w.v0, let v1 = w.v1, let v2 = w.v2 {
        let gate = v2(v1(xv, pool: nil), pool: nil)
        for t in 0..<tokens {
            for i in 0..<c {
                let idx = t * c + i
                v[idx] += (vFirst[idx] - v[idx]) * Ops.sigmoid(v0[i] + gate[idx])
            }
        }
    }

    // decay w = exp(-0.606531 * sigmoid(w0 + w)); the literal 0.606531 is the reference's
    for t in 0..<tokens {
        for i in 0..<c { wDecay[t * c + i] = exp(-0.606531 * Ops.sigmoid(w.w0[i] + wDecay[t * c + i])) }
    }

    // WKV recurrence, one token at a time (the removal key is kk * a)
    var y = [Float](repeating: 0, count: x.count)
    state.wkv.withUnsafeMutableBufferPointer { s in
        for t in 0..<tokens {
            let o = t * c
            r.withUnsafeBufferPointer { rp in wDecay.withUnsafeBufferPointer { wp in
            k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            kk.withUnsafeBufferPointer { kkp in a.withUnsafeBufferPointer { ap in
            y.withUnsafeMutableBufferPointer { yp in
                wkv7Step(state: s.baseAddress!, r: rp.baseAddress! + o, w: wp.baseAddress! + o,
                         k: kp.baseAddress! + o, v: vp.baseAddress! + o, kk: kkp.baseAddress! + o,
                         a: ap.baseAddress! + o, y: yp.baseAddress! + o, config: config, pool: pool)
            } } } } } } }
        }
    }

    // group norm per head (ln_x, eps 64e-5), then the bonus (sum over the head of r k r_k) * v
    Ops.groupNorm(&y, w.lnX, c: c, groupSize: n, eps: 64e-5)
    for t in 0..<tokens {
        for head in 0..<h {
            let o = t * c + head * n
            var bonus: Float = 0
            for j in 0..<n { bonus += r[o + j] * k[o + j] * w.rK[head * n + j] }
            for j in 0..<n { y[o + j] += bonus * v[o + j] }
        }
    }

    // output projection of the gated result
    for i in 0..<y.count { y[i] *= g[i] }
    return w.output(y, pool: pool)
}

/// One WKV step for all heads, split by heads over the pool.
private func wkv7Step(state: UnsafeMutablePointer<Float>, r: UnsafePointer<Float>, w: UnsafePointer<Float>,
                      k: UnsafePointer<Float>, v: UnsafePointer<Float>, kk: UnsafePointer<Float>,
                      a: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, config: ModelConfig,
                      pool: ThreadPool?) {
    rwkvx_wkv7_step(config.headSize, state, r, w, k, v, kk, a, y, 0, config.nHead)
}

/// RWKV-7 channel mix over x [T, C] (already layer-normed): relu(K xk)^2 then V.
func channelMix(_ x: [Float], prev: inout [Float], weights w: ChannelMixWeights, c: Int,
                pool: ThreadPool?) -> [Float] {
    let tokens = x.count / c
    let xx = Ops.tokenShiftDelta(x, prev: prev, c: c)
    let xk = Ops.mix(x, xx, w.xK, c: c)
    prev = Ops.row(x, tokens - 1, c: c)

    var hidden = w.key(xk, pool: pool)
    for i in 0..<hidden.count {
        let positive = max(hidden[i], 0)
        hidden[i] = positive * positive
    }
    return w.value(hidden, pool: pool)
}
