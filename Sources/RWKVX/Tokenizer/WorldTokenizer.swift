// The RWKV World tokenizer (vocabulary rwkv_vocab_v20230424), following
// TRIE_TOKENIZER in the rwkv_x 0.1.3 package (rwkv_x/rwkv_tokenizer.py):
//   - encoding is a greedy longest match over the UTF-8 bytes of the text;
//   - ids 1...256 are the single bytes 0x00...0xFF (id = byte + 1), and id 0
//     (end of text for RWKV World models) has no bytes and cannot be decoded;
//   - decoding concatenates token bytes, and `decode` returns a single U+FFFD
//     for the whole result when those bytes are not valid UTF-8, as the
//     reference does. `decodeBytes` and `UTF8StreamDecoder` keep the text.
// Differences from the reference: a vocabulary that repeats an id or a byte
// string, or lacks a single-byte token, is rejected at load time (the reference
// keeps the last duplicate and fails later, during encoding).

import Foundation

public final class WorldTokenizer: Sendable {
    /// Number of id slots, including the empty slot 0: the maximum id + 1
    /// (65530 for the bundled vocabulary).
    public let vocabularySize: Int

    /// Bytes of every token, concatenated in id order.
    private let tokenData: [UInt8]
    /// Start of token `id` in `tokenData` is `tokenOffsets[id]`, its end `tokenOffsets[id + 1]`.
    private let tokenOffsets: [Int32]
    /// Whether each id is in the vocabulary (false for 0 and for gaps).
    private let isDefined: [Bool]
    private let trie: TokenTrie

    /// File name of the vocabulary shipped as a resource of the RWKVX target.
    public static let bundledVocabularyName = "rwkv_vocab_v20230424"

    /// Loads the vocabulary shipped with the package.
    public static func bundled() throws(TokenizerError) -> WorldTokenizer {
        guard let url = Bundle.module.url(forResource: bundledVocabularyName, withExtension: "txt") else {
            throw .bundledVocabularyMissing(name: bundledVocabularyName + ".txt")
        }
        return try WorldTokenizer(vocabularyPath: url.path)
    }

    /// Loads a vocabulary file of lines `<id> <Python literal> <byte length>`.
    /// Lines may end in LF or CRLF.
    public init(vocabularyPath path: String) throws(TokenizerError) {
        let fileData: Data
        do {
            fileData = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .vocabularyUnreadable(path: path, reason: error.localizedDescription)
        }
        let entries = try Self.parseVocabulary([UInt8](fileData), path: path)

        // Lay out the token bytes by id.
        let maxId = entries.map(\.id).max() ?? 0
        var lengths = [Int32](repeating: 0, count: maxId + 1)
        var defined = [Bool](repeating: false, count: maxId + 1)
        for entry in entries {
            guard !defined[entry.id] else {
                throw .invalidVocabularyLine(path: path, line: entry.line, reason: "id \(entry.id) is defined twice")
            }
            defined[entry.id] = true
            lengths[entry.id] = Int32(entry.bytes.count)
        }
        var offsets = [Int32](repeating: 0, count: maxId + 2)
        for id in 0...maxId {
            offsets[id + 1] = offsets[id] + lengths[id]
        }
        var data = [UInt8](repeating: 0, count: Int(offsets[maxId + 1]))
        for entry in entries {
            let start = Int(offsets[entry.id])
            data.replaceSubrange(start..<(start + entry.bytes.count), with: entry.bytes)
        }

        // Greedy encoding needs every single byte to be a token so that it
        // always advances; the reference fails on an assertion otherwise.
        var singleBytes = [Bool](repeating: false, count: 256)
        for entry in entries where entry.bytes.count == 1 {
            singleBytes[Int(entry.bytes[0])] = true
        }
        if let missing = singleBytes.firstIndex(of: false) {
            throw .invalidVocabulary(path: path, reason: "no token for the single byte 0x\(String(missing, radix: 16)); every byte must be a token")
        }

        // The trie needs distinct byte strings.
        if let duplicate = Self.firstDuplicateToken(entries) {
            throw .invalidVocabularyLine(path: path, line: duplicate.line, reason: "token bytes of id \(duplicate.id) repeat those of an earlier id")
        }
        let trie = TokenTrie(tokens: entries.map { $0.bytes[...] }, ids: entries.map { Int32($0.id) })

        self.vocabularySize = maxId + 1
        self.tokenData = data
        self.tokenOffsets = offsets
        self.isDefined = defined
        self.trie = trie
    }

    // MARK: Encoding

    /// Encodes the UTF-8 bytes of `text`.
    public func encode(_ text: String) -> [Int] {
        encode(bytes: Array(text.utf8))
    }

    /// Encodes arbitrary bytes (not necessarily valid UTF-8) by greedy longest match.
    public func encode(bytes: [UInt8]) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(bytes.count / 3 + 1)
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            while index < buffer.count {
                // Cannot fail: init checks that every single byte is a token.
                let match = trie.longestMatch(in: buffer, from: index)!
                ids.append(match.id)
                index += match.length
            }
        }
        return ids
    }

    // MARK: Decoding

    /// Ids that can be decoded.
    public var validIds: ClosedRange<Int> { 1...(vocabularySize - 1) }

    /// Returns the bytes of token `id`, or nil when the id is not in the vocabulary.
    public func tokenBytes(_ id: Int) -> [UInt8]? {
        guard id >= 0, id < vocabularySize, isDefined[id] else { return nil }
        return Array(tokenData[Int(tokenOffsets[id])..<Int(tokenOffsets[id + 1])])
    }

    /// Concatenates the bytes of `ids`. Throws `unknownTokenId` for id 0, negative
    /// ids and ids past the vocabulary.
    public func decodeBytes(_ ids: [Int]) throws(TokenizerError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            try appendBytes(of: id, to: &bytes)
        }
        return bytes
    }

    /// Appends the bytes of token `id` to `bytes`; the allocation-free form of
    /// `tokenBytes` for streaming output.
    public func appendBytes(of id: Int, to bytes: inout [UInt8]) throws(TokenizerError) {
        guard id >= 0, id < vocabularySize, isDefined[id] else {
            throw .unknownTokenId(id, validIds: validIds)
        }
        bytes.append(contentsOf: tokenData[Int(tokenOffsets[id])..<Int(tokenOffsets[id + 1])])
    }

    /// Decodes `ids` to text. As in the reference, the result is the single
    /// character U+FFFD when the concatenated bytes are not valid UTF-8; use
    /// `decodeBytes` or `UTF8StreamDecoder` to keep the valid parts.
    public func decode(_ ids: [Int]) throws(TokenizerError) -> String {
        let bytes = try decodeBytes(ids)
        return String(validating: bytes, as: UTF8.self) ?? "\u{FFFD}"
    }

    // MARK: Vocabulary file

    struct VocabularyEntry {
        var id: Int
        var bytes: [UInt8]
        var line: Int
    }

    /// Parses every line of a vocabulary file and checks each token's byte length.
    static func parseVocabulary(_ file: [UInt8], path: String) throws(TokenizerError) -> [VocabularyEntry] {
        var entries: [VocabularyEntry] = []
        entries.reserveCapacity(65536)
        var lineStart = 0
        var lineNumber = 0
        while lineStart < file.count {
            lineNumber += 1
            let newline = file[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? file.count
            var lineEnd = newline
            if lineEnd > lineStart, file[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
            let line = file[lineStart..<lineEnd]
            lineStart = newline + 1

            do {
                entries.append(try parseLine(line, number: lineNumber))
            } catch {
                throw .invalidVocabularyLine(path: path, line: lineNumber, reason: error.reason)
            }
        }
        return entries
    }

    /// Parses `<id> <literal> <length>`. The literal is whatever lies between
    /// the first and the last space, as in the reference.
    private static func parseLine(_ line: ArraySlice<UInt8>, number: Int) throws(PythonLiteralError) -> VocabularyEntry {
        let space = UInt8(ascii: " ")
        guard let firstSpace = line.firstIndex(of: space),
              let lastSpace = line.lastIndex(of: space),
              lastSpace > firstSpace
        else {
            throw PythonLiteralError(reason: "expected `<id> <literal> <byte length>`")
        }
        guard let id = parseDecimal(line[line.startIndex..<firstSpace]) else {
            throw PythonLiteralError(reason: "id is not a decimal integer")
        }
        guard id >= 1, id <= Int(Int32.max) else {
            throw PythonLiteralError(reason: "id \(id) is out of range; id 0 is reserved for end of text")
        }
        guard let length = parseDecimal(line[(lastSpace + 1)...]) else {
            throw PythonLiteralError(reason: "byte length is not a decimal integer")
        }

        // The reference evaluates the text between the spaces, so stray spaces
        // around the literal are allowed.
        var literal = line[(firstSpace + 1)..<lastSpace]
        while literal.first == space { literal.removeFirst() }
        while literal.last == space { literal.removeLast() }

        let bytes = try PythonLiteral.decode(literal)
        guard !bytes.isEmpty else {
            throw PythonLiteralError(reason: "token is empty")
        }
        guard bytes.count == length else {
            throw PythonLiteralError(reason: "token is \(bytes.count) bytes long, but the byte length field is \(length)")
        }
        return VocabularyEntry(id: id, bytes: bytes, line: number)
    }

    private static func parseDecimal(_ text: ArraySlice<UInt8>) -> Int? {
        guard !text.isEmpty, text.count <= 18 else { return nil }
        var value = 0
        for byte in text {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func firstDuplicateToken(_ entries: [VocabularyEntry]) -> VocabularyEntry? {
        var seen = Set<[UInt8]>()
        seen.reserveCapacity(entries.count)
        for entry in entries where !seen.insert(entry.bytes).inserted {
            return entry
        }
        return nil
    }
}
