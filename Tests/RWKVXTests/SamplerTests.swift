// Tests of the sampler, its options, its generator and stop detection.
import Foundation
import XCTest
@testable import RWKVX

private func makeSampler(_ options: SamplingOptions) throws -> Sampler {
    try Sampler(options: options)
}

/// Logits of a softmax distribution equal to `probabilities`.
private func logits(ofProbabilities probabilities: [Double]) -> [Float] {
    probabilities.map { Float(log($0)) }
}

/// Uniform logits in [-2, 2) from a fixed seed: a non-degenerate distribution.
private func spreadLogits(count: Int, seed: UInt64) -> [Float] {
    var generator = Xoshiro256StarStar(seed: seed)
    return (0..<count).map { _ in Float(generator.nextUnitInterval() * 4 - 2) }
}

/// Draws `count` tokens from fresh copies of `logits` and returns each id's frequency.
private func frequencies(_ sampler: inout Sampler, logits: [Float], count: Int) -> [Double] {
    var counts = [Int](repeating: 0, count: logits.count)
    for _ in 0..<count {
        var copy = logits
        counts[sampler.sample(logits: &copy)] += 1
    }
    return counts.map { Double($0) / Double(count) }
}

final class SamplerTests: XCTestCase {
    // MARK: Generator

    func testXoshiroMatchesPublishedVector() {
        // First outputs of xoshiro256** from state {1, 2, 3, 4} (reference C code).
        var generator = Xoshiro256StarStar(state: (1, 2, 3, 4))
        XCTAssertEqual((0..<4).map { _ in generator.next() }, [11520, 0, 1_509_978_240, 1_215_971_899_390_074_240])
    }

    func testXoshiroSeedExpansion() {
        // SplitMix64 from 0 gives 0xe220a8397b1dcdaf first; these outputs come from
        // an independent Python implementation of SplitMix64 + xoshiro256**.
        var generator = Xoshiro256StarStar(seed: 0)
        XCTAssertEqual(generator.next(), 11_091_344_671_253_066_420)
        XCTAssertEqual(generator.next(), 13_793_997_310_169_335_082)
    }

    // MARK: Greedy and reproducibility

    func testGreedyPicksArgmax() throws {
        var sampler = try makeSampler(SamplingOptions(temperature: 0))
        var values: [Float] = [0.1, 2.5, -1, 2.4]
        XCTAssertEqual(sampler.sample(logits: &values), 1)
        var tied: [Float] = [0.1, 3, -1, 3]
        XCTAssertEqual(sampler.sample(logits: &tied), 1, "lowest id on ties")
        var withNaN: [Float] = [.nan, 1, 2]
        XCTAssertEqual(sampler.sample(logits: &withNaN), 2)
        for seed: UInt64 in 1...5 {
            var spread = spreadLogits(count: 1000, seed: seed)
            let expected = spread.indices.max { spread[$0] < spread[$1] }!
            XCTAssertEqual(sampler.sample(logits: &spread), expected)
        }
    }

    func testSameSeedSameSequence() throws {
        let base = spreadLogits(count: 200, seed: 3)
        func run(seed: UInt64) throws -> [Int] {
            var sampler = try makeSampler(SamplingOptions(topP: 0.9, topK: 150, seed: seed))
            return (0..<64).map { _ in
                var copy = base
                return sampler.sample(logits: &copy)
            }
        }
        let first = try run(seed: 42)
        XCTAssertGreaterThan(Set(first).count, 20, "the test distribution must not be degenerate")
        XCTAssertEqual(try run(seed: 42), first)
        XCTAssertNotEqual(try run(seed: 43), first)
    }

    func testMissingSeedIsRecorded() throws {
        let sampler = try makeSampler(SamplingOptions(seed: nil))
        var replay = try makeSampler(SamplingOptions(seed: sampler.seed))
        var original = sampler
        let base = spreadLogits(count: 50, seed: 1)
        for _ in 0..<10 {
            var a = base, b = base
            XCTAssertEqual(original.sample(logits: &a), replay.sample(logits: &b))
        }
    }

    func testTopKOneEqualsGreedy() throws {
        var sampler = try makeSampler(SamplingOptions(temperature: 1.5, topK: 1, seed: 9))
        for seed: UInt64 in 10...30 {
            var values = spreadLogits(count: 500, seed: seed)
            let expected = values.indices.max { values[$0] < values[$1] }!
            XCTAssertEqual(sampler.sample(logits: &values), expected, "logit seed \(seed)")
        }
    }

    // MARK: Distributions

    func testPlainSamplingFollowsSoftmax() throws {
        var sampler = try makeSampler(SamplingOptions(seed: 1))
        let observed = frequencies(&sampler, logits: logits(ofProbabilities: [0.5, 0.3, 0.15, 0.05]), count: 20000)
        for (id, expected) in [0.5, 0.3, 0.15, 0.05].enumerated() {
            XCTAssertEqual(observed[id], expected, accuracy: 0.015, "token \(id)")
        }
    }

    func testTemperatureSharpens() throws {
        // At temperature 0.5 the probabilities go as p²: 0.64 and 0.36 from 0.8/0.6.
        var sampler = try makeSampler(SamplingOptions(temperature: 0.5, seed: 2))
        let observed = frequencies(&sampler, logits: logits(ofProbabilities: [0.8, 0.6]), count: 20000)
        XCTAssertEqual(observed[0], 0.64, accuracy: 0.015)
    }

    func testTopPKeepsNucleus() throws {
        // 0.5 < 0.75 ≤ 0.5 + 0.3, so the nucleus is {0, 1}, renormalised to 0.625 / 0.375.
        var sampler = try makeSampler(SamplingOptions(topP: 0.75, seed: 5))
        let observed = frequencies(&sampler, logits: logits(ofProbabilities: [0.5, 0.3, 0.15, 0.05]), count: 20000)
        XCTAssertEqual(observed[0], 0.625, accuracy: 0.015)
        XCTAssertEqual(observed[1], 0.375, accuracy: 0.015)
        XCTAssertEqual(observed[2], 0)
        XCTAssertEqual(observed[3], 0)
    }

    func testTopPZeroKeepsOneToken() throws {
        var sampler = try makeSampler(SamplingOptions(topP: 0, seed: 6))
        let observed = frequencies(&sampler, logits: logits(ofProbabilities: [0.2, 0.5, 0.3]), count: 500)
        XCTAssertEqual(observed, [0, 1, 0])
    }

    func testTopKKeepsHeaviest() throws {
        var sampler = try makeSampler(SamplingOptions(topK: 2, seed: 7))
        let observed = frequencies(&sampler, logits: logits(ofProbabilities: [0.1, 0.4, 0.2, 0.3]), count: 20000)
        XCTAssertEqual(observed[0], 0)
        XCTAssertEqual(observed[2], 0)
        XCTAssertEqual(observed[1], 0.4 / 0.7, accuracy: 0.015)
    }

    func testSelectionMatchesFullSort() {
        var generator = Xoshiro256StarStar(seed: 11)
        for trial in 0..<200 {
            // Few distinct weights, so ties are common and the id order must break them.
            let count = 1 + Int(generator.next() % 300)
            var weights: [Float] = []
            for _ in 0..<count {
                let level = Float(generator.next() % 7)
                weights.append(level / 6 + 0.01)
            }
            let ranked = (0..<Int32(count)).sorted { (a: Int32, b: Int32) -> Bool in
                let weightA = weights[Int(a)]
                let weightB = weights[Int(b)]
                return weightA > weightB || (weightA == weightB && a < b)
            }
            let k = 1 + Int(generator.next() % UInt64(count))
            var total: Double = 0
            for weight in weights { total += Double(weight) }
            let target = generator.nextUnitInterval() * total
            var expectedNucleus = 0
            var cumulative: Double = 0
            while expectedNucleus < count {
                cumulative += Double(weights[Int(ranked[expectedNucleus])])
                expectedNucleus += 1
                if cumulative >= target { break }
            }

            var topIds = Array(0..<Int32(count))
            var nucleusIds = topIds
            var nucleusLength = 0
            weights.withUnsafeBufferPointer { weights in
                topIds.withUnsafeMutableBufferPointer { CandidateSelection.selectTop(k, $0, weights) }
                nucleusLength = nucleusIds.withUnsafeMutableBufferPointer {
                    CandidateSelection.selectNucleus(target: target, $0, weights)
                }
            }
            XCTAssertEqual(Set(topIds.prefix(k)), Set(ranked.prefix(k)), "top-\(k), trial \(trial)")
            XCTAssertEqual(nucleusLength, expectedNucleus, "nucleus length, trial \(trial)")
            XCTAssertEqual(Set(nucleusIds.prefix(nucleusLength)), Set(ranked.prefix(nucleusLength)), "nucleus, trial \(trial)")
        }
    }

    // MARK: Penalties and bans

    func testPenaltiesComputedByHand() throws {
        var sampler = try makeSampler(SamplingOptions(
            temperature: 0, presencePenalty: 0.2, frequencyPenalty: 0.3, penaltyDecay: 0.5))
        sampler.accept(0)  // occurrence: [1, 0, 0]
        sampler.accept(1)  // decayed, then added: [0.5, 1, 0]
        var values: [Float] = [1.0, 0.9, 0.7]
        // 1.0 - (0.2 + 0.3 × 0.5) = 0.65; 0.9 - (0.2 + 0.3 × 1) = 0.4; 0.7 untouched.
        XCTAssertEqual(sampler.sample(logits: &values), 2)
        XCTAssertEqual(values[0], 0.65, accuracy: 1e-6)
        XCTAssertEqual(values[1], 0.4, accuracy: 1e-6)
        XCTAssertEqual(values[2], 0.7, accuracy: 1e-6)

        var unpenalized = try makeSampler(SamplingOptions(temperature: 0))
        var same: [Float] = [1.0, 0.9, 0.7]
        XCTAssertEqual(unpenalized.sample(logits: &same), 0)
    }

    func testZeroWeightTokenGetsPresencePenalty() throws {
        var sampler = try makeSampler(SamplingOptions(temperature: 0, presencePenalty: 0.5, frequencyPenalty: 1))
        sampler.accept(0, weight: 0)
        var values: [Float] = [1.0, 0.8]
        XCTAssertEqual(sampler.sample(logits: &values), 1)
        XCTAssertEqual(values[0], 0.5, accuracy: 1e-6)

        sampler.resetPenalties()
        var fresh: [Float] = [1.0, 0.8]
        XCTAssertEqual(sampler.sample(logits: &fresh), 0)
    }

    func testPenaltyWeightMatchesPipeline() {
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array(" ".utf8)), 0)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array("\t".utf8)), 0)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array("123".utf8)), 0)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array(" \t0".utf8)), 0)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array("21".utf8)), 1)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array("  ".utf8)), 1)
        XCTAssertEqual(Sampler.penaltyWeight(forTokenBytes: Array(" the".utf8)), 1)
    }

    func testBannedTokensNeverDrawn() throws {
        var sampler = try makeSampler(SamplingOptions(bannedTokens: [0, 2], seed: 8))
        let observed = frequencies(&sampler, logits: [10, 0, 10, 0.5], count: 2000)
        XCTAssertEqual(observed[0], 0)
        XCTAssertEqual(observed[2], 0)
        XCTAssertGreaterThan(observed[1], 0.2)

        var greedy = try makeSampler(SamplingOptions(temperature: 0, bannedTokens: [0]))
        var values: [Float] = [10, 1, 2]
        XCTAssertEqual(greedy.sample(logits: &values), 2)
        XCTAssertEqual(values[0], -.infinity)
    }

    func testAllInfiniteLogitsFallBack() throws {
        var sampler = try makeSampler(SamplingOptions(bannedTokens: [0], seed: 1))
        var values: [Float] = [-.infinity, -.infinity, -.infinity]
        XCTAssertEqual(sampler.sample(logits: &values), 1, "lowest id that is not banned")
        var positive: [Float] = [0, .infinity, 1]
        XCTAssertEqual(sampler.sample(logits: &positive), 1)
    }

    // MARK: Options

    func testValidationMessages() {
        let cases: [(SamplingOptions, String, String)] = [
            (SamplingOptions(temperature: -1), "temperature", "≥ 0"),
            (SamplingOptions(temperature: .infinity), "temperature", "finite"),
            (SamplingOptions(topP: 1.5), "topP", "0...1"),
            (SamplingOptions(topP: .nan), "topP", "0...1"),
            (SamplingOptions(topK: -3), "topK", "≥ 0"),
            (SamplingOptions(presencePenalty: .nan), "presencePenalty", "finite"),
            (SamplingOptions(frequencyPenalty: -.infinity), "frequencyPenalty", "finite"),
            (SamplingOptions(penaltyDecay: 1.01), "penaltyDecay", "0...1"),
            (SamplingOptions(bannedTokens: [-1]), "bannedTokens", "token ids"),
            (SamplingOptions(stopTokens: [-5]), "stopTokens", "token ids"),
            (SamplingOptions(stopStrings: ["ok", ""]), "stopStrings[1]", "non-empty"),
            (SamplingOptions(maxTokens: -1), "maxTokens", "≥ 0"),
        ]
        for (options, name, range) in cases {
            XCTAssertThrowsError(try options.validate(), name) { error in
                let message = String(describing: error)
                XCTAssertEqual((error as? SamplingOptionsError)?.option, name, message)
                XCTAssertTrue(message.contains(name), message)
                XCTAssertTrue(message.contains(range), message)
            }
            XCTAssertThrowsError(try Sampler(options: options), name)
        }
        XCTAssertNoThrow(try SamplingOptions().validate(vocabularySize: 65530))
    }

    func testValidationWithVocabularySize() {
        XCTAssertThrowsError(try SamplingOptions(bannedTokens: [65530]).validate(vocabularySize: 65530)) { error in
            XCTAssertTrue(String(describing: error).contains("0..<65530"), "\(error)")
        }
        XCTAssertThrowsError(try SamplingOptions(bannedTokens: [0, 1, 2]).validate(vocabularySize: 3))
        XCTAssertNoThrow(try SamplingOptions(bannedTokens: [0, 1]).validate(vocabularySize: 3))
    }

    func testOptionsDecodeWithDefaults() throws {
        let empty = try JSONDecoder().decode(SamplingOptions.self, from: Data("{}".utf8))
        XCTAssertEqual(empty, SamplingOptions())
        XCTAssertEqual(empty.temperature, 1.0)
        XCTAssertEqual(empty.topP, 1.0)
        XCTAssertEqual(empty.topK, 0)
        XCTAssertEqual(empty.penaltyDecay, 0.996)
        XCTAssertEqual(empty.stopTokens, [0])
        XCTAssertNil(empty.seed)

        let some = try JSONDecoder().decode(SamplingOptions.self, from: Data(#"{"temperature": 0.5, "seed": 7, "stopStrings": ["\n\n"]}"#.utf8))
        XCTAssertEqual(some.temperature, 0.5)
        XCTAssertEqual(some.seed, 7)
        XCTAssertEqual(some.stopStrings, ["\n\n"])
        XCTAssertEqual(some.maxTokens, SamplingOptions().maxTokens)

        let roundTrip = try JSONDecoder().decode(SamplingOptions.self, from: JSONEncoder().encode(some))
        XCTAssertEqual(roundTrip, some)
    }

    // MARK: Stop detection

    private func feed(_ checker: inout StopChecker, _ pieces: [String]) -> (output: String, stop: StopReason?) {
        var output: [UInt8] = []
        for (index, piece) in pieces.enumerated() {
            let result = checker.check(token: 1000 + index, bytes: Array(piece.utf8))
            output += result.output
            if let stop = result.stop { return (String(decoding: output, as: UTF8.self), stop) }
        }
        output += checker.finish()
        return (String(decoding: output, as: UTF8.self), nil)
    }

    func testStopStringAcrossTokensIsWithheld() {
        var checker = StopChecker(stopTokens: [0], stopStrings: ["\nUser:"])
        XCTAssertEqual(checker.check(token: 1, bytes: Array("Hello".utf8)), StopCheckResult(output: Array("Hello".utf8), withheldByteCount: 0, stop: nil))
        XCTAssertEqual(checker.check(token: 2, bytes: Array("\nUs".utf8)), StopCheckResult(output: [], withheldByteCount: 3, stop: nil))
        XCTAssertEqual(checker.check(token: 3, bytes: Array("er".utf8)), StopCheckResult(output: [], withheldByteCount: 5, stop: nil))
        XCTAssertEqual(checker.check(token: 4, bytes: Array(": hi".utf8)), StopCheckResult(output: [], withheldByteCount: 0, stop: .string(index: 0)))
    }

    func testWithheldBytesReleasedWhenNoMatch() {
        var checker = StopChecker(stopTokens: [0], stopStrings: ["\nUser:"])
        XCTAssertEqual(feed(&checker, ["Hi", "\nUs", "ed it"]).output, "Hi\nUsed it")
        var ending = StopChecker(stopTokens: [0], stopStrings: ["\nUser:"])
        XCTAssertEqual(feed(&ending, ["Hi", "\nUse"]).output, "Hi\nUse", "finish releases withheld bytes")
    }

    func testEmptyTokenBytesWithoutStopStrings() {
        var checker = StopChecker(stopTokens: [0], stopStrings: [])
        XCTAssertEqual(checker.check(token: 7, bytes: []), StopCheckResult(output: [], withheldByteCount: 0, stop: nil))
        var withStop = StopChecker(stopTokens: [0], stopStrings: ["ab"])
        XCTAssertEqual(withStop.check(token: 7, bytes: []), StopCheckResult(output: [], withheldByteCount: 0, stop: nil))
    }

    func testStopStringInsideOneToken() {
        var checker = StopChecker(stopTokens: [], stopStrings: ["END", "\n\n"])
        let result = feed(&checker, ["abc", "d\n\nEND more"])
        XCTAssertEqual(result.output, "abcd")
        XCTAssertEqual(result.stop, .string(index: 1), "earliest match wins")
    }

    func testOverlappingStopPrefix() {
        var checker = StopChecker(stopTokens: [], stopStrings: ["aab"])
        XCTAssertEqual(checker.check(token: 1, bytes: Array("aa".utf8)).withheldByteCount, 2)
        XCTAssertEqual(checker.check(token: 2, bytes: Array("a".utf8)), StopCheckResult(output: Array("a".utf8), withheldByteCount: 2, stop: nil))
        XCTAssertEqual(checker.check(token: 3, bytes: Array("b".utf8)).stop, .string(index: 0))
    }

    func testStopStringSplitsCharacter() {
        // "你好" is E4 BD A0 E5 A5 BD, fed one byte per token as byte-level ids would be.
        var checker = StopChecker(stopTokens: [], stopStrings: ["你好"])
        var output: [UInt8] = []
        var stop: StopReason? = nil
        for (index, byte) in Array("ok 你好".utf8).enumerated() where stop == nil {
            let result = checker.check(token: index, bytes: [byte])
            output += result.output
            stop = result.stop
        }
        XCTAssertEqual(String(decoding: output, as: UTF8.self), "ok ")
        XCTAssertEqual(stop, .string(index: 0))
    }

    func testStopTokenReleasesWithheldBytes() {
        var checker = StopChecker(options: SamplingOptions(stopStrings: ["\nUser:"]))
        XCTAssertEqual(checker.check(token: 5, bytes: Array("x\nU".utf8)).withheldByteCount, 2)
        XCTAssertEqual(checker.check(token: 0, bytes: []), StopCheckResult(output: Array("\nU".utf8), withheldByteCount: 0, stop: .token(0)))
    }
}

/// A stepper whose logits turn NaN after `finiteSteps` steps, as damaged weights do.
private struct DamagedStepper: TokenStepper {
    var steps = 0
    let finiteSteps: Int

    mutating func step(_ tokens: [Int]) throws -> [Float] {
        steps += 1
        var logits = [Float](repeating: 0, count: 65536)
        logits[300] = 5
        if steps > finiteSteps { logits[7] = .nan }
        return logits
    }
}

final class NonFiniteLogitsTests: XCTestCase {
    func testGenerationStopsOnNaNLogits() throws {
        let tokenizer = try WorldTokenizer.bundled()
        var options = SamplingOptions()
        options.maxTokens = 10
        options.temperature = 0
        var session = DamagedStepper(finiteSteps: 3)
        var emitted = ""
        XCTAssertThrowsError(try generateText(session: &session, tokenizer: tokenizer, prompt: "Hello", options: options,
                                              emit: { emitted += $0 })) { error in
            XCTAssertEqual(error as? GenerationError, .nonFiniteLogits(generated: 3))
        }
        XCTAssertEqual(session.steps, 4)
    }
}
