// A client of the coordinator's API (ClientProtocol.swift): streams generated text,
// and runs step-by-step logits sessions so that reference scenarios can be checked
// through any stage split.
import Foundation
import RWKVX

public struct ClusterClientError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

public final class ClusterClient {
    let context: ZmqContext
    let socket: ZmqSocket
    public let endpoint: String
    /// Maximum wait for one reply, in seconds.
    public var timeoutSeconds: Double

    public init(endpoint: String, timeoutSeconds: Double = 600) throws {
        self.endpoint = endpoint
        self.timeoutSeconds = timeoutSeconds
        context = try ZmqContext()
        var options = ZmqSocketOptions.standard
        options.routerMandatory = false
        socket = try ZmqSocket(context: context, type: .dealer, options: options)
        try socket.connect(endpoint)
    }

    deinit {
        socket.close()
    }

    /// Checks within `seconds` that a coordinator replies, so that a wrong endpoint
    /// fails fast instead of after the long reply timeout.
    public func checkReachable(seconds: Double = 5) throws {
        let saved = timeoutSeconds
        timeoutSeconds = seconds
        defer { timeoutSeconds = saved }
        do {
            _ = try status()
        } catch let error as ClusterClientError where error.message.hasPrefix("no reply") {
            throw ClusterClientError(message: "no coordinator replied at \(endpoint) within \(Int(seconds)) s; start one (rwkvx cluster up) or check the endpoint")
        }
    }

    public func close() { socket.close() }

    func send(_ request: ClientRequest) throws {
        try socket.send([ClientCoding.encode(request)])
    }

    /// Receives the next reply and its payload frame, if any; an error reply is thrown.
    func receive() throws -> (ClientReply, [UInt8]?) {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var lastCheck = Date()
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw ClusterClientError(message: "no reply from the coordinator at \(endpoint) in \(Int(timeoutSeconds)) s; is it running (rwkvx cluster status)?")
            }
            guard let frames = try socket.receive(timeoutMillis: min(Int(remaining * 1000) + 1, 1000)) else {
                // A long step legitimately keeps the reply waiting, but a coordinator that
                // died never replies: check on a separate connection every 15 s.
                if Date().timeIntervalSince(lastCheck) > 15 && timeoutSeconds > 15 {
                    lastCheck = Date()
                    let probe = try ClusterClient(endpoint: endpoint, timeoutSeconds: 5)
                    defer { probe.close() }
                    guard (try? probe.status()) != nil else {
                        throw ClusterClientError(message: "the coordinator at \(endpoint) stopped responding; the request is lost")
                    }
                }
                continue
            }
            guard let header = frames.first else { continue }
            let reply = try ClientCoding.decode(ClientReply.self, header)
            if reply.op == "error" {
                throw ClusterClientError(message: "coordinator: \(reply.message ?? "unknown error")")
            }
            return (reply, frames.count > 1 ? frames[1] : nil)
        }
    }

    func call(_ request: ClientRequest, expect op: String) throws -> (ClientReply, [UInt8]?) {
        try send(request)
        let (reply, payload) = try receive()
        guard reply.op == op else {
            throw ClusterClientError(message: "coordinator replied to \(request.op) with \(reply.op), expected \(op)")
        }
        return (reply, payload)
    }

    /// Generates text, calling `emit` with each piece as it arrives.
    public func generate(prompt: String, sampling: SamplingOptions, emit: (String) -> Void) throws -> GenerationReport {
        var request = ClientRequest(op: "generate")
        request.prompt = prompt
        request.sampling = sampling
        return try generate(request, emit: emit)
    }

    /// Generates after a prompt given as token ids.
    public func generate(promptTokens: [Int], sampling: SamplingOptions, emit: (String) -> Void) throws -> GenerationReport {
        var request = ClientRequest(op: "generate")
        request.promptTokens = promptTokens
        request.sampling = sampling
        return try generate(request, emit: emit)
    }

    func generate(_ request: ClientRequest, emit: (String) -> Void) throws -> GenerationReport {
        try send(request)
        while true {
            let (reply, _) = try receive()
            switch reply.op {
            case "text": emit(reply.text ?? "")
            case "done": return reply.stats ?? GenerationReport()
            default: throw ClusterClientError(message: "unexpected reply \(reply.op) during generation")
            }
        }
    }

    public func status() throws -> ClusterStatus {
        let (reply, _) = try call(ClientRequest(op: "status"), expect: "status")
        guard let status = reply.status else { throw ClusterClientError(message: "status reply without a status") }
        return status
    }

    public func shutdown() throws {
        _ = try call(ClientRequest(op: "shutdown"), expect: "stopping")
    }

    public func openSession() throws -> UInt64 {
        let (reply, _) = try call(ClientRequest(op: "open"), expect: "opened")
        guard let id = reply.session else { throw ClusterClientError(message: "opened reply without a session id") }
        return id
    }

    public func closeSession(_ id: UInt64) throws {
        var request = ClientRequest(op: "close")
        request.session = id
        _ = try call(request, expect: "closed")
    }

    /// Logits [V] of the last token, or [T, V] with fullOutput.
    public func forward(session: UInt64, tokens: [Int], fullOutput: Bool) throws -> [Float] {
        var request = ClientRequest(op: "forward")
        request.session = session
        request.tokens = tokens
        request.fullOutput = fullOutput
        let (_, payload) = try call(request, expect: "logits")
        guard let payload else { throw ClusterClientError(message: "logits reply without a tensor frame") }
        return try TensorCoding.decodeFloats(payload, dtype: .f32)
    }

    public func state(session: UInt64, config: ModelConfig) throws -> SessionState {
        var request = ClientRequest(op: "state")
        request.session = session
        let (_, payload) = try call(request, expect: "state")
        guard let payload else { throw ClusterClientError(message: "state reply without a state frame") }
        return try SessionState(serialized: payload, config: config)
    }
}

/// One session of a cluster as a scenario engine.
public final class ClusterEngine: LogitsEngine {
    public let client: ClusterClient
    public let config: ModelConfig
    let session: UInt64

    public init(client: ClusterClient, config: ModelConfig) throws {
        self.client = client
        self.config = config
        session = try client.openSession()
    }

    public func forward(_ tokens: [Int], fullOutput: Bool) throws -> [Float] {
        try client.forward(session: session, tokens: tokens, fullOutput: fullOutput)
    }

    public func finalState() throws -> SessionState {
        try client.state(session: session, config: config)
    }

    public func close() throws {
        try client.closeSession(session)
    }
}
