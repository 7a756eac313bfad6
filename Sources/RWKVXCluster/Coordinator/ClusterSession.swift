// A session as the coordinator tracks it: the steps still to run, the one step that
// is moving through the stages, and for text generation the sampling and
// streaming state.
import Foundation
import RWKVX

/// One step of a session: a prefill of several tokens or a decode of one.
struct SessionStepPlan {
    var tokens: [Int]
    var wantFullLogits = false
    /// The last stage samples a token from the last logits.
    var sample = false
    /// The client waiting for this step's logits (logits API), if any.
    var replyTo: [UInt8]?
    /// Set when the step is one piece of a longer prefill call.
    var piece: PrefillPiece?
}

/// The step a session has in the pipeline: where it is and what it carries.
struct StepInFlight {
    var plan: SessionStepPlan
    var sequence: UInt64
    var stage = 0
    /// [T, C] output of the previous stage (empty on stage 0) and v_first.
    var activation: WireTensor?
    var vFirst: WireTensor?
}

/// Text generation state of a session.
struct GenerationRun {
    let client: [UInt8]
    let sampling: SamplingOptions
    var stopChecker: StopChecker
    var text = UTF8StreamDecoder()
    var report = GenerationReport()
    let started = Date()
    var decodeStarted: Date?
}

final class ClusterSession {
    let id: UInt64
    /// Steps not started yet, in order.
    var pending: [SessionStepPlan] = []
    var current: StepInFlight?
    /// Last sequence number sent (the same on every stage).
    var sequence: UInt64 = 0
    /// Tokens the session has run through the model (an upper bound of its KV cache rows).
    var tokensProcessed = 0
    var generation: GenerationRun?
    /// Set when a stage dropped the step and its Error is on the way.
    var awaitingError = false
    /// Last request or result of the session, for closing sessions clients abandoned.
    var lastActivity = Date()

    init(id: UInt64) {
        self.id = id
    }
}

/// A batch a stage is computing.
struct InFlightBatch {
    let batchID: UInt64
    let sessions: [UInt64]
    let sent: Date
    let tokens: Int
}

/// Snapshots of one session arriving from every stage.
struct SnapshotCollection {
    let client: [UInt8]
    var state = SessionState()
    var received: Set<UInt32> = []
}
