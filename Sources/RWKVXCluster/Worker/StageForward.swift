// The forward pass of a worker: one ForwardRequest is one batch through this
// stage's blocks, with one pass over the weights for every session in it.
// Sessions that fail their checks (not open, sequence gap, bad input) get their
// own Error and are left out, while the rest of the batch goes on.
import Foundation
import RWKVX

extension StageWorker {
    /// Inputs of one session that passed its checks.
    struct StepInput {
        let step: SessionStep
        let piece: PrefillPiece?
        let x: [Float]          // [T, C]
        let vFirst: [Float]     // [T, C] or empty before RWKV block 0
    }

    /// Returns the ForwardResult and one Error per session left out of the batch.
    func forward(_ request: ForwardRequest, _ message: WireMessage) throws -> (WireMessage, [ErrorReport]) {
        let (stage, assignment) = try requireStage()
        guard request.stageIndex == assignment.stageIndex else {
            throw WorkerFailure(code: .malformedMessage,
                                message: "request for stage \(request.stageIndex) sent to stage \(assignment.stageIndex)")
        }
        let c = stage.config.nEmbd
        let start = Date()

        // check each session and decode its input
        var inputs: [StepInput] = []
        var failures: [ErrorReport] = []
        var seen: Set<UInt64> = []
        for step in request.sessions {
            do {
                guard seen.insert(step.sessionID).inserted else {
                    throw WorkerFailure(code: .malformedMessage, message: "session \(step.sessionID) appears twice in one batch",
                                        sessionID: step.sessionID)
                }
                inputs.append(try decodeInput(step, message: message, stage: stage, c: c))
            } catch let failure as WorkerFailure {
                var report = ErrorReport(code: failure.code, message: failure.message)
                report.sessionID = step.sessionID
                report.stageIndex = assignment.stageIndex
                report.batchID = request.batchID
                failures.append(report)
            }
        }
        // All sessions at one stage have run the same blocks, so either all carry v_first or none.
        if inputs.contains(where: { $0.vFirst.isEmpty }) && inputs.contains(where: { !$0.vFirst.isEmpty }) {
            throw WorkerFailure(code: .malformedMessage, message: "some sessions of the batch carry v_first and others do not")
        }

        // one forward pass for the whole batch
        var outputs: [SessionOutput] = []
        var result = ForwardResult()
        result.batchID = request.batchID
        result.stageIndex = assignment.stageIndex
        var reply = WireMessage(body: .forwardResult(result))
        if !inputs.isEmpty {
            var x = inputs.flatMap(\.x)
            var vFirst = inputs.flatMap(\.vFirst)
            var states = inputs.map { sessions[$0.step.sessionID]!.state }
            for input in inputs { sessions[input.step.sessionID]!.state = SessionState() }
            let counts = inputs.map { Int($0.step.tokenCount) }
            stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: counts, states: &states, pieces: inputs.map(\.piece))

            // The head runs once for the batch: every session's last row, or all its rows
            // when it asked for full logits.
            var logits: [Float] = []
            var logitRows: [Range<Int>] = []
            if stage.hasHead {
                var rows: [Float] = []
                var row = 0, headRow = 0
                for (i, input) in inputs.enumerated() {
                    let first = input.step.wantFullLogits ? row : row + counts[i] - 1
                    rows += x[(first * c)..<((row + counts[i]) * c)]
                    let n = row + counts[i] - first
                    logitRows.append(headRow..<(headRow + n))
                    headRow += n
                    row += counts[i]
                }
                logits = stage.logits(rows: rows)
            }

            var row = 0
            for (i, input) in inputs.enumerated() {
                let id = input.step.sessionID
                sessions[id]!.state = states[i]
                sessions[id]!.sequence = input.step.sequence
                let rows = row..<(row + counts[i])
                row += counts[i]
                if stage.hasHead {
                    let v = stage.config.vocabSize
                    let slice = Array(logits[(logitRows[i].lowerBound * v)..<(logitRows[i].upperBound * v)])
                    outputs.append(headOutput(for: input.step, logits: slice, rows: logitRows[i].count, vocab: v,
                                              into: &reply))
                } else {
                    outputs.append(activationOutput(for: input.step, rows: rows, x: x, vFirst: vFirst, c: c,
                                                    assignment: assignment, into: &reply))
                }
            }
        }
        let micros = UInt64(Date().timeIntervalSince(start) * 1_000_000)
        record(micros: micros)
        result.sessions = outputs
        result.computeMicros = micros
        reply.body = .forwardResult(result)
        for report in failures {
            log.warning("session step rejected", ["session": report.sessionID, "stage": report.stageIndex,
                                                  "code": report.code, "error": report.message])
        }
        return (reply, failures)
    }

    func decodeInput(_ step: SessionStep, message: WireMessage, stage: Stage, c: Int) throws -> StepInput {
        let id = step.sessionID
        guard let session = sessions[id] else {
            throw WorkerFailure(code: .unknownSession, message: "session \(id) is not open on this stage", sessionID: id)
        }
        guard step.sequence == session.sequence + 1 else {
            throw WorkerFailure(code: .sequenceGap,
                                message: "session \(id) expects sequence \(session.sequence + 1), got \(step.sequence)",
                                sessionID: id)
        }
        let t = Int(step.tokenCount)
        guard t > 0 else { throw WorkerFailure(code: .malformedMessage, message: "step with 0 tokens", sessionID: id) }
        guard step.kind != .decode || t == 1 else {
            throw WorkerFailure(code: .malformedMessage, message: "a decode step has exactly 1 token, got \(t)", sessionID: id)
        }

        var piece: PrefillPiece?
        if step.prefillCallTokens > 0 {
            let p = PrefillPiece(callTokens: Int(step.prefillCallTokens), offset: Int(step.prefillOffset))
            guard p.isValid(tokens: t) else {
                throw WorkerFailure(code: .malformedMessage, message: "invalid \(p) for a step of \(t) tokens", sessionID: id)
            }
            piece = p
        }
        if stage.hasHead { try prepareSampler(step) }

        if stage.hasEmbedding {
            guard step.tokenIDs.count == t else {
                throw WorkerFailure(code: .malformedMessage, message: "\(step.tokenIDs.count) token ids for n_tokens \(t)",
                                    sessionID: id)
            }
            if let bad = step.tokenIDs.first(where: { Int($0) >= stage.config.vocabSize }) {
                throw WorkerFailure(code: .malformedMessage,
                                    message: "token id \(bad) is outside the vocabulary (0..<\(stage.config.vocabSize))",
                                    sessionID: id)
            }
            return StepInput(step: step, piece: piece, x: try stage.embed(step.tokenIDs.map { Int($0) }), vFirst: [])
        }

        guard let activation = step.activation else {
            throw WorkerFailure(code: .malformedMessage, message: "a stage after the first needs an activation tensor",
                                sessionID: id)
        }
        let x = try floats(message.tensor(activation), rows: t, c: c, what: "activation", session: id)
        var vFirst: [Float] = []
        if let descriptor = step.vFirst {
            vFirst = try floats(message.tensor(descriptor), rows: t, c: c, what: "v_first", session: id)
        }
        return StepInput(step: step, piece: piece, x: x, vFirst: vFirst)
    }

    func floats(_ tensor: WireTensor, rows: Int, c: Int, what: String, session: UInt64) throws -> [Float] {
        guard tensor.shape == [rows, c] else {
            throw WorkerFailure(code: .tensorSizeMismatch, message: "\(what) has shape \(tensor.shape), expected [\(rows), \(c)]",
                                sessionID: session)
        }
        do {
            return try tensor.floats()
        } catch {
            throw WorkerFailure(code: .malformedMessage, message: "\(what): \(error)", sessionID: session)
        }
    }

    /// Builds one session's output for the next stage: its activation and v_first.
    func activationOutput(for step: SessionStep, rows: Range<Int>, x: [Float], vFirst: [Float], c: Int,
                          assignment: StageAssignment, into reply: inout WireMessage) -> SessionOutput {
        var out = SessionOutput()
        out.sessionID = step.sessionID
        out.sequence = step.sequence
        let slice = (rows.lowerBound * c)..<(rows.upperBound * c)
        let dtype = assignment.wireDType ?? .f32
        out.activation = reply.appendTensor(WireTensor(floats: Array(x[slice]), shape: [rows.count, c], dtype: dtype,
                                                       name: "activation"))
        if !vFirst.isEmpty {
            out.vFirst = reply.appendTensor(WireTensor(floats: Array(vFirst[slice]), shape: [rows.count, c], dtype: dtype,
                                                       name: "v_first"))
        }
        out.output = .activationOnly
        return out
    }

    /// Builds one session's result on the last stage: a sampled token, or logits [rows, V].
    func headOutput(for step: SessionStep, logits: [Float], rows: Int, vocab: Int,
                    into reply: inout WireMessage) -> SessionOutput {
        var out = SessionOutput()
        out.sessionID = step.sessionID
        out.sequence = step.sequence
        guard step.sample && !step.wantFullLogits, sessions[step.sessionID]?.sampler != nil else {
            out.output = .logits(reply.appendTensor(WireTensor(floats: logits, shape: [rows, vocab], dtype: .f32,
                                                               name: "logits")))
            return out
        }
        var logits = logits
        let id = step.sessionID
        let token = sessions[id]!.sampler!.sample(logits: &logits)
        if tokenizer == nil { tokenizer = try? WorldTokenizer.bundled() }
        let bytes = tokenizer?.tokenBytes(token) ?? []
        sessions[id]!.sampler!.accept(token, weight: Sampler.penaltyWeight(forTokenBytes: bytes))
        out.output = .token(UInt32(token))
        return out
    }

    /// Creates the session's sampler on its first sampling step; invalid parameters
    /// reject the step before any state changes.
    func prepareSampler(_ step: SessionStep) throws {
        let id = step.sessionID
        guard step.sample, sessions[id]?.sampler == nil else { return }
        let options = SamplingOptions(wire: step.sampling, seed: step.rng.seed)
        do {
            sessions[id]!.sampler = try Sampler(options: options)
        } catch {
            throw WorkerFailure(code: .malformedMessage, message: "invalid sampling parameters: \(error)", sessionID: id)
        }
    }

    func record(micros: UInt64) {
        batches += 1
        computeMicros.append(micros)
        if computeMicros.count > 512 { computeMicros.removeFirst(computeMicros.count - 512) }
    }
}
