// Tests of the RWKV World tokenizer against cases written by the reference
// tokenizer (rwkv_x 0.1.3 TRIE_TOKENIZER) and a hex dump of its vocabulary.
import Foundation
import XCTest
@testable import RWKVX

/// Loaded once: parsing the vocabulary in a debug build takes a moment.
private let sharedTokenizer: Result<WorldTokenizer, TokenizerError> = Result { () throws(TokenizerError) in
    try WorldTokenizer.bundled()
}

private func fixtureURL(_ name: String) throws -> URL {
    try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/tokenizer/" + name, withExtension: nil), "missing fixture \(name)")
}

private func bytes(fromHex hex: String) -> [UInt8] {
    let digits = Array(hex.utf8)
    precondition(digits.count % 2 == 0, "odd hex length")
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)! }
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

private struct TokenizerCases: Decodable {
    struct Encode: Decodable {
        var name: String
        var text: String
        var utf8_hex: String
        var n_bytes: Int
        var ids: [Int]
    }
    struct Decode: Decodable {
        var name: String
        var ids: [Int]
        var bytes_hex: String
        var valid_utf8: Bool
        var decode_str: String
    }
    var vocab_size_entries: Int
    var max_id: Int
    var encode: [Encode]
    var decode: [Decode]
}

final class TokenizerTests: XCTestCase {
    private var tokenizer: WorldTokenizer!

    override func setUpWithError() throws {
        tokenizer = try sharedTokenizer.get()
    }

    private func loadCases() throws -> TokenizerCases {
        let data = try Data(contentsOf: try fixtureURL("tokenizer_cases.json"))
        return try JSONDecoder().decode(TokenizerCases.self, from: data)
    }

    // MARK: Reference cases

    func testEncodeFixtureCases() throws {
        let cases = try loadCases()
        XCTAssertGreaterThan(cases.encode.count, 5)
        for item in cases.encode {
            let input = bytes(fromHex: item.utf8_hex)
            XCTAssertEqual(input.count, item.n_bytes, "\(item.name): fixture byte count")
            XCTAssertEqual(tokenizer.encode(bytes: input), item.ids, "\(item.name): ids from bytes")
            if String(validating: input, as: UTF8.self) == item.text {
                XCTAssertEqual(tokenizer.encode(item.text), item.ids, "\(item.name): ids from text")
            }
        }
    }

    func testDecodeFixtureCases() throws {
        let cases = try loadCases()
        XCTAssertTrue(cases.decode.contains { !$0.valid_utf8 }, "fixtures should include invalid UTF-8")
        for item in cases.decode {
            XCTAssertEqual(hex(try tokenizer.decodeBytes(item.ids)), item.bytes_hex, "\(item.name): bytes")
            XCTAssertEqual(try tokenizer.decode(item.ids), item.decode_str, "\(item.name): string")
        }
    }

    func testVocabularySizeMatchesReference() throws {
        let cases = try loadCases()
        XCTAssertEqual(tokenizer.vocabularySize, cases.max_id + 1)
        XCTAssertEqual(tokenizer.vocabularySize, 65530)
        XCTAssertEqual(tokenizer.validIds, 1...65529)
        let defined = (0..<tokenizer.vocabularySize).filter { tokenizer.tokenBytes($0) != nil }
        XCTAssertEqual(defined.count, cases.vocab_size_entries)
        XCTAssertNil(tokenizer.tokenBytes(0))
    }

    // MARK: Vocabulary parsing

    /// Checks escape-heavy tokens (every b'' and "" literal and every literal with a
    /// backslash) plus every 50th token against the reference hex dump.
    func testVocabularyMatchesHexSubset() throws {
        let text = try String(contentsOf: try fixtureURL("vocab_hex_subset.tsv"), encoding: .utf8)
        var checked = 0
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            XCTAssertEqual(fields.count, 2, "bad fixture line \(line)")
            let id = try XCTUnwrap(Int(fields[0]))
            XCTAssertEqual(tokenizer.tokenBytes(id).map(hex), String(fields[1]), "token \(id)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 2000)
    }

    /// Hashes the whole vocabulary in the hex dump's format, `id<TAB>hex<LF>` for
    /// ids 1...65529. The expected value is FNV-1a 64 of the reference vocab_hex.tsv.
    func testVocabularyMatchesHexDumpHash() {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func feed(_ bytes: some Sequence<UInt8>) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
        }
        let hexDigits = Array("0123456789abcdef".utf8)
        for id in 1..<tokenizer.vocabularySize {
            feed(String(id).utf8)
            feed([UInt8(ascii: "\t")])
            for byte in tokenizer.tokenBytes(id) ?? [] {
                feed([hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 15)]])
            }
            feed([UInt8(ascii: "\n")])
        }
        XCTAssertEqual(String(hash, radix: 16), "34b7c5c40e348f2e")
    }

    func testSingleByteIds() {
        for byte in 0...255 {
            XCTAssertEqual(tokenizer.tokenBytes(byte + 1), [UInt8(byte)], "id \(byte + 1)")
        }
    }

    func testLiteralEscapes() throws {
        let cases: [(String, [UInt8])] = [
            (#"'a'"#, [0x61]),
            (#""'s""#, [0x27, 0x73]),
            (#"'\\'"#, [0x5C]),
            (#"'\''"#, [0x27]),
            (#"'\t\n\r\a\b\f\v'"#, [9, 10, 13, 7, 8, 12, 11]),
            (#"'\x7f'"#, [0x7F]),
            (#"'\xe9'"#, [0xC3, 0xA9]),  // a str escape is a code point, encoded as UTF-8
            (#"b'\xe9'"#, [0xE9]),
            (#"'\u200b'"#, [0xE2, 0x80, 0x8B]),
            (#"'\U0001F600'"#, [0xF0, 0x9F, 0x98, 0x80]),
            (#"b'\u20'"#, Array(#"\u20"#.utf8)),  // no \u escape in bytes
            (#"'\101\0'"#, [0x41, 0x00]),
            (#"'\q'"#, [0x5C, 0x71]),  // unknown escapes keep the backslash
            ("'é'", [0xC3, 0xA9]),
        ]
        for (literal, expected) in cases {
            XCTAssertEqual(try PythonLiteral.decode(Array(literal.utf8)[...]), expected, literal)
        }
        for bad in [#"'abc"#, #"x'"#, #"'a'b'"#, #"'\x4'"#, #"'\ud800'"#, "b'é'", #"'\'"#, #"b'\777'"#] {
            XCTAssertThrowsError(try PythonLiteral.decode(Array(bad.utf8)[...]), bad)
        }
    }

    func testMalformedVocabularyReportsLine() throws {
        let singleBytes = (0...255).map { "\($0 + 1) b'\\x\(String(format: "%02x", $0))' 1" }
        let cases: [(lines: [String], line: Int, reasonFragment: String)] = [
            (singleBytes + ["257 'ab' 3"], 257, "2 bytes long, but the byte length field is 3"),
            (singleBytes + ["257 'ab 2"], 257, "not closed"),
            (singleBytes + ["x 'ab' 2"], 257, "id is not a decimal integer"),
            (singleBytes + ["257 'ab' 2", "257 'cd' 2"], 258, "defined twice"),
            (singleBytes + ["257 'ab' 2", "258 'ab' 2"], 258, "repeat those"),
            (singleBytes + [""], 257, "expected"),
        ]
        for item in cases {
            let path = try writeTemporaryVocabulary(item.lines)
            XCTAssertThrowsError(try WorldTokenizer(vocabularyPath: path)) { error in
                guard case let .invalidVocabularyLine(errorPath, line, reason) = error as? TokenizerError else {
                    return XCTFail("unexpected error \(error)")
                }
                XCTAssertEqual(errorPath, path)
                XCTAssertEqual(line, item.line, reason)
                XCTAssertTrue(reason.contains(item.reasonFragment), reason)
            }
        }
    }

    func testVocabularyWithoutAllBytesIsRejected() throws {
        let path = try writeTemporaryVocabulary((0...254).map { "\($0 + 1) b'\\x\(String(format: "%02x", $0))' 1" })
        XCTAssertThrowsError(try WorldTokenizer(vocabularyPath: path)) { error in
            XCTAssertTrue(String(describing: error).contains("0xff"), "\(error)")
        }
        XCTAssertThrowsError(try WorldTokenizer(vocabularyPath: "/nonexistent/vocab.txt")) { error in
            guard case .vocabularyUnreadable = error as? TokenizerError else { return XCTFail("\(error)") }
        }
    }

    func testCRLFVocabularyLoads() throws {
        let lines = (0...255).map { "\($0 + 1) b'\\x\(String(format: "%02x", $0))' 1" } + ["257 'ab' 2", "258 'abc' 3"]
        let path = try writeTemporaryVocabulary(lines, separator: "\r\n")
        let small = try WorldTokenizer(vocabularyPath: path)
        XCTAssertEqual(small.vocabularySize, 259)
        XCTAssertEqual(small.encode("abcab a"), [258, 257, 33, 98])
    }

    private func writeTemporaryVocabulary(_ lines: [String], separator: String = "\n") throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rwkvx-vocab-\(UUID().uuidString).txt")
        try (lines.joined(separator: separator) + separator).write(to: url, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    // MARK: Encoding and decoding

    func testRoundTripVariedText() throws {
        let texts = [
            "", "a", "Hello, world!", "  leading and trailing  ", "\n\n\t\r\n",
            "User: 你好，请介绍一下你自己。\n\nAssistant:", "naïve café — “quotes” ‘single’",
            "👩‍👩‍👧‍👦 🇯🇵 🏳️‍🌈", "∀x∈ℝ: x² ≥ 0", "def f():\n    return {'a': [1, 2, 3]}\n",
            String(repeating: "ab", count: 500), String(repeating: " ", count: 300),
        ]
        for text in texts {
            let ids = tokenizer.encode(text)
            XCTAssertEqual(try tokenizer.decode(ids), text, "round trip of \(text.debugDescription)")
            XCTAssertFalse(ids.contains(0), "id 0 in encoding of \(text.debugDescription)")
        }
    }

    func testRoundTripArbitraryBytes() throws {
        var generator = Xoshiro256StarStar(seed: 7)
        for length in [1, 2, 3, 17, 200] {
            let input = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            XCTAssertEqual(try tokenizer.decodeBytes(tokenizer.encode(bytes: input)), input)
        }
    }

    func testGreedyLongestMatch() throws {
        // Every token in the encoding is the longest vocabulary entry at its position.
        let ids = tokenizer.encode("The quick brown fox jumps over the lazy dog.")
        var position = 0
        let input = Array("The quick brown fox jumps over the lazy dog.".utf8)
        for id in ids {
            let length = try XCTUnwrap(tokenizer.tokenBytes(id)).count
            for longer in stride(from: min(input.count - position, 64), to: length, by: -1) {
                let candidate = Array(input[position..<(position + longer)])
                XCTAssertNotEqual(tokenizer.encode(bytes: candidate).count, 1, "a longer token exists at \(position)")
            }
            position += length
        }
        XCTAssertEqual(position, input.count)
    }

    func testUnknownIdThrows() {
        for id in [0, -1, 65530, 1_000_000] {
            XCTAssertThrowsError(try tokenizer.decode([33, id])) { error in
                XCTAssertEqual(error as? TokenizerError, .unknownTokenId(id, validIds: 1...65529))
                XCTAssertTrue(String(describing: error).contains("\(id)"))
                XCTAssertTrue(String(describing: error).contains("1...65529"))
            }
        }
    }

    func testInvalidUTF8DecodesToOneReplacement() throws {
        // "é" is C3 A9; ids 196 and 170 are those single bytes.
        XCTAssertEqual(try tokenizer.decode([196, 170]), "é")
        XCTAssertEqual(try tokenizer.decode([34, 196]), "\u{FFFD}")
        XCTAssertEqual(try tokenizer.decodeBytes([34, 196]), [0x21, 0xC3])
    }

    // MARK: Streaming decoder

    func testStreamDecoderSplitsCharacters() {
        var decoder = UTF8StreamDecoder()
        XCTAssertEqual(decoder.append([0x61, 0xE4]), "a")
        XCTAssertTrue(decoder.hasPendingBytes)
        XCTAssertEqual(decoder.append([0xBD]), "")
        XCTAssertEqual(decoder.append([0xA0, 0x62]), "你b")
        XCTAssertEqual(decoder.finish(), "")
    }

    func testStreamDecoderReplacesInvalidBytes() {
        var decoder = UTF8StreamDecoder()
        XCTAssertEqual(decoder.append([0xFF, 0x61]), "\u{FFFD}a")
        XCTAssertEqual(decoder.append([0xE4, 0xBD]), "")
        // The unfinished sequence is interrupted: one U+FFFD, then the text goes on.
        XCTAssertEqual(decoder.append([0x63]), "\u{FFFD}c")
        XCTAssertEqual(decoder.append([0xF0, 0x9F]), "")
        XCTAssertEqual(decoder.finish(), "\u{FFFD}")
        XCTAssertEqual(decoder.append([0x64]), "d")
    }

    func testStreamDecoderMatchesWholeDecoding() {
        var generator = Xoshiro256StarStar(seed: 99)
        let alphabet: [[UInt8]] = [[0x61], [0xC3, 0xA9], [0xE4, 0xBD, 0xA0], [0xF0, 0x9F, 0x98, 0x80], [0x80], [0xFF], [0xED, 0xA0, 0x80], [0xE0, 0x80], [0xF4, 0x90]]
        for _ in 0..<300 {
            var input: [UInt8] = []
            for _ in 0..<Int(generator.next() % 12) {
                input += alphabet[Int(generator.next() % UInt64(alphabet.count))]
            }
            var decoder = UTF8StreamDecoder()
            var streamed = ""
            var index = 0
            while index < input.count {
                let chunk = 1 + Int(generator.next() % 3)
                streamed += decoder.append(input[index..<min(index + chunk, input.count)])
                index += chunk
            }
            streamed += decoder.finish()
            XCTAssertEqual(streamed, String(decoding: input, as: UTF8.self), "input \(input)")
        }
    }

    func testBundledLoadIsFast() throws {
        // A loose bound that holds in debug builds; release loads in a fraction of this.
        let start = Date()
        _ = try WorldTokenizer.bundled()
        XCTAssertLessThan(Date().timeIntervalSince(start), 5.0)
    }
}
