// The fp16 KV cache option: the half conversion, the fp16 cache against the fp32
// one on the reference scenarios, its invariances and its byte form.
import CKernels
import Foundation
import XCTest
import RWKVX

final class KVCacheDTypeTests: XCTestCase {
    let rwkvx = Fixtures.path("rwkvx-tiny/rwkvx-tiny.safetensors")

    func testHalfRoundTripsEveryValue() {
        let halves = (0...UInt16.max).filter { ($0 & 0x7c00) != 0x7c00 || ($0 & 0x3ff) == 0 }  // no NaN
        var floats = [Float](repeating: 0, count: halves.count)
        var back = [UInt16](repeating: 0, count: halves.count)
        halves.withUnsafeBytes { rwkvx_to_f32(RWKVX_DTYPE_F16, $0.baseAddress, &floats, halves.count) }
        back.withUnsafeMutableBytes { rwkvx_from_f32(RWKVX_DTYPE_F16, floats, $0.baseAddress, floats.count) }
        XCTAssertEqual(back, halves)
    }

    func testHalfRoundsToNearestEven() {
        // 1 + 2^-11 is halfway between 1 and the next half: ties go to the even 1.
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: goes up.
        let cases: [(Float, UInt16)] = [
            (1 + 0x1p-11, 0x3c00), (1 + 3 * 0x1p-11, 0x3c02), (1 + 0x1p-11 + 0x1p-20, 0x3c01),
            (65504, 0x7bff), (65520, 0x7c00), (-1e9, 0xfc00), (0x1p-25, 0x0000), (0x1p-25 + 0x1p-40, 0x0001),
            (3 * 0x1p-25, 0x0002), (0x1p-14 - 0x1p-25, 0x0400), (-0.0, 0x8000),
        ]
        for (value, expected) in cases {
            var half: UInt16 = 0xffff
            withUnsafeMutableBytes(of: &half) { raw in
                withUnsafePointer(to: value) { rwkvx_from_f32(RWKVX_DTYPE_F16, $0, raw.baseAddress, 1) }
            }
            XCTAssertEqual(half, expected, "value \(value)")
        }
        var nan: UInt16 = 0
        withUnsafeMutableBytes(of: &nan) { raw in
            withUnsafePointer(to: Float.nan) { rwkvx_from_f32(RWKVX_DTYPE_F16, $0, raw.baseAddress, 1) }
        }
        XCTAssertEqual(nan & 0x7c00, 0x7c00)
        XCTAssertNotEqual(nan & 0x3ff, 0)
    }

    /// Every reference scenario with an fp16 cache against the same scenario with
    /// the fp32 cache: logits within 2e-3 and the same argmax in every row. The
    /// cache-compression scenario is looser (argmax in 98% of rows, logits within 1).
    /// Compression keeps the rows with the top votes, and half-rounded keys move
    /// near-tied votes. So some heads keep other rows than with fp32, and the outputs
    /// after that step differ by more than rounding.
    func testFP16CacheCloseToFP32() throws {
        var worst: Float = 0
        for name in Fixtures.packageScenarios where name.hasPrefix("rwkvx") {
            let scenario = try Scenario(contentsOf: Fixtures.path(name + ".scenario.json"))
            var half = scenario.attention
            half.kvCacheDType = .fp16
            let full = try scenario.run(on: LocalEngine(model: Model(path: scenario.checkpoint, options: scenario.attention)))
            let reduced = try scenario.run(on: LocalEngine(model: Model(path: scenario.checkpoint, options: half)))
            XCTAssertEqual(full.map(\.name), reduced.map(\.name), name)
            var maxDiff: Float = 0, rows = 0, agreeing = 0
            for (a, b) in zip(full, reduced) where a.name.hasSuffix(".logits") {
                let width = a.shape.last!
                for row in 0..<(a.values.count / width) {
                    let slice = row * width..<(row + 1) * width
                    for i in slice { maxDiff = max(maxDiff, abs(a.values[i] - b.values[i])) }
                    let argmaxA = slice.max { a.values[$0] < a.values[$1] }!
                    let argmaxB = slice.max { b.values[$0] < b.values[$1] }!
                    rows += 1
                    if argmaxA == argmaxB { agreeing += 1 }
                }
            }
            print("fp16 KV cache, \(name): max |logit diff| \(maxDiff), argmax agrees in \(agreeing) of \(rows) rows")
            XCTAssertGreaterThan(rows, 0, name)
            if name.hasSuffix("/cache-compression") {
                XCTAssertGreaterThanOrEqual(Double(agreeing), 0.98 * Double(rows), name)
                XCTAssertLessThanOrEqual(maxDiff, 1, name)
            } else {
                XCTAssertEqual(agreeing, rows, name)
                XCTAssertLessThanOrEqual(maxDiff, 2e-3, name)
            }
            worst = max(worst, maxDiff)
        }
        // The fp16 cache must actually change something, or the test checks nothing.
        XCTAssertGreaterThan(worst, 0)
    }

    /// Thread count and batching leave an fp16-cache session bit-identical, as with fp32.
    func testFP16CacheThreadBatchInvariant() throws {
        var options = AttentionOptions(chunkSize: 16, topK: 2, maxKVCacheSize: 48, kvCacheWindowSize: 8,
                                       minKVCacheSize: 40, mode: .sparse)
        options.kvCacheDType = .fp16
        let tokens = (0..<40).map { ($0 * 37 + 11) % 256 }
        func run(threads: Int) throws -> ([Float], SessionState) {
            let model = try Model(path: rwkvx, options: options, pool: ThreadPool(threadCount: threads))
            var state = model.makeState()
            var logits = try model.forward(tokens, state: &state, fullOutput: true)
            for t in 0..<24 { logits += try model.forward([(t * 53 + 7) % 256], state: &state) }
            return (logits, state)
        }
        let (expected, expectedState) = try run(threads: 1)
        XCTAssertEqual(expectedState.sparse.values.first?.cacheDType, .fp16)
        // 40 + 24 tokens with a limit of 48 rows: the cache was compressed.
        let layer = expectedState.sparse.values.first!
        XCTAssertLessThan(layer.rows(nEmbd: layer.ffnXPrev.count), 64)
        for threads in [2, 3] {
            let (logits, state) = try run(threads: threads)
            XCTAssertEqual(logits, expected, "threads \(threads)")
            XCTAssertEqual(state, expectedState, "threads \(threads)")
        }

        let model = try Model(path: rwkvx, options: options, pool: ThreadPool(threadCount: 2))
        let stage = model.stage
        let prompts = [Array(tokens[0..<7]), [42], Array(tokens[5..<40])]
        let run = try AloneAndBatched(stage: stage, prompts: prompts)
        XCTAssertEqual(run.batchedRows, run.aloneRows)
        XCTAssertEqual(run.batchedStates, run.aloneStates)
    }

    func testFP16StateRoundTripsThroughBytes() throws {
        var options = AttentionOptions()
        options.kvCacheDType = .fp16
        let model = try Model(path: rwkvx, options: options)
        var state = model.makeState()
        _ = try model.forward([1, 2, 3, 4, 5], state: &state)
        let layer = state.sparse[0]!
        XCTAssertEqual(layer.cacheDType, .fp16)
        XCTAssertEqual(layer.rows(nEmbd: model.config.nEmbd), 5)
        XCTAssertEqual(layer.keyRows().count, 5 * model.config.nEmbd)
        XCTAssertTrue(layer.kCache.isEmpty)
        XCTAssertEqual(state.cacheBytes, model.config.nSparseLayer * 2 * 5 * model.config.nEmbd * 2)

        let restored = try SessionState(serialized: state.serialized(config: model.config), config: model.config)
        XCTAssertEqual(restored, state)
        var a = state, b = restored
        XCTAssertEqual(try model.forward([9], state: &a), try model.forward([9], state: &b))
    }

    /// A version-1 byte form (fp32 caches, no dtype byte) still loads, and an fp32
    /// state given to an fp16 engine is converted to half when its block runs.
    func testVersionOneStateLoadsAndConverts() throws {
        let model = try Model(path: rwkvx)
        var state = model.makeState()
        _ = try model.forward([1, 2, 3], state: &state)
        var bytes = state.serialized(config: model.config)
        XCTAssertEqual(Array(bytes[0..<8]), Array("RWKVXST2".utf8))

        // Rewrite as version 1: drop the dtype byte of each sparse block (all fp32).
        var version1 = Array("RWKVXST1".utf8) + bytes[8..<20]
        var offset = 20
        let c = model.config.nEmbd, n = model.config.headSize
        for _ in 0..<(state.rwkv.count + state.sparse.count) {
            let kind = bytes[offset]
            if kind == 0 {
                let length = 5 + 4 * (2 * c + model.config.nHead * n * n)
                version1 += bytes[offset..<(offset + length)]
                offset += length
            } else {
                XCTAssertEqual(bytes[offset + 5], 0)
                version1 += bytes[offset..<(offset + 5)]
                let rows = 3
                let length = 4 + 4 * (2 * rows * c + c)
                version1 += bytes[(offset + 6)..<(offset + 6 + length)]
                offset += 6 + length
            }
        }
        XCTAssertEqual(offset, bytes.count)
        let restored = try SessionState(serialized: version1, config: model.config)
        XCTAssertEqual(restored, state)

        bytes[8 + 12 + (5 + 4 * (2 * c + model.config.nHead * n * n)) * state.rwkv.count + 5] = 7
        XCTAssertThrowsError(try SessionState(serialized: bytes, config: model.config))

        var options = AttentionOptions()
        options.kvCacheDType = .fp16
        let halfModel = try Model(path: rwkvx, options: options)
        var converted = restored
        _ = try halfModel.forward([4], state: &converted)
        XCTAssertEqual(converted.sparse[0]!.cacheDType, .fp16)
        XCTAssertEqual(converted.sparse[0]!.rows(nEmbd: c), 4)
    }
}
