import Foundation
import RWKVX
import RWKVXCluster
import XCTest

/// A model split into 1 to 4 pipeline stages over real worker processes gives the
/// single-process results: bit-identical logits and states with fp32 activations,
/// whatever other sessions share the batches.
final class ClusterEquivalenceTests: XCTestCase {
    /// Reference scenarios grouped by the attention settings a cluster runs with.
    let groups: [[String]] = [
        ["rwkvx-tiny/short", "rwkvx-tiny/decode-past-window", "rwkvx-tiny/long-prefill",
         "rwkvx-tiny/second-prefill", "rwkvx-tiny/decode-from-empty"],
        ["rwkvx-tiny/cache-compression", "rwkvx-tiny/compression-in-prefill"],
        ["rwkvx-tiny/full-attention"],
    ]

    func inProcess(_ scenario: Scenario) throws -> [NamedTensor] {
        let model = try Model(path: scenario.checkpoint, options: scenario.attention)
        return try scenario.run(on: LocalEngine(model: model))
    }

    func assertIdentical(_ a: [NamedTensor], _ b: [NamedTensor], _ label: String) {
        XCTAssertEqual(a.map { $0.name }, b.map { $0.name }, label)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.shape, y.shape, "\(label): \(x.name) shape")
            XCTAssertTrue(x.values == y.values, "\(label): \(x.name) differs, max |diff| \(zip(x.values, y.values).map { abs($0 - $1) }.max() ?? -1)")
        }
    }

    /// Runs every scenario of a group at the same time, one session each, so their
    /// steps share batches.
    func runGroup(_ names: [String], stages: Int) throws {
        let scenarios = try names.map { try Scenario(contentsOf: TestCluster.fixture($0 + ".scenario.json")) }
        let expected = try scenarios.map(inProcess)
        let record = try TestCluster.up(model: scenarios[0].checkpoint, workers: stages, attention: scenarios[0].attention)
        defer { TestCluster.down(record) }
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: scenarios[0].checkpoint))

        let results = ResultBox<[NamedTensor]>()
        try concurrently(scenarios.count) { i in
            let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 60)
            let engine = try ClusterEngine(client: client, config: config)
            results.set(i, try scenarios[i].run(on: engine))
            try engine.close()
        }
        for (i, name) in names.enumerated() {
            assertIdentical(try XCTUnwrap(results[i]), expected[i], "\(name) over \(stages) stage(s)")
        }
    }

    func testRWKVXScenariosOverOneToFourStages() throws {
        for stages in 1...4 {
            for group in groups { try runGroup(group, stages: stages) }
        }
    }

    func testRWKV7ScenariosOverOneAndTwoStages() throws {
        for stages in 1...2 {
            try runGroup(["rwkv7-tiny/prefill7-decode5", "rwkv7-tiny/prefill64-decode16"], stages: stages)
        }
    }

    /// bf16 activations on the wire round the hidden state between stages: results
    /// move slightly, which also shows the bit-exact checks above can fail.
    func testBF16WireChangesLogitsSlightly() throws {
        let scenario = try Scenario(contentsOf: TestCluster.fixture("rwkvx-tiny/short.scenario.json"))
        let expected = try inProcess(scenario)
        let record = try TestCluster.up(model: scenario.checkpoint, workers: 2, attention: scenario.attention,
                                        extra: ["--wire-dtype", "bf16"])
        defer { TestCluster.down(record) }
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: scenario.checkpoint))
        let engine = try ClusterEngine(client: try ClusterClient(endpoint: record.coordinator), config: config)
        let outputs = try scenario.run(on: engine)
        let logits = zip(outputs, expected).filter { $0.0.name.hasSuffix(".logits") }
        let maxDiff = logits.flatMap { zip($0.0.values, $0.1.values).map { abs($0 - $1) } }.max() ?? 0
        XCTAssertGreaterThan(maxDiff, 0, "bf16 activations should not be bit-identical")
        XCTAssertLessThan(maxDiff, 0.5, "bf16 activations moved the logits by \(maxDiff)")
    }

    func testClusterOutputsMatchReferenceWithinTolerance() throws {
        let name = "rwkvx-tiny/cache-compression"
        let scenario = try Scenario(contentsOf: TestCluster.fixture(name + ".scenario.json"))
        let record = try TestCluster.up(model: scenario.checkpoint, workers: 3, attention: scenario.attention)
        defer { TestCluster.down(record) }
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: scenario.checkpoint))
        let engine = try ClusterEngine(client: try ClusterClient(endpoint: record.coordinator), config: config)
        let outputs = try scenario.run(on: engine)

        let reference = try Checkpoint.open(path: TestCluster.fixture(name + ".safetensors"))
        XCTAssertEqual(Set(outputs.map(\.name)), Set(reference.tensorNames))
        for tensor in outputs {
            let want = try reference.tensor(tensor.name).toFloat32()
            XCTAssertEqual(want.count, tensor.values.count, tensor.name)
            let maxDiff = zip(want, tensor.values).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(maxDiff, 1e-4, "\(tensor.name) max |diff| \(maxDiff)")
        }
    }
}
