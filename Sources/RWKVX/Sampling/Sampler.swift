// Token sampler: repetition penalties, bans, temperature, top-k, top-p, then a
// draw from a seeded xoshiro256** generator, so a seed reproduces a run on any
// platform (up to last-bit differences of the platform's `exp`).
//
// Penalties follow `PIPELINE.generate` in rwkv/utils.py of the `rwkv` pip
// package (the decay since version 0.8.0): every token generated so far has its
// logit lowered by presence + frequency × occurrence, and at each generated
// token all occurrence counts are multiplied by `penaltyDecay` before the new
// token's count goes up. Later versions count a token with weight 0 when its
// text is a substring of " \t0123456789". `penaltyWeight(forTokenBytes:)`
// computes that weight, and the caller passes it to `accept`.
//
// Differences from the pipeline's `sample_logits`: it takes top-p on the
// softmax at temperature 1, then top-k, then raises the kept probabilities to
// 1/temperature, and keeps every token tied with the nucleus cutoff. Here the
// temperature divides the logits first, top-k and top-p keep exactly the ranked
// tokens (ties ranked by lower id), and temperature 0 means argmax with the
// lowest id on ties. The draw uses our generator, not NumPy's, so runs match
// the pipeline in distribution only.

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
    /// 0 when its text is a substring of " \t0123456789" (Python's `in`, so a
    /// space, a tab or a run of ascending digits), 1 otherwise.
    public static func penaltyWeight(forTokenBytes bytes: [UInt8]) -> Float {
        let exempt = Array(" \t0123456789".utf8)
        guard bytes.count <= exempt.count else { return 1 }
        for start in 0...(exempt.count - bytes.count) {
            if exempt[start..<(start + bytes.count)].elementsEqual(bytes) { return 0 }
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
    /// penalties and bans are applied to `logits` in place, and so is the
    /// division by the temperature when it is not 0.
    ///
    /// When the largest logit is +∞, returns the lowest id with +∞; when every
    /// logit is -∞ or NaN, returns the lowest id that is not banned.
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

        selectCandidates(topK: topK, topP: topP)
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

    /// Fills `candidateIds` / `candidateWeights` with the tokens that top-k and
    /// top-p keep, best ranked first (higher weight, then lower id).
    private mutating func selectCandidates(topK: Int, topP: Float) {
        candidateIds.removeAll(keepingCapacity: true)
        for (id, weight) in weights.enumerated() where weight > 0 {
            candidateIds.append(Int32(id))
        }

        weights.withUnsafeBufferPointer { weights in
            candidateIds.withUnsafeMutableBufferPointer { ids in
                if topK > 0, ids.count > topK {
                    CandidateSelection.selectTop(topK, ids, weights)
                }
            }
            if topK > 0, candidateIds.count > topK {
                candidateIds.removeSubrange(topK...)
            }

            // The nucleus is cut once by selection, then again on the sorted list
            // so the sum is taken in rank order whatever the partition order was.
            var target: Double = 0
            if topP < 1 {
                var total: Double = 0
                for id in candidateIds { total += Double(weights[Int(id)]) }
                target = Double(topP) * total
                let nucleusCount = candidateIds.withUnsafeMutableBufferPointer { ids in
                    CandidateSelection.selectNucleus(target: target, ids, weights)
                }
                candidateIds.removeSubrange(nucleusCount...)
            }
            candidateIds.sort { CandidateSelection.ranksBefore($0, $1, weights) }

            candidateWeights.removeAll(keepingCapacity: true)
            var cumulative: Double = 0
            for id in candidateIds {
                let weight = weights[Int(id)]
                candidateWeights.append(weight)
                cumulative += Double(weight)
                if topP < 1, cumulative >= target { break }
            }
            candidateIds.removeSubrange(candidateWeights.count...)
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
