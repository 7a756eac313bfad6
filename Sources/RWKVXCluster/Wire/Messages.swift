// Swift forms of the protocol messages in proto/rwkvx.proto, one struct per
// message. Field meanings and legal orders are documented in the .proto file;
// comments here cover only what the Swift form adds. Optional tensor
// descriptors are nil where the proto field is unset.

// MARK: Enums

public enum WireAttentionMode: UInt32, Sendable { case unspecified = 0, sparse, full, none }
public enum BlockKind: UInt32, Sendable { case unspecified = 0, rwkv7, attention }
public enum SessionAction: UInt32, Sendable { case unspecified = 0, open, close, reset }
public enum StepKind: UInt32, Sendable { case unspecified = 0, prefill, decode }
public enum StateUpdate: UInt32, Sendable { case unspecified = 0, replace, append }

public enum ErrorCode: UInt32, Sendable {
    case unspecified = 0
    case versionMismatch, malformedMessage, tensorSizeMismatch, notRegistered
    case assignmentFailed, fingerprintMismatch, unknownSession, sessionExists
    case sequenceGap, outOfMemory, overloaded, `internal`, shuttingDown
}

// MARK: Registration

public struct CoordinatorHello: Sendable, Equatable {
    public var protocolVersion: UInt32 = WireMessage.protocolVersion
    public var buildID = ""
    public var clusterID = ""
    public init() {}
}

public struct WorkerHello: Sendable, Equatable {
    public var workerID = ""
    public var cores: UInt32 = 0
    public var memoryBytes: UInt64 = 0
    public var kernelLevel = ""
    public var protocolVersion: UInt32 = WireMessage.protocolVersion
    public var buildID = ""
    public init() {}
}

// MARK: Stage assignment

public struct WireAttentionOptions: Sendable, Equatable {
    public var chunkSize: UInt32 = 0
    public var topK: UInt32 = 0
    public var maxKVCacheSize: UInt64 = 0
    public var kvCacheWindowSize: UInt64 = 0
    public var minKVCacheSize: UInt64 = 0
    public var attnMode: WireAttentionMode = .unspecified
    /// nil: unspecified (fp32).
    public var kvCacheDType: DType?
    public init() {}
}

public struct BlockRef: Sendable, Equatable {
    public var index: UInt32
    public var kind: BlockKind
    public init(index: UInt32, kind: BlockKind) {
        self.index = index
        self.kind = kind
    }
}

public struct StageAssignment: Sendable, Equatable {
    public var stageIndex: UInt32 = 0
    public var stageCount: UInt32 = 0
    public var modelPath = ""
    public var checkpointFingerprint = ""
    public var blocks: [BlockRef] = []
    public var hasEmbedding = false
    public var hasHead = false
    public var attention = WireAttentionOptions()
    /// Activation dtype this stage sends; nil where the proto field is unset.
    public var wireDType: DType? = nil
    public var threads: UInt32 = 0
    public var nextStageEndpoint = ""
    public var stateDeltaInterval: UInt32 = 0
    public var stageFingerprint = ""
    public init() {}
}

public struct AssignmentAck: Sendable, Equatable {
    public var stageIndex: UInt32 = 0
    public var blockCount: UInt32 = 0
    public var weightBytes: UInt64 = 0
    public var stateBytesPerSession: UInt64 = 0
    public var checkpointFingerprint = ""
    public init() {}
}

// MARK: Sessions

public struct SessionControl: Sendable, Equatable {
    public var sessionID: UInt64
    public var action: SessionAction
    public init(sessionID: UInt64, action: SessionAction) {
        self.sessionID = sessionID
        self.action = action
    }
}

public struct SessionAck: Sendable, Equatable {
    public var sessionID: UInt64 = 0
    public var action: SessionAction = .unspecified
    public var sequence: UInt64 = 0
    public init() {}
}

// MARK: Forward pass

public struct SamplingParams: Sendable, Equatable {
    public var temperature: Float = 0
    public var topP: Float = 0
    public var topK: UInt32 = 0
    public var minP: Float = 0
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    public var repetitionPenalty: Float = 0
    public var penaltyDecay: Float = 0
    public var bannedTokenIDs: [UInt32] = []
    public init() {}
}

public struct RngState: Sendable, Equatable {
    public var seed: UInt64 = 0
    /// Generator words; empty means "seed from `seed`".
    public var state: [UInt64] = []
    public init() {}
}

public struct SessionStep: Sendable, Equatable {
    public var sessionID: UInt64 = 0
    public var sequence: UInt64 = 0
    public var kind: StepKind = .unspecified
    public var tokenIDs: [UInt32] = []
    public var tokenCount: UInt32 = 0
    public var wantFullLogits = false
    public var sample = false
    public var sampling = SamplingParams()
    public var rng = RngState()
    public var activation: TensorDescriptor? = nil
    public var vFirst: TensorDescriptor? = nil
    public var penaltyTokenIDs: [UInt32] = []
    /// The prefill call this step is a piece of; 0 = the step is the whole call.
    public var prefillCallTokens: UInt32 = 0
    public var prefillOffset: UInt32 = 0
    public init() {}
}

public struct ForwardRequest: Sendable, Equatable {
    public var batchID: UInt64 = 0
    public var stageIndex: UInt32 = 0
    public var sessions: [SessionStep] = []
    public init() {}
}

/// SessionOutput's oneof `output`.
public enum SessionOutputValue: Sendable, Equatable {
    case none
    case token(UInt32)
    case logits(TensorDescriptor)
    case activationOnly
}

public struct SessionOutput: Sendable, Equatable {
    public var sessionID: UInt64 = 0
    public var sequence: UInt64 = 0
    public var output: SessionOutputValue = .none
    public var tokenLogprob: Float = 0
    public var rng = RngState()
    public var activation: TensorDescriptor? = nil
    public var vFirst: TensorDescriptor? = nil
    public init() {}
}

public struct ForwardResult: Sendable, Equatable {
    public var batchID: UInt64 = 0
    public var stageIndex: UInt32 = 0
    public var sessions: [SessionOutput] = []
    public var computeMicros: UInt64 = 0
    public init() {}
}

// MARK: State

public struct LayerTensor: Sendable, Equatable {
    public var blockIndex: UInt32
    public var update: StateUpdate
    public var tensor: TensorDescriptor
    public init(blockIndex: UInt32, update: StateUpdate, tensor: TensorDescriptor) {
        self.blockIndex = blockIndex
        self.update = update
        self.tensor = tensor
    }
}

public struct StateSnapshotRequest: Sendable, Equatable {
    public var sessionIDs: [UInt64]
    public init(sessionIDs: [UInt64]) { self.sessionIDs = sessionIDs }
}

public struct StateSnapshot: Sendable, Equatable {
    public var sessionID: UInt64 = 0
    public var sequence: UInt64 = 0
    public var stageIndex: UInt32 = 0
    public var tensors: [LayerTensor] = []
    public init() {}
}

public struct StateDelta: Sendable, Equatable {
    public var sessionID: UInt64 = 0
    public var baseSequence: UInt64 = 0
    public var sequence: UInt64 = 0
    public var stageIndex: UInt32 = 0
    public var tensors: [LayerTensor] = []
    public init() {}
}

// MARK: Liveness

public struct Heartbeat: Sendable, Equatable {
    public var sentUnixMicros: UInt64
    public init(sentUnixMicros: UInt64) { self.sentUnixMicros = sentUnixMicros }
}

public struct StageLatency: Sendable, Equatable {
    public var stageIndex: UInt32 = 0
    public var batches: UInt64 = 0
    public var lastMicros: UInt64 = 0
    public var p50Micros: UInt64 = 0
    public var p99Micros: UInt64 = 0
    public init() {}
}

public struct Health: Sendable, Equatable {
    public var heartbeatUnixMicros: UInt64 = 0
    public var load: Float = 0
    public var sessions: UInt32 = 0
    public var queuedBatches: UInt32 = 0
    public var residentBytes: UInt64 = 0
    public var latencies: [StageLatency] = []
    public init() {}
}

// MARK: Errors and shutdown

/// Proto message Error, named ErrorReport so it does not shadow Swift.Error.
public struct ErrorReport: Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    public var sessionID: UInt64 = 0
    public var stageIndex: UInt32 = 0
    public var batchID: UInt64 = 0
    public init(code: ErrorCode, message: String) {
        self.code = code
        self.message = message
    }
}

public struct Shutdown: Sendable, Equatable {
    public var reason: String
    public var drain: Bool
    public init(reason: String, drain: Bool) {
        self.reason = reason
        self.drain = drain
    }
}
