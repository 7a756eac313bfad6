import Foundation
import RWKVX
import RWKVXCluster
import XCTest

/// Text generation through clusters of a 12 + 4 layer RWKV-X model.
final class ClusterGenerationTests: XCTestCase {
    static let modelDirectory = TestCluster.makeRunDirectory()

    /// A random 12 RWKV + 4 sparse layer model, small enough to build in a second.
    static let modelPath: String = {
        let path = modelDirectory + "/m12x4.pth"
        let spec = RandomCheckpointSpec(nRWKVLayer: 12, nSparseLayer: 4, nEmbd: 128, vocabSize: 65536,
                                        dtype: .bfloat16, seed: 5)
        try! PthWriter.write(tensors: spec.payloads(), to: path)
        return path
    }()

    /// The second prompt is longer than the attention window used below, so its
    /// prefill takes the chunk-local path.
    let prompts = ["The capital of France is",
                   "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
                   "日本語のテキスト、そして"]

    func sampling(seed: UInt64, greedy: Bool) -> SamplingOptions {
        var s = SamplingOptions()
        s.maxTokens = 24
        s.temperature = greedy ? 0 : 1.0
        s.topP = greedy ? 1 : 0.9
        s.presencePenalty = 0.3
        s.frequencyPenalty = 0.2
        s.seed = seed
        return s
    }

    func inProcess(_ prompt: String, _ options: SamplingOptions, attention: AttentionOptions) throws -> String {
        let model = try Model(path: Self.modelPath, options: attention)
        var session = LocalSession(model: model)
        var text = ""
        _ = try generateText(session: &session, tokenizer: try WorldTokenizer.bundled(), prompt: prompt, options: options) {
            text += $0
        }
        return text
    }

    /// Greedy and seeded sampling give the same text through 1-4 stages as in one
    /// process, with three sessions generating at once.
    func testGenerationMatchesSingleProcess() throws {
        // a small window so decode runs the sparse top-k path after a few tokens
        let attention = AttentionOptions(chunkSize: 4, topK: 2, maxKVCacheSize: 0, kvCacheWindowSize: 2000,
                                         minKVCacheSize: 16000, mode: .sparse)
        let cases = prompts.enumerated().map { (i, p) in (p, sampling(seed: UInt64(40 + i), greedy: i != 1)) }
        let expected = try cases.map { try inProcess($0.0, $0.1, attention: attention) }
        XCTAssertGreaterThan(Set(expected).count, 1, "generations should differ between prompts")
        XCTAssertTrue(expected.allSatisfy { !$0.isEmpty })

        for stages in 1...4 {
            // Odd stage counts split prompts into 3-token prefill pieces.
            let extra = stages % 2 == 1 ? ["--prefill-chunk", "3"] : []
            let record = try TestCluster.up(model: Self.modelPath, workers: stages, attention: attention, extra: extra)
            defer { TestCluster.down(record) }
            let results = ResultBox<String>()
            try concurrently(cases.count) { i in
                let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 60)
                var text = ""
                let report = try client.generate(prompt: cases[i].0, sampling: cases[i].1) { text += $0 }
                XCTAssertEqual(report.generatedTokens + (report.stop == nil ? 0 : 1) > 0, true)
                results.set(i, text)
            }
            for i in cases.indices {
                XCTAssertEqual(results[i], expected[i], "prompt \(i) over \(stages) stage(s)")
            }
        }
    }

    /// A client that disconnects mid-generation frees its session on every stage.
    func testClientDisconnectCancelsGeneration() throws {
        let record = try TestCluster.up(model: Self.modelPath, workers: 2)
        defer { TestCluster.down(record) }
        let context = try ZmqContext()
        var socketOptions = ZmqSocketOptions.standard
        socketOptions.routerMandatory = false
        let socket = try ZmqSocket(context: context, type: .dealer, options: socketOptions)
        try socket.connect(record.coordinator)
        var request = ClientRequest(op: "generate")
        request.prompt = "A long story:"
        var options = SamplingOptions()
        options.maxTokens = 100_000
        options.temperature = 0
        options.stopTokens = []
        request.sampling = options
        try socket.send([Array(try JSONEncoder().encode(request))])
        XCTAssertNotNil(try socket.receive(timeoutMillis: 30_000), "no text before the disconnect")
        socket.close()

        let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 10)
        let deadline = Date().addingTimeInterval(20)
        while try client.status().sessions > 0 && Date() < deadline { usleep(200_000) }
        XCTAssertEqual(try client.status().sessions, 0, "the abandoned generation should stop")
    }

    /// Each worker maps and touches only its own layers: one serving a quarter of the
    /// blocks stays well under the footprint of one process serving them all.
    func testWorkerMemoryFollowsItsShareOfLayers() throws {
        let dir = TestCluster.makeRunDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/wide.safetensors"
        // Layers dominate this model (vocab 4096), so its weight bytes scale with blocks.
        let spec = RandomCheckpointSpec(nRWKVLayer: 12, nSparseLayer: 4, nEmbd: 1024, vocabSize: 4096,
                                        dtype: .bfloat16, seed: 9)
        try SafetensorsWriter.write(tensors: spec.payloads(), to: path)

        let config = try ModelConfig.infer(from: try Checkpoint.open(path: path))
        /// Runs a few tokens through every stage, then reads each worker's resident size.
        func touchAndMeasure(_ record: LocalClusterRecord) throws -> [UInt64] {
            let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 120)
            let engine = try ClusterEngine(client: client, config: config)
            _ = try engine.forward([10, 20, 30, 40, 50], fullOutput: false)
            _ = try engine.forward([7], fullOutput: false)
            usleep(1_500_000)  // one heartbeat refreshes the workers' resident sizes
            return try client.status().stages.map(\.residentBytes)
        }

        let singleRecord = try TestCluster.up(model: path, workers: 1)
        let single = try touchAndMeasure(singleRecord)[0]
        TestCluster.down(singleRecord)

        let planPath = dir + "/quarters.json"
        let runDir = TestCluster.makeRunDirectory()
        let endpoints = (0..<4).map { "ipc://\(runDir)/worker-\($0).sock" }
        let stages = (0..<4).map { ["worker": endpoints[$0], "first": $0 * 4, "count": 4] as [String: Any] }
        try JSONSerialization.data(withJSONObject: ["stages": stages]).write(to: URL(fileURLWithPath: planPath))
        let record = try TestCluster.up(model: path, workers: 4, extra: ["--plan", planPath], runDirectory: runDir)
        defer { TestCluster.down(record) }
        let quarters = try touchAndMeasure(record)

        print("resident MB: single process \(single / 1_000_000), quarter stages \(quarters.map { $0 / 1_000_000 })")
        XCTAssertGreaterThan(single, 300_000_000, "the single process should hold about 400 MB of weights")
        for (i, bytes) in quarters.enumerated() {
            XCTAssertGreaterThan(bytes, 0)
            XCTAssertLessThan(Double(bytes), 0.4 * Double(single),
                              "stage \(i) holds \(bytes / 1_000_000) MB, single process \(single / 1_000_000) MB")
        }
    }
}
