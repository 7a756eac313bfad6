// Continuous batching: each stage computes one batch at a time. Whenever a stage
// is free it gets the session steps waiting for it, up to the batch limits and to
// 1/S of the sessions in the pipeline (S stages), so the sessions form about S
// groups that keep every stage busy. Sessions move one step at a time through the
// stages in order.
import Foundation
import RWKVX

extension Coordinator {
    /// Starts the next step of every idle session and sends a batch to each free stage.
    func dispatchBatches() {
        guard deadStage == nil else { return }
        for session in sessions.values where session.current == nil && !session.awaitingError && !session.pending.isEmpty {
            let plan = session.pending.removeFirst()
            session.sequence += 1
            session.current = StepInFlight(plan: plan, sequence: session.sequence)
            waiting[0].append(session.id)
        }
        for s in plan.indices where inFlight[s] == nil && !waiting[s].isEmpty {
            sendBatch(stage: s)
        }
    }

    /// Sends one batch to stage `s`: waiting steps in arrival order, within the session
    /// and token limits. Steps that do not fit the token budget wait for the next
    /// batch, and the oldest step always goes, so no session starves.
    func sendBatch(stage s: Int) {
        var chosen: [UInt64] = []
        var tokens = 0
        let queue = waiting[s].filter { sessions[$0]?.current != nil }
        // A stage that takes every waiting session makes all sessions one group that
        // only one stage computes at a time. Capping a batch at ceil(sessions in the
        // pipeline / stages) splits them into about one group per stage, and the
        // groups rotate through the stages so that every stage is busy.
        let inPipeline = sessions.values.reduce(0) { $0 + ($1.current == nil ? 0 : 1) }
        let groupSize = (inPipeline + plan.count - 1) / plan.count
        let sessionLimit = max(1, min(options.maxBatchSessions, groupSize))
        for id in queue {
            let n = sessions[id]!.current!.plan.tokens.count
            if chosen.count >= sessionLimit { break }
            if !chosen.isEmpty && tokens + n > options.maxBatchTokens { continue }
            chosen.append(id)
            tokens += n
        }
        let chosenSet = Set(chosen)
        waiting[s] = queue.filter { !chosenSet.contains($0) }

        var request = ForwardRequest()
        request.batchID = nextBatchID
        request.stageIndex = UInt32(s)
        nextBatchID += 1
        var message = WireMessage(body: .forwardRequest(request))
        for id in chosen {
            let session = sessions[id]!
            let step = session.current!
            var wire = SessionStep()
            wire.sessionID = id
            wire.sequence = step.sequence
            wire.tokenCount = UInt32(step.plan.tokens.count)
            wire.kind = step.plan.tokens.count == 1 && step.plan.piece == nil ? .decode : .prefill
            if let piece = step.plan.piece {
                wire.prefillCallTokens = UInt32(piece.callTokens)
                wire.prefillOffset = UInt32(piece.offset)
            }
            wire.wantFullLogits = step.plan.wantFullLogits
            wire.sample = step.plan.sample
            if s == 0 { wire.tokenIDs = step.plan.tokens.map { UInt32($0) } }
            if let activation = step.activation {
                wire.activation = message.appendTensor(activation)
                hopBytes += UInt64(activation.bytes.count)
            }
            if let vFirst = step.vFirst {
                wire.vFirst = message.appendTensor(vFirst)
                hopBytes += UInt64(vFirst.bytes.count)
            }
            if let generation = session.generation, step.plan.sample {
                wire.sampling = generation.sampling.wire
                wire.rng.seed = generation.sampling.seed ?? 0
            }
            request.sessions.append(wire)
        }
        message.body = .forwardRequest(request)
        do {
            try send(stageLink[s], message.body, frames: message.frames)
            inFlight[s] = InFlightBatch(batchID: request.batchID, sessions: chosen, sent: Date(), tokens: tokens)
            log.debug("batch sent", ["stage": s, "batch": request.batchID, "sessions": chosen.count, "tokens": tokens])
        } catch {
            log.error("could not send a batch", ["stage": s, "worker": plan[s].worker, "error": error])
            for id in chosen { failSession(id, "sending to stage \(s) failed: \(error)") }
        }
    }

    func handleResult(_ result: ForwardResult, _ message: WireMessage, link: Int) {
        let s = Int(result.stageIndex)
        guard s < plan.count, let batch = inFlight[s], batch.batchID == result.batchID else {
            log.warning("result for an unknown batch", ["stage": s, "batch": result.batchID])
            return
        }
        inFlight[s] = nil
        let hop = UInt64(Date().timeIntervalSince(batch.sent) * 1_000_000)
        links[link].hopMicros.append(hop)
        if links[link].hopMicros.count > 256 { links[link].hopMicros.removeFirst() }
        hopTokens += UInt64(batch.tokens)

        var answered: Set<UInt64> = []
        for output in result.sessions {
            answered.insert(output.sessionID)
            guard let session = sessions[output.sessionID], var step = session.current, step.sequence == output.sequence else {
                log.warning("result for a session that moved on", ["session": output.sessionID, "stage": s])
                continue
            }
            if s < plan.count - 1 {
                // relay the activation to the next stage
                step.activation = output.activation.map { message.tensor($0) }
                step.vFirst = output.vFirst.map { message.tensor($0) }
                if let a = step.activation { hopBytes += UInt64(a.bytes.count) }
                if let v = step.vFirst { hopBytes += UInt64(v.bytes.count) }
                step.stage = s + 1
                session.current = step
                waiting[s + 1].append(session.id)
                continue
            }
            session.current = nil
            session.lastActivity = Date()
            session.tokensProcessed += step.plan.tokens.count
            finishStep(session, step, output, message)
        }
        // Sessions left out of the result get their own Error message next.
        for id in batch.sessions where !answered.contains(id) {
            sessions[id]?.current = nil
            sessions[id]?.awaitingError = true
        }
    }

    /// Handles the last stage's output of one step.
    func finishStep(_ session: ClusterSession, _ step: StepInFlight, _ output: SessionOutput, _ message: WireMessage) {
        switch output.output {
        case .token(let token):
            generatedTokens += 1
            handleToken(session, Int(token))
        case .logits(let descriptor):
            guard let client = step.plan.replyTo else { return }
            let tensor = message.tensor(descriptor)
            var reply = ClientReply(op: "logits")
            reply.session = session.id
            reply.shape = step.plan.wantFullLogits ? tensor.shape : [tensor.shape.last ?? 0]
            replyClient(client, reply, payload: tensor.bytes)
        default:
            log.warning("last stage returned no token or logits", ["session": session.id])
        }
    }

    func handleWorkerError(_ report: ErrorReport, link: Int) {
        let s = stageLink.firstIndex(of: link) ?? -1
        if report.sessionID != 0 {
            failSession(report.sessionID, "stage \(s) rejected the step: \(report.code): \(report.message)")
            return
        }
        log.error("worker error", ["stage": s, "worker": links[link].endpoint, "code": report.code, "error": report.message])
        // A batch-level error: every session of the batch that stage was computing fails.
        if s >= 0, let batch = inFlight[s] {
            inFlight[s] = nil
            for id in batch.sessions { failSession(id, "stage \(s) failed the batch: \(report.code): \(report.message)") }
        }
    }

    /// Ends a session with an error to its client and frees it on every stage.
    func failSession(_ id: UInt64, _ reason: String) {
        guard let session = sessions[id] else { return }
        log.warning("session failed", ["session": id, "error": reason])
        if let generation = session.generation {
            replyClient(generation.client, ClientReply.error(reason))
        }
        for client in Set((session.pending.compactMap(\.replyTo) + [session.current?.plan.replyTo].compactMap { $0 })) {
            replyClient(client, ClientReply.error(reason))
        }
        closeSession(id)
    }

    func closeSession(_ id: UInt64) {
        guard sessions.removeValue(forKey: id) != nil else { return }
        for s in waiting.indices { waiting[s].removeAll { $0 == id } }
        for s in plan.indices where links[stageLink[s]].alive {
            try? send(stageLink[s], .sessionControl(SessionControl(sessionID: id, action: .close)))
        }
    }

    /// Opens a session on every stage, or returns nil when `maxSessions` are open.
    func openSession() -> ClusterSession? {
        guard sessions.count < options.maxSessions else {
            log.warning("session rejected: limit reached", ["sessions": sessions.count])
            return nil
        }
        let session = ClusterSession(id: nextSessionID)
        nextSessionID += 1
        sessions[session.id] = session
        // Each DEALER-ROUTER link delivers in order, so the OPEN reaches a stage before
        // any step of the session; its acknowledgement is not awaited.
        for s in plan.indices {
            try? send(stageLink[s], .sessionControl(SessionControl(sessionID: session.id, action: .open)))
        }
        return session
    }
}
