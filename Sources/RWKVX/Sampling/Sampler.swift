// Token sampler: repetition penalties, bans, temperature, top-k, top-p, then a
// draw from a seeded xoshiro256** generator, so a seed reproduces a run on any
// platform (up to last-bit differences of the platform's `exp`).
//
// Penalties follow `PIPELINE.generate` in the `rwkv` pip package: every token
// generated so far has its logit lowered by presence + frequency × occurrence,
// and at each generated token all occurrence counts are multiplied by
// `penaltyDecay` before the new token's count goes up. The pipeline gives a
// token weight 0 when its text is a substring of " \t0123456789"
// (`penaltyWeight(forTokenBytes:)` computes that; the caller passes it to `accept`).
//
// Differences from the pipeline's `sample_logits`: it takes top-p on the
// softmax at temperature 1, then top-k, then raises the kept probabilities to
// 1/temperature, and keeps every token tied with the nucleus cutoff. Here the
// temperature divides the logits first, top-k and top-p keep exactly the ranked
// tokens (ties ranked by lower id), and temperature 0 means argmax with the
// lowest id on ties, where the pipeline draws at random among tied maxima.

import Foundation

public struct Sampler: Sendable {
    public let options: SamplingOptions
    /// Seed actually used: `options.seed`, or a random one when that is nil.
    public let seed: UInt64

    private var generator: Xoshiro256StarStar

    /// Decayed occurrence count of every token (`occurrence[t]` in the pipeline).
    private var occurrence: [Float] = []
    /// Whether each token has been generated (a key of the pipeline's dict), so
    /// that the presence penalty also applies to weight-0 tokens.
    private var seen: [Bool] = []
    /// Ids with `seen` set, in first-seen order, so per-token work is O(seen).
    private var seenIds: [Int] = []
    /// Whether each token is in `options.bannedTokens`.
    private var banned: [Bool] = []

    /// Reused per-call buffers: candidate ids and their unnormalised probabilities.
    private var candidateIds: [Int32] = []
    private var candidateWeights: [Float] = []
    private var weights: [Float] = []

    /// Creates a sampler after checking `options.validate()`.
    public init(options: SamplingOptions) throws(SamplingOptionsError) {
        try options.validate()
        self.options = options
        if let seed = options.seed {
            self.seed = seed
        } else {
            var system = SystemRandomNumberGenerator()
            self.seed = system.next()
        }
        self.generator = Xoshiro256StarStar(seed: seed)
    }

    /// Forgets every accepted token (penalty state); the generator continues.
    public mutating func resetPenalties() {
        for id in seenIds {
            occurrence[id] = 0
            seen[id] = false
        }
        seenIds.removeAll(keepingCapacity: true)
    }

    /// Returns the penalty weight that RWKV's `PIPELINE.generate` gives a token:
    /// 0 when its text is a substring of " \t0123456789" (a space, a tab, digits
    /// in order), 1 otherwise.
    public static func penaltyWeight(forTokenBytes bytes: [UInt8]) -> Float {
        let exempt = Array(" \t0123456789".utf8)
        guard !bytes.isEmpty, bytes.count <= exempt.count else { return bytes.isEmpty ? 0 : 1 }
        for start in 0...(exempt.count - bytes.count) where exempt[start..<(start + bytes.count)].elementsEqual(bytes) {
            return 0
        }
        return 1
    }

    /// Records that `token` was generated: decays every occurrence count by
    /// `penaltyDecay`, then adds `weight` to the token's count.
    public mutating func accept(_ token: Int, weight: Float = 1) {
        precondition(token >= 0, "token id \(token) is negative")
        growTables(to: token + 1)
        let decay = options.penaltyDecay
        for id in seenIds {
            occurrence[id] *= decay
        }
        if !seen[token] {
            seen[token] = true
            seenIds.append(token)
        }
        occurrence[token] += weight
    }

    /// Chooses the next token from `logits` (one value per token id). The
    /// penalties, bans and temperature are applied to `logits` in place.
    ///
    /// When no token has a finite logit, returns the lowest id with logit +∞ if
    /// there is one, else the lowest id that is not banned.
    public mutating func sample(logits: inout [Float]) -> Int {
        precondition(!logits.isEmpty, "logits are empty")
        growTables(to: logits.count)

        // Repetition penalties, on tokens generated so far.
        let presence = options.presencePenalty
        let frequency = options.frequencyPenalty
        for id in seenIds where id < logits.count {
            logits[id] -= presence + frequency * occurrence[id]
        }

        // Bans.
        for id in options.bannedTokens where id < logits.count {
            logits[id] = -.infinity
        }

        // Greedy: argmax, lowest id on ties (NaN never wins).
        guard let maxIndex = Self.argmax(logits), logits[maxIndex].isFinite else {
            return fallbackToken(logits)
        }
        if options.temperature == 0 {
            return maxIndex
        }

        // Temperature, then unnormalised softmax weights exp((l - max) / T).
        let inverseTemperature = 1 / options.temperature
        let maxLogit = logits[maxIndex]
        weights.removeAll(keepingCapacity: true)
        for id in logits.indices {
            let value = logits[id]
            weights.append(value.isNaN ? 0 : exp((value - maxLogit) * inverseTemperature))
            logits[id] = value * inverseTemperature
        }

        let topK = options.topK
        let topP = options.topP
        if (topK == 0 || topK >= logits.count) && topP >= 1 {
            return draw(weights: weights)
        }

        // Rank the candidates: top-k keeps the k heaviest, top-p the nucleus.
        rankCandidates(limit: topK > 0 ? topK : nil)
        if topP < 1 {
            var total: Double = 0
            for weight in candidateWeights { total += Double(weight) }
            let target = Double(topP) * total
            var cumulative: Double = 0
            var kept = 0
            while kept < candidateWeights.count {
                cumulative += Double(candidateWeights[kept])
                kept += 1
                if cumulative >= target { break }
            }
            candidateIds.removeSubrange(kept...)
            candidateWeights.removeSubrange(kept...)
        }
        let position = draw(weights: candidateWeights)
        return Int(candidateIds[position])
    }

    // MARK: Steps

    private mutating func growTables(to count: Int) {
        guard occurrence.count < count else { return }
        occurrence.append(contentsOf: repeatElement(0, count: count - occurrence.count))
        seen.append(contentsOf: repeatElement(false, count: count - seen.count))
        let oldCount = banned.count
        banned.append(contentsOf: repeatElement(false, count: count - oldCount))
        for id in options.bannedTokens where id >= oldCount && id < count {
            banned[id] = true
        }
    }

    private static func argmax(_ values: [Float]) -> Int? {
        var best: Int? = nil
        var bestValue = -Float.infinity
        for (id, value) in values.enumerated() where value > bestValue || (best == nil && value == bestValue) {
            best = id
            bestValue = value
        }
        return best
    }

    private func fallbackToken(_ logits: [Float]) -> Int {
        if let id = logits.firstIndex(of: .infinity) { return id }
        return banned.prefix(logits.count).firstIndex(of: false) ?? 0
    }

    /// Fills `candidateIds` / `candidateWeights` with the ids of non-zero weight,
    /// heaviest first (lower id first on ties), keeping at most `limit`.
    private mutating func rankCandidates(limit: Int?) {
        candidateIds.removeAll(keepingCapacity: true)
        for (id, weight) in weights.enumerated() where weight > 0 {
            candidateIds.append(Int32(id))
        }
        let weights = self.weights
        let heavier = { (a: Int32, b: Int32) -> Bool in
            let wa = weights[Int(a)], wb = weights[Int(b)]
            return wa > wb || (wa == wb && a < b)
        }
        // NOTE: a full sort of up to the vocabulary size (about 65k ids) per
        // token; a selection step would do for top-k, and a partial sort until
        // the nucleus is reached for top-p, if this shows up in profiles.
        candidateIds.sort(by: heavier)
        if let limit, candidateIds.count > limit {
            candidateIds.removeSubrange(limit...)
        }
        candidateWeights.removeAll(keepingCapacity: true)
        for id in candidateIds {
            candidateWeights.append(weights[Int(id)])
        }
    }

    /// Draws an index with probability proportional to `weights`. At least one
    /// weight must be positive.
    private mutating func draw(weights: [Float]) -> Int {
        var total: Double = 0
        for weight in weights { total += Double(weight) }
        let threshold = generator.nextUnitInterval() * total
        var cumulative: Double = 0
        var last = 0
        for (index, weight) in weights.enumerated() where weight > 0 {
            cumulative += Double(weight)
            if threshold < cumulative { return index }
            last = index
        }
        // Rounding left the threshold at the total: take the last positive weight.
        return last
    }
}
