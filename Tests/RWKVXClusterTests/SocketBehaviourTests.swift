// Transport behaviour: bound endpoints, timeouts, reconnects, routing errors.
import Foundation
import XCTest
@testable import RWKVXCluster

final class ClusterSocketBehaviourTests: XCTestCase {
    func testBindReadsBackTCPPort() throws {
        let context = try ZmqContext()
        let router = try ZmqSocket(context: context, type: .router)
        defer { router.close() }
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(endpoint.hasPrefix("tcp://127.0.0.1:"), endpoint)
        let port = Int(endpoint.split(separator: ":").last ?? "")
        XCTAssertNotNil(port)
        XCTAssertNotEqual(port, 0)
    }

    func testBindErrorCarriesEndpointAndErrno() throws {
        let context = try ZmqContext()
        let first = try ZmqSocket(context: context, type: .router)
        let second = try ZmqSocket(context: context, type: .router)
        defer {
            first.close()
            second.close()
        }
        let endpoint = try first.bind("tcp://127.0.0.1:*")
        XCTAssertThrowsError(try second.bind(endpoint)) { error in
            guard let error = error as? ZmqError else { return XCTFail("expected ZmqError, got \(error)") }
            XCTAssertEqual(error.function, "zmq_bind")
            XCTAssertEqual(error.endpoint, endpoint)
            XCTAssertEqual(error.errno, EADDRINUSE)
        }
    }

    func testPollTimeoutReturnsNoMessage() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let start = Date()
        XCTAssertNil(try pair.router.receive(timeoutMillis: 100))
        XCTAssertNil(try pair.dealer.receive(timeoutMillis: 0))
        XCTAssertFalse(try ZmqPoller.poll([pair.router, pair.dealer], timeoutMillis: 50).contains(true))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.14)
    }

    func testClosedSocketThrows() throws {
        let pair = try SocketPair(.tcp)
        pair.dealer.close()
        XCTAssertThrowsError(try pair.dealer.send([[1]])) { error in
            XCTAssertTrue((error as? ZmqError)?.isTerminated == true, "\(error)")
        }
        pair.close()
    }

    func testRouterRejectsUnknownPeer() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        XCTAssertThrowsError(try pair.router.send(to: Array("nobody".utf8), [[1]])) { error in
            XCTAssertEqual((error as? ZmqError)?.errno, EHOSTUNREACH)
        }
    }

    func testDealerSendTimesOutWithoutPeer() throws {
        let context = try ZmqContext()
        var options = ZmqSocketOptions.standard
        options.sendTimeoutMillis = 100
        options.immediate = true
        let dealer = try ZmqSocket(context: context, type: .dealer, options: options)
        defer { dealer.close() }
        // Nothing binds this path. (Closing a bound ROUTER first would race:
        // libzmq closes its listener asynchronously.)
        try dealer.connect(TestTransport.ipc.bindEndpoint)
        XCTAssertThrowsError(try dealer.send([[1]])) { error in
            XCTAssertTrue((error as? ZmqError)?.isTimeout == true, "\(error)")
        }
    }

    func testDealerReconnectsAfterRouterRestartOverTCP() throws {
        try reconnectAfterRestart(.tcp)
    }

    func testDealerReconnectsAfterRouterRestartOverIPC() throws {
        try reconnectAfterRestart(.ipc)
    }

    private func reconnectAfterRestart(_ transport: TestTransport) throws {
        var options = ZmqSocketOptions.standard
        options.routingID = Array("coordinator".utf8)
        options.sendTimeoutMillis = 200
        let pair = try SocketPair(transport, dealerOptions: options)
        defer { pair.close() }
        let first = WireMessage(messageID: 1, body: .heartbeat(Heartbeat(sentUnixMicros: 1)))
        let (peer, received) = try pair.sendToRouter(first)
        XCTAssertEqual(received, first)
        XCTAssertEqual(peer, Array("coordinator".utf8))

        // The worker goes away; a new one binds the same endpoint.
        pair.router.close()
        let restarted = try ZmqSocket(context: pair.context, type: .router)
        defer { restarted.close() }
        var bound = ""
        let bindDeadline = Date().addingTimeInterval(5)
        while bound.isEmpty {
            do {
                bound = try restarted.bind(pair.endpoint)
            } catch let error as ZmqError where error.errno == EADDRINUSE && Date() < bindDeadline {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        XCTAssertEqual(bound, pair.endpoint)

        // Sends fail (timeout) until the dealer has reconnected, then get through.
        let second = WireMessage(messageID: 2, body: .heartbeat(Heartbeat(sentUnixMicros: 2)))
        let sendDeadline = Date().addingTimeInterval(10)
        var attempts = 0
        var frames: ZmqFrames? = nil
        while frames == nil && Date() < sendDeadline {
            attempts += 1
            do {
                try pair.dealer.send(try second.encode())
            } catch let error as ZmqError where error.isTimeout {
                continue
            }
            frames = try restarted.receive(timeoutMillis: 1_000)
        }
        let delivered = try XCTUnwrap(frames, "no message after \(attempts) attempts")
        XCTAssertEqual(delivered[0], Array("coordinator".utf8))
        XCTAssertEqual(try WireMessage.decode(Array(delivered.dropFirst())), second)

        // The restarted worker can reply to the coordinator by its fixed routing id.
        let reply = WireMessage(messageID: 1, inReplyTo: 2, body: .health(Health()))
        try restarted.send(to: delivered[0], try reply.encode())
        let answer = try XCTUnwrap(try pair.dealer.receive(timeoutMillis: testTimeoutMillis))
        XCTAssertEqual(try WireMessage.decode(answer), reply)
    }
}
