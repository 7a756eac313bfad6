// The committed protoc-c output must match proto/rwkvx.proto.
import Foundation
import XCTest

final class ClusterProtoFreshnessTests: XCTestCase {
    func testGeneratedCodeIsCurrent() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let protocC = ["/usr/bin/protoc-c", "/usr/local/bin/protoc-c"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try XCTSkipIf(protocC == nil, "protoc-c is not installed (apt-get install protobuf-c-compiler); cannot check generated code")

        let output = FileManager.default.temporaryDirectory.appendingPathComponent("rwkvx-proto-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/bin/sh")
        script.arguments = [root.appendingPathComponent("scripts/gen-proto.sh").path, output.path]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "/usr/local/bin:/usr/bin:/bin:" + (environment["PATH"] ?? "")
        script.environment = environment
        try script.run()
        script.waitUntilExit()
        XCTAssertEqual(script.terminationStatus, 0, "scripts/gen-proto.sh failed")

        let pairs = [
            ("rwkvx.pb-c.c", "Sources/RWKVXProto/rwkvx.pb-c.c"),
            ("rwkvx.pb-c.h", "Sources/RWKVXProto/include/rwkvx.pb-c.h"),
        ]
        for (generated, committed) in pairs {
            let fresh = try Data(contentsOf: output.appendingPathComponent(generated))
            let current = try Data(contentsOf: root.appendingPathComponent(committed))
            XCTAssertEqual(fresh, current, "\(committed) is stale: run scripts/gen-proto.sh and commit the result")
        }
    }
}
