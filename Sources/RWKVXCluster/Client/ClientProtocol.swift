// The coordinator's client API: JSON requests and replies over ZeroMQ
// (client DEALER, coordinator ROUTER). Frame 0 is the JSON object; a reply that
// carries a tensor (logits, a session state) adds the raw little-endian bytes as
// frame 1. One request gets one reply, except generate, which streams "text"
// replies and ends with "done" or "error".
//
// Requests (field "op"):
//   generate {prompt or prompt_tokens, sampling} -> text* then done {stats}
//   open                             -> opened {session}
//   forward {session, tokens, full_output} -> logits {shape} + f32 frame
//   state {session}                  -> state + session state bytes frame
//   close {session}                  -> closed
//   status                           -> status {status}
//   shutdown                         -> stopping (workers and coordinator stop)
// Any request may instead get error {message}.
import Foundation
import RWKVX

public struct ClientRequest: Codable, Sendable {
    public var op: String
    public var prompt: String?
    /// The prompt as token ids; used instead of `prompt` when set.
    public var promptTokens: [Int]?
    public var sampling: SamplingOptions?
    public var session: UInt64?
    public var tokens: [Int]?
    public var fullOutput: Bool?

    public init(op: String) { self.op = op }

    enum CodingKeys: String, CodingKey {
        case op, prompt, sampling, session, tokens
        case fullOutput = "full_output", promptTokens = "prompt_tokens"
    }
}

public struct GenerationReport: Codable, Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    public var stop: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", generatedTokens = "generated_tokens"
        case prefillSeconds = "prefill_seconds", decodeSeconds = "decode_seconds", stop
    }
}

public struct StageStatus: Codable, Sendable {
    public var index: Int
    public var worker: String
    public var blocks: String
    public var alive: Bool
    public var batches: UInt64
    public var p50Micros: UInt64
    public var p99Micros: UInt64
    /// Coordinator-measured round trip of a batch to this stage and back (median, µs).
    public var hopMicros: UInt64
    public var residentBytes: UInt64

    enum CodingKeys: String, CodingKey {
        case index, worker, blocks, alive, batches
        case p50Micros = "p50_micros", p99Micros = "p99_micros", hopMicros = "hop_micros"
        case residentBytes = "resident_bytes"
    }
}

public struct ClusterStatus: Codable, Sendable {
    public var model: String
    public var stages: [StageStatus]
    public var sessions: Int
    public var generatedTokens: UInt64
    public var uptimeSeconds: Double
    /// Activation bytes sent to and received from stages per token that crossed them.
    public var bytesPerTokenPerHop: Double
    /// Sparse-attention settings every stage runs with.
    public var attention: RWKVX.AttentionOptions
    /// Content fingerprint of every tensor of the served checkpoint.
    public var modelFingerprint: String
    /// Vocabulary size of the served model.
    public var vocabSize: Int

    enum CodingKeys: String, CodingKey {
        case model, stages, sessions, attention
        case modelFingerprint = "model_fingerprint", vocabSize = "vocab_size"
        case generatedTokens = "generated_tokens", uptimeSeconds = "uptime_seconds"
        case bytesPerTokenPerHop = "bytes_per_token_per_hop"
    }
}

public struct ClientReply: Codable, Sendable {
    public var op: String
    public var text: String?
    public var message: String?
    public var session: UInt64?
    public var shape: [Int]?
    public var stats: GenerationReport?
    public var status: ClusterStatus?

    public init(op: String) { self.op = op }

    public static func error(_ message: String) -> ClientReply {
        var r = ClientReply(op: "error")
        r.message = message
        return r
    }
}

enum ClientCoding {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return [UInt8]((try? encoder.encode(value)) ?? Data("{\"op\":\"error\",\"message\":\"encoding failed\"}".utf8))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
