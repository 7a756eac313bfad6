// Swift message structs -> protoc-c structs -> Envelope bytes.
// Structs are built in a CArena with the generated `..._init()` functions
// (the `..._INIT` macros are not imported into Swift) and packed once.
import CProtobufC
import RWKVXProto

extension WireMessage {
    func encodeEnvelope(protocolVersion: UInt32) throws -> [UInt8] {
        let arena = CArena()
        let envelope: UnsafeMutablePointer<Rwkvx__Envelope> = arena.message { rwkvx__envelope__init($0) }
        envelope.pointee.protocol_version = protocolVersion
        envelope.pointee.message_id = messageID
        envelope.pointee.in_reply_to = inReplyTo
        setBody(envelope, arena)

        let size = rwkvx__envelope__get_packed_size(envelope)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            initialized = rwkvx__envelope__pack(envelope, buffer.baseAddress)
        }
    }

    private func setBody(_ envelope: UnsafeMutablePointer<Rwkvx__Envelope>, _ arena: CArena) {
        switch body {
        case .coordinatorHello(let hello):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_COORDINATOR_HELLO
            envelope.pointee.coordinator_hello = hello.c(arena)
        case .workerHello(let hello):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_WORKER_HELLO
            envelope.pointee.worker_hello = hello.c(arena)
        case .stageAssignment(let assignment):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_STAGE_ASSIGNMENT
            envelope.pointee.stage_assignment = assignment.c(arena)
        case .assignmentAck(let ack):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_ASSIGNMENT_ACK
            envelope.pointee.assignment_ack = ack.c(arena)
        case .sessionControl(let control):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_SESSION_CONTROL
            envelope.pointee.session_control = control.c(arena)
        case .sessionAck(let ack):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_SESSION_ACK
            envelope.pointee.session_ack = ack.c(arena)
        case .forwardRequest(let request):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_FORWARD_REQUEST
            envelope.pointee.forward_request = request.c(arena)
        case .forwardResult(let result):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_FORWARD_RESULT
            envelope.pointee.forward_result = result.c(arena)
        case .stateSnapshotRequest(let request):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_STATE_SNAPSHOT_REQUEST
            envelope.pointee.state_snapshot_request = request.c(arena)
        case .stateSnapshot(let snapshot):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_STATE_SNAPSHOT
            envelope.pointee.state_snapshot = snapshot.c(arena)
        case .stateDelta(let delta):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_STATE_DELTA
            envelope.pointee.state_delta = delta.c(arena)
        case .heartbeat(let heartbeat):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_HEARTBEAT
            envelope.pointee.heartbeat = heartbeat.c(arena)
        case .health(let health):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_HEALTH
            envelope.pointee.health = health.c(arena)
        case .error(let report):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_ERROR
            envelope.pointee.error = report.c(arena)
        case .shutdown(let shutdown):
            envelope.pointee.body_case = RWKVX__ENVELOPE__BODY_SHUTDOWN
            envelope.pointee.shutdown = shutdown.c(arena)
        }
    }
}

extension TensorDescriptor {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__TensorDescriptor> {
        let m: UnsafeMutablePointer<Rwkvx__TensorDescriptor> = arena.message { rwkvx__tensor_descriptor__init($0) }
        m.pointee.dtype = Rwkvx__DType(rawValue: dtype.rawValue)
        m.pointee.n_shape = shape.count
        m.pointee.shape = arena.array(shape.map { UInt64($0) })
        m.pointee.frame_index = UInt32(frameIndex)
        m.pointee.byte_length = UInt64(byteLength)
        m.pointee.name = arena.string(name)
        return m
    }
}

extension CoordinatorHello {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__CoordinatorHello> {
        let m: UnsafeMutablePointer<Rwkvx__CoordinatorHello> = arena.message { rwkvx__coordinator_hello__init($0) }
        m.pointee.protocol_version = protocolVersion
        m.pointee.build_id = arena.string(buildID)
        m.pointee.cluster_id = arena.string(clusterID)
        return m
    }
}

extension WorkerHello {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__WorkerHello> {
        let m: UnsafeMutablePointer<Rwkvx__WorkerHello> = arena.message { rwkvx__worker_hello__init($0) }
        m.pointee.worker_id = arena.string(workerID)
        m.pointee.cores = cores
        m.pointee.memory_bytes = memoryBytes
        m.pointee.kernel_level = arena.string(kernelLevel)
        m.pointee.protocol_version = protocolVersion
        m.pointee.build_id = arena.string(buildID)
        return m
    }
}

extension StageAssignment {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__StageAssignment> {
        let m: UnsafeMutablePointer<Rwkvx__StageAssignment> = arena.message { rwkvx__stage_assignment__init($0) }
        m.pointee.stage_index = stageIndex
        m.pointee.stage_count = stageCount
        m.pointee.model_path = arena.string(modelPath)
        m.pointee.checkpoint_fingerprint = arena.string(checkpointFingerprint)
        m.pointee.n_blocks = blocks.count
        m.pointee.blocks = arena.pointers(blocks.map { block in
            let b: UnsafeMutablePointer<Rwkvx__BlockRef> = arena.message { rwkvx__block_ref__init($0) }
            b.pointee.index = block.index
            b.pointee.kind = Rwkvx__BlockKind(rawValue: block.kind.rawValue)
            return b
        })
        m.pointee.has_embedding = hasEmbedding ? 1 : 0
        m.pointee.has_head = hasHead ? 1 : 0
        m.pointee.attention = attention.c(arena)
        m.pointee.wire_dtype = Rwkvx__DType(rawValue: wireDType?.rawValue ?? 0)
        m.pointee.threads = threads
        m.pointee.next_stage_endpoint = arena.string(nextStageEndpoint)
        m.pointee.state_delta_interval = stateDeltaInterval
        m.pointee.stage_fingerprint = arena.string(stageFingerprint)
        return m
    }
}

extension WireAttentionOptions {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__AttentionOptions> {
        let m: UnsafeMutablePointer<Rwkvx__AttentionOptions> = arena.message { rwkvx__attention_options__init($0) }
        m.pointee.chunk_size = chunkSize
        m.pointee.top_k = topK
        m.pointee.max_kv_cache_size = maxKVCacheSize
        m.pointee.kv_cache_window_size = kvCacheWindowSize
        m.pointee.min_kv_cache_size = minKVCacheSize
        m.pointee.attn_mode = Rwkvx__AttentionMode(rawValue: attnMode.rawValue)
        m.pointee.kv_cache_dtype = Rwkvx__DType(rawValue: kvCacheDType?.rawValue ?? 0)
        return m
    }
}

extension AssignmentAck {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__AssignmentAck> {
        let m: UnsafeMutablePointer<Rwkvx__AssignmentAck> = arena.message { rwkvx__assignment_ack__init($0) }
        m.pointee.stage_index = stageIndex
        m.pointee.block_count = blockCount
        m.pointee.weight_bytes = weightBytes
        m.pointee.state_bytes_per_session = stateBytesPerSession
        m.pointee.checkpoint_fingerprint = arena.string(checkpointFingerprint)
        return m
    }
}

extension SessionControl {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__SessionControl> {
        let m: UnsafeMutablePointer<Rwkvx__SessionControl> = arena.message { rwkvx__session_control__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.action = Rwkvx__SessionAction(rawValue: action.rawValue)
        return m
    }
}

extension SessionAck {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__SessionAck> {
        let m: UnsafeMutablePointer<Rwkvx__SessionAck> = arena.message { rwkvx__session_ack__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.action = Rwkvx__SessionAction(rawValue: action.rawValue)
        m.pointee.sequence = sequence
        return m
    }
}

extension SamplingParams {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__SamplingParams> {
        let m: UnsafeMutablePointer<Rwkvx__SamplingParams> = arena.message { rwkvx__sampling_params__init($0) }
        m.pointee.temperature = temperature
        m.pointee.top_p = topP
        m.pointee.top_k = topK
        m.pointee.min_p = minP
        m.pointee.presence_penalty = presencePenalty
        m.pointee.frequency_penalty = frequencyPenalty
        m.pointee.repetition_penalty = repetitionPenalty
        m.pointee.penalty_decay = penaltyDecay
        m.pointee.n_banned_token_ids = bannedTokenIDs.count
        m.pointee.banned_token_ids = arena.array(bannedTokenIDs)
        return m
    }
}

extension RngState {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__RngState> {
        let m: UnsafeMutablePointer<Rwkvx__RngState> = arena.message { rwkvx__rng_state__init($0) }
        m.pointee.seed = seed
        m.pointee.n_state = state.count
        m.pointee.state = arena.array(state)
        return m
    }
}

extension SessionStep {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__SessionStep> {
        let m: UnsafeMutablePointer<Rwkvx__SessionStep> = arena.message { rwkvx__session_step__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.sequence = sequence
        m.pointee.kind = Rwkvx__StepKind(rawValue: kind.rawValue)
        m.pointee.n_token_ids = tokenIDs.count
        m.pointee.token_ids = arena.array(tokenIDs)
        m.pointee.n_tokens = tokenCount
        m.pointee.want_full_logits = wantFullLogits ? 1 : 0
        m.pointee.sample = sample ? 1 : 0
        m.pointee.sampling = sampling.c(arena)
        m.pointee.rng = rng.c(arena)
        m.pointee.activation = activation?.c(arena)
        m.pointee.v_first = vFirst?.c(arena)
        m.pointee.n_penalty_token_ids = penaltyTokenIDs.count
        m.pointee.penalty_token_ids = arena.array(penaltyTokenIDs)
        m.pointee.prefill_call_tokens = prefillCallTokens
        m.pointee.prefill_offset = prefillOffset
        return m
    }
}

extension ForwardRequest {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__ForwardRequest> {
        let m: UnsafeMutablePointer<Rwkvx__ForwardRequest> = arena.message { rwkvx__forward_request__init($0) }
        m.pointee.batch_id = batchID
        m.pointee.stage_index = stageIndex
        m.pointee.n_sessions = sessions.count
        m.pointee.sessions = arena.pointers(sessions.map { $0.c(arena) })
        return m
    }
}

extension SessionOutput {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__SessionOutput> {
        let m: UnsafeMutablePointer<Rwkvx__SessionOutput> = arena.message { rwkvx__session_output__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.sequence = sequence
        switch output {
        case .none:
            m.pointee.output_case = RWKVX__SESSION_OUTPUT__OUTPUT__NOT_SET
        case .token(let token):
            m.pointee.output_case = RWKVX__SESSION_OUTPUT__OUTPUT_TOKEN_ID
            m.pointee.token_id = token
        case .logits(let logits):
            m.pointee.output_case = RWKVX__SESSION_OUTPUT__OUTPUT_LOGITS
            m.pointee.logits = logits.c(arena)
        case .activationOnly:
            m.pointee.output_case = RWKVX__SESSION_OUTPUT__OUTPUT_ACTIVATION_ONLY
            m.pointee.activation_only = 1
        }
        m.pointee.token_logprob = tokenLogprob
        m.pointee.rng = rng.c(arena)
        m.pointee.activation = activation?.c(arena)
        m.pointee.v_first = vFirst?.c(arena)
        return m
    }
}

extension ForwardResult {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__ForwardResult> {
        let m: UnsafeMutablePointer<Rwkvx__ForwardResult> = arena.message { rwkvx__forward_result__init($0) }
        m.pointee.batch_id = batchID
        m.pointee.stage_index = stageIndex
        m.pointee.n_sessions = sessions.count
        m.pointee.sessions = arena.pointers(sessions.map { $0.c(arena) })
        m.pointee.compute_micros = computeMicros
        return m
    }
}

extension LayerTensor {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__LayerTensor> {
        let m: UnsafeMutablePointer<Rwkvx__LayerTensor> = arena.message { rwkvx__layer_tensor__init($0) }
        m.pointee.block_index = blockIndex
        m.pointee.update = Rwkvx__StateUpdate(rawValue: update.rawValue)
        m.pointee.tensor = tensor.c(arena)
        return m
    }
}

extension StateSnapshotRequest {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__StateSnapshotRequest> {
        let m: UnsafeMutablePointer<Rwkvx__StateSnapshotRequest> = arena.message { rwkvx__state_snapshot_request__init($0) }
        m.pointee.n_session_ids = sessionIDs.count
        m.pointee.session_ids = arena.array(sessionIDs)
        return m
    }
}

extension StateSnapshot {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__StateSnapshot> {
        let m: UnsafeMutablePointer<Rwkvx__StateSnapshot> = arena.message { rwkvx__state_snapshot__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.sequence = sequence
        m.pointee.stage_index = stageIndex
        m.pointee.n_tensors = tensors.count
        m.pointee.tensors = arena.pointers(tensors.map { $0.c(arena) })
        return m
    }
}

extension StateDelta {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__StateDelta> {
        let m: UnsafeMutablePointer<Rwkvx__StateDelta> = arena.message { rwkvx__state_delta__init($0) }
        m.pointee.session_id = sessionID
        m.pointee.base_sequence = baseSequence
        m.pointee.sequence = sequence
        m.pointee.stage_index = stageIndex
        m.pointee.n_tensors = tensors.count
        m.pointee.tensors = arena.pointers(tensors.map { $0.c(arena) })
        return m
    }
}

extension Heartbeat {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__Heartbeat> {
        let m: UnsafeMutablePointer<Rwkvx__Heartbeat> = arena.message { rwkvx__heartbeat__init($0) }
        m.pointee.sent_unix_micros = sentUnixMicros
        return m
    }
}

extension Health {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__Health> {
        let m: UnsafeMutablePointer<Rwkvx__Health> = arena.message { rwkvx__health__init($0) }
        m.pointee.heartbeat_unix_micros = heartbeatUnixMicros
        m.pointee.load = load
        m.pointee.sessions = sessions
        m.pointee.queued_batches = queuedBatches
        m.pointee.resident_bytes = residentBytes
        m.pointee.n_latencies = latencies.count
        m.pointee.latencies = arena.pointers(latencies.map { latency in
            let l: UnsafeMutablePointer<Rwkvx__StageLatency> = arena.message { rwkvx__stage_latency__init($0) }
            l.pointee.stage_index = latency.stageIndex
            l.pointee.batches = latency.batches
            l.pointee.last_micros = latency.lastMicros
            l.pointee.p50_micros = latency.p50Micros
            l.pointee.p99_micros = latency.p99Micros
            return l
        })
        return m
    }
}

extension ErrorReport {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__Error> {
        let m: UnsafeMutablePointer<Rwkvx__Error> = arena.message { rwkvx__error__init($0) }
        m.pointee.code = Rwkvx__ErrorCode(rawValue: code.rawValue)
        m.pointee.message = arena.string(message)
        m.pointee.session_id = sessionID
        m.pointee.stage_index = stageIndex
        m.pointee.batch_id = batchID
        return m
    }
}

extension Shutdown {
    func c(_ arena: CArena) -> UnsafeMutablePointer<Rwkvx__Shutdown> {
        let m: UnsafeMutablePointer<Rwkvx__Shutdown> = arena.message { rwkvx__shutdown__init($0) }
        m.pointee.reason = arena.string(reason)
        m.pointee.drain = drain ? 1 : 0
        return m
    }
}
