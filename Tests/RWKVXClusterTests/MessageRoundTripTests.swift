// Every protocol message through real ROUTER/DEALER sockets, over tcp and ipc.
import XCTest
@testable import RWKVXCluster

/// One filled-in message of each body kind, with tensor frames where the kind has them.
func sampleMessages() -> [WireMessage] {
    var messages: [WireMessage] = []

    var coordinatorHello = CoordinatorHello()
    coordinatorHello.buildID = "abc123"
    coordinatorHello.clusterID = "cluster-ü"
    messages.append(WireMessage(messageID: 1, body: .coordinatorHello(coordinatorHello)))

    var workerHello = WorkerHello()
    workerHello.workerID = "127.0.0.1:5555"
    workerHello.cores = 2
    workerHello.memoryBytes = 8 << 30
    workerHello.kernelLevel = "avx512"
    workerHello.buildID = "def456"
    messages.append(WireMessage(messageID: 2, inReplyTo: 1, body: .workerHello(workerHello)))

    var assignment = StageAssignment()
    assignment.stageIndex = 1
    assignment.stageCount = 3
    assignment.modelPath = "/models/rwkv-x.pth"
    assignment.checkpointFingerprint = "sha256:00ff"
    assignment.blocks = [BlockRef(index: 8, kind: .rwkv7), BlockRef(index: 9, kind: .attention)]
    assignment.hasHead = true
    assignment.attention.chunkSize = 2_048
    assignment.attention.topK = 4
    assignment.attention.maxKVCacheSize = 65_536
    assignment.attention.kvCacheWindowSize = 4_096
    assignment.attention.minKVCacheSize = 1_024
    assignment.attention.attnMode = .sparse
    assignment.attention.kvCacheDType = .f16
    assignment.wireDType = .bf16
    assignment.threads = 2
    assignment.nextStageEndpoint = "tcp://127.0.0.1:6000"
    assignment.stateDeltaInterval = 16
    messages.append(WireMessage(messageID: 3, body: .stageAssignment(assignment)))

    var ack = AssignmentAck()
    ack.stageIndex = 1
    ack.blockCount = 2
    ack.weightBytes = 123_456_789
    ack.stateBytesPerSession = 1 << 20
    ack.checkpointFingerprint = "sha256:00ff"
    messages.append(WireMessage(messageID: 4, inReplyTo: 3, body: .assignmentAck(ack)))

    messages.append(WireMessage(messageID: 5, body: .sessionControl(SessionControl(sessionID: 42, action: .open))))
    var sessionAck = SessionAck()
    sessionAck.sessionID = 42
    sessionAck.action = .reset
    sessionAck.sequence = 7
    messages.append(WireMessage(messageID: 6, body: .sessionAck(sessionAck)))

    // ForwardRequest to a middle stage: activation and v_first of two sessions.
    let embd = 64
    var request = WireMessage(messageID: 7, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
    var forward = ForwardRequest()
    forward.batchID = 99
    forward.stageIndex = 1
    for (index, tokens) in [5, 1].enumerated() {
        var step = SessionStep()
        step.sessionID = UInt64(100 + index)
        step.sequence = UInt64(3 + index)
        step.kind = tokens > 1 ? .prefill : .decode
        step.tokenIDs = (0..<tokens).map { UInt32(1_000 + $0) }
        step.tokenCount = UInt32(tokens)
        step.wantFullLogits = index == 0
        step.sample = index == 1
        step.sampling.temperature = 0.8
        step.sampling.topP = 0.95
        step.sampling.topK = 40
        step.sampling.minP = 0.05
        step.sampling.presencePenalty = 0.1
        step.sampling.frequencyPenalty = 0.2
        step.sampling.repetitionPenalty = 1.1
        step.rng.seed = 1_234
        step.rng.state = [1, 2, 3, .max]
        step.penaltyTokenIDs = [7, 8, 9]
        let values = testFloats(count: tokens * embd, seed: UInt64(index + 1))
        step.activation = request.appendTensor(WireTensor(floats: values, shape: [tokens, embd], dtype: .f32, name: "x"))
        step.vFirst = request.appendTensor(WireTensor(floats: values.reversed(), shape: [tokens, embd], dtype: .bf16, name: "v_first"))
        forward.sessions.append(step)
    }
    request.body = .forwardRequest(forward)
    messages.append(request)

    // ForwardResult: one sampled token, one logits tensor, one activation relay.
    var resultMessage = WireMessage(messageID: 8, inReplyTo: 7, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
    var result = ForwardResult()
    result.batchID = 99
    result.stageIndex = 2
    result.computeMicros = 1_500
    var sampled = SessionOutput()
    sampled.sessionID = 100
    sampled.sequence = 3
    sampled.output = .token(65_529)
    sampled.tokenLogprob = -0.25
    sampled.rng.state = [9, 8, 7, 6]
    var logits = SessionOutput()
    logits.sessionID = 101
    logits.sequence = 4
    logits.output = .logits(resultMessage.appendTensor(
        WireTensor(floats: testFloats(count: 2 * 300), shape: [2, 300], dtype: .f32, name: "logits")))
    var relay = SessionOutput()
    relay.sessionID = 102
    relay.output = .activationOnly
    relay.activation = resultMessage.appendTensor(WireTensor(floats: testFloats(count: embd), shape: [1, embd], dtype: .f16))
    relay.vFirst = resultMessage.appendTensor(WireTensor(floats: testFloats(count: embd, seed: 5), shape: [1, embd], dtype: .f16))
    result.sessions = [sampled, logits, relay]
    resultMessage.body = .forwardResult(result)
    messages.append(resultMessage)

    messages.append(WireMessage(messageID: 9, body: .stateSnapshotRequest(StateSnapshotRequest(sessionIDs: [100, 101]))))

    var snapshotMessage = WireMessage(messageID: 10, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
    var snapshot = StateSnapshot()
    snapshot.sessionID = 100
    snapshot.sequence = 3
    snapshot.stageIndex = 1
    for block in UInt32(8)...9 {
        let wkv = snapshotMessage.appendTensor(WireTensor(floats: testFloats(count: 4 * 16 * 16, seed: UInt64(block)), shape: [4, 16, 16], dtype: .f32, name: "wkv"))
        snapshot.tensors.append(LayerTensor(blockIndex: block, update: .replace, tensor: wkv))
        let shift = snapshotMessage.appendTensor(WireTensor(dtype: .u8, shape: [3], bytes: [1, 2, 3], name: "blob"))
        snapshot.tensors.append(LayerTensor(blockIndex: block, update: .replace, tensor: shift))
    }
    snapshotMessage.body = .stateSnapshot(snapshot)
    messages.append(snapshotMessage)

    var deltaMessage = WireMessage(messageID: 11, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
    var delta = StateDelta()
    delta.sessionID = 100
    delta.baseSequence = 3
    delta.sequence = 4
    delta.stageIndex = 1
    let rows = deltaMessage.appendTensor(WireTensor(dtype: .i32, shape: [2, 2], bytes: Array(repeating: 7, count: 16), name: "kv_k"))
    delta.tensors = [LayerTensor(blockIndex: 9, update: .append, tensor: rows)]
    deltaMessage.body = .stateDelta(delta)
    messages.append(deltaMessage)

    messages.append(WireMessage(messageID: 12, body: .heartbeat(Heartbeat(sentUnixMicros: 1_700_000_000_000_000))))

    var health = Health()
    health.heartbeatUnixMicros = 1_700_000_000_000_000
    health.load = 1.5
    health.sessions = 12
    health.queuedBatches = 3
    health.residentBytes = 5 << 30
    var latency = StageLatency()
    latency.stageIndex = 1
    latency.batches = 1_000
    latency.lastMicros = 900
    latency.p50Micros = 850
    latency.p99Micros = 2_000
    health.latencies = [latency]
    messages.append(WireMessage(messageID: 13, inReplyTo: 12, body: .health(health)))

    var report = ErrorReport(code: .sequenceGap, message: "session 100 expected sequence 4, received 6")
    report.sessionID = 100
    report.stageIndex = 1
    report.batchID = 99
    messages.append(WireMessage(messageID: 14, body: .error(report)))

    messages.append(WireMessage(messageID: 15, body: .shutdown(Shutdown(reason: "test over", drain: true))))
    return messages
}

final class ClusterMessageRoundTripTests: XCTestCase {
    func testSamplesCoverEveryBodyKind() {
        let kinds = Set(sampleMessages().map { "\($0.body)".prefix(while: { $0 != "(" }) })
        XCTAssertEqual(kinds.count, 15)
    }

    func testEveryMessageRoundTripsOverTCP() throws {
        try roundTripEveryMessage(.tcp)
    }

    func testEveryMessageRoundTripsOverIPC() throws {
        try roundTripEveryMessage(.ipc)
    }

    private func roundTripEveryMessage(_ transport: TestTransport) throws {
        let pair = try SocketPair(transport)
        defer { pair.close() }
        for message in sampleMessages() {
            let (peer, received) = try pair.sendToRouter(message)
            XCTAssertEqual(received, message, "dealer -> router: \(message.body)")
            let echoed = try pair.sendToDealer(received, peer: peer)
            XCTAssertEqual(echoed, message, "router -> dealer: \(message.body)")
        }
    }

    func testTensorFramesAreBitExactInF32() throws {
        let pair = try SocketPair(.tcp)
        defer { pair.close() }
        let values = testFloats(count: 3 * 1_024) + [.nan, -0.0, .infinity, .leastNonzeroMagnitude]
        var message = WireMessage(messageID: 1, body: .heartbeat(Heartbeat(sentUnixMicros: 0)))
        var step = SessionStep()
        step.sessionID = 1
        step.activation = message.appendTensor(WireTensor(floats: values, shape: [1, values.count], dtype: .f32))
        var request = ForwardRequest()
        request.sessions = [step]
        message.body = .forwardRequest(request)

        let (_, received) = try pair.sendToRouter(message)
        guard case .forwardRequest(let decoded) = received.body, let activation = decoded.sessions.first?.activation else {
            return XCTFail("expected a ForwardRequest with an activation, got \(received.body)")
        }
        let back = try received.tensor(activation).floats()
        XCTAssertEqual(back.map(\.bitPattern), values.map(\.bitPattern))
    }
}
