// How the execution order is split into pipeline stages: automatically, by the
// cost of each block and each worker's reported speed and memory, or from a plan
// file. Stages are contiguous ranges of execution positions. The first stage also
// runs the embedding and the last one the head.
import Foundation
import RWKVX

public struct PlannedStage: Sendable, Codable, Equatable {
    /// Worker endpoint that serves the stage.
    public var worker: String
    /// Execution-order positions [first, first + count).
    public var first: Int
    public var count: Int

    public init(worker: String, first: Int, count: Int) {
        self.worker = worker
        self.first = first
        self.count = count
    }

    public var positions: Range<Int> { first..<(first + count) }
}

/// A worker's resources as the planner uses them.
public struct WorkerCapacity: Sendable {
    public var endpoint: String
    public var cores: Int
    public var memoryBytes: UInt64
    public var kernelLevel: String

    public init(endpoint: String, cores: Int, memoryBytes: UInt64, kernelLevel: String) {
        self.endpoint = endpoint
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.kernelLevel = kernelLevel
    }

    /// Relative compute speed: cores times a factor for the kernel level. An
    /// estimate; decode is memory-bound, so wider SIMD helps less than its width.
    var speed: Double {
        let level: Double
        switch kernelLevel {
        case "avx512": level = 1.3
        case "avx2": level = 1.0
        default: level = 0.25
        }
        return Double(max(cores, 1)) * level
    }
}

public struct PlanError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

public enum StagePlanner {
    /// Relative cost of each execution position for one decoded token: the bytes of
    /// weights it reads, with sparse blocks weighted up for the attention over their
    /// KV cache at long context. The head's cost is added to the last position and
    /// the embedding lookup is free.
    public static func blockCosts(config: ModelConfig, contextTokens: Int,
                                  attention: RWKVX.AttentionOptions = RWKVX.AttentionOptions()) -> [Double] {
        let c = Double(config.nEmbd), f = Double(config.ffnSize)
        let lora = c * Double(2 * (config.loraDecay + config.loraA + config.loraGate + config.loraValue))
        let rwkv = 4 * c * c + 2 * c * f + lora
        // Attention reads up to chunk_size * top_k cached rows of K and V per token.
        let attended = Double(min(contextTokens, attention.windowSize))
        let sparse = 4 * c * c + 2 * c * f + 2 * attended * c
        var costs = config.executionOrder.map { block -> Double in
            if case .sparse = block { return sparse }
            return rwkv
        }
        costs[costs.count - 1] += Double(config.vocabSize) * c
        return costs
    }

    /// Splits the execution order over `workers` in order, giving each a share of
    /// the total cost proportional to its speed, and checks each stage fits in its
    /// worker's memory (weights at `bytesPerParameter`).
    public static func plan(config: ModelConfig, workers: [WorkerCapacity], contextTokens: Int = 1024,
                            attention: RWKVX.AttentionOptions = RWKVX.AttentionOptions(),
                            bytesPerParameter: Double = 2) throws -> [PlannedStage] {
        let costs = blockCosts(config: config, contextTokens: contextTokens, attention: attention)
        let n = costs.count
        guard !workers.isEmpty else { throw PlanError(message: "no workers to plan stages on") }
        guard workers.count <= n else {
            throw PlanError(message: "\(workers.count) workers but the model has only \(n) blocks; use at most \(n) workers")
        }
        let total = costs.reduce(0, +)
        let speedTotal = workers.map(\.speed).reduce(0, +)

        // Cut where the running cost crosses each worker's cumulative share, leaving
        // at least one block for every later worker.
        var stages: [PlannedStage] = []
        var first = 0
        var cumulativeShare = 0.0
        var running = 0.0
        for (w, worker) in workers.enumerated() {
            cumulativeShare += worker.speed / speedTotal
            var end = first
            if w == workers.count - 1 {
                end = n
            } else {
                let target = total * cumulativeShare
                let maxEnd = n - (workers.count - 1 - w)
                repeat {
                    running += costs[end]
                    end += 1
                } while end < maxEnd && running + costs[end] / 2 <= target
            }
            stages.append(PlannedStage(worker: worker.endpoint, first: first, count: end - first))
            first = end
        }

        try checkMemory(stages, config: config, workers: workers, bytesPerParameter: bytesPerParameter)
        return stages
    }

    static func checkMemory(_ stages: [PlannedStage], config: ModelConfig, workers: [WorkerCapacity],
                            bytesPerParameter: Double) throws {
        let costs = blockCosts(config: config, contextTokens: 0)
        for (stage, worker) in zip(stages, workers) where worker.memoryBytes > 0 {
            var parameters = stage.positions.reduce(0.0) { $0 + costs[$1] }
            if stage.first == 0 { parameters += Double(config.vocabSize * config.nEmbd) }
            let bytes = parameters * bytesPerParameter
            if bytes > Double(worker.memoryBytes) {
                throw PlanError(message: String(format: "stage on %@ needs about %.0f MB of weights but the worker offers %.0f MB; add workers or raise --memory-limit",
                                                worker.endpoint, bytes / 1e6, Double(worker.memoryBytes) / 1e6))
            }
        }
    }

    /// Reads a plan file: {"stages": [{"worker": "tcp://host:port", "first": 0, "count": 8}, ...]}
    /// and checks that the stages cover the execution order in order.
    public static func load(path: String, config: ModelConfig, endpoints: [String]) throws -> [PlannedStage] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PlanError(message: "plan file not found: \(path)")
        }
        struct File: Decodable { var stages: [PlannedStage] }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw PlanError(message: "plan file \(path) is invalid (\(jsonProblem(error))); expected {\"stages\": [{\"worker\": \"tcp://HOST:PORT\", \"first\": 0, \"count\": N}, ...]}")
        }
        try validate(file.stages, config: config, endpoints: endpoints, source: path)
        return file.stages
    }

    public static func validate(_ stages: [PlannedStage], config: ModelConfig, endpoints: [String], source: String) throws {
        let n = config.executionOrder.count
        var next = 0
        var used: Set<String> = []
        for stage in stages {
            guard used.insert(stage.worker).inserted else {
                throw PlanError(message: "\(source): worker \(stage.worker) appears in two stages; each worker serves one stage")
            }
            guard stage.first == next, stage.count > 0 else {
                throw PlanError(message: "\(source): stage on \(stage.worker) starts at \(stage.first) with \(stage.count) blocks; stages must be non-empty and start where the previous one ended (\(next))")
            }
            guard endpoints.contains(stage.worker) else {
                throw PlanError(message: "\(source): worker \(stage.worker) is not in --workers")
            }
            next += stage.count
        }
        guard next == n else {
            throw PlanError(message: "\(source): stages cover \(next) of the model's \(n) blocks")
        }
    }

    /// Formats the plan as a table for logs and the CLI.
    public static func describe(_ stages: [PlannedStage], config: ModelConfig) -> String {
        let order = config.executionOrder
        var out = "plan: \(stages.count) stage(s) over \(order.count) blocks\n"
        for (i, s) in stages.enumerated() {
            let blocks = order[s.positions]
            var roles: [String] = []
            if s.first == 0 { roles.append("embedding") }
            if s.positions.upperBound == order.count { roles.append("head") }
            out += "  stage \(i)  \(s.worker)  blocks \(blocks.first!)..\(blocks.last!) (\(s.count))"
            out += roles.isEmpty ? "\n" : "  + " + roles.joined(separator: ", ") + "\n"
        }
        return out
    }
}
