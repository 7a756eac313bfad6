import Foundation
import XCTest
import RWKVX

/// Invariants of the recurrent pipeline that hold whatever the weights are.
final class ModelInvariantTests: XCTestCase {
    let rwkv7 = Fixtures.path("rwkv7-tiny/rwkv7-tiny.safetensors")
    let rwkvx = Fixtures.path("rwkvx-tiny/rwkvx-tiny.safetensors")
    let tokens = (0..<40).map { ($0 * 37 + 11) % 256 }

    func smallWindow() -> AttentionOptions {
        AttentionOptions(chunkSize: 16, topK: 3, maxKVCacheSize: 0, kvCacheWindowSize: 2000,
                         minKVCacheSize: 16000, mode: .sparse)
    }

    func decodeOneByOne(_ model: Model, _ tokens: [Int], state: inout SessionState) throws -> [Float] {
        var rows: [Float] = []
        for t in tokens { rows += try model.forward([t], state: &state) }
        return rows
    }

    func testTokensAreNotDegenerate() {
        XCTAssertGreaterThan(Set(tokens).count, 30)
    }

    func testPrefillEqualsDecodeForRWKV7() throws {
        let model = try Model(path: rwkv7)
        var a = model.makeState(), b = model.makeState()
        let prefill = try model.forward(tokens, state: &a, fullOutput: true)
        let decoded = try decodeOneByOne(model, tokens, state: &b)
        XCTAssertEqual(prefill, decoded)
        XCTAssertEqual(a, b)
    }

    /// Within the attention window (T <= chunk_size * top_k) the reference's prefill and
    /// decode paths agree; beyond it the prefill is chunk-local and they differ by design.
    func testPrefillEqualsDecodeWithinWindow() throws {
        let model = try Model(path: rwkvx, options: smallWindow())
        var a = model.makeState(), b = model.makeState()
        let prefill = try model.forward(tokens, state: &a, fullOutput: true)
        let decoded = try decodeOneByOne(model, tokens, state: &b)
        XCTAssertEqual(prefill.count, decoded.count)
        let maxDiff = zip(prefill, decoded).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(maxDiff, 1e-5)
    }

    func testTwoChunkPrefillEqualsOne() throws {
        let model = try Model(path: rwkv7)
        var whole = model.makeState(), split = model.makeState()
        let one = try model.forward(tokens, state: &whole)
        _ = try model.forward(Array(tokens[..<17]), state: &split)
        let two = try model.forward(Array(tokens[17...]), state: &split)
        XCTAssertEqual(one, two)
        XCTAssertEqual(whole, split)
    }

    /// Runs `tokens` as one prefill call split into pieces of the given sizes.
    func prefillInPieces(_ stage: Stage, _ tokens: [Int], sizes: [Int], state: inout SessionState) throws -> [Float] {
        var offset = 0
        var last: [Float] = []
        for size in sizes {
            var x = try stage.embed(Array(tokens[offset..<(offset + size)]))
            var vFirst: [Float] = []
            var states = [state]
            stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: [size], states: &states,
                               pieces: [PrefillPiece(callTokens: tokens.count, offset: offset)])
            state = states[0]
            last = x
            offset += size
        }
        XCTAssertEqual(offset, tokens.count)
        return stage.logits(last, fullOutput: false)
    }

    /// A prefill split into pieces gives the single call's result bit for bit, on the
    /// chunk-local path (beyond the window), inside the window, and after earlier tokens.
    func testPrefillPiecesEqualOneCall() throws {
        let checkpoint = try Checkpoint.open(path: rwkvx)
        let config = try ModelConfig.infer(from: checkpoint)
        let stage = try Stage(checkpoint: checkpoint, config: config, positions: 0..<config.executionOrder.count,
                              options: smallWindow())
        let long = (0..<100).map { ($0 * 53 + 7) % 256 }
        for (prefix, call, sizes) in [([Int](), long, [1, 30, 1, 17, 51]), ([], Array(long[..<40]), [16, 1, 23]),
                                      (Array(long[..<20]), Array(long[20..<60]), [10, 10, 10, 10])] {
            var whole = stage.makeState(), split = stage.makeState()
            for p in [prefix].filter({ !$0.isEmpty }) {
                var x = try stage.embed(p), v: [Float] = []
                stage.forward(&x, vFirst: &v, state: &whole)
                var x2 = try stage.embed(p), v2: [Float] = []
                stage.forward(&x2, vFirst: &v2, state: &split)
            }
            var x = try stage.embed(call), v: [Float] = []
            stage.forward(&x, vFirst: &v, state: &whole)
            let expected = stage.logits(x, fullOutput: false)
            let pieces = try prefillInPieces(stage, call, sizes: sizes, state: &split)
            XCTAssertEqual(pieces, expected, "sizes \(sizes) after \(prefix.count) tokens")
            XCTAssertEqual(split, whole, "state, sizes \(sizes) after \(prefix.count) tokens")
        }
    }

    func testRestoredStateContinuesIdentically() throws {
        let model = try Model(path: rwkvx, options: smallWindow())
        var state = model.makeState()
        _ = try model.forward(tokens, state: &state)
        _ = try decodeOneByOne(model, [5, 6, 7, 8, 9, 10, 11, 12, 13], state: &state)
        let bytes = state.serialized(config: model.config)
        var restored = try SessionState(serialized: bytes, config: model.config)
        XCTAssertEqual(restored, state)

        let continued = try decodeOneByOne(model, Array(100..<130), state: &state)
        let fromRestored = try decodeOneByOne(model, Array(100..<130), state: &restored)
        XCTAssertEqual(continued, fromRestored)
    }

    func testCorruptStateBytesAreRejected() throws {
        let model = try Model(path: rwkvx, options: smallWindow())
        var state = model.makeState()
        _ = try model.forward(tokens, state: &state)
        let bytes = state.serialized(config: model.config)
        XCTAssertThrowsError(try SessionState(serialized: Array(bytes.dropLast(3)), config: model.config))
        XCTAssertThrowsError(try SessionState(serialized: Array(bytes[1...]), config: model.config))
        var wrongKind = bytes
        wrongKind[20] = 7
        XCTAssertThrowsError(try SessionState(serialized: wrongKind, config: model.config))
    }

    /// Running the execution order as several stages with sliced states is bit-identical
    /// to one stage: what pipeline parallelism relies on.
    func testStageSplitsEqualOneStage() throws {
        let checkpoint = try Checkpoint.open(path: rwkvx)
        let config = try ModelConfig.infer(from: checkpoint)
        let options = smallWindow()
        let count = config.executionOrder.count
        let whole = try Stage(checkpoint: checkpoint, config: config, positions: 0..<count, options: options)
        var wholeState = whole.makeState()
        var x = try whole.embed(tokens)
        var vFirst: [Float] = []
        whole.forward(&x, vFirst: &vFirst, state: &wholeState)
        let expected = whole.logits(x, fullOutput: true)

        for cuts in [[1], [3], [2, 4], [1, 2, 3, 5]] {
            let bounds = [0] + cuts + [count]
            let stages = try zip(bounds, bounds.dropFirst()).map {
                try Stage(checkpoint: checkpoint, config: config, positions: $0..<$1, options: options)
            }
            var x = try stages[0].embed(tokens)
            var vFirst: [Float] = []
            var merged = SessionState()
            for stage in stages {
                var state = stage.makeState()
                stage.forward(&x, vFirst: &vFirst, state: &state)
                merged.merge(state)
            }
            XCTAssertEqual(stages.last!.logits(x, fullOutput: true), expected, "cuts \(cuts)")
            XCTAssertEqual(merged, wholeState.slice(whole.blocks), "cuts \(cuts)")
        }
    }

    /// Rows a decode attends: the whole cache up to chunk_size * top_k (6144 by
    /// default) or in full mode, then the top-k chunks, the tail and the new row.
    func testDecodeAttendedRows() {
        var options = AttentionOptions()
        XCTAssertEqual(options.decodeAttendedRows(cachedRows: 1000), 1001)
        XCTAssertEqual(options.decodeAttendedRows(cachedRows: 6144), 6145)
        XCTAssertEqual(options.decodeAttendedRows(cachedRows: 16000), 7809)
        XCTAssertEqual(options.decodeAttendedRows(cachedRows: 64000), 6657)
        options.mode = .full
        XCTAssertEqual(options.decodeAttendedRows(cachedRows: 64000), 64001)
    }
}
