// Socket fixtures for the cluster tests: a worker-side ROUTER bound to a fresh
// loopback or ipc endpoint and a coordinator-side DEALER connected to it.
import Foundation
import XCTest
@testable import RWKVXCluster

enum TestTransport: CaseIterable {
    case tcp
    case ipc

    /// An endpoint no other test uses: tcp lets the kernel pick the port,
    /// ipc gets a unique path in /tmp.
    var bindEndpoint: String {
        switch self {
        case .tcp: "tcp://127.0.0.1:*"
        case .ipc: "ipc:///tmp/rwkvx-test-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
        }
    }
}

/// Short timeouts so failing tests end quickly; a test waits at most this long per message.
let testTimeoutMillis = 5_000

final class SocketPair {
    let context: ZmqContext
    let router: ZmqSocket
    let dealer: ZmqSocket
    let endpoint: String

    init(_ transport: TestTransport, dealerOptions: ZmqSocketOptions = .standard) throws {
        context = try ZmqContext()
        router = try ZmqSocket(context: context, type: .router)
        endpoint = try router.bind(transport.bindEndpoint)
        dealer = try ZmqSocket(context: context, type: .dealer, options: dealerOptions)
        try dealer.connect(endpoint)
    }

    deinit { close() }

    func close() {
        dealer.close()
        router.close()
        if endpoint.hasPrefix("ipc://") { unlink(String(endpoint.dropFirst("ipc://".count))) }
    }

    /// Sends `message` from the dealer, returns the router's decoded copy and the peer id.
    func sendToRouter(_ message: WireMessage, file: StaticString = #filePath, line: UInt = #line) throws -> (peer: [UInt8], message: WireMessage) {
        try dealer.send(try message.encode())
        let frames = try XCTUnwrap(try router.receive(timeoutMillis: testTimeoutMillis), "router timed out", file: file, line: line)
        XCTAssertGreaterThanOrEqual(frames.count, 2, file: file, line: line)
        return (frames[0], try WireMessage.decode(Array(frames.dropFirst())))
    }

    /// Sends `message` from the router to `peer` and returns the dealer's decoded copy.
    func sendToDealer(_ message: WireMessage, peer: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> WireMessage {
        try router.send(to: peer, try message.encode())
        let frames = try XCTUnwrap(try dealer.receive(timeoutMillis: testTimeoutMillis), "dealer timed out", file: file, line: line)
        return try WireMessage.decode(frames)
    }
}

/// Deterministic values that cover signs and many magnitudes (xorshift64).
func testFloats(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        let unit = Float(state >> 40) / Float(1 << 24)          // [0, 1)
        let exponent = Float(Int(state & 0x1F) - 16)            // 2^-16 ... 2^15
        return (unit * 2 - 1) * Float(pow(2.0, Double(exponent)))
    }
}
