// Text generation on one session: prefill the prompt, then sample and decode one
// token at a time, streaming text as soon as whole UTF-8 characters exist.
import Foundation

/// Counts and timings of one generation.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    /// Seconds spent in the prompt prefill.
    public var prefillSeconds = 0.0
    /// Seconds spent decoding generated tokens (sampling included).
    public var decodeSeconds = 0.0
    public var stop: StopReason?

    public init() {}

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0 }
}

/// Anything that turns tokens into next-token logits for one session.
public protocol TokenStepper {
    /// Logits [V] after the tokens (a prefill for several, a decode for one).
    mutating func step(_ tokens: [Int]) throws -> [Float]
}

/// One in-process session of a model.
public struct LocalSession: TokenStepper {
    public let model: Model
    public var state: SessionState

    public init(model: Model) {
        self.model = model
        state = model.makeState()
    }

    public mutating func step(_ tokens: [Int]) throws -> [Float] {
        try model.forward(tokens, state: &state)
    }
}

public enum GenerationError: Error, CustomStringConvertible, Equatable {
    case emptyPrompt
    /// NaN or infinite logits after `generated` generated tokens.
    case nonFiniteLogits(generated: Int)

    public var description: String {
        switch self {
        case .emptyPrompt: return "the prompt is empty; pass some text with --prompt"
        case .nonFiniteLogits(let generated):
            return "the model produced NaN or infinite logits after \(generated) generated tokens; "
                + "the checkpoint's weights are probably damaged (check the file, or its source)"
        }
    }
}

/// Generates up to `options.maxTokens` tokens after `prompt`, calling `emit` with each
/// piece of text that is safe to show (stop strings are never shown in part).
public func generateText<S: TokenStepper>(session: inout S, tokenizer: WorldTokenizer, prompt: String,
                                          options: SamplingOptions, emit: (String) -> Void) throws -> GenerationStats {
    try generateText(session: &session, tokenizer: tokenizer, promptTokens: tokenizer.encode(prompt), options: options,
                     emit: emit)
}

/// Generates after a prompt given as token ids (for prompts that are not valid UTF-8).
public func generateText<S: TokenStepper>(session: inout S, tokenizer: WorldTokenizer, promptTokens: [Int],
                                          options: SamplingOptions, emit: (String) -> Void) throws -> GenerationStats {
    var stats = GenerationStats()
    guard !promptTokens.isEmpty else { throw GenerationError.emptyPrompt }
    stats.promptTokens = promptTokens.count

    try options.validate()
    var stopChecker = StopChecker(options: options)
    var text = UTF8StreamDecoder()

    // prefill the prompt
    let start = Date()
    var logits = try session.step(promptTokens)
    stats.prefillSeconds = Date().timeIntervalSince(start)

    // The logits give the model's vocabulary size, which bounds the textless ids to ban.
    var sampler = try Sampler(options: options.banningTextlessTokens(tokenizer: tokenizer, modelVocabularySize: logits.count))

    // sample, show, decode
    let decodeStart = Date()
    while stats.generatedTokens < options.maxTokens {
        // NaN logits would make every comparison false and quietly pick token 0.
        if logits.contains(where: { !$0.isFinite }) {
            throw GenerationError.nonFiniteLogits(generated: stats.generatedTokens)
        }
        let token = sampler.sample(logits: &logits)
        let bytes = tokenizer.tokenBytes(token) ?? []
        let check = stopChecker.check(token: token, bytes: bytes)
        let piece = text.append(check.output)
        if !piece.isEmpty { emit(piece) }
        if let stop = check.stop {
            stats.stop = stop
            break
        }
        sampler.accept(token, weight: Sampler.penaltyWeight(forTokenBytes: bytes))
        stats.generatedTokens += 1
        if stats.generatedTokens == options.maxTokens { break }
        logits = try session.step([token])
    }
    let tail = text.append(stopChecker.finish()) + text.finish()
    if !tail.isEmpty { emit(tail) }
    stats.decodeSeconds = Date().timeIntervalSince(decodeStart)
    return stats
}

extension SamplingOptions {
    /// Returns these options with the ids from the end of the tokenizer's vocabulary up
    /// to `modelVocabularySize` banned. A model may pad its head past the World
    /// vocabulary (65536 vs 65530), and those ids have no text.
    public func banningTextlessTokens(tokenizer: WorldTokenizer, modelVocabularySize: Int) -> SamplingOptions {
        var options = self
        let end = max(modelVocabularySize, tokenizer.vocabularySize)
        let banned = Set(options.bannedTokens)
        options.bannedTokens += (tokenizer.vocabularySize..<end).filter { !banned.contains($0) }
        return options
    }
}
