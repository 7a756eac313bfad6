import Foundation
import RWKVX
import RWKVXCluster
import XCTest

/// Real local clusters for tests: worker and coordinator processes of the rwkvx
/// binary built next to the test bundle, on ipc sockets in a fresh folder.
enum TestCluster {
    static var binary: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("rwkvx").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return dir.appendingPathComponent("rwkvx").path
    }

    static var fixtures: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("RWKVXTests/Fixtures")
    }

    static func fixture(_ relative: String) -> String { fixtures.appendingPathComponent(relative).path }

    static func makeRunDirectory() -> String {
        let dir = NSTemporaryDirectory() + "rwkvx-cluster-test-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Command-line form of attention options, for the coordinator.
    static func arguments(_ a: AttentionOptions) -> [String] {
        ["--attn-chunk-size", "\(a.chunkSize)", "--attn-top-k", "\(a.topK)", "--max-kv-cache", "\(a.maxKVCacheSize)",
         "--kv-window", "\(a.kvCacheWindowSize)", "--min-kv-cache", "\(a.minKVCacheSize)", "--attn-mode", a.mode.rawValue]
    }

    /// Starts `workers` worker processes and a coordinator; returns the record.
    static func up(model: String, workers: Int, attention: AttentionOptions = AttentionOptions(),
                   extra: [String] = [], runDirectory: String? = nil) throws -> LocalClusterRecord {
        var spec = LocalClusterSpec(executable: binary, model: model, workers: workers, threadsPerWorker: 1,
                                    runDirectory: runDirectory ?? makeRunDirectory())
        spec.transport = "ipc"
        spec.coordinatorArguments = arguments(attention) + extra
        return try LocalCluster.up(spec, timeoutSeconds: 120)
    }

    static func down(_ record: LocalClusterRecord) {
        try? LocalCluster.down(runDirectory: record.runDirectory)
        try? FileManager.default.removeItem(atPath: record.runDirectory)
    }
}

/// Runs `body` on `count` threads at once and rethrows the first error.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let errors = ErrorBox()
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            do { try body(i) } catch { errors.record(error) }
        }
    }
    group.wait()
    if let error = errors.first { throw error }
}

final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [Error] = []
    func record(_ error: Error) { lock.withLock { errors.append(error) } }
    var first: Error? { lock.withLock { errors.first } }
}

/// Results collected from several threads.
final class ResultBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int: T] = [:]
    func set(_ i: Int, _ value: T) { lock.withLock { values[i] = value } }
    subscript(i: Int) -> T? { lock.withLock { values[i] } }
}
