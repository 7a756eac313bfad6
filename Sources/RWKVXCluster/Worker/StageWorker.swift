// A pipeline-stage worker. It binds one ROUTER socket and registers with the
// coordinator. It loads the layer range it is assigned, reading only those weights
// from its copy of the checkpoint. It keeps every session's state for its blocks
// and runs forward passes for batches of sessions.
//
// Follows the message orders of proto/rwkvx.proto. One thread owns the socket and
// the compute; the stage's thread pool parallelises each forward pass. A bad
// message gets an Error reply and never stops the worker.
import CKernels
import Foundation
import RWKVX

public struct WorkerOptions: Sendable {
    public var listen: String
    public var threads: Int
    /// Memory the worker offers for weights and states; nil = what the host has available.
    public var memoryLimitBytes: UInt64?
    public var workerID: String

    public init(listen: String, threads: Int, memoryLimitBytes: UInt64? = nil, workerID: String? = nil) {
        self.listen = listen
        self.threads = threads
        self.memoryLimitBytes = memoryLimitBytes
        self.workerID = workerID ?? listen
    }
}

/// One session's part on this stage.
struct WorkerSession {
    var state: SessionState
    /// Last processed sequence number (0 after OPEN or RESET).
    var sequence: UInt64 = 0
    /// Created on the first step that requests sampling from this (last) stage.
    var sampler: Sampler?
}

/// Error raised while handling one message; becomes an Error reply.
struct WorkerFailure: Error {
    let code: ErrorCode
    let message: String
    var sessionID: UInt64 = 0
}

public final class StageWorker {
    let options: WorkerOptions
    let log: Logger
    let context: ZmqContext
    let socket: ZmqSocket
    /// The endpoint actually bound (port resolved when the listen address used port 0).
    public let endpoint: String

    /// The coordinator this worker serves: its routing id, cluster id and when it was
    /// last heard. A worker serves one coordinator at a time.
    var owner: (peer: [UInt8], clusterID: String, lastHeard: Date)?
    /// Seconds of silence after which another coordinator may take the worker over.
    let ownerSilenceSeconds = 10.0
    var assignment: StageAssignment?
    var stage: Stage?
    var checkpoint: Checkpoint?
    var sessions: [UInt64: WorkerSession] = [:]
    var tokenizer: WorldTokenizer?
    var nextMessageID: UInt64 = 1
    var computeMicros: [UInt64] = []
    var batches: UInt64 = 0
    var running = true

    public init(options: WorkerOptions) throws {
        self.options = options
        log = Logger(component: "worker")
        context = try ZmqContext()
        socket = try ZmqSocket(context: context, type: .router)
        endpoint = try socket.bind(options.listen)
    }

    deinit {
        socket.close()
    }

    /// Serves until a Shutdown message arrives.
    public func run() throws {
        log.info("listening", ["worker": options.workerID, "endpoint": endpoint, "threads": options.threads,
                                "kernels": String(cString: rwkvx_level_name(rwkvx_get_level()))])
        while running {
            guard let frames = try socket.receive(timeoutMillis: 1000) else { continue }
            guard frames.count >= 2 else {
                log.warning("dropped a message without a routing id or header", ["frames": frames.count])
                continue
            }
            let peer = frames[0]
            handle(peer: peer, frames: Array(frames.dropFirst()))
        }
        log.info("stopped", ["worker": options.workerID])
        socket.close()
    }

    // MARK: - Dispatch

    func handle(peer: [UInt8], frames: [[UInt8]]) {
        let message: WireMessage
        do {
            message = try WireMessage.decode(frames)
        } catch let error as WireError {
            log.warning("rejected a malformed message", ["worker": options.workerID, "error": error])
            reply(to: peer, WireMessage.errorReply(for: error, messageID: takeMessageID()))
            return
        } catch {
            log.error("unexpected decode failure", ["error": error])
            return
        }

        do {
            try dispatch(peer: peer, message)
        } catch let failure as WorkerFailure {
            log.warning("request failed", ["worker": options.workerID, "code": failure.code, "session": failure.sessionID,
                                           "error": failure.message])
            var report = ErrorReport(code: failure.code, message: failure.message)
            report.sessionID = failure.sessionID
            report.stageIndex = assignment?.stageIndex ?? 0
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .error(report)))
        } catch {
            log.error("request failed", ["worker": options.workerID, "error": error])
            var report = ErrorReport(code: .internal, message: "\(error)")
            report.stageIndex = assignment?.stageIndex ?? 0
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .error(report)))
        }
    }

    func dispatch(peer: [UInt8], _ message: WireMessage) throws {
        if case .coordinatorHello(let hello) = message.body {
            try register(peer: peer, hello, message)
            return
        }
        guard let current = owner, current.peer == peer else {
            throw WorkerFailure(code: .notRegistered, message: "send CoordinatorHello before any other message")
        }
        if case .shutdown(let shutdown) = message.body {
            log.info("shutdown requested", ["worker": options.workerID, "reason": shutdown.reason])
            running = false
            return
        }
        owner = (current.peer, current.clusterID, Date())
        switch message.body {
        case .stageAssignment(let a):
            let ack = try assign(a)
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .assignmentAck(ack)))
        case .sessionControl(let control):
            let ack = try controlSession(control)
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .sessionAck(ack)))
        case .forwardRequest(let request):
            var (out, failures) = try forward(request, message)
            out.messageID = takeMessageID()
            out.inReplyTo = message.messageID
            reply(to: peer, out)
            for report in failures {
                reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .error(report)))
            }
        case .stateSnapshotRequest(let request):
            for id in request.sessionIDs {
                var out = try snapshot(id)
                out.messageID = takeMessageID()
                out.inReplyTo = message.messageID
                reply(to: peer, out)
            }
        case .stateSnapshot(let snapshot):
            let ack = try restore(snapshot, message)
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .sessionAck(ack)))
        case .heartbeat(let beat):
            reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .health(health(beat))))
        case .error(let report):
            log.warning("peer reported an error", ["code": report.code, "error": report.message])
        default:
            throw WorkerFailure(code: .malformedMessage, message: "a worker does not accept \(message.body.kindName)")
        }
    }

    func reply(to peer: [UInt8], _ message: WireMessage) {
        do {
            try socket.send(to: peer, try message.encode())
        } catch {
            log.warning("send failed", ["worker": options.workerID, "error": error])
        }
    }

    func takeMessageID() -> UInt64 {
        defer { nextMessageID += 1 }
        return nextMessageID
    }

    // MARK: - Registration and assignment

    func register(peer: [UInt8], _ hello: CoordinatorHello, _ message: WireMessage) throws {
        guard hello.protocolVersion == WireMessage.protocolVersion else {
            throw WorkerFailure(code: .versionMismatch,
                                message: "coordinator speaks protocol \(hello.protocolVersion), this worker \(WireMessage.protocolVersion)")
        }
        if let current = owner, current.peer != peer,
           Date().timeIntervalSince(current.lastHeard) < ownerSilenceSeconds {
            let silent = Int(Date().timeIntervalSince(current.lastHeard))
            throw WorkerFailure(code: .assignmentFailed,
                                message: "worker \(options.workerID) serves cluster \(current.clusterID), whose coordinator was heard \(silent) s ago; stop that cluster, or if it has stopped retry in \(Int(ownerSilenceSeconds) - silent + 1) s")
        }
        if let current = owner, current.peer != peer {
            log.warning("coordinator taken over after silence", ["worker": options.workerID, "old_cluster": current.clusterID,
                                                                 "new_cluster": hello.clusterID])
            sessions = [:]
        }
        owner = (peer, hello.clusterID, Date())
        var reply = WorkerHello()
        reply.workerID = options.workerID
        reply.cores = UInt32(options.threads)
        reply.memoryBytes = options.memoryLimitBytes ?? availableMemoryBytes()
        reply.kernelLevel = String(cString: rwkvx_level_name(rwkvx_get_level()))
        reply.buildID = "rwkvx"
        log.info("registered coordinator", ["worker": options.workerID, "cluster": hello.clusterID])
        self.reply(to: peer, WireMessage(messageID: takeMessageID(), inReplyTo: message.messageID, body: .workerHello(reply)))
    }

    func assign(_ a: StageAssignment) throws -> AssignmentAck {
        let start = Date()
        let fail = { (code: ErrorCode, text: String) in WorkerFailure(code: code, message: text) }
        let checkpoint: Checkpoint
        do {
            checkpoint = try Checkpoint.open(path: a.modelPath)
        } catch {
            throw fail(.assignmentFailed, "cannot open the checkpoint: \(error)")
        }
        guard a.checkpointFingerprint.isEmpty || checkpoint.fingerprint == a.checkpointFingerprint else {
            throw fail(.fingerprintMismatch,
                       "checkpoint \(a.modelPath) has fingerprint \(checkpoint.fingerprint), the coordinator's has \(a.checkpointFingerprint); give every worker a copy of the same file")
        }
        let config = try ModelConfig.infer(from: checkpoint)
        let order = config.executionOrder
        let blocks = try a.blocks.map { ref -> BlockID in
            guard let id = BlockID(wire: ref) else { throw fail(.assignmentFailed, "unknown block kind in assignment") }
            return id
        }
        guard let first = blocks.first, let start0 = order.firstIndex(of: first),
              start0 + blocks.count <= order.count, Array(order[start0..<(start0 + blocks.count)]) == blocks else {
            throw fail(.assignmentFailed, "assigned blocks \(blocks) are not a contiguous range of the execution order")
        }
        let positions = start0..<(start0 + blocks.count)
        if !a.stageFingerprint.isEmpty {
            let mine = try StageTensors.fingerprint(checkpoint: checkpoint, config: config, positions: positions)
            guard mine == a.stageFingerprint else {
                throw fail(.fingerprintMismatch,
                           "the weights of stage \(a.stageIndex) in \(a.modelPath) differ from the coordinator's checkpoint (content fingerprint \(mine.prefix(16))... vs \(a.stageFingerprint.prefix(16))...); give every worker a copy of the same file")
            }
        }
        guard (positions.lowerBound == 0) == a.hasEmbedding, (positions.upperBound == order.count) == a.hasHead else {
            throw fail(.assignmentFailed, "embedding/head flags do not match the block range \(positions)")
        }
        let attention = RWKVX.AttentionOptions(wire: a.attention)
        do {
            try attention.validate()
        } catch {
            throw fail(.assignmentFailed, "\(error)")
        }
        let threads = a.threads > 0 ? Int(a.threads) : options.threads
        let stage = try Stage(checkpoint: checkpoint, config: config, positions: positions, options: attention,
                              pool: ThreadPool(threadCount: threads))
        let weightBytes = UInt64(stage.weightBytesPerToken)
        if let limit = options.memoryLimitBytes, weightBytes > limit {
            throw fail(.outOfMemory, "stage weights need \(weightBytes) bytes, above this worker's --memory-limit of \(limit)")
        }
        if assignment != nil {
            log.info("reassigned; dropping sessions", ["worker": options.workerID, "sessions": sessions.count])
        }
        self.checkpoint = checkpoint
        self.stage = stage
        self.assignment = a
        sessions = [:]
        log.info("stage loaded", ["worker": options.workerID, "stage": a.stageIndex, "blocks": "\(blocks.first!)..\(blocks.last!)",
                                  "weight_bytes": weightBytes, "seconds": String(format: "%.2f", Date().timeIntervalSince(start))])

        var ack = AssignmentAck()
        ack.stageIndex = a.stageIndex
        ack.blockCount = UInt32(blocks.count)
        ack.weightBytes = weightBytes
        ack.stateBytesPerSession = UInt64(stage.makeState().serialized(config: config).count)
        ack.checkpointFingerprint = checkpoint.fingerprint
        return ack
    }

    func requireStage() throws -> (Stage, StageAssignment) {
        guard let stage, let assignment else {
            throw WorkerFailure(code: .assignmentFailed, message: "no stage assigned yet; send StageAssignment first")
        }
        return (stage, assignment)
    }

    // MARK: - Sessions

    func controlSession(_ control: SessionControl) throws -> SessionAck {
        let (stage, assignment) = try requireStage()
        let id = control.sessionID
        guard id != 0 else { throw WorkerFailure(code: .malformedMessage, message: "session id 0 is reserved") }
        switch control.action {
        case .open:
            guard sessions[id] == nil else {
                throw WorkerFailure(code: .sessionExists, message: "session \(id) is already open", sessionID: id)
            }
            sessions[id] = WorkerSession(state: stage.makeState())
        case .close:
            guard sessions.removeValue(forKey: id) != nil else {
                throw WorkerFailure(code: .unknownSession, message: "session \(id) is not open", sessionID: id)
            }
        case .reset:
            guard sessions[id] != nil else {
                throw WorkerFailure(code: .unknownSession, message: "session \(id) is not open", sessionID: id)
            }
            sessions[id] = WorkerSession(state: stage.makeState())
        default:
            throw WorkerFailure(code: .malformedMessage, message: "session control without an action", sessionID: id)
        }
        log.debug("session \(control.action)", ["session": id, "stage": assignment.stageIndex])
        var ack = SessionAck()
        ack.sessionID = id
        ack.action = control.action
        ack.sequence = sessions[id]?.sequence ?? 0
        return ack
    }

    // MARK: - State snapshots

    func snapshot(_ id: UInt64) throws -> WireMessage {
        let (stage, assignment) = try requireStage()
        guard let session = sessions[id] else {
            throw WorkerFailure(code: .unknownSession, message: "session \(id) is not open", sessionID: id)
        }
        var snapshot = StateSnapshot()
        snapshot.sessionID = id
        snapshot.sequence = session.sequence
        snapshot.stageIndex = assignment.stageIndex
        var message = WireMessage(body: .stateSnapshot(snapshot))
        // One tensor per block: the engine's byte form of that block's state.
        for block in stage.blocks {
            let bytes = session.state.slice([block]).serialized(config: stage.config)
            let descriptor = message.appendTensor(WireTensor(dtype: .u8, shape: [bytes.count], bytes: bytes, name: block.description))
            snapshot.tensors.append(LayerTensor(blockIndex: block.wire.index, update: .replace, tensor: descriptor))
        }
        message.body = .stateSnapshot(snapshot)
        return message
    }

    func restore(_ snapshot: StateSnapshot, _ message: WireMessage) throws -> SessionAck {
        let (stage, _) = try requireStage()
        var state = SessionState()
        for layer in snapshot.tensors {
            let tensor = message.tensor(layer.tensor)
            do {
                state.merge(try SessionState(serialized: tensor.bytes, config: stage.config))
            } catch {
                throw WorkerFailure(code: .malformedMessage, message: "state of \(tensor.name): \(error)", sessionID: snapshot.sessionID)
            }
        }
        guard Set(state.blocks) == Set(stage.blocks) else {
            throw WorkerFailure(code: .malformedMessage,
                                message: "snapshot contains blocks \(state.blocks), this stage runs \(stage.blocks)",
                                sessionID: snapshot.sessionID)
        }
        sessions[snapshot.sessionID] = WorkerSession(state: state, sequence: snapshot.sequence)
        var ack = SessionAck()
        ack.sessionID = snapshot.sessionID
        ack.sequence = snapshot.sequence
        return ack
    }

    // MARK: - Health

    func health(_ beat: Heartbeat) -> Health {
        var h = Health()
        h.heartbeatUnixMicros = beat.sentUnixMicros
        var load = [Double](repeating: 0, count: 3)
        if getloadavg(&load, 1) == 1 { h.load = Float(load[0]) }
        h.sessions = UInt32(sessions.count)
        h.residentBytes = residentMemoryBytes()
        if let assignment {
            var latency = StageLatency()
            latency.stageIndex = assignment.stageIndex
            latency.batches = batches
            let sorted = computeMicros.sorted()
            latency.lastMicros = computeMicros.last ?? 0
            latency.p50Micros = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            latency.p99Micros = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
            h.latencies = [latency]
        }
        return h
    }
}

extension MessageBody {
    /// The proto message name of the body, for errors and logs.
    public var kindName: String {
        switch self {
        case .coordinatorHello: return "CoordinatorHello"
        case .workerHello: return "WorkerHello"
        case .stageAssignment: return "StageAssignment"
        case .assignmentAck: return "AssignmentAck"
        case .sessionControl: return "SessionControl"
        case .sessionAck: return "SessionAck"
        case .forwardRequest: return "ForwardRequest"
        case .forwardResult: return "ForwardResult"
        case .stateSnapshotRequest: return "StateSnapshotRequest"
        case .stateSnapshot: return "StateSnapshot"
        case .stateDelta: return "StateDelta"
        case .heartbeat: return "Heartbeat"
        case .health: return "Health"
        case .error: return "Error"
        case .shutdown: return "Shutdown"
        }
    }
}
