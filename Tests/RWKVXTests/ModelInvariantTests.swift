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
}
