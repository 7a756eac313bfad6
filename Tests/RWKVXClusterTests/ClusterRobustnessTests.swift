import Foundation
import RWKVX
import RWKVXCluster
import XCTest

/// Bad input and dead peers give clear errors and never stop the coordinator or a worker.
final class ClusterRobustnessTests: XCTestCase {
    let model = TestCluster.fixture("rwkvx-tiny/rwkvx-tiny.pth")

    func rawClient(_ endpoint: String) throws -> (ZmqContext, ZmqSocket) {
        let context = try ZmqContext()
        var options = ZmqSocketOptions.standard
        options.routerMandatory = false
        let socket = try ZmqSocket(context: context, type: .dealer, options: options)
        try socket.connect(endpoint)
        return (context, socket)
    }

    func reply(_ socket: ZmqSocket) throws -> ClientReply {
        let frames = try XCTUnwrap(try socket.receive(timeoutMillis: 10_000), "no reply in 10 s")
        return try JSONDecoder().decode(ClientReply.self, from: Data(frames[0]))
    }

    func testMalformedClientRequestsGetErrors() throws {
        let record = try TestCluster.up(model: model, workers: 2)
        defer { TestCluster.down(record) }
        let (context, socket) = try rawClient(record.coordinator)
        defer { socket.close(); _ = context }

        let bad: [(String, String)] = [
            ("not json", "invalid request"),
            ("{\"prompt\": \"x\"}", "invalid request"),
            ("{\"op\": \"teleport\"}", "unknown op"),
            ("{\"op\": \"forward\", \"session\": 999, \"tokens\": [1]}", "unknown session 999"),
            ("{\"op\": \"state\", \"session\": 12345}", "unknown session 12345"),
            ("{\"op\": \"generate\"}", "needs a \"prompt\""),
        ]
        for (request, expected) in bad {
            try socket.send([Array(request.utf8)])
            let r = try reply(socket)
            XCTAssertEqual(r.op, "error", request)
            XCTAssertTrue(r.message?.contains(expected) ?? false, "\(request): \(r.message ?? "")")
        }

        // a valid session with an out-of-vocabulary token fails that call only
        let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 10)
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: model))
        let engine = try ClusterEngine(client: client, config: config)
        XCTAssertThrowsError(try engine.forward([300], fullOutput: false)) { error in
            XCTAssertTrue("\(error)".contains("token id 300"), "\(error)")
        }
        XCTAssertEqual(try engine.forward([3, 4], fullOutput: false).count, config.vocabSize)
        XCTAssertEqual(try client.status().stages.count, 2)
    }

    func testWorkerRejectsMalformedMessagesAndKeepsServing() throws {
        let record = try TestCluster.up(model: model, workers: 1)
        defer { TestCluster.down(record) }
        let context = try ZmqContext()
        let socket = try ZmqSocket(context: context, type: .dealer)
        defer { socket.close() }
        try socket.connect(record.workers[0])

        // garbage header, then a message before registration
        try socket.send([[0xde, 0xad, 0xbe, 0xef]])
        let garbage = try WireMessage.decode(try XCTUnwrap(try socket.receive(timeoutMillis: 5000)))
        guard case .error(let report) = garbage.body else { return XCTFail("expected an Error, got \(garbage.body.kindName)") }
        XCTAssertEqual(report.code, .malformedMessage)

        try socket.send(try WireMessage(messageID: 1, body: .heartbeat(Heartbeat(sentUnixMicros: 1))).encode())
        let unregistered = try WireMessage.decode(try XCTUnwrap(try socket.receive(timeoutMillis: 5000)))
        guard case .error(let report2) = unregistered.body else { return XCTFail("expected an Error") }
        XCTAssertEqual(report2.code, .notRegistered)

        // the coordinator's own connection still works
        let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 10)
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: model))
        let engine = try ClusterEngine(client: client, config: config)
        XCTAssertEqual(try engine.forward([5, 6, 7], fullOutput: true).count, 3 * config.vocabSize)
    }

    /// A killed worker fails the sessions that need it with an error naming the stage;
    /// the coordinator keeps answering and reports the stage as down.
    func testDeadWorkerFailsSessionsClearly() throws {
        let record = try TestCluster.up(model: model, workers: 2)
        defer { TestCluster.down(record) }
        let config = try ModelConfig.infer(from: try Checkpoint.open(path: model))
        let client = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 60)
        let engine = try ClusterEngine(client: client, config: config)
        _ = try engine.forward([1, 2, 3], fullOutput: false)

        let workerPID = record.pids[1]
        XCTAssertEqual(kill(workerPID, SIGKILL), 0)
        XCTAssertThrowsError(try engine.forward([4], fullOutput: false)) { error in
            XCTAssertTrue("\(error)".contains("stage 1"), "\(error)")
        }
        let status = try client.status()
        XCTAssertEqual(status.stages.map(\.alive), [true, false])
        XCTAssertThrowsError(try ClusterEngine(client: client, config: config)) { error in
            XCTAssertTrue("\(error)".contains("is down"), "\(error)")
        }

        // A worker started again on the same endpoint is re-admitted and serves new sessions.
        let restarted = Process()
        restarted.executableURL = URL(fileURLWithPath: TestCluster.binary)
        restarted.arguments = ["worker", "--listen", record.workers[1], "--threads", "1"]
        restarted.standardError = FileHandle.nullDevice
        try restarted.run()
        defer { restarted.terminate() }
        let deadline = Date().addingTimeInterval(30)
        while try !client.status().stages.allSatisfy(\.alive) && Date() < deadline { usleep(200_000) }
        XCTAssertEqual(try client.status().stages.map(\.alive), [true, true])
        let again = try ClusterEngine(client: client, config: config)
        XCTAssertEqual(try again.forward([1, 2, 3], fullOutput: false).count, config.vocabSize)
    }
}
