// rwkvx cluster-bench: aggregate decode throughput of a pipeline cluster with C
// concurrent greedy sessions, per-hop latency and traffic from the coordinator's
// status, and the same work done in one process as batched steps for comparison.
//
// Each session is one client thread with its own DEALER socket (ZmqSocket is not
// thread-safe). Every session generates exactly G tokens (stop tokens are off):
// one prefill of its prompt, whose last logits give the first token, then G - 1
// decode steps. The in-process baseline runs the same steps for all C sessions
// as batches through `Stage.forwardBatch` with as many threads as the cluster's
// workers use together.
import Foundation
import RWKVX
import RWKVXCluster
import Synchronization

let clusterBenchCommand = Command(
    name: "cluster-bench",
    summary: "measure a local cluster's throughput with concurrent sessions against one process",
    usage: "(--model PATH | --shape | --coordinator ENDPOINT) [--stages S] [--sessions C] [--gen-tokens G] [--json]",
    options: [
        OptionSpec("model", "PATH", "checkpoint to serve and to run in process"),
        OptionSpec("shape", nil, "use a random 12 RWKV + 4 sparse layer model, n_embd 768, vocab 65536 (written to a temp folder)"),
        OptionSpec("coordinator", "ENDPOINT", "benchmark a running cluster instead of starting one; the baseline loads the model it serves"),
        OptionSpec("stages", "S", "worker processes, one stage each (default 2)"),
        OptionSpec("sessions", "C", "concurrent sessions, one client thread each (default 16)"),
        OptionSpec("gen-tokens", "G", "tokens each session generates (default 32)"),
        OptionSpec("threads-per-worker", "N", "compute threads per worker (default: cores / stages, at least 1)"),
        OptionSpec("baseline-threads", "N", "threads of the in-process baseline (default: stages x threads per worker)"),
        OptionSpec("transport", "KIND", "tcp (127.0.0.1, default) or ipc"),
        OptionSpec("base-port", "PORT", "tcp: coordinator port; workers use the next ones (default 5750)"),
        OptionSpec("no-baseline", nil, "skip the in-process baseline"),
        OptionSpec("json", nil, "print the results as one JSON object instead of a table"),
    ] + coordinatorOptions,
    run: { args in try runClusterBench(args) }
)

/// Measurements of one benchmark run.
struct ClusterBenchResult: Codable {
    struct Stage: Codable {
        var index: Int
        var blocks: String
        var batches: UInt64
        var computeP50Millis: Double
        var computeP99Millis: Double
        /// Median round trip of a batch from the coordinator to the stage and back.
        var hopMillis: Double
        /// hopMillis minus the stage's median compute time: transport and (de)serialisation.
        var hopOverheadMillis: Double
        /// Session steps (one prefill and G - 1 decodes per session) per batch, on average.
        var sessionsPerBatch: Double
    }

    var machine: String
    var model: String
    var stages: Int
    var threadsPerWorker: Int
    var transport: String
    var sessions: Int
    var genTokens: Int
    var promptTokens: Int
    var clusterSeconds: Double
    var clusterTokensPerSecond: Double
    var bytesPerTokenPerHop: Double
    var stageStats: [Stage]
    var baselineThreads: Int?
    var baselineSeconds: Double?
    var baselineTokensPerSecond: Double?
    /// clusterTokensPerSecond / baselineTokensPerSecond.
    var ratio: Double?
}

func runClusterBench(_ args: Arguments) throws {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let stages = try args.int("stages", default: 2)
    let sessions = try args.int("sessions", default: 16)
    let genTokens = try args.int("gen-tokens", default: 32)
    guard (1...64).contains(stages) else { throw UsageError(message: "invalid --stages \(stages): must be between 1 and 64") }
    guard (1...1024).contains(sessions) else { throw UsageError(message: "invalid --sessions \(sessions): must be between 1 and 1024") }
    guard genTokens >= 2 else { throw UsageError(message: "invalid --gen-tokens \(genTokens): must be at least 2") }
    let threadsPerWorker = try args.int("threads-per-worker", default: max(1, cores / stages))
    guard threadsPerWorker >= 1 else { throw UsageError(message: "invalid --threads-per-worker \(threadsPerWorker): must be at least 1") }
    let transport = args.string("transport") ?? "tcp"
    guard ["tcp", "ipc"].contains(transport) else { throw UsageError(message: "invalid --transport \(transport): expected tcp or ipc") }

    let temp = FileManager.default.temporaryDirectory.appendingPathComponent("rwkvx-cluster-bench-\(getpid())")
    try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: temp) }

    // the model and the cluster
    var model = args.string("model")
    if args.has("shape") {
        guard model == nil else { throw UsageError(message: "--shape and --model exclude each other") }
        model = try writeBenchModel(in: temp)
    }
    var coordinator = args.string("coordinator")
    var started = false
    if coordinator == nil {
        guard let model else { throw UsageError(message: "pass --model PATH, --shape or --coordinator ENDPOINT") }
        var spec = LocalClusterSpec(executable: selfExecutable(), model: model, workers: stages,
                                    threadsPerWorker: threadsPerWorker, runDirectory: temp.appendingPathComponent("cluster").path)
        spec.transport = transport
        spec.basePort = try args.int("base-port", default: 5750)
        spec.coordinatorArguments = forwardedCoordinatorArguments(args)
        Output.err("starting \(stages) worker(s) with \(threadsPerWorker) thread(s) each on \(transport) ...\n")
        coordinator = try LocalCluster.up(spec).coordinator
        started = true
    }
    defer {
        if started { try? LocalCluster.down(runDirectory: temp.appendingPathComponent("cluster").path) }
    }
    let endpoint = coordinator!
    let before = try ClusterClient(endpoint: endpoint, timeoutSeconds: 30).status()
    let modelPath = model ?? before.model

    // the cluster run
    let tokenizer = try WorldTokenizer.bundled()
    let prompts = (0..<sessions).map { "Session \($0) of the benchmark: the quick brown fox jumps over the lazy dog." }
    Output.err("running \(sessions) session(s) x \(genTokens) tokens through \(endpoint) ...\n")
    let cluster = try runClusterSessions(endpoint: endpoint, prompts: prompts, genTokens: genTokens)
    let status = try ClusterClient(endpoint: endpoint, timeoutSeconds: 30).status()

    var result = ClusterBenchResult(
        machine: machineDescription(), model: modelPath, stages: status.stages.count,
        threadsPerWorker: started ? threadsPerWorker : 0, transport: started ? transport : endpoint, sessions: sessions, genTokens: genTokens,
        promptTokens: tokenizer.encode(prompts[0]).count, clusterSeconds: cluster.seconds,
        clusterTokensPerSecond: Double(cluster.tokens) / cluster.seconds,
        bytesPerTokenPerHop: status.bytesPerTokenPerHop,
        stageStats: status.stages.map { s in
            let compute = Double(s.p50Micros) / 1000, hop = Double(s.hopMicros) / 1000
            return .init(index: s.index, blocks: s.blocks, batches: s.batches, computeP50Millis: compute,
                         computeP99Millis: Double(s.p99Micros) / 1000, hopMillis: hop, hopOverheadMillis: hop - compute,
                         sessionsPerBatch: s.batches == 0 ? 0 : Double(sessions * genTokens) / Double(s.batches))
        })

    // the in-process baseline, after the cluster has stopped so it has the cores to itself
    if started {
        try LocalCluster.down(runDirectory: temp.appendingPathComponent("cluster").path)
        started = false
    }
    if !args.has("no-baseline") {
        let threads = try args.int("baseline-threads", default: stages * threadsPerWorker)
        Output.err("running the same sessions in process as batches with \(threads) thread(s) ...\n")
        let seconds = try runBatchedBaseline(model: modelPath, prompts: prompts.map { tokenizer.encode($0) },
                                             genTokens: genTokens, threads: threads,
                                             vocabularyLimit: tokenizer.vocabularySize)
        result.baselineThreads = threads
        result.baselineSeconds = seconds
        result.baselineTokensPerSecond = Double(sessions * genTokens) / seconds
        result.ratio = result.clusterTokensPerSecond / result.baselineTokensPerSecond!
    }

    if args.has("json") {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        Output.out(String(decoding: try encoder.encode(result), as: UTF8.self) + "\n")
    } else {
        Output.out(describe(result))
    }
}

/// Writes the --shape model: 12 RWKV + 4 sparse layers, n_embd 768, vocab 65536, bf16.
func writeBenchModel(in directory: URL) throws -> String {
    let spec = RandomCheckpointSpec(nRWKVLayer: 12, nSparseLayer: 4, nEmbd: 768, vocabSize: 65536, dtype: .bfloat16, seed: 1)
    try spec.validate()
    let path = directory.appendingPathComponent("bench-12x768.pth").path
    Output.err("writing a random 12 + 4 layer, n_embd 768 model to \(path) ...\n")
    try PthWriter.write(tensors: spec.payloads(), to: path)
    return path
}

struct BenchError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Runs one generation per prompt, each on its own thread and socket, all released
/// at once. Returns the wall time from the release to the last "done" and the
/// tokens generated.
func runClusterSessions(endpoint: String, prompts: [String], genTokens: Int) throws -> (seconds: Double, tokens: Int) {
    var greedy = SamplingOptions()
    greedy.temperature = 0
    greedy.maxTokens = genTokens
    greedy.stopTokens = []
    greedy.seed = 1
    let sampling = greedy

    let results = Mutex<[Result<GenerationReport, Error>]>([])
    let connected = DispatchGroup(), finished = DispatchGroup()
    let release = DispatchSemaphore(value: 0)
    for prompt in prompts {
        connected.enter()
        finished.enter()
        Thread {
            defer { finished.leave() }
            let outcome: Result<GenerationReport, Error>
            var client: ClusterClient?
            do {
                client = try ClusterClient(endpoint: endpoint, timeoutSeconds: 600)
                _ = try client!.status()   // connected before the clock starts
            } catch {
                client = nil
                results.withLock { $0.append(.failure(error)) }
            }
            connected.leave()
            guard let client else { return }
            defer { client.close() }
            release.wait()
            do {
                outcome = .success(try client.generate(prompt: prompt, sampling: sampling) { _ in })
            } catch {
                outcome = .failure(error)
            }
            results.withLock { $0.append(outcome) }
        }.start()
    }
    connected.wait()
    let start = Date()
    for _ in prompts { release.signal() }
    finished.wait()
    let seconds = Date().timeIntervalSince(start)

    var tokens = 0
    for outcome in results.withLock({ $0 }) {
        let report = try outcome.get()
        tokens += report.generatedTokens
    }
    guard tokens == prompts.count * genTokens else {
        throw BenchError(message: "the sessions generated \(tokens) tokens, expected \(prompts.count * genTokens)")
    }
    return (seconds, tokens)
}

/// Runs every prompt as one batched prefill, then genTokens - 1 batched greedy decode
/// steps, in this process. Returns the seconds taken (model loading excluded).
func runBatchedBaseline(model path: String, prompts: [[Int]], genTokens: Int, threads: Int,
                        vocabularyLimit: Int) throws -> Double {
    let model = try Model(path: path, pool: ThreadPool(threadCount: threads))
    let stage = model.stage
    let c = model.config.nEmbd, v = model.config.vocabSize
    var states = prompts.map { _ in model.makeState() }

    /// Greedy token of each session from logits [sessions, V], over the tokenizer's ids.
    func argmaxRows(_ logits: [Float]) -> [Int] {
        (0..<prompts.count).map { s in
            let row = logits[(s * v)..<(s * v + min(v, vocabularyLimit))]
            return row.indices.max { row[$0] < row[$1] }! - s * v
        }
    }

    let start = Date()

    // prefill every prompt in one batch; the last row of each session gives its first token
    var x = try stage.embed(prompts.flatMap { $0 })
    var vFirst: [Float] = []
    stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: prompts.map(\.count), states: &states)
    var lastRows: [Float] = []
    var end = 0
    for p in prompts {
        end += p.count
        lastRows += x[((end - 1) * c)..<(end * c)]
    }
    var tokens = argmaxRows(stage.logits(rows: lastRows))

    // decode: one token per session per step
    for _ in 1..<genTokens {
        var x = try stage.embed(tokens)
        var vFirst: [Float] = []
        stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: Array(repeating: 1, count: tokens.count), states: &states)
        tokens = argmaxRows(stage.logits(rows: x))
    }
    return Date().timeIntervalSince(start)
}

func machineDescription() -> String {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let name = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?
        .split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    return "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(name)"
}

func describe(_ r: ClusterBenchResult) -> String {
    var out = "machine: \(r.machine)\nmodel: \(r.model)\n"
    out += "cluster: \(r.stages) stage(s) x \(r.threadsPerWorker) thread(s) over \(r.transport); "
    out += "\(r.sessions) session(s), prompt \(r.promptTokens) tokens, \(r.genTokens) generated tokens each\n\n"
    out += "stage  blocks               batches  sessions/batch  compute p50 ms  p99 ms  hop ms  hop - compute ms\n"
    for s in r.stageStats {
        out += String(format: "%5d  %@ %7llu  %14.1f  %14.2f  %6.2f  %6.2f  %16.2f\n", s.index,
                      s.blocks.padding(toLength: 20, withPad: " ", startingAt: 0), s.batches, s.sessionsPerBatch,
                      s.computeP50Millis, s.computeP99Millis, s.hopMillis, s.hopOverheadMillis)
    }
    out += String(format: "\nbytes per token per hop: %.0f\n", r.bytesPerTokenPerHop)
    out += String(format: "cluster:    %8.1f tokens/s  (%.2f s)\n", r.clusterTokensPerSecond, r.clusterSeconds)
    if let tps = r.baselineTokensPerSecond, let seconds = r.baselineSeconds, let threads = r.baselineThreads,
       let ratio = r.ratio {
        out += String(format: "in process: %8.1f tokens/s  (%.2f s, batch %d, %d threads)\n", tps, seconds, r.sessions, threads)
        out += String(format: "ratio:      %8.1f %%\n", ratio * 100)
    }
    return out
}
