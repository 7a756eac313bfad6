// Envelope bytes -> protoc-c structs -> Swift message structs.
// The unpacked C message is freed before returning; every value is copied out.
// Unknown enum values and out-of-range numbers become WireError.invalidField.
import CProtobufC
import RWKVXProto

extension WireMessage {
    static func decodeEnvelope(_ header: [UInt8], tensorFrames: [[UInt8]]) throws -> WireMessage {
        let unpacked = header.withUnsafeBufferPointer { buffer in
            rwkvx__envelope__unpack(nil, buffer.count, buffer.baseAddress)
        }
        guard let envelope = unpacked else { throw WireError.malformedHeader(byteCount: header.count) }
        defer { rwkvx__envelope__free_unpacked(envelope, nil) }

        let version = envelope.pointee.protocol_version
        guard version == protocolVersion else {
            throw WireError.versionMismatch(received: version, expected: protocolVersion)
        }
        return WireMessage(
            messageID: envelope.pointee.message_id,
            inReplyTo: envelope.pointee.in_reply_to,
            body: try decodeBody(envelope.pointee),
            frames: tensorFrames)
    }

    private static func decodeBody(_ e: Rwkvx__Envelope) throws -> MessageBody {
        // A oneof case with a NULL member cannot come out of protobuf-c's
        // unpacker, but `required` turns one into an error, not a crash.
        switch e.body_case {
        case RWKVX__ENVELOPE__BODY_COORDINATOR_HELLO:
            .coordinatorHello(CoordinatorHello(try required(e.coordinator_hello, "coordinator_hello").pointee))
        case RWKVX__ENVELOPE__BODY_WORKER_HELLO:
            .workerHello(WorkerHello(try required(e.worker_hello, "worker_hello").pointee))
        case RWKVX__ENVELOPE__BODY_STAGE_ASSIGNMENT:
            .stageAssignment(try StageAssignment(try required(e.stage_assignment, "stage_assignment").pointee))
        case RWKVX__ENVELOPE__BODY_ASSIGNMENT_ACK:
            .assignmentAck(AssignmentAck(try required(e.assignment_ack, "assignment_ack").pointee))
        case RWKVX__ENVELOPE__BODY_SESSION_CONTROL:
            .sessionControl(try SessionControl(try required(e.session_control, "session_control").pointee))
        case RWKVX__ENVELOPE__BODY_SESSION_ACK:
            .sessionAck(try SessionAck(try required(e.session_ack, "session_ack").pointee))
        case RWKVX__ENVELOPE__BODY_FORWARD_REQUEST:
            .forwardRequest(try ForwardRequest(try required(e.forward_request, "forward_request").pointee))
        case RWKVX__ENVELOPE__BODY_FORWARD_RESULT:
            .forwardResult(try ForwardResult(try required(e.forward_result, "forward_result").pointee))
        case RWKVX__ENVELOPE__BODY_STATE_SNAPSHOT_REQUEST:
            .stateSnapshotRequest(StateSnapshotRequest(try required(e.state_snapshot_request, "state_snapshot_request").pointee))
        case RWKVX__ENVELOPE__BODY_STATE_SNAPSHOT:
            .stateSnapshot(try StateSnapshot(try required(e.state_snapshot, "state_snapshot").pointee))
        case RWKVX__ENVELOPE__BODY_STATE_DELTA:
            .stateDelta(try StateDelta(try required(e.state_delta, "state_delta").pointee))
        case RWKVX__ENVELOPE__BODY_HEARTBEAT:
            .heartbeat(Heartbeat(sentUnixMicros: try required(e.heartbeat, "heartbeat").pointee.sent_unix_micros))
        case RWKVX__ENVELOPE__BODY_HEALTH:
            .health(Health(try required(e.health, "health").pointee))
        case RWKVX__ENVELOPE__BODY_ERROR:
            .error(try ErrorReport(try required(e.error, "error").pointee))
        case RWKVX__ENVELOPE__BODY_SHUTDOWN:
            .shutdown(Shutdown(try required(e.shutdown, "shutdown").pointee))
        default:
            throw WireError.unknownBody(fieldNumber: e.body_case.rawValue)
        }
    }
}

// MARK: Helpers

private func required<T>(_ pointer: UnsafeMutablePointer<T>?, _ field: String) throws -> UnsafeMutablePointer<T> {
    guard let pointer else { throw WireError.invalidField(message: "Envelope", field: field, value: "null") }
    return pointer
}

private func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
    // protobuf-c does not validate UTF-8; String(cString:) repairs invalid bytes.
    pointer.map { String(cString: $0) } ?? ""
}

private func array<T>(_ pointer: UnsafeMutablePointer<T>?, _ count: Int) -> [T] {
    guard let pointer, count > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: pointer, count: count))
}

private func messages<T, R>(
    _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int,
    _ convert: (T) throws -> R
) throws -> [R] {
    try array(pointer, count).compactMap { try $0.map { try convert($0.pointee) } }
}

private func enumValue<E: RawRepresentable<UInt32>>(_ raw: UInt32, _ message: String, _ field: String) throws -> E {
    guard let value = E(rawValue: raw) else {
        throw WireError.invalidField(message: message, field: field, value: "unknown enum value \(raw)")
    }
    return value
}

private func intValue(_ raw: UInt64, _ message: String, _ field: String) throws -> Int {
    guard let value = Int(exactly: raw) else {
        throw WireError.invalidField(message: message, field: field, value: "\(raw) is out of range")
    }
    return value
}

// MARK: Messages

extension TensorDescriptor {
    init(_ c: Rwkvx__TensorDescriptor) throws {
        self.init(
            dtype: try enumValue(c.dtype.rawValue, "TensorDescriptor", "dtype"),
            shape: try array(c.shape, c.n_shape).map { try intValue($0, "TensorDescriptor", "shape") },
            frameIndex: Int(c.frame_index),
            byteLength: try intValue(c.byte_length, "TensorDescriptor", "byte_length"),
            name: string(c.name))
    }

    init?(_ pointer: UnsafeMutablePointer<Rwkvx__TensorDescriptor>?) throws {
        guard let pointer else { return nil }
        try self.init(pointer.pointee)
    }
}

extension CoordinatorHello {
    init(_ c: Rwkvx__CoordinatorHello) {
        self.init()
        protocolVersion = c.protocol_version
        buildID = string(c.build_id)
        clusterID = string(c.cluster_id)
    }
}

extension WorkerHello {
    init(_ c: Rwkvx__WorkerHello) {
        self.init()
        workerID = string(c.worker_id)
        cores = c.cores
        memoryBytes = c.memory_bytes
        kernelLevel = string(c.kernel_level)
        protocolVersion = c.protocol_version
        buildID = string(c.build_id)
    }
}

extension StageAssignment {
    init(_ c: Rwkvx__StageAssignment) throws {
        self.init()
        stageIndex = c.stage_index
        stageCount = c.stage_count
        modelPath = string(c.model_path)
        checkpointFingerprint = string(c.checkpoint_fingerprint)
        blocks = try messages(c.blocks, c.n_blocks) { block in
            BlockRef(index: block.index, kind: try enumValue(block.kind.rawValue, "BlockRef", "kind"))
        }
        hasEmbedding = c.has_embedding != 0
        hasHead = c.has_head != 0
        if let options = c.attention { attention = try WireAttentionOptions(options.pointee) }
        wireDType = c.wire_dtype.rawValue == 0 ? nil : try enumValue(c.wire_dtype.rawValue, "StageAssignment", "wire_dtype") as DType
        threads = c.threads
        nextStageEndpoint = string(c.next_stage_endpoint)
        stateDeltaInterval = c.state_delta_interval
        stageFingerprint = string(c.stage_fingerprint)
    }
}

extension WireAttentionOptions {
    init(_ c: Rwkvx__AttentionOptions) throws {
        self.init()
        chunkSize = c.chunk_size
        topK = c.top_k
        maxKVCacheSize = c.max_kv_cache_size
        kvCacheWindowSize = c.kv_cache_window_size
        minKVCacheSize = c.min_kv_cache_size
        attnMode = try enumValue(c.attn_mode.rawValue, "WireAttentionOptions", "attn_mode")
        kvCacheDType = c.kv_cache_dtype.rawValue == 0
            ? nil : try enumValue(c.kv_cache_dtype.rawValue, "WireAttentionOptions", "kv_cache_dtype") as DType
    }
}

extension AssignmentAck {
    init(_ c: Rwkvx__AssignmentAck) {
        self.init()
        stageIndex = c.stage_index
        blockCount = c.block_count
        weightBytes = c.weight_bytes
        stateBytesPerSession = c.state_bytes_per_session
        checkpointFingerprint = string(c.checkpoint_fingerprint)
    }
}

extension SessionControl {
    init(_ c: Rwkvx__SessionControl) throws {
        self.init(sessionID: c.session_id, action: try enumValue(c.action.rawValue, "SessionControl", "action"))
    }
}

extension SessionAck {
    init(_ c: Rwkvx__SessionAck) throws {
        self.init()
        sessionID = c.session_id
        action = try enumValue(c.action.rawValue, "SessionAck", "action")
        sequence = c.sequence
    }
}

extension SamplingParams {
    init(_ c: Rwkvx__SamplingParams) {
        self.init()
        temperature = c.temperature
        topP = c.top_p
        topK = c.top_k
        minP = c.min_p
        presencePenalty = c.presence_penalty
        frequencyPenalty = c.frequency_penalty
        repetitionPenalty = c.repetition_penalty
        penaltyDecay = c.penalty_decay
        bannedTokenIDs = array(c.banned_token_ids, c.n_banned_token_ids)
    }
}

extension RngState {
    init(_ c: Rwkvx__RngState) {
        self.init()
        seed = c.seed
        state = array(c.state, c.n_state)
    }
}

extension SessionStep {
    init(_ c: Rwkvx__SessionStep) throws {
        self.init()
        sessionID = c.session_id
        sequence = c.sequence
        kind = try enumValue(c.kind.rawValue, "SessionStep", "kind")
        tokenIDs = array(c.token_ids, c.n_token_ids)
        tokenCount = c.n_tokens
        wantFullLogits = c.want_full_logits != 0
        sample = c.sample != 0
        if let params = c.sampling { sampling = SamplingParams(params.pointee) }
        if let state = c.rng { rng = RngState(state.pointee) }
        activation = try TensorDescriptor(c.activation)
        vFirst = try TensorDescriptor(c.v_first)
        penaltyTokenIDs = array(c.penalty_token_ids, c.n_penalty_token_ids)
        prefillCallTokens = c.prefill_call_tokens
        prefillOffset = c.prefill_offset
    }
}

extension ForwardRequest {
    init(_ c: Rwkvx__ForwardRequest) throws {
        self.init()
        batchID = c.batch_id
        stageIndex = c.stage_index
        sessions = try messages(c.sessions, c.n_sessions, SessionStep.init)
    }
}

extension SessionOutput {
    init(_ c: Rwkvx__SessionOutput) throws {
        self.init()
        sessionID = c.session_id
        sequence = c.sequence
        switch c.output_case {
        case RWKVX__SESSION_OUTPUT__OUTPUT__NOT_SET:
            output = .none
        case RWKVX__SESSION_OUTPUT__OUTPUT_TOKEN_ID:
            output = .token(c.token_id)
        case RWKVX__SESSION_OUTPUT__OUTPUT_LOGITS:
            guard let logits = try TensorDescriptor(c.logits) else {
                throw WireError.invalidField(message: "SessionOutput", field: "logits", value: "null")
            }
            output = .logits(logits)
        case RWKVX__SESSION_OUTPUT__OUTPUT_ACTIVATION_ONLY:
            output = .activationOnly
        default:
            throw WireError.invalidField(message: "SessionOutput", field: "output", value: "unknown case \(c.output_case.rawValue)")
        }
        tokenLogprob = c.token_logprob
        if let state = c.rng { rng = RngState(state.pointee) }
        activation = try TensorDescriptor(c.activation)
        vFirst = try TensorDescriptor(c.v_first)
    }
}

extension ForwardResult {
    init(_ c: Rwkvx__ForwardResult) throws {
        self.init()
        batchID = c.batch_id
        stageIndex = c.stage_index
        sessions = try messages(c.sessions, c.n_sessions, SessionOutput.init)
        computeMicros = c.compute_micros
    }
}

extension LayerTensor {
    init(_ c: Rwkvx__LayerTensor) throws {
        guard let tensor = try TensorDescriptor(c.tensor) else {
            throw WireError.invalidField(message: "LayerTensor", field: "tensor", value: "missing")
        }
        self.init(
            blockIndex: c.block_index,
            update: try enumValue(c.update.rawValue, "LayerTensor", "update"),
            tensor: tensor)
    }
}

extension StateSnapshotRequest {
    init(_ c: Rwkvx__StateSnapshotRequest) {
        self.init(sessionIDs: array(c.session_ids, c.n_session_ids))
    }
}

extension StateSnapshot {
    init(_ c: Rwkvx__StateSnapshot) throws {
        self.init()
        sessionID = c.session_id
        sequence = c.sequence
        stageIndex = c.stage_index
        tensors = try messages(c.tensors, c.n_tensors, LayerTensor.init)
    }
}

extension StateDelta {
    init(_ c: Rwkvx__StateDelta) throws {
        self.init()
        sessionID = c.session_id
        baseSequence = c.base_sequence
        sequence = c.sequence
        stageIndex = c.stage_index
        tensors = try messages(c.tensors, c.n_tensors, LayerTensor.init)
    }
}

extension Health {
    init(_ c: Rwkvx__Health) {
        self.init()
        heartbeatUnixMicros = c.heartbeat_unix_micros
        load = c.load
        sessions = c.sessions
        queuedBatches = c.queued_batches
        residentBytes = c.resident_bytes
        latencies = array(c.latencies, c.n_latencies).compactMap { pointer in
            pointer.map { p in
                var latency = StageLatency()
                latency.stageIndex = p.pointee.stage_index
                latency.batches = p.pointee.batches
                latency.lastMicros = p.pointee.last_micros
                latency.p50Micros = p.pointee.p50_micros
                latency.p99Micros = p.pointee.p99_micros
                return latency
            }
        }
    }
}

extension ErrorReport {
    init(_ c: Rwkvx__Error) throws {
        self.init(code: try enumValue(c.code.rawValue, "Error", "code"), message: string(c.message))
        sessionID = c.session_id
        stageIndex = c.stage_index
        batchID = c.batch_id
    }
}

extension Shutdown {
    init(_ c: Rwkvx__Shutdown) {
        self.init(reason: string(c.reason), drain: c.drain != 0)
    }
}
