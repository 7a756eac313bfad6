// Client requests to the coordinator (see ClientProtocol.swift): text generation,
// step-by-step logits, session state, status and shutdown.
import Foundation
import RWKVX

extension Coordinator {
    func handleClient(_ frames: [[UInt8]]) {
        guard frames.count >= 2 else { return }
        let client = frames[0]
        let request: ClientRequest
        do {
            request = try ClientCoding.decode(ClientRequest.self, frames[1])
        } catch {
            replyClient(client, .error("invalid request (\(jsonProblem(error))); send a JSON object with an \"op\" field"))
            return
        }
        if let s = deadStage, request.op != "status", request.op != "shutdown" {
            replyClient(client, .error("stage \(s) (worker \(plan[s].worker)) is down; the coordinator re-admits it when it answers again, or restart the cluster"))
            return
        }
        switch request.op {
        case "generate": startGeneration(client, request)
        case "open":
            guard let session = openSession() else {
                replyClient(client, .error(tooManySessions))
                return
            }
            var reply = ClientReply(op: "opened")
            reply.session = session.id
            replyClient(client, reply)
        case "forward": queueForward(client, request)
        case "state": requestState(client, request)
        case "close":
            guard let session = logitsSession(request, client) else { return }
            let id = session.id
            // Clients still waiting for a step of this session get an error, not silence.
            for waiting in Set(session.pending.compactMap(\.replyTo) + [session.current?.plan.replyTo].compactMap { $0 })
            where waiting != client {
                replyClient(waiting, .error("session \(id) was closed by another request"))
            }
            closeSession(id)
            replyClient(client, ClientReply(op: "closed"))
        case "status":
            var reply = ClientReply(op: "status")
            reply.status = status()
            replyClient(client, reply)
        case "shutdown":
            log.info("shutdown requested by a client", [:])
            replyClient(client, ClientReply(op: "stopping"))
            running = false
        default:
            replyClient(client, .error("unknown op \"\(request.op)\"; expected generate, open, forward, state, close, status or shutdown"))
        }
    }

    var tooManySessions: String {
        "too many open sessions (\(sessions.count)); close some or raise --max-sessions"
    }

    /// Sends a reply; returns false when the client is gone (its connection closed).
    @discardableResult
    func replyClient(_ client: [UInt8], _ reply: ClientReply, payload: [UInt8]? = nil) -> Bool {
        var frames = [ClientCoding.encode(reply)]
        if let payload { frames.append(payload) }
        do {
            try clientSocket.send(to: client, frames)
            return true
        } catch {
            log.warning("client reply failed", ["op": reply.op, "error": error])
            return false
        }
    }

    // MARK: - Generation

    func startGeneration(_ client: [UInt8], _ request: ClientRequest) {
        let tokens: [Int]
        if let ids = request.promptTokens {
            tokens = ids
        } else if let prompt = request.prompt {
            tokens = tokenizer.encode(prompt)
        } else {
            replyClient(client, .error("generate needs a \"prompt\" or \"prompt_tokens\""))
            return
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            replyClient(client, .error("the prompt has token id \(bad), outside this model's vocabulary (0..<\(config.vocabSize)); the World tokenizer needs a model with a 65536-token vocabulary"))
            return
        }
        var sampling = (request.sampling ?? SamplingOptions())
            .banningTextlessTokens(tokenizer: tokenizer, modelVocabularySize: config.vocabSize)
        if sampling.seed == nil { sampling.seed = UInt64.random(in: 0...UInt64.max) }
        do {
            try sampling.validate(vocabularySize: config.vocabSize)
        } catch {
            replyClient(client, .error("\(error)"))
            return
        }
        guard !tokens.isEmpty else {
            replyClient(client, .error("the prompt is empty"))
            return
        }
        if sampling.maxTokens == 0 {
            var done = ClientReply(op: "done")
            done.stats = GenerationReport()
            replyClient(client, done)
            return
        }
        guard let session = openSession() else {
            replyClient(client, .error(tooManySessions))
            return
        }
        session.generation = GenerationRun(client: client, sampling: sampling, stopChecker: StopChecker(options: sampling))
        session.generation!.report.promptTokens = tokens.count
        session.pending = promptSteps(tokens, session: session)
        log.info("generation started", ["session": session.id, "prompt_tokens": tokens.count,
                                        "max_tokens": sampling.maxTokens])
    }

    /// Splits a prompt into prefill pieces of at most `prefillChunk` tokens, so that a
    /// long prompt shares batches with other sessions' decode steps instead of stalling
    /// them. The last piece samples. Pieces carry the call they belong to, which makes
    /// them exact (PrefillPiece), unless the KV cache could be compressed at the start
    /// of the call: then the prompt runs as one step, as in the reference.
    func promptSteps(_ tokens: [Int], session: ClusterSession) -> [SessionStepPlan] {
        let splittable = config.nSparseLayer == 0
            || PrefillPiece.canSplit(cachedTokens: session.tokensProcessed, options: options.attention)
        guard tokens.count > 1, splittable else { return [SessionStepPlan(tokens: tokens, sample: true)] }
        let chunk = max(options.prefillChunk, 1)
        var steps: [SessionStepPlan] = []
        var start = 0
        while start < tokens.count {
            let end = min(start + chunk, tokens.count)
            var step = SessionStepPlan(tokens: Array(tokens[start..<end]), sample: end == tokens.count)
            step.piece = PrefillPiece(callTokens: tokens.count, offset: start)
            steps.append(step)
            start = end
        }
        return steps
    }

    /// Streams the text of a token sampled by the last stage, then stops or queues the next decode.
    func handleToken(_ session: ClusterSession, _ token: Int) {
        guard var run = session.generation else { return }
        if run.decodeStarted == nil {
            run.decodeStarted = Date()
            run.report.prefillSeconds = Date().timeIntervalSince(run.started)
        }
        let bytes = tokenizer.tokenBytes(token) ?? []
        let check = run.stopChecker.check(token: token, bytes: bytes)
        let piece = run.text.append(check.output)
        if !piece.isEmpty && !sendText(run.client, piece) {
            // The client disconnected: stop generating for it and free the session.
            log.info("generation cancelled: client gone", ["session": session.id])
            session.generation = nil
            closeSession(session.id)
            return
        }
        if let stop = check.stop {
            run.report.stop = "\(stop)"
        } else {
            run.report.generatedTokens += 1
        }
        let finished = check.stop != nil || run.report.generatedTokens >= run.sampling.maxTokens
        if !finished {
            session.generation = run
            session.pending.append(SessionStepPlan(tokens: [token], sample: true))
            return
        }
        let tail = run.text.append(run.stopChecker.finish()) + run.text.finish()
        if !tail.isEmpty { sendText(run.client, tail) }
        run.report.decodeSeconds = Date().timeIntervalSince(run.decodeStarted!)
        var done = ClientReply(op: "done")
        done.stats = run.report
        replyClient(run.client, done)
        log.info("generation finished", ["session": session.id, "tokens": run.report.generatedTokens,
                                         "stop": run.report.stop ?? "max_tokens"])
        session.generation = nil
        closeSession(session.id)
    }

    @discardableResult
    func sendText(_ client: [UInt8], _ text: String) -> Bool {
        var reply = ClientReply(op: "text")
        reply.text = text
        return replyClient(client, reply)
    }

    // MARK: - Logits API

    /// The open logits-API session `request` names, or nil after replying with an error.
    /// A generation session belongs to its generate request, so no other request may use it.
    func logitsSession(_ request: ClientRequest, _ client: [UInt8]) -> ClusterSession? {
        guard let id = request.session, let session = sessions[id], session.generation == nil else {
            replyClient(client, .error("unknown session \(request.session ?? 0); open one with {\"op\": \"open\"}"))
            return nil
        }
        return session
    }

    func queueForward(_ client: [UInt8], _ request: ClientRequest) {
        guard let session = logitsSession(request, client) else { return }
        guard let tokens = request.tokens, !tokens.isEmpty else {
            replyClient(client, .error("forward needs a non-empty \"tokens\" list"))
            return
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            replyClient(client, .error("token id \(bad) is outside the vocabulary (0..<\(config.vocabSize))"))
            return
        }
        // One call is one step, as in the reference: no splitting, so a one-token call decodes.
        session.lastActivity = Date()
        session.pending.append(SessionStepPlan(tokens: tokens, wantFullLogits: request.fullOutput ?? false,
                                               sample: false, replyTo: client))
    }

    func requestState(_ client: [UInt8], _ request: ClientRequest) {
        guard let session = logitsSession(request, client) else { return }
        let id = session.id
        guard snapshots[id] == nil else {
            replyClient(client, .error("a state request for session \(id) is already in progress; retry after its reply"))
            return
        }
        session.lastActivity = Date()
        guard session.current == nil && session.pending.isEmpty else {
            replyClient(client, .error("session \(id) has steps in progress; ask for its state after their replies"))
            return
        }
        snapshots[id] = SnapshotCollection(client: client)
        for s in plan.indices {
            try? send(stageLink[s], .stateSnapshotRequest(StateSnapshotRequest(sessionIDs: [id])))
        }
    }

    func handleSnapshot(_ snapshot: StateSnapshot, _ message: WireMessage) {
        guard var collection = snapshots[snapshot.sessionID] else { return }
        for layer in snapshot.tensors {
            do {
                collection.state.merge(try SessionState(serialized: message.tensor(layer.tensor).bytes, config: config))
            } catch {
                snapshots[snapshot.sessionID] = nil
                replyClient(collection.client, .error("stage \(snapshot.stageIndex) sent an invalid state: \(error)"))
                return
            }
        }
        collection.received.insert(snapshot.stageIndex)
        snapshots[snapshot.sessionID] = collection
        guard collection.received.count == plan.count else { return }
        snapshots[snapshot.sessionID] = nil
        // Blocks that never run (trailing RWKV blocks) keep their zero state, as in the reference.
        var whole = SessionState(config: config)
        whole.merge(collection.state)
        var reply = ClientReply(op: "state")
        reply.session = snapshot.sessionID
        replyClient(collection.client, reply, payload: whole.serialized(config: config))
    }

    // MARK: - Status

    func status() -> ClusterStatus {
        let order = config.executionOrder
        let stages = plan.enumerated().map { s, stage -> StageStatus in
            let link = links[stageLink[s]]
            let latency = link.health.latencies.first
            let hops = link.hopMicros.sorted()
            let blocks = order[stage.positions]
            return StageStatus(index: s, worker: stage.worker, blocks: "\(blocks.first!)..\(blocks.last!)", alive: link.alive,
                               batches: latency?.batches ?? 0, p50Micros: latency?.p50Micros ?? 0,
                               p99Micros: latency?.p99Micros ?? 0, hopMicros: hops.isEmpty ? 0 : hops[hops.count / 2],
                               residentBytes: link.health.residentBytes)
        }
        return ClusterStatus(model: options.modelPath, stages: stages, sessions: sessions.count,
                             generatedTokens: generatedTokens, uptimeSeconds: Date().timeIntervalSince(started),
                             bytesPerTokenPerHop: hopTokens == 0 ? 0 : Double(hopBytes) / Double(hopTokens) / Double(max(plan.count - 1, 1)),
                             attention: options.attention, modelFingerprint: modelFingerprint,
                             vocabSize: config.vocabSize)
    }
}
