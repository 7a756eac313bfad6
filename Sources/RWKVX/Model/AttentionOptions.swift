// Settings of the sparse-attention blocks. Defaults are those of the reference
// package's RWKV_X_Config (rwkv-x 0.1.3).

public enum AttentionMode: String, Sendable, Codable {
    /// Decode attends to the top-k chunks plus the tail of the cache once the cache is long.
    case sparse
    /// Decode attends to the whole cache; prefill is unaffected (reference behaviour).
    case full
}

/// Element type of the sparse layers' KV cache rows.
public enum KVCacheDType: String, Sendable, Codable, CaseIterable {
    /// fp32 rows, as the reference keeps them.
    case fp32
    /// IEEE half rows (rounded to nearest even): half the memory and half the bytes
    /// a decoded token reads, at a small cost in accuracy (see the fp16 cache tests).
    case fp16
}

public struct AttentionOptions: Sendable, Codable, Equatable {
    /// Tokens per chunk of the KV cache (moba_chunk_size).
    public var chunkSize: Int = 2048
    /// Chunks each decoded token attends to (moba_topk).
    public var topK: Int = 3
    /// Cache rows above which the cache is compressed; 0 never compresses.
    public var maxKVCacheSize: Int = 20000
    /// Most recent rows kept unchanged by compression.
    public var kvCacheWindowSize: Int = 2000
    /// Rows left after compression (kept rows plus the window).
    public var minKVCacheSize: Int = 16000
    public var mode: AttentionMode = .sparse
    /// Element type of the KV cache rows (not a reference option; fp32 matches it).
    public var kvCacheDType: KVCacheDType = .fp32

    public init() {}

    public init(chunkSize: Int, topK: Int, maxKVCacheSize: Int, kvCacheWindowSize: Int,
                minKVCacheSize: Int, mode: AttentionMode, kvCacheDType: KVCacheDType = .fp32) {
        self.chunkSize = chunkSize
        self.topK = topK
        self.maxKVCacheSize = maxKVCacheSize
        self.kvCacheWindowSize = kvCacheWindowSize
        self.minKVCacheSize = minKVCacheSize
        self.mode = mode
        self.kvCacheDType = kvCacheDType
    }

    /// Tokens a sequence can span and still get full attention (chunk_size * top_k).
    public var windowSize: Int { chunkSize * topK }

    /// Whether a decode over `cachedRows` cached rows attends every row rather than
    /// the top-k chunks and the tail.
    public func decodeAttendsWholeCache(cachedRows: Int) -> Bool {
        cachedRows <= windowSize || mode == .full
    }

    /// Cache rows a decode attends with `cachedRows` rows cached, the new row included.
    public func decodeAttendedRows(cachedRows: Int) -> Int {
        if decodeAttendsWholeCache(cachedRows: cachedRows) { return cachedRows + 1 }
        return topK * chunkSize + cachedRows % chunkSize + 1
    }

    public func validate() throws {
        func fail(_ message: String) -> ConfigurationError { ConfigurationError(message: message) }
        if chunkSize < 1 { throw fail("invalid chunk size \(chunkSize) (--attn-chunk-size, moba_chunk_size): must be at least 1") }
        if topK < 1 { throw fail("invalid top-k \(topK) (--attn-top-k, moba_topk): must be at least 1") }
        if maxKVCacheSize < 0 {
            throw fail("invalid max KV cache size \(maxKVCacheSize) (--max-kv-cache, max_kv_cache_size): must be 0 (no compression) or positive")
        }
        if maxKVCacheSize > 0 {
            if kvCacheWindowSize < 0 {
                throw fail("invalid KV cache window \(kvCacheWindowSize) (--kv-window, kv_cache_window_size): must not be negative")
            }
            if minKVCacheSize <= kvCacheWindowSize {
                throw fail("invalid min KV cache size \(minKVCacheSize) (--min-kv-cache, min_kv_cache_size): must be larger than the KV cache window (\(kvCacheWindowSize))")
            }
        }
    }
}

/// An invalid option or configuration value; the message names the value and the allowed range.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
