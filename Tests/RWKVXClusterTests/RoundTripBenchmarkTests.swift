// Round-trip time of ForwardRequest-shaped messages (header + one F32 frame)
// between a DEALER and an echoing ROUTER on another thread. Prints numbers and
// asserts only that every echo arrived intact: timing depends on the machine.
import Foundation
import Synchronization
import XCTest
@testable import RWKVXCluster

final class ClusterRoundTripBenchmarkTests: XCTestCase {
    func testRoundTripTimesForSmallAndLargeFrames() throws {
        for transport in TestTransport.allCases {
            for (label, payloadBytes, iterations) in [("3 KB", 3 * 1_024, 2_000), ("1 MB", 1 << 20, 200)] {
                let micros = try measureRoundTrips(transport, payloadBytes: payloadBytes, iterations: iterations)
                print("round trip \(transport) \(label): median \(micros.median) us, p90 \(micros.p90) us over \(iterations)")
            }
        }
    }

    private func measureRoundTrips(_ transport: TestTransport, payloadBytes: Int, iterations: Int) throws -> (median: Int, p90: Int) {
        let context = try ZmqContext()
        let endpoint = Mutex<String?>(nil)
        let bound = DispatchSemaphore(value: 0)
        let bindEndpoint = transport.bindEndpoint
        let total = iterations + 10

        // Echo server: owns its ROUTER on its own thread and sends every message back.
        let echo = Thread {
            do {
                let router = try ZmqSocket(context: context, type: .router)
                defer { router.close() }
                endpoint.withLock { $0 = try? router.bind(bindEndpoint) }
                bound.signal()
                for _ in 0..<total {
                    guard let frames = try router.receive(timeoutMillis: testTimeoutMillis) else { return }
                    try router.send(frames)
                }
            } catch {
                print("echo server failed: \(error)")
                bound.signal()
            }
        }
        echo.start()
        XCTAssertEqual(bound.wait(timeout: .now() + 5), .success)
        let serverEndpoint = try XCTUnwrap(endpoint.withLock { $0 }, "echo server did not bind")
        defer { if serverEndpoint.hasPrefix("ipc://") { unlink(String(serverEndpoint.dropFirst("ipc://".count))) } }

        let dealer = try ZmqSocket(context: context, type: .dealer)
        defer { dealer.close() }
        try dealer.connect(serverEndpoint)

        var message = WireMessage(messageID: 1, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
        var step = SessionStep()
        step.sessionID = 1
        step.activation = message.appendTensor(
            WireTensor(floats: testFloats(count: payloadBytes / 4), shape: [1, payloadBytes / 4], dtype: .f32))
        var request = ForwardRequest()
        request.sessions = [step]
        message.body = .forwardRequest(request)

        // Each round trip encodes, sends, receives the echo and decodes it.
        var samples: [Int] = []
        for iteration in 0..<total {
            let start = DispatchTime.now().uptimeNanoseconds
            try dealer.send(try message.encode())
            let frames = try XCTUnwrap(try dealer.receive(timeoutMillis: testTimeoutMillis), "echo timed out at iteration \(iteration) of \(transport) \(payloadBytes) B")
            let echoed = try WireMessage.decode(frames)
            let elapsed = Int(DispatchTime.now().uptimeNanoseconds - start) / 1_000
            XCTAssertEqual(echoed.frames[0].count, payloadBytes)
            if iteration >= 10 { samples.append(elapsed) }   // the first ones include connecting
        }
        samples.sort()
        return (samples[samples.count / 2], samples[samples.count * 9 / 10])
    }
}
