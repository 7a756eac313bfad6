// State of one sparse-attention block: its KV cache and its channel-mix shift.
//
// The cache rows are stored as fp32 (the reference's precision) or as IEEE half
// (AttentionOptions.kvCacheDType), which halves the cache's memory and the bytes a
// decoded token reads. Rows are converted to half as they are appended, rounding
// to nearest even; everything that reads rows (attention, chunk key sums,
// compression) reads either type.
import CKernels

/// State of one sparse block: the KV cache and the channel-mix shift.
public struct SparseLayerState: Sendable {
    /// Element type of the cache rows. An empty cache takes the type of the options
    /// it first runs with; a cache of another type is converted when a block runs.
    public private(set) var cacheDType: KVCacheDType = .fp32
    /// [rows, C] fp32 keys and values in the order the reference keeps them (after a
    /// compression each head holds its own permutation of past tokens). Empty when
    /// cacheDType is fp16: read keyRows() and valueRows() for either type.
    public internal(set) var kCache: [Float]
    public internal(set) var vCache: [Float]
    /// [rows, C] keys and values as IEEE half bit patterns; empty unless cacheDType is fp16.
    public private(set) var kCacheHalf: [UInt16] = []
    public private(set) var vCacheHalf: [UInt16] = []
    /// [C] ln2 output of the last token.
    public var ffnXPrev: [Float]
    /// [chunks, C] sums of the keys (as stored, converted to fp32) of each complete
    /// chunk, in cache-row order. Derived from the keys; kept so that choosing chunks
    /// costs O(chunks), not O(rows).
    var chunkKeySums: [Float] = []

    public init(config: ModelConfig) {
        kCache = []
        vCache = []
        ffnXPrev = [Float](repeating: 0, count: config.nEmbd)
    }

    public func rows(nEmbd: Int) -> Int {
        (cacheDType == .fp16 ? kCacheHalf.count : kCache.count) / nEmbd
    }

    /// Bytes of KV cache held.
    public var cacheBytes: Int {
        kCache.count * 4 + vCache.count * 4 + kCacheHalf.count * 2 + vCacheHalf.count * 2
    }

    /// Returns the keys as [rows, C] fp32, whatever the stored type.
    public func keyRows() -> [Float] {
        cacheDType == .fp16 ? SparseLayerState.floats(fromHalf: kCacheHalf) : kCache
    }

    /// Returns the values as [rows, C] fp32, whatever the stored type.
    public func valueRows() -> [Float] {
        cacheDType == .fp16 ? SparseLayerState.floats(fromHalf: vCacheHalf) : vCache
    }

    /// Replaces the cache with `keys` and `values` ([rows, C] fp32) stored as `dtype`,
    /// with capacity for `reservingRows` rows of width `nEmbd` (for appends without
    /// reallocation).
    public mutating func replaceCache(keys: [Float], values: [Float], dtype: KVCacheDType, reservingRows: Int = 0,
                                      nEmbd: Int) {
        precondition(keys.count == values.count && keys.count % nEmbd == 0, "keys and values must both be [rows, C]")
        chunkKeySums.removeAll()
        cacheDType = dtype
        switch dtype {
        case .fp32:
            kCacheHalf = []
            vCacheHalf = []
            kCache = keys
            vCache = values
            kCache.reserveCapacity(reservingRows * nEmbd)
            vCache.reserveCapacity(reservingRows * nEmbd)
        case .fp16:
            kCache = []
            vCache = []
            kCacheHalf = SparseLayerState.half(fromFloats: keys, reserving: reservingRows * nEmbd)
            vCacheHalf = SparseLayerState.half(fromFloats: values, reserving: reservingRows * nEmbd)
        }
    }

    /// Stores the cache as `dtype`, converting the rows held (fp32 to half rounds to
    /// nearest even). Chunk key sums are recomputed on the next use.
    mutating func convertCache(to dtype: KVCacheDType, nEmbd: Int) {
        if dtype == cacheDType { return }
        let keys = keyRows(), values = valueRows()
        replaceCache(keys: keys, values: values, dtype: dtype, nEmbd: nEmbd)
    }

    /// Appends `count` fp32 elements (whole rows) of keys and values, converted to the cache's type.
    mutating func appendRows(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int) {
        switch cacheDType {
        case .fp32:
            kCache.append(contentsOf: UnsafeBufferPointer(start: keys, count: count))
            vCache.append(contentsOf: UnsafeBufferPointer(start: values, count: count))
        case .fp16:
            SparseLayerState.appendHalf(&kCacheHalf, keys, count)
            SparseLayerState.appendHalf(&vCacheHalf, values, count)
        }
    }

    /// Calls `body` with the base addresses of the keys and values and their kernel dtype.
    func withCacheBytes<R>(_ body: (UnsafeRawPointer?, UnsafeRawPointer?, rwkvx_dtype) -> R) -> R {
        switch cacheDType {
        case .fp32:
            return kCache.withUnsafeBytes { k in
                vCache.withUnsafeBytes { v in body(k.baseAddress, v.baseAddress, RWKVX_DTYPE_F32) }
            }
        case .fp16:
            return kCacheHalf.withUnsafeBytes { k in
                vCacheHalf.withUnsafeBytes { v in body(k.baseAddress, v.baseAddress, RWKVX_DTYPE_F16) }
            }
        }
    }

    /// Keeps, for each head, the rows `order[head]` (indices into the current rows,
    /// `keep` of them) followed by the last `window` rows unchanged: the row
    /// permutation of a cache compression.
    mutating func gatherRows(order: [[Int]], keep: Int, window: Int, nEmbd c: Int, headSize n: Int) {
        func gather<Element>(_ source: [Element], zero: Element) -> [Element] {
            let rows = source.count / c
            var out = [Element](repeating: zero, count: (keep + window) * c)
            for (head, sources) in order.enumerated() {
                let col = head * n
                for (row, from) in sources.prefix(keep).enumerated() {
                    for d in 0..<n { out[row * c + col + d] = source[from * c + col + d] }
                }
            }
            for row in 0..<window {
                for i in 0..<c { out[(keep + row) * c + i] = source[(rows - window + row) * c + i] }
            }
            return out
        }
        switch cacheDType {
        case .fp32:
            kCache = gather(kCache, zero: 0)
            vCache = gather(vCache, zero: 0)
        case .fp16:
            kCacheHalf = gather(kCacheHalf, zero: 0)
            vCacheHalf = gather(vCacheHalf, zero: 0)
        }
        chunkKeySums.removeAll(keepingCapacity: true)
    }

    /// Sets the stored form directly (the session-state byte form); counts must match.
    mutating func setStored(dtype: KVCacheDType, kCache: [Float], vCache: [Float], kHalf: [UInt16], vHalf: [UInt16]) {
        cacheDType = dtype
        self.kCache = kCache
        self.vCache = vCache
        kCacheHalf = kHalf
        vCacheHalf = vHalf
        chunkKeySums.removeAll()
    }

    private static func floats(fromHalf half: [UInt16]) -> [Float] {
        [Float](unsafeUninitializedCapacity: half.count) { out, count in
            half.withUnsafeBytes { rwkvx_to_f32(RWKVX_DTYPE_F16, $0.baseAddress, out.baseAddress, half.count) }
            count = half.count
        }
    }

    private static func half(fromFloats values: [Float], reserving: Int) -> [UInt16] {
        var out: [UInt16] = []
        out.reserveCapacity(max(values.count, reserving))
        if !values.isEmpty {
            values.withUnsafeBufferPointer { appendHalf(&out, $0.baseAddress!, values.count) }
        }
        return out
    }

    private static func appendHalf(_ array: inout [UInt16], _ values: UnsafePointer<Float>, _ count: Int) {
        if count == 0 { return }
        let start = array.count
        array.append(contentsOf: repeatElement(0, count: count))
        array.withUnsafeMutableBytes { raw in
            rwkvx_from_f32(RWKVX_DTYPE_F16, values, raw.baseAddress! + start * 2, count)
        }
    }
}

extension SparseLayerState: Equatable {
    public static func == (a: SparseLayerState, b: SparseLayerState) -> Bool {
        a.cacheDType == b.cacheDType && a.kCache == b.kCache && a.vCache == b.vCache
            && a.kCacheHalf == b.kCacheHalf && a.vCacheHalf == b.vCacheHalf && a.ffnXPrev == b.ffnXPrev
    }
}
