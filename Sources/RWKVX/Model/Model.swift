// A whole model in one process: one stage spanning every block.
import Foundation

public final class Model: @unchecked Sendable {
    public let checkpoint: Checkpoint
    public let config: ModelConfig
    public let stage: Stage

    public init(path: String, options: AttentionOptions = AttentionOptions(), format: WeightFormat = .stored,
                pool: ThreadPool? = nil) throws {
        checkpoint = try Checkpoint.open(path: path)
        config = try ModelConfig.infer(from: checkpoint)
        stage = try Stage(checkpoint: checkpoint, config: config,
                          positions: 0..<config.executionOrder.count, options: options, format: format, pool: pool)
    }

    public func makeState() -> SessionState { SessionState(config: config) }

    /// Runs `tokens` and returns the logits of the last one ([V]), or of all ([T, V])
    /// with `fullOutput`. One token takes the decode path, as in the reference.
    public func forward(_ tokens: [Int], state: inout SessionState, fullOutput: Bool = false) throws -> [Float] {
        precondition(!tokens.isEmpty, "forward needs at least one token")
        var x = try stage.embed(tokens)
        var vFirst: [Float] = []
        stage.forward(&x, vFirst: &vFirst, state: &state)
        return stage.logits(x, fullOutput: fullOutput)
    }
}
