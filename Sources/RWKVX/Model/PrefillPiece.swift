// Long prefills run as several pieces so that a pipeline stage can interleave them
// with other sessions' decode steps. Pieces reproduce the single call exactly: the
// sparse blocks take every decision from the call (its length, where it starts in
// the cache, chunk boundaries counted from its first token), never from the piece.

/// The position of a piece of rows in the prefill call it belongs to.
public struct PrefillPiece: Sendable, Equatable, CustomStringConvertible {
    /// Tokens of the whole call (at least 2: a one-token call is a decode).
    public var callTokens: Int
    /// Tokens of the call that earlier pieces already ran.
    public var offset: Int

    public init(callTokens: Int, offset: Int) {
        self.callTokens = callTokens
        self.offset = offset
    }

    /// True when a piece of `tokens` rows fits inside the call.
    public func isValid(tokens: Int) -> Bool {
        callTokens >= 2 && offset >= 0 && tokens >= 1 && offset + tokens <= callTokens
    }

    /// Whether a call may run as pieces without changing results. The reference
    /// compresses the KV cache at the start of a call with every token of the call as
    /// a query. So a call is split only when compression cannot trigger, that is when
    /// the cache (at most `cachedTokens` rows) is within `maxKVCacheSize` (0: never).
    public static func canSplit(cachedTokens: Int, options: AttentionOptions) -> Bool {
        options.maxKVCacheSize == 0 || cachedTokens <= options.maxKVCacheSize
    }

    public var description: String { "piece at \(offset) of a \(callTokens)-token prefill" }
}
