import CKernels
import Foundation
import XCTest
import RWKVX

/// The threaded, batched and int8 paths against the single-threaded fp32 one and the
/// reference fixtures.
final class FastPathTests: XCTestCase {
    let rwkv7 = Fixtures.path("rwkv7-tiny/rwkv7-tiny.safetensors")
    let rwkvx = Fixtures.path("rwkvx-tiny/rwkvx-tiny.safetensors")
    let tokens = (0..<40).map { ($0 * 37 + 11) % 256 }

    func smallWindow() -> AttentionOptions {
        AttentionOptions(chunkSize: 16, topK: 2, maxKVCacheSize: 0, kvCacheWindowSize: 2000,
                         minKVCacheSize: 16000, mode: .sparse)
    }

    /// Logits of a prefill then 24 decoded tokens (past the 32-token window, so the
    /// sparse decode path chooses chunks), and the final state.
    func run(_ model: Model) throws -> ([Float], SessionState) {
        var state = model.makeState()
        var logits = try model.forward(tokens, state: &state, fullOutput: true)
        for t in 0..<24 { logits += try model.forward([(t * 53 + 7) % 256], state: &state) }
        return (logits, state)
    }

    func testWholeForwardIsThreadCountInvariant() throws {
        for path in [rwkv7, rwkvx] {
            for format in [WeightFormat.stored, .int8] {
                let (expected, expectedState) = try run(Model(path: path, options: smallWindow(), format: format))
                for threads in [1, 2, 3] {
                    let model = try Model(path: path, options: smallWindow(), format: format,
                                          pool: ThreadPool(threadCount: threads))
                    let (logits, state) = try run(model)
                    XCTAssertEqual(logits, expected, "\(path) \(format) threads \(threads)")
                    XCTAssertEqual(state, expectedState, "\(path) \(format) threads \(threads)")
                }
            }
        }
    }

    /// Sessions of different lengths (one of them a one-token decode) batched together
    /// give bit-identical rows and states to each session run alone.
    func testBatchEqualsSingleSessions() throws {
        for format in [WeightFormat.stored, .int8] {
            let model = try Model(path: rwkvx, options: smallWindow(), format: format, pool: ThreadPool(threadCount: 2))
            let stage = model.stage
            let c = model.config.nEmbd
            let prompts = [Array(tokens[0..<7]), [42], Array(tokens[5..<40]), Array(tokens[1..<3])]

            let run = try AloneAndBatched(stage: stage, prompts: prompts)
            let x = run.batchedRows, aloneRows = run.aloneRows
            let states = run.batchedStates, aloneStates = run.aloneStates
            XCTAssertEqual(x.count, aloneRows.count)
            XCTAssertEqual(x, aloneRows, "format \(format)")
            XCTAssertEqual(states, aloneStates, "format \(format)")
            XCTAssertEqual(stage.logits(rows: x), stage.logits(rows: aloneRows), "format \(format)")
            XCTAssertGreaterThan(Set(x[0..<c]).count, c / 2, "residual rows are not degenerate")
        }
    }

    /// A batch larger than one pass (Stage.maxSessionsPerPass) runs in parts and still
    /// gives each session its alone result. The second part includes a multi-token prefill.
    func testBatchLargerThanOnePass() throws {
        let model = try Model(path: rwkvx, options: smallWindow(), pool: ThreadPool(threadCount: 2))
        let count = Stage.maxSessionsPerPass + 3
        var prompts = (0..<count).map { [tokens[$0 % tokens.count]] }
        prompts[count - 2] = Array(tokens[3..<9])
        let run = try AloneAndBatched(stage: model.stage, prompts: prompts)
        XCTAssertEqual(run.batchedRows, run.aloneRows)
        XCTAssertEqual(run.batchedStates, run.aloneStates)
    }

    /// int8 weights (and block-quantised int8 activations) against fp32 on every
    /// reference scenario: max and mean |logit diff| and argmax agreement, printed.
    func testInt8AccuracyCostIsBounded() throws {
        var worstMax: Float = 0
        var sumMean: Double = 0
        var tensors = 0
        var agree = 0, rows = 0
        for name in Fixtures.packageScenarios {
            let scenario = try Scenario(contentsOf: Fixtures.path(name + ".scenario.json"))
            let exact = try scenario.run(on: LocalEngine(model: Model(path: scenario.checkpoint, options: scenario.attention,
                                                                      format: .float32)))
            let int8 = try scenario.run(on: LocalEngine(model: Model(path: scenario.checkpoint, options: scenario.attention,
                                                                     format: .int8)))
            let v = try Model(path: scenario.checkpoint).config.vocabSize
            for (a, b) in zip(exact, int8) where a.name.hasSuffix(".logits") {
                var maxDiff: Float = 0
                var total: Double = 0
                for i in a.values.indices {
                    let d = abs(a.values[i] - b.values[i])
                    maxDiff = max(maxDiff, d)
                    total += Double(d)
                }
                let mean = total / Double(a.values.count)
                for row in 0..<(a.values.count / v) {
                    let slice = row * v..<(row + 1) * v
                    let argmaxA = slice.max { a.values[$0] < a.values[$1] }!
                    let argmaxB = slice.max { b.values[$0] < b.values[$1] }!
                    if argmaxA == argmaxB { agree += 1 }
                    rows += 1
                }
                print(String(format: "int8 vs fp32 %@ %@: max |diff| %.4f, mean |diff| %.5f", name, a.name, maxDiff, mean))
                worstMax = max(worstMax, maxDiff)
                sumMean += mean
                tensors += 1
            }
        }
        let agreement = Double(agree) / Double(rows)
        print(String(format: "int8 vs fp32 overall: worst max |diff| %.4f, argmax agreement %d/%d (%.1f%%)",
                     worstMax, agree, rows, agreement * 100))
        XCTAssertGreaterThan(rows, 50)
        // int8 noise can flip a sparse block's top-k chunk choice or compression vote,
        // which moves some logits by a step: the mean bounds the typical error and the
        // loose max bound catches a broken kernel.
        XCTAssertLessThan(sumMean / Double(max(tensors, 1)), 0.03)
        XCTAssertLessThan(worstMax, 2.0)
        XCTAssertGreaterThanOrEqual(agreement, 0.9)
        XCTAssertGreaterThan(sumMean, 0, "int8 must differ from fp32, or this test measures nothing")
    }

    /// Every kernel level this CPU has passes the reference fixtures, fp32 and int8 paths.
    func testEveryKernelLevelPassesFixtures() throws {
        try KernelLevelLock.withLevels { level in
            for name in Fixtures.packageScenarios {
                let scenario = try Scenario(contentsOf: Fixtures.path(name + ".scenario.json"))
                let model = try Model(path: scenario.checkpoint, options: scenario.attention,
                                      pool: ThreadPool(threadCount: 2))
                let outputs = try scenario.run(on: LocalEngine(model: model))
                assertMatchesReference(outputs, try Fixtures.expected(name), tolerance: 1e-4,
                                       "\(name) at level \(String(cString: rwkvx_level_name(level)))")
            }
        }
    }

    /// The int8 kernel of every level agrees with the scalar one, and a row's result
    /// does not depend on the number of tokens in the call.
    func testQ8MatmulLevelsAndTokenInvariance() {
        let rows = 37, cols = 200, nTok = 6
        var weights = [Int8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows)
        let w = (0..<(rows * cols)).map { Float(($0 * 7919) % 255) / 127 - 1 }
        rwkvx_quantize_i8_rows(w, rows, cols, &weights, &scales)
        var packed = [Int8](repeating: 0x55, count: rwkvx_q8_packed_bytes(rows, cols))
        rwkvx_pack_q8_panels(weights, rows, cols, &packed)
        let x = (0..<(nTok * cols)).map { Float(($0 * 104_729) % 1000) / 250 - 2 }
        var xq = [UInt8](repeating: 0, count: nTok * rwkvx_q8_token_bytes(cols))
        rwkvx_quantize_q8_activations(x, nTok, cols, &xq)

        func matmul(tokens: Int) -> [Float] {
            var y = [Float](repeating: .nan, count: tokens * rows)
            rwkvx_matmul_q8(packed, scales, rows, cols, xq, tokens, &y, rows, 0, rows)
            return y
        }
        var results: [Int32: [Float]] = [:]
        KernelLevelLock.withLevels { level in
            let all = matmul(tokens: nTok)
            XCTAssertEqual(Array(all[0..<rows]), matmul(tokens: 1), "level \(level): token 0 alone")
            XCTAssertEqual(all, matmul(tokens: nTok), "level \(level): repeat")
            results[level] = all
        }
        let scalar = results[Int32(RWKVX_LEVEL_SCALAR.rawValue)]!
        for (level, values) in results {
            let maxDiff = zip(values, scalar).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxDiff, 1e-4, "level \(level) vs scalar")
        }
        XCTAssertGreaterThan(Set(scalar).count, rows * nTok / 2, "outputs are not degenerate")
    }

    /// Every level quantises activations to the same bytes as the scalar reference,
    /// including exact halves, values just below a half, NaN, infinities, zeros and
    /// a column count that leaves a partial block.
    func testQ8QuantisationMatchesScalar() {
        let cols = 200, nTok = 5
        var x = (0..<(nTok * cols)).map { Float(($0 * 104_729) % 2001) / 500 - 2 }
        // Token 1: values whose scaled magnitude lands on k + 0.5 (block maximum 127).
        for c in 0..<cols { x[cols + c] = c % 32 == 0 ? 127 : Float(c % 64) + 0.5 }
        // Token 2: just below halves, negative zero and a subnormal.
        for c in 0..<cols {
            x[2 * cols + c] = c % 32 == 0 ? -127 : (c % 3 == 0 ? Float(c % 50) + Float(0.5).nextDown : -0.0)
        }
        x[2 * cols + 7] = .leastNonzeroMagnitude
        // Token 3: NaN and infinities inside blocks. Token 4: all zeros.
        x[3 * cols + 5] = .nan
        x[3 * cols + 40] = .infinity
        x[3 * cols + 70] = -.infinity
        for c in 0..<cols { x[4 * cols + c] = 0 }

        var results: [Int32: [UInt8]] = [:]
        KernelLevelLock.withLevels { level in
            var xq = [UInt8](repeating: 0xAB, count: nTok * rwkvx_q8_token_bytes(cols))
            rwkvx_quantize_q8_activations(x, nTok, cols, &xq)
            results[level] = xq
        }
        let scalar = results[Int32(RWKVX_LEVEL_SCALAR.rawValue)]!
        for (level, bytes) in results {
            XCTAssertEqual(bytes, scalar, "level \(level) vs scalar")
        }
        XCTAssertGreaterThan(Set(scalar[0..<cols]).count, 100, "quantised values are not degenerate")
    }
}

/// Serialises tests that switch the process-wide kernel level, and restores it.
enum KernelLevelLock {
    private static let lock = NSLock()

    /// Runs `body` at every level this CPU supports, lowest first.
    static func withLevels(_ body: (Int32) throws -> Void) rethrows {
        lock.lock()
        let saved = rwkvx_get_level()
        defer {
            _ = rwkvx_set_level(saved)
            lock.unlock()
        }
        for level in 0...rwkvx_cpu_level() {
            _ = rwkvx_set_level(level)
            try body(level)
        }
    }
}
