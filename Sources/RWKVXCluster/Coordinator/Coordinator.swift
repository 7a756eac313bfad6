// The coordinator: owns the tokenizer, the sessions and their sampling settings,
// splits the model into stages over the workers, and moves every session's steps
// through the stages with continuous batching.
//
// Topology: hub and spoke. The coordinator has one DEALER per worker and relays
// each stage's activations to the next stage itself, so one process tracks where
// every session is. A later failover from state deltas needs exactly that. The
// cost is one extra hop per stage (about 0.1 ms for a decode step on loopback).
// NOTE: direct stage-to-stage forwarding (StageAssignment.next_stage_endpoint) is
// specified in the protocol but not used yet.
//
// Everything runs on one thread: a poll loop over the client socket and the
// worker sockets with a 50 ms timeout, so heartbeats and liveness checks run even
// when no message arrives.
import Foundation
import RWKVX

public struct CoordinatorOptions: Sendable {
    public var modelPath: String
    public var workers: [String]
    /// Client API endpoint (ROUTER).
    public var listen: String
    public var planFile: String?
    public var attention: RWKVX.AttentionOptions
    public var wireDType: DType = .f32
    /// Threads each worker uses; 0 = the worker's own setting.
    public var workerThreads: Int = 0
    /// Largest number of sessions in one batch.
    public var maxBatchSessions = 32
    /// Token budget of one batch (decode steps count 1; one prefill may exceed it alone).
    public var maxBatchTokens = 512
    /// Prompt tokens per prefill step, where splitting a prefill is exact (see schedulePrompt).
    public var prefillChunk = 256
    /// Context length in tokens the automatic plan balances stages for: sparse blocks
    /// cost more the longer the context they attend to.
    public var planContextTokens = 1024
    /// Most sessions open at once; more are refused until some close.
    public var maxSessions = 1024
    /// Seconds after which a session with no request and no work in progress is closed.
    public var sessionIdleSeconds = 600.0
    /// Seconds to wait for every worker to register and load its stage.
    public var startupTimeoutSeconds = 120.0

    public init(modelPath: String, workers: [String], listen: String, planFile: String? = nil,
                attention: RWKVX.AttentionOptions = RWKVX.AttentionOptions()) {
        self.modelPath = modelPath
        self.workers = workers
        self.listen = listen
        self.planFile = planFile
        self.attention = attention
    }
}

public struct CoordinatorError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// One worker connection.
/// Progress of bringing a dead worker back.
enum Readmission {
    case none, helloSent, assignmentSent
}

struct WorkerLink {
    let endpoint: String
    let socket: ZmqSocket
    var hello: WorkerHello?
    var lastHeard = Date()
    var alive = true
    var readmission = Readmission.none
    var readmissionSent = Date.distantPast
    /// Registration requests sent to this worker since it went down.
    var pokes = 0
    var health = Health()
    var hopMicros: [UInt64] = []
}

public final class Coordinator {
    let options: CoordinatorOptions
    let log = Logger(component: "coordinator")
    let context: ZmqContext
    let clientSocket: ZmqSocket
    var links: [WorkerLink] = []
    /// The client endpoint actually bound.
    public let endpoint: String

    let checkpoint: Checkpoint
    public let config: ModelConfig
    let modelFingerprint: String
    let tokenizer: WorldTokenizer
    public private(set) var plan: [PlannedStage] = []
    /// links index of each stage's worker.
    var stageLink: [Int] = []

    var sessions: [UInt64: ClusterSession] = [:]
    /// Sessions whose current step waits for each stage, in arrival order.
    var waiting: [[UInt64]] = []
    /// The batch each stage is computing, if any.
    var inFlight: [InFlightBatch?] = []
    var snapshots: [UInt64: SnapshotCollection] = [:]
    var nextSessionID: UInt64 = 1
    var nextBatchID: UInt64 = 1
    var nextMessageID: UInt64 = 1
    var running = true
    let started = Date()
    /// Names this serving run; workers serve one cluster at a time.
    let clusterID: String
    var lastHeartbeat = Date.distantPast
    var lastIdleScan = Date()
    var lastLivenessCheck = Date()
    var generatedTokens: UInt64 = 0
    var hopBytes: UInt64 = 0
    var hopTokens: UInt64 = 0
    /// Seconds of silence after which an idle worker counts as dead.
    let silenceLimitSeconds = 10.0

    public init(options: CoordinatorOptions) throws {
        self.options = options
        guard !options.workers.isEmpty else { throw CoordinatorError(message: "no workers given; pass --workers tcp://host:port,...") }
        for worker in options.workers { try Endpoint.validate(worker, what: "worker") }
        guard Set(options.workers).count == options.workers.count else {
            throw CoordinatorError(message: "--workers lists a worker twice; each worker serves one stage")
        }
        try Endpoint.validate(options.listen, what: "--listen")
        checkpoint = try Checkpoint.open(path: options.modelPath)
        config = try ModelConfig.infer(from: checkpoint)
        tokenizer = try WorldTokenizer.bundled()
        modelFingerprint = try checkpoint.contentFingerprint(of: checkpoint.tensorNames)
        try options.attention.validate()
        context = try ZmqContext()
        clientSocket = try ZmqSocket(context: context, type: .router)
        endpoint = try clientSocket.bind(options.listen)
        // A routing id unique to this coordinator, so that a second coordinator that
        // connects to the same worker cannot receive this one's replies.
        clusterID = "rwkvx-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        var socketOptions = ZmqSocketOptions.standard
        socketOptions.routingID = Array("coordinator-\(clusterID)".utf8)
        for worker in options.workers {
            let socket = try ZmqSocket(context: context, type: .dealer, options: socketOptions)
            try socket.connect(worker)
            links.append(WorkerLink(endpoint: worker, socket: socket))
        }
    }

    deinit {
        clientSocket.close()
        for link in links { link.socket.close() }
    }

    // MARK: - Start-up

    /// Registers every worker, plans the stages and assigns them. Returns the plan table.
    public func start() throws -> String {
        let deadline = Date().addingTimeInterval(options.startupTimeoutSeconds)

        // registration
        var hello = CoordinatorHello()
        hello.clusterID = clusterID
        hello.buildID = "rwkvx"
        for i in links.indices { try send(i, .coordinatorHello(hello)) }
        log.info("waiting for workers to register", ["workers": links.count,
                                                     "timeout_seconds": Int(options.startupTimeoutSeconds)])
        for i in links.indices {
            let reply = try awaitReply(link: i, deadline: deadline, what: "registration")
            guard case .workerHello(let h) = reply.body else {
                throw CoordinatorError(message: "worker \(links[i].endpoint) replied to registration with \(reply.body.kindName): \(describe(reply))")
            }
            links[i].hello = h
            log.info("worker registered", ["worker": links[i].endpoint, "cores": h.cores, "kernels": h.kernelLevel,
                                           "memory_mb": h.memoryBytes / 1_000_000])
        }

        // plan
        if let file = options.planFile {
            plan = try StagePlanner.load(path: file, config: config, endpoints: options.workers)
        } else {
            let capacities = links.map {
                WorkerCapacity(endpoint: $0.endpoint, cores: Int($0.hello!.cores), memoryBytes: $0.hello!.memoryBytes,
                               kernelLevel: $0.hello!.kernelLevel)
            }
            plan = try StagePlanner.plan(config: config, workers: capacities, contextTokens: options.planContextTokens,
                                         attention: options.attention)
        }
        stageLink = plan.map { stage in links.firstIndex { $0.endpoint == stage.worker }! }
        waiting = Array(repeating: [], count: plan.count)
        inFlight = Array(repeating: nil, count: plan.count)

        // assignment: every worker loads its stage in parallel
        for s in plan.indices {
            try send(stageLink[s], .stageAssignment(try assignment(stage: s)))
        }
        for (s, _) in plan.enumerated() {
            let reply = try awaitReply(link: stageLink[s], deadline: deadline, what: "stage assignment")
            guard case .assignmentAck(let ack) = reply.body else {
                throw CoordinatorError(message: "worker \(plan[s].worker) could not load stage \(s): \(describe(reply))")
            }
            log.info("stage ready", ["stage": s, "worker": plan[s].worker, "blocks": ack.blockCount,
                                     "weight_mb": ack.weightBytes / 1_000_000])
        }
        let table = StagePlanner.describe(plan, config: config)
        log.info("serving", ["endpoint": endpoint, "stages": plan.count, "model": options.modelPath])
        return table
    }

    /// Builds the StageAssignment of stage `s`.
    func assignment(stage s: Int) throws -> StageAssignment {
        let order = config.executionOrder
        let stage = plan[s]
        var a = StageAssignment()
        a.stageIndex = UInt32(s)
        a.stageCount = UInt32(plan.count)
        a.modelPath = options.modelPath
        a.checkpointFingerprint = checkpoint.fingerprint
        a.blocks = order[stage.positions].map(\.wire)
        a.stageFingerprint = try StageTensors.fingerprint(checkpoint: checkpoint, config: config, positions: stage.positions)
        a.hasEmbedding = stage.first == 0
        a.hasHead = stage.positions.upperBound == order.count
        a.attention = options.attention.wire
        a.wireDType = options.wireDType
        a.threads = UInt32(options.workerThreads)
        return a
    }

    /// Waits for the next message from one worker during start-up.
    func awaitReply(link i: Int, deadline: Date, what: String) throws -> WireMessage {
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw CoordinatorError(message: "worker \(links[i].endpoint) did not reply to \(what) in \(Int(options.startupTimeoutSeconds)) s; is `rwkvx worker --listen \(links[i].endpoint)` running?")
            }
            guard let frames = try links[i].socket.receive(timeoutMillis: min(Int(remaining * 1000) + 1, 1000)) else { continue }
            let message: WireMessage
            do {
                message = try WireMessage.decode(frames)
            } catch {
                throw CoordinatorError(message: "worker \(links[i].endpoint) sent an invalid message during \(what): \(error); is it an rwkvx worker of the same version?")
            }
            if case .sessionAck = message.body { continue }
            return message
        }
    }

    func describe(_ message: WireMessage) -> String {
        if case .error(let report) = message.body { return "\(report.code): \(report.message)" }
        return message.body.kindName
    }

    func send(_ link: Int, _ body: MessageBody, frames: [[UInt8]] = []) throws {
        let message = WireMessage(messageID: nextMessageID, body: body, frames: frames)
        nextMessageID += 1
        try links[link].socket.send(try message.encode())
    }

    // MARK: - Event loop

    /// Serves clients until a shutdown request.
    public func run() throws {
        let sockets = [clientSocket] + links.map(\.socket)
        while running {
            let ready = try ZmqPoller.poll(sockets, timeoutMillis: 50)
            if ready[0] {
                while let frames = try clientSocket.receiveNow() { handleClient(frames) }
            }
            for i in links.indices where ready[i + 1] {
                while let frames = try links[i].socket.receiveNow() { handleWorker(i, frames) }
            }
            checkLiveness()
            dispatchBatches()
        }
        for i in links.indices where links[i].alive {
            try? send(i, .shutdown(Shutdown(reason: "coordinator stopping", drain: false)))
        }
        log.info("stopped", [:])
    }

    // MARK: - Worker messages

    func handleWorker(_ i: Int, _ frames: [[UInt8]]) {
        links[i].lastHeard = Date()
        let message: WireMessage
        do {
            message = try WireMessage.decode(frames)
        } catch {
            log.warning("malformed message from worker", ["worker": links[i].endpoint, "error": error])
            return
        }
        if !links[i].alive {
            readmit(i, message)
            return
        }
        if case .error(let report) = message.body, report.code == .notRegistered {
            // The worker restarted: every session's state on its stage is gone.
            workerLost(i, reason: "worker \(links[i].endpoint) restarted and lost its sessions")
            readmit(i, nil)
            return
        }
        switch message.body {
        case .forwardResult(let result):
            handleResult(result, message, link: i)
        case .error(let report):
            handleWorkerError(report, link: i)
        case .stateSnapshot(let snapshot):
            handleSnapshot(snapshot, message)
        case .health(let health):
            links[i].health = health
        case .sessionAck:
            break
        default:
            log.warning("unexpected message from worker", ["worker": links[i].endpoint, "kind": message.body.kindName])
        }
    }

    func checkLiveness() {
        let now = Date()
        // When this process itself was stopped or starved, the workers' silence is not
        // theirs, so restart their clocks instead of declaring them dead.
        if now.timeIntervalSince(lastLivenessCheck) > 3 {
            log.warning("event loop stalled; resetting worker liveness clocks",
                        ["stalled_seconds": Int(now.timeIntervalSince(lastLivenessCheck))])
            for i in links.indices { links[i].lastHeard = now }
        }
        lastLivenessCheck = now
        if now.timeIntervalSince(lastIdleScan) >= 5 {
            lastIdleScan = now
            for session in Array(sessions.values) where session.current == nil && session.pending.isEmpty
                && session.generation == nil && now.timeIntervalSince(session.lastActivity) > options.sessionIdleSeconds {
                log.info("closing idle session", ["session": session.id, "idle_seconds": Int(now.timeIntervalSince(session.lastActivity))])
                closeSession(session.id)
            }
        }
        if now.timeIntervalSince(lastHeartbeat) >= 1 {
            lastHeartbeat = now
            let micros = UInt64(now.timeIntervalSince1970 * 1_000_000)
            for i in links.indices where links[i].alive {
                try? send(i, .heartbeat(Heartbeat(sentUnixMicros: micros)))
            }
            // Poke dead workers so that a restarted or resumed one can come back. libzmq
            // queues the messages while the peer is away and delivers them on reconnect,
            // so the number of pokes stays below the send high-water mark (32).
            for i in links.indices where !links[i].alive && links[i].pokes < 20
                && now.timeIntervalSince(links[i].readmissionSent) > 5 {
                links[i].readmission = .none
                links[i].pokes += 1
                readmit(i, nil)
            }
        }
        for (s, link) in stageLink.enumerated() where links[link].alive {
            // A worker computing a batch cannot reply to heartbeats, so the limit grows
            // with the batch by a generous 50 ms per token.
            let limit = silenceLimitSeconds + 0.05 * Double(inFlight[s]?.tokens ?? 0)
            if now.timeIntervalSince(links[link].lastHeard) > limit {
                workerLost(link, reason: "stage \(s) (worker \(links[link].endpoint)) stopped responding for \(Int(now.timeIntervalSince(links[link].lastHeard))) s")
                continue
            }
            // A live worker that lost a batch (its reply could not be sent) would leave
            // the stage waiting forever; fail that batch's sessions instead.
            if let batch = inFlight[s], now.timeIntervalSince(batch.sent) > 3 * limit {
                inFlight[s] = nil
                log.error("batch not returned", ["stage": s, "batch": batch.batchID, "sessions": batch.sessions.count,
                                                 "seconds": Int(now.timeIntervalSince(batch.sent))])
                for id in batch.sessions {
                    failSession(id, "stage \(s) did not return batch \(batch.batchID) in \(Int(3 * limit)) s; the session is lost")
                }
            }
        }
    }

    /// Marks a worker's stage down and fails every session, since each spans all stages.
    func workerLost(_ i: Int, reason: String) {
        links[i].alive = false
        links[i].readmission = .none
        log.error("stage down", ["worker": links[i].endpoint, "reason": reason])
        // NOTE: no failover yet: sessions cannot continue without their state on that stage.
        for id in Array(sessions.keys) { failSession(id, "\(reason); the session is lost") }
        for s in stageLink.indices where stageLink[s] == i { inFlight[s] = nil }
    }

    /// Brings a dead worker back when it speaks again: registration, then its stage's
    /// assignment (which drops any old sessions it held), then it serves new sessions.
    func readmit(_ i: Int, _ message: WireMessage?) {
        switch (links[i].readmission, message?.body) {
        case (.none, _):
            links[i].readmission = .helloSent
            links[i].readmissionSent = Date()
            var hello = CoordinatorHello()
            hello.clusterID = clusterID
            hello.buildID = "rwkvx"
            try? send(i, .coordinatorHello(hello))
            log.debug("asking a dead worker to register again", ["worker": links[i].endpoint])
        case (.helloSent, .workerHello(let h)?):
            links[i].hello = h
            links[i].readmission = .assignmentSent
            log.info("re-admitting worker", ["worker": links[i].endpoint])
            for s in stageLink.indices where stageLink[s] == i {
                do {
                    try send(i, .stageAssignment(try assignment(stage: s)))
                } catch {
                    log.error("re-assignment failed", ["stage": s, "error": error])
                }
            }
        case (.assignmentSent, .assignmentAck(let ack)?):
            links[i].readmission = .none
            links[i].alive = true
            links[i].pokes = 0
            log.info("stage back in service", ["stage": ack.stageIndex, "worker": links[i].endpoint])
        case (_, .error(let report)?):
            links[i].readmission = .none
            log.warning("worker rejected re-admission", ["worker": links[i].endpoint, "code": report.code,
                                                        "error": report.message])
        default:
            break
        }
    }

    /// Index of the first dead stage, if any.
    var deadStage: Int? {
        stageLink.firstIndex { !links[$0].alive }
    }
}
