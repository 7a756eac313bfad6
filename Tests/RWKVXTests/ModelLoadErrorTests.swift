import Foundation
import XCTest
import RWKVX

/// Checkpoints that parse but do not describe a valid model fail to load with an
/// error naming the file and the tensor.
final class ModelLoadErrorTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "rwkvx-load-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Rewrites the rwkvx-tiny fixture with `edit` applied to its tensor list.
    func rewrittenFixture(_ name: String, _ edit: ([TensorPayload]) -> [TensorPayload]) throws -> String {
        let source = try Checkpoint.open(path: Fixtures.path("rwkvx-tiny/rwkvx-tiny.pth"))
        let payloads = try source.tensorNames.map { TensorPayload(copying: try source.tensor($0)) }
        let path = directory + "/" + name
        try PthWriter.write(tensors: edit(payloads), to: path)
        return path
    }

    /// A pipe, a device or a directory fails at once with its own error. Opening a
    /// pipe with no writer would otherwise wait forever.
    func testNonRegularFilesAreRejected() throws {
        let pipe = directory + "/pipe.pth"
        XCTAssertEqual(mkfifo(pipe, 0o600), 0)
        for path in [pipe, "/dev/null", directory] {
            XCTAssertThrowsError(try Checkpoint.open(path: path)) { error in
                XCTAssertEqual(error as? CheckpointError, .notRegularFile(path: path))
            }
        }
    }

    func testMissingTensorIsNamed() throws {
        let path = try rewrittenFixture("missing.pth") { $0.filter { $0.name != "rwkv.blocks.2.att.k_k" } }
        XCTAssertThrowsError(try Model(path: path)) { error in
            XCTAssertEqual(error as? CheckpointError, .missingTensor(path: path, tensor: "rwkv.blocks.2.att.k_k"))
            XCTAssertTrue("\(error)".contains(path))
        }
    }

    func testWrongShapeIsNamed() throws {
        let path = try rewrittenFixture("shape.pth") { payloads in
            payloads.map { p in
                guard p.name == "moba.1.att.key.weight" else { return p }
                return TensorPayload(name: p.name, dtype: .bfloat16, shape: [128, 64],
                                     data: [UInt8](repeating: 0, count: 128 * 64 * 2))
            }
        }
        XCTAssertThrowsError(try Model(path: path)) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .wrongShape(path: path, tensor: "moba.1.att.key.weight", expected: [128, 128], actual: [128, 64]))
            XCTAssertTrue("\(error)".contains("moba.1.att.key.weight"), "\(error)")
        }
    }

    func testMissingLayerIndexIsNamed() throws {
        let path = try rewrittenFixture("gap.pth") { $0.filter { !$0.name.hasPrefix("rwkv.blocks.1.") } }
        XCTAssertThrowsError(try Model(path: path)) { error in
            XCTAssertEqual(error as? CheckpointError, .missingTensor(path: path, tensor: "rwkv.blocks.1.*"))
        }
    }

    func testTruncatedCheckpointFailsModelLoad() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("rwkvx-tiny/rwkvx-tiny.pth")))
        let path = directory + "/truncated.pth"
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Model(path: path)) { error in
            guard case .truncated(let p, _)? = error as? CheckpointError else {
                return XCTFail("expected a truncated error, got \(error)")
            }
            XCTAssertEqual(p, path)
        }
    }

    func testInvalidAttentionOptionsAreRejected() {
        let path = Fixtures.path("rwkvx-tiny/rwkvx-tiny.pth")
        var options = AttentionOptions()
        options.maxKVCacheSize = 100
        options.kvCacheWindowSize = 50
        options.minKVCacheSize = 40
        XCTAssertThrowsError(try Model(path: path, options: options)) { error in
            XCTAssertTrue("\(error)".contains("min KV cache size 40"), "\(error)")
        }
        options = AttentionOptions()
        options.chunkSize = 0
        XCTAssertThrowsError(try Model(path: path, options: options))
    }

    func testOutOfVocabularyTokenIsRejected() throws {
        let model = try Model(path: Fixtures.path("rwkvx-tiny/rwkvx-tiny.pth"))
        var state = model.makeState()
        XCTAssertThrowsError(try model.forward([1, 256], state: &state)) { error in
            XCTAssertTrue("\(error)".contains("256"), "\(error)")
        }
        XCTAssertThrowsError(try model.forward([-1], state: &state))
    }
}
