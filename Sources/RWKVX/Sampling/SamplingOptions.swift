// Sampling settings for text generation, with the defaults of a plain RWKV
// World chat run. The penalty options follow the RWKV `PIPELINE.generate` loop
// of the `rwkv` pip package (alpha_presence, alpha_frequency, alpha_decay).

/// Settings that turn logits into tokens and decide when generation stops.
/// Decoding JSON fills every missing key with its default.
public struct SamplingOptions: Sendable, Codable, Equatable {
    /// Divisor of the logits before the softmax. Default 1.0; 0 picks the
    /// argmax (greedy, lowest id on ties). Range: finite, ≥ 0.
    public var temperature: Float = 1.0
    /// Nucleus size: keep the most likely tokens whose probabilities first sum
    /// to at least `topP` (always at least one). Default 1.0 (off). Range 0...1.
    public var topP: Float = 1.0
    /// Keep only the `topK` most likely tokens. Default 0 (off). Range ≥ 0.
    public var topK: Int = 0
    /// Subtracted once from the logit of every token generated so far.
    /// Default 0. Range: finite.
    public var presencePenalty: Float = 0
    /// Subtracted from a token's logit per (decayed) occurrence. Default 0. Range: finite.
    public var frequencyPenalty: Float = 0
    /// Factor that every accumulated occurrence count is multiplied by at each
    /// generated token, so old repeats fade. Default 0.996, the default of
    /// `PIPELINE_ARGS.alpha_decay` in the rwkv package. Range 0...1.
    public var penaltyDecay: Float = 0.996
    /// Tokens that are never sampled. Default none.
    public var bannedTokens: [Int] = []
    /// Tokens that end generation without being output. Default [0], the end
    /// of text of RWKV World models.
    public var stopTokens: [Int] = [0]
    /// Texts that end generation; output stops before the first occurrence.
    /// Default none. Each must be non-empty.
    public var stopStrings: [String] = []
    /// Seed of the sampler's generator; nil picks a random seed. Default nil.
    public var seed: UInt64? = nil
    /// Maximum number of generated tokens. Default 256. Range ≥ 0.
    public var maxTokens: Int = 256

    public init(
        temperature: Float = 1.0,
        topP: Float = 1.0,
        topK: Int = 0,
        presencePenalty: Float = 0,
        frequencyPenalty: Float = 0,
        penaltyDecay: Float = 0.996,
        bannedTokens: [Int] = [],
        stopTokens: [Int] = [0],
        stopStrings: [String] = [],
        seed: UInt64? = nil,
        maxTokens: Int = 256
    ) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.penaltyDecay = penaltyDecay
        self.bannedTokens = bannedTokens
        self.stopTokens = stopTokens
        self.stopStrings = stopStrings
        self.seed = seed
        self.maxTokens = maxTokens
    }

    private enum CodingKeys: String, CodingKey {
        case temperature, topP, topK, presencePenalty, frequencyPenalty, penaltyDecay
        case bannedTokens, stopTokens, stopStrings, seed, maxTokens
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = SamplingOptions()
        temperature = try container.decodeIfPresent(Float.self, forKey: .temperature) ?? defaults.temperature
        topP = try container.decodeIfPresent(Float.self, forKey: .topP) ?? defaults.topP
        topK = try container.decodeIfPresent(Int.self, forKey: .topK) ?? defaults.topK
        presencePenalty = try container.decodeIfPresent(Float.self, forKey: .presencePenalty) ?? defaults.presencePenalty
        frequencyPenalty = try container.decodeIfPresent(Float.self, forKey: .frequencyPenalty) ?? defaults.frequencyPenalty
        penaltyDecay = try container.decodeIfPresent(Float.self, forKey: .penaltyDecay) ?? defaults.penaltyDecay
        bannedTokens = try container.decodeIfPresent([Int].self, forKey: .bannedTokens) ?? defaults.bannedTokens
        stopTokens = try container.decodeIfPresent([Int].self, forKey: .stopTokens) ?? defaults.stopTokens
        stopStrings = try container.decodeIfPresent([String].self, forKey: .stopStrings) ?? defaults.stopStrings
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed) ?? defaults.seed
        maxTokens = try container.decodeIfPresent(Int.self, forKey: .maxTokens) ?? defaults.maxTokens
    }

    /// Checks every option against its range. With `vocabularySize`, also
    /// checks that banned and stop token ids exist and that some token is not banned.
    public func validate(vocabularySize: Int? = nil) throws(SamplingOptionsError) {
        func reject(_ name: String, _ value: Any, _ allowed: String) -> SamplingOptionsError {
            SamplingOptionsError(option: name, value: "\(value)", allowed: allowed)
        }

        guard temperature.isFinite, temperature >= 0 else {
            throw reject("temperature", temperature, "a finite number ≥ 0 (0 = greedy)")
        }
        guard topP >= 0, topP <= 1 else {
            throw reject("topP", topP, "0...1 (1 = off)")
        }
        guard topK >= 0 else {
            throw reject("topK", topK, "an integer ≥ 0 (0 = off)")
        }
        guard presencePenalty.isFinite else {
            throw reject("presencePenalty", presencePenalty, "a finite number")
        }
        guard frequencyPenalty.isFinite else {
            throw reject("frequencyPenalty", frequencyPenalty, "a finite number")
        }
        guard penaltyDecay >= 0, penaltyDecay <= 1 else {
            throw reject("penaltyDecay", penaltyDecay, "0...1 (1 = no decay)")
        }
        guard maxTokens >= 0 else {
            throw reject("maxTokens", maxTokens, "an integer ≥ 0")
        }
        if let empty = stopStrings.firstIndex(where: \.isEmpty) {
            throw reject("stopStrings[\(empty)]", "\"\"", "a non-empty string")
        }

        let idRange = vocabularySize.map { "0..<\($0)" } ?? "an integer ≥ 0"
        let idLimit = vocabularySize ?? Int.max
        for (name, ids) in [("bannedTokens", bannedTokens), ("stopTokens", stopTokens)] {
            if let bad = ids.first(where: { $0 < 0 || $0 >= idLimit }) {
                throw reject(name, bad, "token ids in \(idRange)")
            }
        }
        if let vocabularySize, Set(bannedTokens).count >= vocabularySize {
            throw reject("bannedTokens", "\(Set(bannedTokens).count) ids", "fewer ids than the vocabulary size \(vocabularySize)")
        }
    }
}

/// An option outside its allowed range.
public struct SamplingOptionsError: Error, Equatable, CustomStringConvertible {
    /// Option name as in `SamplingOptions`, with an index for list elements.
    public var option: String
    /// The rejected value, as text.
    public var value: String
    /// The allowed values, as text.
    public var allowed: String

    public var description: String {
        "invalid sampling option \(option) = \(value): expected \(allowed)"
    }
}
