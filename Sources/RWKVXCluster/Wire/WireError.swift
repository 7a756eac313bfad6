// Errors found when decoding or validating a received protocol message.
// Each keeps the facts needed to log it and to reply with an Error message.

public enum WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The message had no frames at all.
    case missingHeader
    /// Frame 0 did not decode as an Envelope (protobuf_c_message_unpack failed).
    case malformedHeader(byteCount: Int)
    /// Envelope.protocol_version is not ours.
    case versionMismatch(received: UInt32, expected: UInt32)
    /// The Envelope's body is unset or of a kind this build does not know.
    case unknownBody(fieldNumber: UInt32)
    /// A field contains a value this build cannot use (unknown enum value, overflow).
    case invalidField(message: String, field: String, value: String)
    /// The number of tensor frames differs from the number of descriptors.
    case frameCountMismatch(descriptors: Int, frames: Int)
    /// A descriptor names a frame that does not exist or that another descriptor uses.
    case invalidFrameIndex(name: String, frameIndex: Int, frames: Int, duplicate: Bool)
    /// A frame's length disagrees with its descriptor or the descriptor with dtype x shape.
    case tensorSizeMismatch(name: String, dtype: DType, shape: [Int], expectedBytes: Int, descriptorBytes: Int, frameBytes: Int)

    /// The protocol error code to report this error with.
    public var code: ErrorCode {
        switch self {
        case .versionMismatch: .versionMismatch
        case .frameCountMismatch, .invalidFrameIndex, .tensorSizeMismatch: .tensorSizeMismatch
        case .missingHeader, .malformedHeader, .unknownBody, .invalidField: .malformedMessage
        }
    }

    public var description: String {
        switch self {
        case .missingHeader:
            "message has no frames"
        case .malformedHeader(let byteCount):
            "header frame of \(byteCount) bytes is not a valid Envelope"
        case .versionMismatch(let received, let expected):
            "protocol version \(received) received, \(expected) expected"
        case .unknownBody(let fieldNumber):
            fieldNumber == 0 ? "Envelope body is not set" : "Envelope body field \(fieldNumber) is unknown"
        case .invalidField(let message, let field, let value):
            "invalid \(message).\(field): \(value)"
        case .frameCountMismatch(let descriptors, let frames):
            "\(descriptors) tensor descriptors but \(frames) tensor frames"
        case .invalidFrameIndex(let name, let frameIndex, let frames, let duplicate):
            duplicate
                ? "tensor '\(name)' reuses frame \(frameIndex)"
                : "tensor '\(name)' names frame \(frameIndex) of \(frames)"
        case .tensorSizeMismatch(let name, let dtype, let shape, let expectedBytes, let descriptorBytes, let frameBytes):
            "tensor '\(name)' \(dtype) \(shape) needs \(expectedBytes) bytes; descriptor says \(descriptorBytes), frame has \(frameBytes)"
        }
    }
}
