// Incremental UTF-8 decoding for streamed token output.
//
// RWKV World tokens often split a character: ids 129...256 are lone bytes, and
// many CJK and emoji tokens end mid-character. So text is emitted as soon as
// whole characters exist, and an unfinished sequence at the end waits for the
// next token. Invalid bytes become U+FFFD, one per maximal invalid subpart as
// in Unicode's "U+FFFD substitution of maximal subparts" (the practice Swift's
// `String(decoding:as:)` follows), and decoding continues after them. The text
// of all `append` calls plus `finish` equals `String(decoding:as:)` over all
// the bytes at once.

public struct UTF8StreamDecoder: Sendable {
    /// Bytes of an unfinished but so far valid sequence (at most 3).
    private var pending: [UInt8] = []
    /// Reused input buffer: `pending` followed by the new bytes.
    private var buffer: [UInt8] = []

    public init() {}

    /// Whether bytes of an unfinished character are held back.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    /// Decodes `bytes` after the held-back ones and returns the text of every
    /// complete character; a valid but unfinished sequence at the end is held back.
    public mutating func append<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: pending)
        buffer.append(contentsOf: bytes)
        pending.removeAll(keepingCapacity: true)

        let split = Self.startOfUnfinishedSequence(buffer)
        let text = String(decoding: buffer[..<split], as: UTF8.self)
        pending.append(contentsOf: buffer[split...])
        return text
    }

    /// Ends the stream: returns U+FFFD if an unfinished sequence was held back,
    /// otherwise "". The decoder is then empty and can be reused.
    public mutating func finish() -> String {
        defer { pending.removeAll(keepingCapacity: true) }
        return pending.isEmpty ? "" : "\u{FFFD}"
    }

    /// Returns the index where a valid but unfinished UTF-8 sequence starts at the
    /// end of `bytes`, or `bytes.count` when the bytes end on a boundary or in
    /// an invalid sequence (which decodes to U+FFFD now and never completes).
    static func startOfUnfinishedSequence(_ bytes: [UInt8]) -> Int {
        let count = bytes.count
        // A sequence is at most 4 bytes, so an unfinished one starts in the last 3.
        var start = count - 1
        while start >= 0, start >= count - 3 {
            let lead = bytes[start]
            if lead & 0xC0 != 0x80 {
                return isValidPrefix(bytes[start...], lead: lead) ? start : count
            }
            start -= 1
        }
        return count
    }

    /// Returns whether `tail`, starting at a lead byte, is a proper prefix of some valid
    /// UTF-8 sequence, using the second-byte ranges of Unicode Table 3-7.
    private static func isValidPrefix(_ tail: ArraySlice<UInt8>, lead: UInt8) -> Bool {
        let length: Int
        var secondByteRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; secondByteRange = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; secondByteRange = 0x80...0x9F
        case 0xF0: length = 4; secondByteRange = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; secondByteRange = 0x80...0x8F
        default: return false  // ASCII is complete; C0, C1 and F5...FF are never valid.
        }
        guard tail.count < length else { return false }

        var index = tail.startIndex + 1
        if index < tail.endIndex {
            guard secondByteRange.contains(tail[index]) else { return false }
            index += 1
        }
        while index < tail.endIndex {
            guard tail[index] & 0xC0 == 0x80 else { return false }
            index += 1
        }
        return true
    }
}
