// One protocol message: the Envelope fields, its body and its tensor frames.
//
// On the wire it is [Envelope protobuf] + [tensor frame 0] + [tensor frame 1]...
// `decode` checks everything proto/rwkvx.proto lists under "Framing" before it
// returns, so a caller never sees a message whose frames disagree with its
// descriptors.

/// The Envelope's oneof `body`.
public enum MessageBody: Sendable, Equatable {
    case coordinatorHello(CoordinatorHello)
    case workerHello(WorkerHello)
    case stageAssignment(StageAssignment)
    case assignmentAck(AssignmentAck)
    case sessionControl(SessionControl)
    case sessionAck(SessionAck)
    case forwardRequest(ForwardRequest)
    case forwardResult(ForwardResult)
    case stateSnapshotRequest(StateSnapshotRequest)
    case stateSnapshot(StateSnapshot)
    case stateDelta(StateDelta)
    case heartbeat(Heartbeat)
    case health(Health)
    case error(ErrorReport)
    case shutdown(Shutdown)
}

public struct WireMessage: Sendable, Equatable {
    /// PROTOCOL_VERSION_CURRENT in proto/rwkvx.proto.
    public static let protocolVersion: UInt32 = 1

    public var messageID: UInt64
    public var inReplyTo: UInt64
    public var body: MessageBody
    /// Tensor payloads; descriptor frame_index i refers to `frames[i]`.
    public var frames: [[UInt8]]

    public init(messageID: UInt64 = 0, inReplyTo: UInt64 = 0, body: MessageBody, frames: [[UInt8]] = []) {
        self.messageID = messageID
        self.inReplyTo = inReplyTo
        self.body = body
        self.frames = frames
    }

    /// Appends `tensor` as the next frame and returns its descriptor, to be
    /// stored in the body.
    public mutating func appendTensor(_ tensor: WireTensor) -> TensorDescriptor {
        let descriptor = TensorDescriptor(
            dtype: tensor.dtype, shape: tensor.shape, frameIndex: frames.count,
            byteLength: tensor.bytes.count, name: tensor.name)
        frames.append(tensor.bytes)
        return descriptor
    }

    /// The payload `descriptor` points at, as a tensor. Valid on a decoded
    /// message, whose frames were checked against every descriptor.
    public func tensor(_ descriptor: TensorDescriptor) -> WireTensor {
        WireTensor(dtype: descriptor.dtype, shape: descriptor.shape, bytes: frames[descriptor.frameIndex], name: descriptor.name)
    }

    /// Encodes the message as ZeroMQ frames. Throws WireError when the body's
    /// descriptors disagree with `frames`, so a bad message is never sent.
    public func encode() throws -> [[UInt8]] {
        try validateFrames()
        return [try encodeEnvelope(protocolVersion: Self.protocolVersion)] + frames
    }

    /// Decodes and validates a received message (without a ROUTER's routing-id frame).
    public static func decode(_ frames: [[UInt8]]) throws -> WireMessage {
        guard let header = frames.first else { throw WireError.missingHeader }
        let message = try decodeEnvelope(header, tensorFrames: Array(frames.dropFirst()))
        try message.validateFrames()
        return message
    }

    /// Every tensor descriptor the body refers to.
    public var tensorDescriptors: [TensorDescriptor] {
        switch body {
        case .forwardRequest(let request):
            request.sessions.flatMap { [$0.activation, $0.vFirst].compactMap { $0 } }
        case .forwardResult(let result):
            result.sessions.flatMap { output -> [TensorDescriptor] in
                var descriptors = [output.activation, output.vFirst].compactMap { $0 }
                if case .logits(let logits) = output.output { descriptors.append(logits) }
                return descriptors
            }
        case .stateSnapshot(let snapshot):
            snapshot.tensors.map(\.tensor)
        case .stateDelta(let delta):
            delta.tensors.map(\.tensor)
        default:
            []
        }
    }

    /// Checks that descriptors and frames match one to one, and each frame's
    /// length equals its descriptor's byte length and dtype x shape.
    public func validateFrames() throws {
        let descriptors = tensorDescriptors
        guard descriptors.count == frames.count else {
            throw WireError.frameCountMismatch(descriptors: descriptors.count, frames: frames.count)
        }
        var used = [Bool](repeating: false, count: frames.count)
        for descriptor in descriptors {
            let index = descriptor.frameIndex
            guard index >= 0, index < frames.count, !used[index] else {
                let duplicate = index >= 0 && index < frames.count
                throw WireError.invalidFrameIndex(
                    name: descriptor.name, frameIndex: index, frames: frames.count, duplicate: duplicate)
            }
            used[index] = true
            let expected = descriptor.expectedByteLength
            let frameBytes = frames[index].count
            guard let expected, expected == descriptor.byteLength, frameBytes == expected else {
                throw WireError.tensorSizeMismatch(
                    name: descriptor.name, dtype: descriptor.dtype, shape: descriptor.shape,
                    expectedBytes: expected ?? -1, descriptorBytes: descriptor.byteLength, frameBytes: frameBytes)
            }
        }
    }

    /// Builds the Error message that replies to a message that failed to decode with `error`.
    public static func errorReply(for error: WireError, messageID: UInt64, inReplyTo: UInt64 = 0) -> WireMessage {
        WireMessage(
            messageID: messageID, inReplyTo: inReplyTo,
            body: .error(ErrorReport(code: error.code, message: error.description)))
    }
}
