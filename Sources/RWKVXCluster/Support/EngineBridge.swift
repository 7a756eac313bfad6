// Conversions between the engine's types and their wire forms.
import RWKVX

extension RWKVX.AttentionOptions {
    /// Wire form; every field is sent explicitly (0 on the wire means "default").
    var wire: WireAttentionOptions {
        var w = WireAttentionOptions()
        w.chunkSize = UInt32(chunkSize)
        w.topK = UInt32(topK)
        w.maxKVCacheSize = UInt64(maxKVCacheSize)
        w.kvCacheWindowSize = UInt64(kvCacheWindowSize)
        w.minKVCacheSize = UInt64(minKVCacheSize)
        w.attnMode = mode == .full ? .full : .sparse
        w.kvCacheDType = kvCacheDType == .fp16 ? .f16 : .f32
        return w
    }

    /// Reads the wire form. max_kv_cache_size 0 means "no compression" here, as in
    /// the engine, so the coordinator always sends the value it wants.
    init(wire w: WireAttentionOptions) {
        self.init()
        if w.chunkSize > 0 { chunkSize = Int(w.chunkSize) }
        if w.topK > 0 { topK = Int(w.topK) }
        maxKVCacheSize = Int(w.maxKVCacheSize)
        if w.kvCacheWindowSize > 0 { kvCacheWindowSize = Int(w.kvCacheWindowSize) }
        if w.minKVCacheSize > 0 { minKVCacheSize = Int(w.minKVCacheSize) }
        mode = w.attnMode == .full ? .full : .sparse
        kvCacheDType = w.kvCacheDType == .f16 ? .fp16 : .fp32
    }
}

extension SamplingOptions {
    /// The part of the options the sampling stage needs (stops are the coordinator's).
    var wire: SamplingParams {
        var p = SamplingParams()
        p.temperature = temperature
        p.topP = topP
        p.topK = UInt32(topK)
        p.presencePenalty = presencePenalty
        p.frequencyPenalty = frequencyPenalty
        p.penaltyDecay = penaltyDecay
        p.bannedTokenIDs = bannedTokens.map { UInt32($0) }
        return p
    }

    init(wire p: SamplingParams, seed: UInt64) {
        self.init()
        temperature = p.temperature
        topP = p.topP == 0 ? 1 : p.topP
        topK = Int(p.topK)
        presencePenalty = p.presencePenalty
        frequencyPenalty = p.frequencyPenalty
        penaltyDecay = p.penaltyDecay
        bannedTokens = p.bannedTokenIDs.map { Int($0) }
        stopTokens = []
        self.seed = seed
    }
}

extension BlockID {
    var wire: BlockRef {
        switch self {
        case .rwkv(let i): return BlockRef(index: UInt32(i), kind: .rwkv7)
        case .sparse(let j): return BlockRef(index: UInt32(j), kind: .attention)
        }
    }

    init?(wire b: BlockRef) {
        switch b.kind {
        case .rwkv7: self = .rwkv(Int(b.index))
        case .attention: self = .sparse(Int(b.index))
        default: return nil
        }
    }
}

/// Resident memory of this process in bytes (VmRSS), or 0 where unavailable.
public func residentMemoryBytes() -> UInt64 {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").compactMap { UInt64($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

/// MemAvailable of the host in bytes, or 0 where unavailable.
func availableMemoryBytes() -> UInt64 {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
        let kb = line.split(separator: " ").compactMap { UInt64($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

import Foundation
