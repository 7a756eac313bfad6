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

/// Runs RWKV block `w.layer` on a batch: x [rows, C] is the residual stream of every
/// session's tokens, `segments[s]` the rows of session s, `states[s]` its state.
/// vFirst [rows, C] is set by block 0 and read by every later block.
func rwkvBlock(_ x: inout [Float], vFirst: inout [Float], segments: [Range<Int>], states: inout [RWKVLayerState],
               weights w: RWKVBlockWeights, config: ModelConfig, pool: ThreadPool?) {
    let c = config.nEmbd

    // time mix on ln1(x)
    let xa = Ops.layerNorm(x, w.ln1, c: c)
    let att = timeMix(xa, vFirst: &vFirst, segments: segments, states: &states, weights: w.att,
                      layer: w.layer, config: config, pool: pool)
    Ops.add(&x, att)

    // channel mix on ln2(x)
    let xf = Ops.layerNorm(x, w.ln2, c: c)
    var prev = states.map { $0.ffnXPrev }
    let ffn = channelMix(xf, prev: &prev, segments: segments, weights: w.ffn, c: c, pool: pool)
    for s in states.indices { states[s].ffnXPrev = prev[s] }
    Ops.add(&x, ffn)
}

/// RWKV-7 time mix over x [rows, C] (already layer-normed). Returns [rows, C].
func timeMix(_ x: [Float], vFirst: inout [Float], segments: [Range<Int>], states: inout [RWKVLayerState],
             weights w: TimeMixWeights, layer: Int, config: ModelConfig, pool: ThreadPool?) -> [Float] {
    let c = config.nEmbd, n = config.headSize, h = config.nHead
    let tokens = x.count / c

    // token shift: xx = x_prev - x, then one mix per projection
    let xx = Ops.tokenShiftDelta(x, prev: states.map { $0.attXPrev }, segments: segments, c: c)
    let xr = Ops.mix(x, xx, w.xR, c: c), xw = Ops.mix(x, xx, w.xW, c: c)
    let xk = Ops.mix(x, xx, w.xK, c: c), xv = Ops.mix(x, xx, w.xV, c: c)
    let xa = Ops.mix(x, xx, w.xA, c: c), xg = Ops.mix(x, xx, w.xG, c: c)
    for (s, rows) in segments.enumerated() { states[s].attXPrev = Ops.row(x, rows.upperBound - 1, c: c) }

    // projections: r, k, v [rows, C]
    let r = w.receptance(xr, pool: pool)
    var k = w.key(xk, pool: pool)
    var v = w.value(xv, pool: pool)

    // LoRAs: decay w = tanh(xw W1) W2, in-context rate a = sigmoid(a0 + xa A1 A2), gate g = sigmoid(xg G1) G2
    var wDecay = w.w2(w.w1(xw, pool: pool).map { tanh($0) }, pool: pool)
    var a = w.a2(w.a1(xa, pool: pool), pool: pool)
    let g = w.g2(w.g1(xg, pool: pool).map { Ops.sigmoid($0) }, pool: pool)
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
        let gate = v2(v1(xv, pool: pool), pool: pool)
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

    // WKV recurrence, token by token within each session (the removal key is kk * a)
    var y = [Float](repeating: 0, count: x.count)
    wkv7(states: &states, segments: segments, r: r, w: wDecay, k: k, v: v, kk: kk, a: a, y: &y,
         config: config, pool: pool)

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

/// The WKV recurrence of every session, split over the pool by (session, head) pairs.
private func wkv7(states: inout [RWKVLayerState], segments: [Range<Int>], r: [Float], w: [Float], k: [Float],
                  v: [Float], kk: [Float], a: [Float], y: inout [Float], config: ModelConfig, pool: ThreadPool?) {
    let c = config.nEmbd, heads = config.nHead, n = config.headSize
    let stateSize = heads * n * n
    // Move the states into one buffer so that pool threads can each own disjoint heads.
    var flat = [Float](repeating: 0, count: states.count * stateSize)
    for s in states.indices {
        flat.withUnsafeMutableBufferPointer { f in
            states[s].wkv.withUnsafeBufferPointer { src in
                (f.baseAddress! + s * stateSize).update(from: src.baseAddress!, count: stateSize)
            }
        }
    }
    flat.withUnsafeMutableBufferPointer { f in
        r.withUnsafeBufferPointer { rp in w.withUnsafeBufferPointer { wp in
        k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        kk.withUnsafeBufferPointer { kkp in a.withUnsafeBufferPointer { ap in
        y.withUnsafeMutableBufferPointer { yp in
            let p = WKVPointers(state: f.baseAddress!, r: rp.baseAddress!, w: wp.baseAddress!, k: kp.baseAddress!,
                                v: vp.baseAddress!, kk: kkp.baseAddress!, a: ap.baseAddress!, y: yp.baseAddress!)
            let work = segments.count * heads
            let run: @Sendable (Range<Int>) -> Void = { range in
                for item in range {
                    let s = item / heads, head = item % heads
                    for t in segments[s] {
                        rwkvx_wkv7_step(n, p.state + s * stateSize, p.r + t * c, p.w + t * c, p.k + t * c,
                                        p.v + t * c, p.kk + t * c, p.a + t * c, p.y + t * c, head, head + 1)
                    }
                }
            }
            if let pool, pool.threadCount > 1, work > 1 {
                pool.parallelFor(work, alignment: 1, run)
            } else {
                run(0..<work)
            }
        } } } } } } }
    }
    for s in states.indices {
        states[s].wkv = Array(flat[(s * stateSize)..<((s + 1) * stateSize)])
    }
}

/// Raw pointers of one WKV call, shared read-only (state and y: disjoint heads per thread).
private struct WKVPointers: @unchecked Sendable {
    let state: UnsafeMutablePointer<Float>
    let r, w, k, v, kk, a: UnsafePointer<Float>
    let y: UnsafeMutablePointer<Float>
}

/// RWKV-7 channel mix over x [rows, C] (already layer-normed): relu(K xk)^2 then V.
/// `prev[s]` is session s's last ln2 output and is updated.
func channelMix(_ x: [Float], prev: inout [[Float]], segments: [Range<Int>], weights w: ChannelMixWeights, c: Int,
                pool: ThreadPool?) -> [Float] {
    let xx = Ops.tokenShiftDelta(x, prev: prev, segments: segments, c: c)
    let xk = Ops.mix(x, xx, w.xK, c: c)
    for (s, rows) in segments.enumerated() { prev[s] = Ops.row(x, rows.upperBound - 1, c: c) }

    var hidden = w.key(xk, pool: pool)
    for i in 0..<hidden.count {
        let positive = max(hidden[i], 0)
        hidden[i] = positive * positive
    }
    return w.value(hidden, pool: pool)
}
