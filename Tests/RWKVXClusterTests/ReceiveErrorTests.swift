// Malformed input gives typed errors, and the receiver keeps working after.
import XCTest
@testable import RWKVXCluster
import CProtobufC
import RWKVXProto

final class ClusterReceiveErrorTests: XCTestCase {
    /// A ForwardRequest with one [2, 4] F32 activation.
    private func tensorMessage() -> WireMessage {
        var message = WireMessage(messageID: 1, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
        var step = SessionStep()
        step.sessionID = 7
        step.activation = message.appendTensor(WireTensor(floats: testFloats(count: 8), shape: [2, 4], dtype: .f32, name: "x"))
        var request = ForwardRequest()
        request.sessions = [step]
        message.body = .forwardRequest(request)
        return message
    }

    /// Sends raw frames from the dealer; returns the router's decode error, if any.
    private func decodeError(of frames: [[UInt8]], over pair: SocketPair) throws -> WireError? {
        try pair.dealer.send(frames)
        let received = try XCTUnwrap(try pair.router.receive(timeoutMillis: testTimeoutMillis))
        do {
            _ = try WireMessage.decode(Array(received.dropFirst()))
            return nil
        } catch let error as WireError {
            return error
        }
    }

    /// A valid message still gets through after a rejected one.
    private func assertStillWorking(_ pair: SocketPair, file: StaticString = #filePath, line: UInt = #line) throws {
        let message = WireMessage(messageID: 77, body: .heartbeat(Heartbeat(sentUnixMicros: 5)))
        let (_, received) = try pair.sendToRouter(message, file: file, line: line)
        XCTAssertEqual(received, message, file: file, line: line)
    }

    func testGarbageHeaderIsMalformed() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let error = try decodeError(of: [[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]], over: pair)
        XCTAssertEqual(error, .malformedHeader(byteCount: 5))
        XCTAssertEqual(error?.code, .malformedMessage)
        try assertStillWorking(pair)
    }

    func testTruncatedHeaderIsMalformed() throws {
        let pair = try SocketPair(.ipc)
        defer { pair.close() }
        let header = try tensorMessage().encode()[0]
        let error = try decodeError(of: [Array(header.prefix(header.count - 3))], over: pair)
        XCTAssertEqual(error, .malformedHeader(byteCount: header.count - 3))
        try assertStillWorking(pair)
    }

    func testWrongVersionIsRejected() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let message = WireMessage(messageID: 3, body: .heartbeat(Heartbeat(sentUnixMicros: 1)))
        let header = try message.encodeEnvelope(protocolVersion: 2)
        let error = try decodeError(of: [header], over: pair)
        XCTAssertEqual(error, .versionMismatch(received: 2, expected: 1))

        // The receiver replies with an Error message, as the protocol requires.
        let reply = WireMessage.errorReply(for: try XCTUnwrap(error), messageID: 1, inReplyTo: 3)
        guard case .error(let report) = reply.body else { return XCTFail("expected an Error body") }
        XCTAssertEqual(report.code, .versionMismatch)
        XCTAssertTrue(report.message.contains("version 2"), report.message)
        try assertStillWorking(pair)
    }

    func testUnsetBodyIsRejected() throws {
        var envelope = Rwkvx__Envelope()
        rwkvx__envelope__init(&envelope)
        envelope.protocol_version = 1
        let header = [UInt8](unsafeUninitializedCapacity: rwkvx__envelope__get_packed_size(&envelope)) { buffer, count in
            count = rwkvx__envelope__pack(&envelope, buffer.baseAddress)
        }
        XCTAssertThrowsError(try WireMessage.decode([header])) { error in
            XCTAssertEqual(error as? WireError, .unknownBody(fieldNumber: 0))
        }
    }

    func testMissingFrameIsRejected() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let frames = try tensorMessage().encode()
        let error = try decodeError(of: [frames[0]], over: pair)
        XCTAssertEqual(error, .frameCountMismatch(descriptors: 1, frames: 0))
        XCTAssertEqual(error?.code, .tensorSizeMismatch)
        try assertStillWorking(pair)
    }

    func testExtraFrameIsRejected() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let frames = try tensorMessage().encode() + [[1, 2, 3, 4]]
        XCTAssertEqual(try decodeError(of: frames, over: pair), .frameCountMismatch(descriptors: 1, frames: 2))
        try assertStillWorking(pair)
    }

    func testShortFrameIsRejected() throws {
        let pair = try SocketPair(.ipc)
        defer { pair.close() }
        var frames = try tensorMessage().encode()
        frames[1].removeLast(4)
        let error = try decodeError(of: frames, over: pair)
        XCTAssertEqual(error, .tensorSizeMismatch(name: "x", dtype: .f32, shape: [2, 4], expectedBytes: 32, descriptorBytes: 32, frameBytes: 28))
        try assertStillWorking(pair)
    }

    func testDescriptorDisagreeingWithShapeIsRejected() throws {
        var message = tensorMessage()
        guard case .forwardRequest(var request) = message.body else { return XCTFail() }
        request.sessions[0].activation?.byteLength = 16
        message.body = .forwardRequest(request)
        message.frames[0].removeLast(16)
        XCTAssertThrowsError(try message.encode(), "encode must refuse to send it") { error in
            XCTAssertEqual(error as? WireError, .tensorSizeMismatch(name: "x", dtype: .f32, shape: [2, 4], expectedBytes: 32, descriptorBytes: 16, frameBytes: 16))
        }
    }

    func testOutOfRangeAndDuplicateFrameIndexAreRejected() throws {
        var message = tensorMessage()
        guard case .forwardRequest(var request) = message.body else { return XCTFail() }
        request.sessions[0].activation?.frameIndex = 5
        message.body = .forwardRequest(request)
        XCTAssertThrowsError(try message.validateFrames()) { error in
            XCTAssertEqual(error as? WireError, .invalidFrameIndex(name: "x", frameIndex: 5, frames: 1, duplicate: false))
        }

        request.sessions[0].activation?.frameIndex = 0
        request.sessions[0].vFirst = request.sessions[0].activation
        message.body = .forwardRequest(request)
        message.frames.append(message.frames[0])
        XCTAssertThrowsError(try message.validateFrames()) { error in
            XCTAssertEqual(error as? WireError, .invalidFrameIndex(name: "x", frameIndex: 0, frames: 2, duplicate: true))
        }
    }

    func testOverflowingShapeIsRejected() {
        var message = tensorMessage()
        guard case .forwardRequest(var request) = message.body else { return XCTFail() }
        request.sessions[0].activation?.shape = [Int.max / 2, 4]
        message.body = .forwardRequest(request)
        XCTAssertThrowsError(try message.validateFrames()) { error in
            guard case .tensorSizeMismatch(_, _, _, let expected, _, _) = error as? WireError else {
                return XCTFail("expected tensorSizeMismatch, got \(error)")
            }
            XCTAssertEqual(expected, -1)
        }
    }

    func testUnknownEnumValueIsRejected() throws {
        var control = Rwkvx__SessionControl()
        rwkvx__session_control__init(&control)
        control.session_id = 1
        control.action = Rwkvx__SessionAction(rawValue: 77)
        var envelope = Rwkvx__Envelope()
        rwkvx__envelope__init(&envelope)
        envelope.protocol_version = 1
        envelope.body_case = RWKVX__ENVELOPE__BODY_SESSION_CONTROL
        let header = withUnsafeMutablePointer(to: &control) { pointer in
            envelope.session_control = pointer
            return [UInt8](unsafeUninitializedCapacity: rwkvx__envelope__get_packed_size(&envelope)) { buffer, count in
                count = rwkvx__envelope__pack(&envelope, buffer.baseAddress)
            }
        }
        XCTAssertThrowsError(try WireMessage.decode([header])) { error in
            XCTAssertEqual(error as? WireError, .invalidField(message: "SessionControl", field: "action", value: "unknown enum value 77"))
        }
    }

    func testEmptyMessageHasNoHeader() {
        XCTAssertThrowsError(try WireMessage.decode([])) { error in
            XCTAssertEqual(error as? WireError, .missingHeader)
        }
    }
}
