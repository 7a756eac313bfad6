// Stop detection on streamed output. Stop strings are matched on bytes, so a
// match may span token boundaries and split characters. Bytes that could be
// the start of a stop string are withheld until the next token shows whether
// the stop string follows, so a stop string is never output in part.

/// The reason generation stopped.
public enum StopReason: Sendable, Equatable {
    /// A token of `stopTokens` was generated; it is not output.
    case token(Int)
    /// `stopStrings[index]` appeared; output ends before it.
    case string(index: Int)
}

/// Result of feeding one token to a `StopChecker`.
public struct StopCheckResult: Sendable, Equatable {
    /// Bytes that are now safe to output, in order.
    public var output: [UInt8]
    /// Trailing bytes held back because they may begin a stop string.
    public var withheldByteCount: Int
    /// Set when generation must stop; `output` then contains the last bytes to show.
    public var stop: StopReason?
}

public struct StopChecker: Sendable {
    private let stopTokens: Set<Int>
    private let stopStrings: [[UInt8]]
    /// Bytes not yet output: a suffix that is a proper prefix of some stop string.
    private var withheld: [UInt8] = []

    /// `stopStrings` must be non-empty (`SamplingOptions.validate` checks this).
    public init(stopTokens: some Sequence<Int>, stopStrings: [String]) {
        precondition(!stopStrings.contains(""), "stop strings must be non-empty")
        self.stopTokens = Set(stopTokens)
        self.stopStrings = stopStrings.map { Array($0.utf8) }
    }

    public init(options: SamplingOptions) {
        self.init(stopTokens: options.stopTokens, stopStrings: options.stopStrings)
    }

    /// Feeds the next generated token and its bytes.
    public mutating func check(token: Int, bytes: [UInt8]) -> StopCheckResult {
        if stopTokens.contains(token) {
            let output = withheld
            withheld.removeAll()
            return StopCheckResult(output: output, withheldByteCount: 0, stop: .token(token))
        }

        var text = withheld
        text.append(contentsOf: bytes)

        // Earliest complete stop string; on equal starts, the lowest index.
        if let (start, index) = firstMatch(in: text) {
            withheld.removeAll()
            return StopCheckResult(output: Array(text[..<start]), withheldByteCount: 0, stop: .string(index: index))
        }

        // Withhold from the earliest position whose suffix may still grow into a stop string.
        let holdStart = earliestPartialMatch(in: text)
        withheld = Array(text[holdStart...])
        return StopCheckResult(output: Array(text[..<holdStart]), withheldByteCount: withheld.count, stop: nil)
    }

    /// Ends generation without a stop (for example at `maxTokens`) and returns
    /// the withheld bytes, which turned out not to be a stop string.
    public mutating func finish() -> [UInt8] {
        defer { withheld.removeAll() }
        return withheld
    }

    private func firstMatch(in text: [UInt8]) -> (start: Int, index: Int)? {
        var best: (start: Int, index: Int)? = nil
        for (index, pattern) in stopStrings.enumerated() where pattern.count <= text.count {
            for start in 0...(text.count - pattern.count) {
                if let best, start >= best.start { break }
                if text[start..<(start + pattern.count)].elementsEqual(pattern) {
                    best = (start, index)
                    break
                }
            }
        }
        return best
    }

    private func earliestPartialMatch(in text: [UInt8]) -> Int {
        let longest = stopStrings.map(\.count).max() ?? 0
        let lowest = max(0, text.count - longest + 1)
        guard lowest < text.count else { return text.count }
        for start in lowest..<text.count {
            let suffix = text[start...]
            if stopStrings.contains(where: { $0.count > suffix.count && $0.starts(with: suffix) }) {
                return start
            }
        }
        return text.count
    }
}
