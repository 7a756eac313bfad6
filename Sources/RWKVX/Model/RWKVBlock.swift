// RWKV-7 block: time mix and channel mix as plain functions over explicit state.
// Follows the reference inference code (rwkv-x 0.1.3, RWKV_x070_TMix_seq/_one and
// RWKV_x070_CMix); prefill and decode are the same computation for these blocks.
//
// Buffers live in a Workspace (see its legend); a batch is several sessions' rows
// end to end, session s owning rows ws.segments[s]. Parallel regions: matmul
// groups split by output rows, everything between LN and the output projection
// that is local to one head split by (session, head).
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

/// Pins every session's state arrays of one RWKV block, stores their base addresses
/// in ws (wkvState, attPrev, ffnPrev) and runs `body`.
func withPinnedStates(_ states: UnsafeMutableBufferPointer<RWKVLayerState>, ws: Workspace, from index: Int = 0,
                      _ body: () -> Void) {
    if index == states.count {
        body()
        return
    }
    states[index].wkv.withUnsafeMutableBufferPointer { wkv in
        states[index].attXPrev.withUnsafeMutableBufferPointer { att in
            states[index].ffnXPrev.withUnsafeMutableBufferPointer { ffn in
                ws.wkvState[index] = wkv.baseAddress!
                ws.attPrev[index] = att.baseAddress!
                ws.ffnPrev[index] = ffn.baseAddress!
                withPinnedStates(states, ws: ws, from: index + 1, body)
            }
        }
    }
}

/// Runs RWKV block `w.layer` on the batch in ws: x [rows, C] is the residual stream,
/// updated in place. vFirst [rows, C] is written by block 0 and read by later blocks.
/// The sessions' states must be pinned (withPinnedStates).
func rwkvBlock(_ x: UnsafeMutablePointer<Float>, vFirst: UnsafeMutablePointer<Float>, weights w: RWKVBlockWeights,
               ws: Workspace, pool: ThreadPool?) {
    timeMix(x, vFirst: vFirst, weights: w.att, ln: w.ln1, layer: w.layer, ws: ws, pool: pool)
    channelMix(x, weights: w.ffn, ln: w.ln2, ws: ws, pool: pool)
}

/// x += time_mix(ln1(x)).
private func timeMix(_ x: UnsafeMutablePointer<Float>, vFirst: UnsafeMutablePointer<Float>, weights w: TimeMixWeights,
                     ln: LayerNormWeights, layer: Int, ws: Workspace, pool: ThreadPool?) {
    let c = ws.config.nEmbd, rows = ws.rows
    let xp = UncheckedSendable(x)

    // xa = ln1(x), then the token-shifted mixes of each projection
    forEachChunk(rows, pool: pool, minimumPerThread: 8) { range in
        Ops.layerNorm(xp.value, into: ws.normed.base, rows: range, ln, c: c)
    }
    ws.shiftMixes.removeAll(keepingCapacity: true)
    ws.shiftMixes.append((w.xR, ws.mixR.base))
    ws.shiftMixes.append((w.xW, ws.mixW.base))
    ws.shiftMixes.append((w.xK, ws.mixK.base))
    ws.shiftMixes.append((w.xV, ws.mixV.base))
    ws.shiftMixes.append((w.xA, ws.mixA.base))
    ws.shiftMixes.append((w.xG, ws.mixG.base))
    forEachChunk(rows, pool: pool, minimumPerThread: 8) { range in
        Ops.tokenShiftMix(ws.normed.base, rows: range, c: c, ws: ws, prev: ws.attPrev, ws.shiftMixes)
    }
    Ops.saveLastRows(ws.normed.base, c: c, ws: ws, into: ws.attPrev)

    // r, k, v projections and the first LoRA factors, in one region:
    // tanh(xw W1), xa A1, sigmoid(xg G1), xv V1
    ws.tasks.append(MatmulTask(w.receptance, ws.mixR.base, ws.r.base))
    ws.tasks.append(MatmulTask(w.key, ws.mixK.base, ws.k.base))
    ws.tasks.append(MatmulTask(w.value, ws.mixV.base, ws.v.base))
    ws.tasks.append(MatmulTask(w.w1, ws.mixW.base, ws.loraDecay.base, .tanh))
    ws.tasks.append(MatmulTask(w.a1, ws.mixA.base, ws.loraRate.base))
    ws.tasks.append(MatmulTask(w.g1, ws.mixG.base, ws.loraGate.base, .sigmoid))
    if let v1 = w.v1 { ws.tasks.append(MatmulTask(v1, ws.mixV.base, ws.loraValue.base)) }
    ws.runQueuedMatmuls(pool: pool)

    // second LoRA factors (decay, in-context rate, gate and value-residual
    // pre-activations), run inside the per-head region below. Each (session, head)
    // item computes its head's rows for its session's tokens, so no barrier is needed.
    ws.tasks.append(MatmulTask(w.w2, ws.loraDecay.base, ws.decay.base))
    ws.tasks.append(MatmulTask(w.a2, ws.loraRate.base, ws.rate.base))
    ws.tasks.append(MatmulTask(w.g2, ws.loraGate.base, ws.gate.base))
    if let v2 = w.v2 { ws.tasks.append(MatmulTask(v2, ws.loraValue.base, ws.valueGate.base)) }
    prepareMatmuls(&ws.tasks, nTok: rows, pool: pool, scratch: ws.quantized)
    let lora = UncheckedSendable(ws.tasks)
    ws.tasks.removeAll(keepingCapacity: true)

    // per (session, head): those LoRA rows, the activations of every token, the WKV
    // recurrence over the session's tokens, then group norm and bonus
    let heads = ws.config.nHead, n = ws.config.headSize
    let vf = UncheckedSendable(vFirst)
    forEachChunk(ws.segments.count * heads, pool: pool) { items in
        for item in items {
            let s = item / heads, head = item % heads
            let tokens = ws.segments[s]
            for task in lora.value { task.run(rows: (head * n)..<((head + 1) * n), tokens: tokens) }
            for t in tokens { prepareHead(row: t, head: head, vFirst: vf.value, weights: w, layer: layer, ws: ws) }

            // the removal key is kk * a
            let o = tokens.lowerBound * c + head * n
            rwkvx_wkv7_seq(n, ws.wkvState[s]! + head * n * n, tokens.count, c, ws.r.base + o, ws.decay.base + o,
                           ws.k.base + o, ws.v.base + o, ws.kk.base + o, ws.rate.base + o, ws.y.base + o)

            for t in tokens { finishHead(row: t, head: head, weights: w, ws: ws) }
        }
    }

    // x += output(y)
    ws.tasks.append(MatmulTask(w.output, ws.y.base, ws.projection.base, .addInto(x)))
    ws.runQueuedMatmuls(pool: pool)
}

/// Computes the activations of head `head` of row `row` before its WKV step: a, kk, k, the
/// value residual and the decay, in reference order (see rwkvx_tmix_prepare).
/// Block 0 defines v_first; later blocks mix towards it.
@inline(__always)
private func prepareHead(row t: Int, head: Int, vFirst: UnsafeMutablePointer<Float>, weights w: TimeMixWeights,
                         layer: Int, ws: Workspace) {
    let c = ws.config.nEmbd, n = ws.config.headSize
    let o = t * c + head * n        // this head's columns in row t
    let ch = head * n               // ... in a [C] weight vector
    let v = ws.v.base + o, first = vFirst + o
    rwkvx_tmix_prepare(n, ws.rate.base + o, w.a0.base + ch, ws.k.base + o, ws.kk.base + o, w.kK.base + ch,
                       w.kA.base + ch, v, first, layer == 0 ? nil : w.v0.map { UnsafePointer($0.base + ch) },
                       ws.valueGate.base + o, ws.decay.base + o, w.w0.base + ch)
    if layer == 0 { first.update(from: v, count: n) }
}

/// Finishes head `head` of row `row` after its WKV step: group norm (ln_x, eps
/// 64e-5), the bonus (sum over the head of r k r_k) * v, then the gate.
@inline(__always)
private func finishHead(row t: Int, head: Int, weights w: TimeMixWeights, ws: Workspace) {
    let c = ws.config.nEmbd, n = ws.config.headSize
    let o = t * c + head * n, ch = head * n
    rwkvx_tmix_finish(n, ws.y.base + o, ws.r.base + o, ws.k.base + o, w.rK.base + ch, ws.v.base + o,
                      ws.gate.base + o, w.lnX.weight.base + ch, w.lnX.bias.base + ch, 64e-5)
}

/// x += channel_mix(ln2(x)) with the sessions' ffnPrev shift state: relu(K xk)^2 then V.
/// Shared by the RWKV and the sparse-attention blocks.
func channelMix(_ x: UnsafeMutablePointer<Float>, weights w: ChannelMixWeights, ln: LayerNormWeights,
                ws: Workspace, pool: ThreadPool?) {
    let c = ws.config.nEmbd, rows = ws.rows
    let xp = UncheckedSendable(x)

    // xk = token-shift mix of ln2(x)
    forEachChunk(rows, pool: pool, minimumPerThread: 8) { range in
        Ops.layerNorm(xp.value, into: ws.normed.base, rows: range, ln, c: c)
    }
    ws.shiftMixes.removeAll(keepingCapacity: true)
    ws.shiftMixes.append((w.xK, ws.mixK.base))
    forEachChunk(rows, pool: pool, minimumPerThread: 8) { range in
        Ops.tokenShiftMix(ws.normed.base, rows: range, c: c, ws: ws, prev: ws.ffnPrev, ws.shiftMixes)
    }
    Ops.saveLastRows(ws.normed.base, c: c, ws: ws, into: ws.ffnPrev)

    // hidden = relu(xk K)^2, then x += hidden V
    ws.tasks.append(MatmulTask(w.key, ws.mixK.base, ws.hidden.base, .reluSquared))
    ws.runQueuedMatmuls(pool: pool)
    ws.tasks.append(MatmulTask(w.value, ws.hidden.base, ws.projection.base, .addInto(x)))
    ws.runQueuedMatmuls(pool: pool)
}
