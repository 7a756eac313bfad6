import Foundation
import XCTest
import RWKVX

/// Paths of the reference fixtures copied into the test bundle.
enum Fixtures {
    static var root: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    }

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// Reference scenarios run by the inference package (the moba-prefill one uses
    /// training semantics, which rwkvx does not implement).
    static let packageScenarios = [
        "rwkv7-tiny/prefill7-decode5", "rwkv7-tiny/prefill64-decode16",
        "rwkvx-tiny/short", "rwkvx-tiny/decode-past-window", "rwkvx-tiny/long-prefill",
        "rwkvx-tiny/cache-compression", "rwkvx-tiny/full-attention", "rwkvx-tiny/second-prefill",
        "rwkvx-tiny/compression-in-prefill", "rwkvx-tiny/decode-from-empty",
        // Made with the same reference harness on other shapes: a 5 + 2 layer bf16 model
        // (a trailing RWKV block that never runs) with top_k 1, a zero compression
        // window and compression in decode and prefill; a 3 + 1 layer fp16 model with
        // n_embd 192, full attention mode and a prefill of 2 tokens.
        "variants/a1", "variants/a2", "variants/a3", "variants/b1", "variants/b2",
    ]

    /// Expected tensors of a scenario as fp32 arrays.
    static func expected(_ scenario: String) throws -> [String: TensorView] {
        let checkpoint = try Checkpoint.open(path: path(scenario + ".safetensors"))
        var out: [String: TensorView] = [:]
        for name in checkpoint.tensorNames { out[name] = try checkpoint.tensor(name) }
        expectedOwners.append(checkpoint)
        return out
    }

    nonisolated(unsafe) static var expectedOwners: [Checkpoint] = []
}

/// Compares engine outputs with reference tensors: same names and shapes, max |diff|
/// within `tolerance`, and the same argmax in every logits row.
func assertMatchesReference(_ actual: [NamedTensor], _ expected: [String: TensorView], tolerance: Float,
                            _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    let actualByName = Dictionary(uniqueKeysWithValues: actual.map { ($0.name, $0) })
    XCTAssertEqual(Set(actualByName.keys), Set(expected.keys), "\(label): tensor names differ", file: file, line: line)
    for (name, view) in expected.sorted(by: { $0.key < $1.key }) {
        guard let got = actualByName[name] else { continue }
        XCTAssertEqual(got.shape, view.shape, "\(label): \(name) shape", file: file, line: line)
        let want = view.toFloat32()
        guard got.values.count == want.count else { continue }
        var maxDiff: Float = 0
        for i in 0..<want.count { maxDiff = max(maxDiff, abs(got.values[i] - want[i])) }
        XCTAssertLessThanOrEqual(maxDiff, tolerance, "\(label): \(name) max |diff| \(maxDiff)", file: file, line: line)
        if name.hasSuffix(".logits") {
            let width = view.shape.last!
            for row in 0..<(want.count / width) {
                let slice = row * width..<(row + 1) * width
                let a = slice.max { got.values[$0] < got.values[$1] }!
                let b = slice.max { want[$0] < want[$1] }!
                XCTAssertEqual(a - slice.lowerBound, b - slice.lowerBound, "\(label): \(name) argmax of row \(row)",
                               file: file, line: line)
            }
        }
    }
}

/// Residual rows and states of `prompts` run through `stage` one session at a time, and
/// the same prompts run as one batch.
struct AloneAndBatched {
    var aloneRows: [Float] = []
    var aloneStates: [SessionState] = []
    var batchedRows: [Float] = []
    var batchedStates: [SessionState] = []

    init(stage: Stage, prompts: [[Int]]) throws {
        for prompt in prompts {
            var state = stage.makeState()
            var x = try stage.embed(prompt)
            var vFirst: [Float] = []
            stage.forward(&x, vFirst: &vFirst, state: &state)
            aloneRows += x
            aloneStates.append(state)
        }

        batchedStates = prompts.map { _ in stage.makeState() }
        batchedRows = try stage.embed(prompts.flatMap { $0 })
        var vFirst: [Float] = []
        stage.forwardBatch(&batchedRows, vFirst: &vFirst, tokenCounts: prompts.map(\.count), states: &batchedStates)
    }
}
