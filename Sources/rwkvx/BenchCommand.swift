// rwkvx bench: single-process throughput measured against the machine's own
// limits, in the manner of llama.cpp's llama-bench.
//
// The machine limits are measured by this command: memory read bandwidth as the
// best of several multi-threaded streaming reads of a buffer far larger than L3,
// and the fp32 FMA peak as the best of several runs of independent FMA chains on
// every thread. Model numbers are the median of --repeat timed runs after one
// untimed warm-up, with min and max.
//
// A shared VM's read bandwidth moved by up to 2x within minutes here (other
// tenants). A decode run is therefore held against the mean of read probes taken
// just before and just after it, not against the probe at start. The "% of read
// bandwidth" of a decode test is the median of those per-run ratios.
//
// Left out: perplexity or any accuracy figure (random weights generate noise).
import CKernels
import Foundation
import RWKVX

let benchCommand = Command(
    name: "bench",
    summary: "measure prefill and decode speed against memory bandwidth and FMA peak",
    usage: "[--model PATH | --shape rwkv7|rwkvx] [options]",
    options: [
        OptionSpec("model", "PATH", "checkpoint (.pth or .safetensors); omit to generate one with --shape"),
        OptionSpec("shape", "SHAPE", "rwkv7 or rwkvx: a random 12-layer n_embd 768 vocab 65536 bf16 model, plain or with 4 sparse layers (default rwkvx)"),
        OptionSpec("dtype", "TYPE", "weights in memory: auto (as stored), fp32 or int8 (default auto)"),
        OptionSpec("threads", "N", "compute threads (default: all cores)"),
        OptionSpec("batch", "B", "sessions decoded together in the batched decode test (default 16)"),
        OptionSpec("prompt-tokens", "P", "tokens in the prefill test (default 512)"),
        OptionSpec("gen-tokens", "G", "decode steps per timed run (default 64)"),
        OptionSpec("repeat", "R", "timed runs per test; the median is reported (default 5)"),
        OptionSpec("context", "LIST", "comma-separated context lengths: measure decode latency and memory with the sparse layers' KV caches filled to each, with cache compression off and on (the default limits)"),
        OptionSpec("kv-cache-dtype", "TYPE", "with --context: measure only fp32 or only fp16 KV caches (default both)"),
        OptionSpec("json", nil, "print the results as JSON on stdout (the table goes to stderr)"),
    ],
    run: { args in try runBench(args) }
)

/// Median, min and max of a set of measurements.
struct Summary: Encodable {
    let median: Double
    let min: Double
    let max: Double

    init(_ values: [Double]) {
        precondition(!values.isEmpty)
        let sorted = values.sorted()
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        min = sorted.first!
        max = sorted.last!
    }

    func scaled(_ factor: Double) -> Summary { Summary(median: median * factor, min: min * factor, max: max * factor) }

    /// Turns seconds per run into a rate (work / seconds): min and max swap.
    func rate(work: Double) -> Summary { Summary(median: work / median, min: work / max, max: work / min) }

    private init(median: Double, min: Double, max: Double) {
        self.median = median
        self.min = min
        self.max = max
    }
}

struct BenchSettings {
    var threads: Int
    var batch: Int
    var promptTokens: Int
    var genTokens: Int
    var repeats: Int
}

struct MachineLimits: Encodable {
    let cpu: String
    let kernelLevel: String
    let readGBps: Double
    let fmaPeakGFLOPs: Double
}

struct ThroughputResult: Encodable {
    let test: String
    let tokensPerSecond: Summary
    var gbPerSecond: Double?
    /// Median over the timed runs of (run GB/s) / (read probe just before the run).
    var bandwidthFraction: Double?
    /// Those read probes, GB/s.
    var probeReadGBps: Summary?
    var gflops: Double?
    var fmaPeakFraction: Double?
}

struct ContextResult: Encodable {
    let context: Int
    let compression: Bool
    let kvCacheDType: String
    /// Rows each sparse layer's cache held when the timed runs began.
    let cacheRows: Int
    let millisecondsPerToken: Summary
    let residentMiB: Double
}

struct BenchReport: Encodable {
    let model: String
    let layout: String
    let weights: String
    let threads: Int
    let weightBytesPerToken: Int
    let machine: MachineLimits
    var results: [ThroughputResult] = []
    var contexts: [ContextResult] = []
}

private func runBench(_ args: Arguments) throws {
    let settings = BenchSettings(
        threads: try SharedOptions.threadCount(args),
        batch: try args.int("batch", default: 16),
        promptTokens: try args.int("prompt-tokens", default: 512),
        genTokens: try args.int("gen-tokens", default: 64),
        repeats: try args.int("repeat", default: 5))
    guard settings.batch >= 1 else { throw UsageError(message: "invalid --batch \(settings.batch): must be at least 1") }
    guard settings.promptTokens >= 2 else {
        throw UsageError(message: "invalid --prompt-tokens \(settings.promptTokens): must be at least 2 (one token is a decode)")
    }
    guard settings.genTokens >= 1 else { throw UsageError(message: "invalid --gen-tokens \(settings.genTokens): must be at least 1") }
    guard settings.repeats >= 1 else { throw UsageError(message: "invalid --repeat \(settings.repeats): must be at least 1") }
    let contextList = try args.intList("context")
    if let list = contextList, list.isEmpty {
        throw UsageError(message: "invalid --context: expected comma-separated lengths such as 1000,16000,64000")
    }
    let contexts = contextList ?? []
    if let bad = contexts.first(where: { $0 < 1 }) {
        throw UsageError(message: "invalid --context length \(bad): must be at least 1")
    }
    if args.has("kv-cache-dtype") && contexts.isEmpty {
        throw UsageError(message: "--kv-cache-dtype applies to --context runs only; add --context LIST or drop it")
    }
    let cacheDTypes = try SharedOptions.kvCacheDType(args).map { [$0] } ?? KVCacheDType.allCases

    // The model: a given checkpoint, or a generated one in a temporary directory.
    var temporaryDirectory: URL?
    defer { if let temporaryDirectory { try? FileManager.default.removeItem(at: temporaryDirectory) } }
    let path: String
    if let model = args.string("model") {
        if args.has("shape") { throw UsageError(message: "--model and --shape exclude each other; pass one") }
        path = model
    } else {
        let shape = args.string("shape") ?? "rwkvx"
        guard shape == "rwkv7" || shape == "rwkvx" else {
            throw UsageError(message: "invalid --shape \(shape): expected rwkv7 or rwkvx")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rwkvx-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        temporaryDirectory = directory
        path = directory.appendingPathComponent("\(shape).safetensors").path
        Output.err("generating a random \(shape) model (12 layers, n_embd 768, vocab 65536, bf16) in \(path) ...\n")
        let spec = RandomCheckpointSpec(nRWKVLayer: 12, nSparseLayer: shape == "rwkvx" ? 4 : 0, nEmbd: 768,
                                        vocabSize: 65536, dtype: .bfloat16, seed: 0, plain: shape == "rwkv7")
        try SafetensorsWriter.write(tensors: spec.payloads(), metadata: ["format": "pt"], to: path)
    }

    let format = try SharedOptions.weightFormat(args)
    let pool = ThreadPool(threadCount: settings.threads)
    let model = try Model(path: path, options: AttentionOptions(), format: format, pool: pool)
    let config = model.config
    let stored = try model.checkpoint.tensor(config.rwkvPrefix + "head.weight").dtype.rawValue
    let weights = format == .stored ? "\(stored) (as stored)" : format.rawValue

    Output.err("measuring memory bandwidth and FMA peak ...\n")
    var probe: ReadProbe? = ReadProbe(pool: pool)
    let machine = MachineLimits(cpu: cpuModelName(), kernelLevel: kernelLevelName(),
                                readGBps: probe!.measure(passes: 6) / 1e9,
                                fmaPeakGFLOPs: measureFMAPeak(pool: pool) / 1e9)
    var report = BenchReport(model: path, layout: config.layout.rawValue, weights: weights, threads: settings.threads,
                             weightBytesPerToken: model.stage.weightBytesPerToken, machine: machine)

    if contexts.isEmpty {
        report.results = try measureThroughput(model: model, settings: settings, machine: machine, probe: probe!)
    } else {
        probe = nil  // resident memory is part of what --context reports
        guard config.nSparseLayer > 0 else {
            throw UsageError(message: "--context needs a model with sparse-attention layers (use --shape rwkvx)")
        }
        report.contexts = try measureContexts(model: model, contexts: contexts, cacheDTypes: cacheDTypes,
                                              settings: settings)
    }

    let table = formatReport(report, settings: settings, contextMode: !contexts.isEmpty)
    if args.has("json") {
        Output.err(table)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        Output.out(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
    } else {
        Output.out(table)
    }
}

// MARK: - Machine limits

/// Streaming reads of a 512 MiB buffer split over the pool's threads.
private final class ReadProbe {
    private let count = 128 << 20  // floats: 512 MiB, 16x a 32 MiB L3
    private let raw: UnsafeMutableRawPointer
    private let pool: ThreadPool

    init(pool: ThreadPool) {
        self.pool = pool
        raw = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
        let buffer = raw.bindMemory(to: Float.self, capacity: count)
        // Touch every page (and give the values some variety) before timing.
        for i in stride(from: 0, to: count, by: 1024) { buffer[i] = Float(i & 255) }
        for i in 0..<count where i % 1024 != 0 { buffer[i] = 0 }
    }

    deinit { raw.deallocate() }

    /// Best bytes per second of `passes` reads of the whole buffer.
    func measure(passes: Int) -> Double {
        let shared = SendablePointer(raw.assumingMemoryBound(to: Float.self))
        let parts = pool.threadCount, count = self.count
        var best = 0.0
        for _ in 0..<passes {
            let start = DispatchTime.now().uptimeNanoseconds
            pool.parallelFor(parts) { range in
                for part in range {
                    let chunk = count / parts / 64 * 64
                    let begin = part * chunk
                    let length = part == parts - 1 ? count - begin : chunk
                    var sink = rwkvx_bench_read(shared.base + begin, length)
                    withUnsafeMutablePointer(to: &sink) { _ in }
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, Double(count * 4) / seconds)
        }
        return best
    }
}

/// Best fp32 FLOP/s of independent FMA chains run on every pool thread at once.
private func measureFMAPeak(pool: ThreadPool) -> Double {
    let iterations = 4_000_000
    var best = 0.0
    for _ in 0..<6 {
        let start = DispatchTime.now().uptimeNanoseconds
        let total = FlopCounter()
        pool.parallelFor(pool.threadCount) { range in
            for _ in range {
                var sink: Float = 0
                total.add(rwkvx_bench_fma(iterations, &sink))
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        best = max(best, total.value / seconds)
    }
    return best
}

/// A sum of FLOP counts added from pool threads.
private final class FlopCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0.0
    func add(_ flops: Double) { lock.withLock { total += flops } }
    var value: Double { lock.withLock { total } }
}

private func cpuModelName() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
    for line in text.split(separator: "\n") where line.hasPrefix("model name") {
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
    }
    return "unknown"
}

// MARK: - Model throughput

private func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Deterministic, varied token ids.
private func benchTokens(_ count: Int, vocab: Int, seed: Int) -> [Int] {
    (0..<count).map { ($0 * 7919 + seed * 104_729 + 13) % vocab }
}

/// Times `body` once untimed, then `repeats` times; returns the seconds of each timed run.
private func timedRuns(_ repeats: Int, _ body: () throws -> Void) rethrows -> [Double] {
    try body()
    var runs: [Double] = []
    for _ in 0..<repeats { runs.append(try seconds(body)) }
    return runs
}

/// Times runs as timedRuns does, with read probes (best of 2 passes, bytes/s) between
/// them. A run's bound is the mean of the probes just before and just after it.
private func probedRuns(_ repeats: Int, probe: ReadProbe,
                        _ body: () throws -> Void) rethrows -> (seconds: [Double], readBps: [Double]) {
    try body()
    var runs: [Double] = [], probes: [Double] = [probe.measure(passes: 2)]
    for _ in 0..<repeats {
        runs.append(try seconds(body))
        probes.append(probe.measure(passes: 2))
    }
    return (runs, (0..<repeats).map { (probes[$0] + probes[$0 + 1]) / 2 })
}

/// Median over runs of the bytes/s a run moved against the probes around it.
private func bandwidthFraction(_ runs: (seconds: [Double], readBps: [Double]), bytesPerRun: [Double]) -> Double {
    Summary(zip(bytesPerRun, zip(runs.seconds, runs.readBps)).map { $0 / $1.0 / $1.1 }).median
}

/// Returns the bytes of K and V rows the sparse layers read to decode one token with
/// `cached` rows in each cache. This is exact below the compression limit, which
/// the throughput tests stay under.
private func kvBytesPerToken(cached: Int, config: ModelConfig, options: AttentionOptions) -> Double {
    guard config.nSparseLayer > 0 else { return 0 }
    let attended = options.decodeAttendedRows(cachedRows: cached)
    let elementBytes = options.kvCacheDType == .fp16 ? 2 : 4
    return Double(config.nSparseLayer * attended * config.nEmbd * 2 * elementBytes)
}

/// Returns the bytes each timed decode run reads: the weights and `sessions`
/// sessions' KV rows per step. Caches start at `prompt` rows and grow by one row
/// per step through the untimed warm-up run and the timed runs.
private func decodeBytesPerRun(settings: BenchSettings, sessions: Int, prompt: Int, weightBytes: Double,
                               config: ModelConfig) -> [Double] {
    (0..<settings.repeats).map { run in
        (0..<settings.genTokens).reduce(0.0) { total, step in
            let cached = prompt + settings.genTokens * (run + 1) + step
            return total + weightBytes
                + Double(sessions) * kvBytesPerToken(cached: cached, config: config, options: AttentionOptions())
        }
    }
}

/// Median over runs of bytes / seconds, in GB/s.
private func medianGBps(_ seconds: [Double], bytes: [Double]) -> Double {
    Summary(zip(bytes, seconds).map { $0 / $1 }).median / 1e9
}

private func measureThroughput(model: Model, settings: BenchSettings, machine: MachineLimits,
                               probe: ReadProbe) throws -> [ThroughputResult] {
    let stage = model.stage
    let vocab = model.config.vocabSize
    let bytesPerToken = Double(stage.weightBytesPerToken)
    var results: [ThroughputResult] = []

    // Prefill: P tokens from an empty state, logits of the last one.
    Output.err("prefill of \(settings.promptTokens) tokens ...\n")
    let prompt = benchTokens(settings.promptTokens, vocab: vocab, seed: 1)
    let prefillRuns = try timedRuns(settings.repeats) {
        var state = model.makeState()
        _ = try model.forward(prompt, state: &state)
    }
    let prefillRate = Summary(prefillRuns).rate(work: Double(settings.promptTokens))
    let flopsPerPrompt = Double(stage.blockMatmulFlopsPerToken * settings.promptTokens + stage.headFlopsPerRow)
    let prefillGFLOPs = flopsPerPrompt / Summary(prefillRuns).median / 1e9
    results.append(ThroughputResult(test: "prefill \(settings.promptTokens)", tokensPerSecond: prefillRate,
                                    gflops: prefillGFLOPs, fmaPeakFraction: prefillGFLOPs / machine.fmaPeakGFLOPs))

    // Decode at batch 1: G single-token steps after a 16-token prompt.
    Output.err("decode, batch 1, \(settings.genTokens) tokens per run ...\n")
    let steps = benchTokens(settings.genTokens, vocab: vocab, seed: 2)
    var state = model.makeState()
    _ = try model.forward(benchTokens(16, vocab: vocab, seed: 3), state: &state)
    let decodeRuns = try probedRuns(settings.repeats, probe: probe) {
        for token in steps { _ = try model.forward([token], state: &state) }
    }
    let decodeRate = Summary(decodeRuns.seconds).rate(work: Double(settings.genTokens))
    let decodeBytes = decodeBytesPerRun(settings: settings, sessions: 1, prompt: 16, weightBytes: bytesPerToken,
                                        config: model.config)
    results.append(ThroughputResult(
        test: "decode batch 1", tokensPerSecond: decodeRate, gbPerSecond: medianGBps(decodeRuns.seconds, bytes: decodeBytes),
        bandwidthFraction: bandwidthFraction(decodeRuns, bytesPerRun: decodeBytes),
        probeReadGBps: Summary(decodeRuns.readBps).scaled(1e-9)))

    // Decode at batch B: B sessions, one forwardBatch pass over the weights per step.
    if settings.batch > 1 {
        let b = settings.batch
        Output.err("decode, batch \(b), \(settings.genTokens) steps per run ...\n")
        var states = (0..<b).map { _ in model.makeState() }
        var x = try stage.embed((0..<b).flatMap { benchTokens(16, vocab: vocab, seed: 10 + $0) })
        var vFirst: [Float] = []
        stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: Array(repeating: 16, count: b), states: &states)
        let ones = Array(repeating: 1, count: b)
        let batchRuns = try probedRuns(settings.repeats, probe: probe) {
            for step in 0..<settings.genTokens {
                var x = try stage.embed((0..<b).map { (steps[step] + $0 * 31) % vocab })
                var vFirst: [Float] = []
                stage.forwardBatch(&x, vFirst: &vFirst, tokenCounts: ones, states: &states)
                _ = stage.logits(rows: x)
            }
        }
        let batchRate = Summary(batchRuns.seconds).rate(work: Double(b * settings.genTokens))
        let batchBytes = decodeBytesPerRun(settings: settings, sessions: b, prompt: 16, weightBytes: bytesPerToken,
                                           config: model.config)
        let batchGFLOPs = batchRate.median * Double(stage.blockMatmulFlopsPerToken + stage.headFlopsPerRow) / 1e9
        results.append(ThroughputResult(
            test: "decode batch \(b)", tokensPerSecond: batchRate, gbPerSecond: medianGBps(batchRuns.seconds, bytes: batchBytes),
            bandwidthFraction: bandwidthFraction(batchRuns, bytesPerRun: batchBytes),
            probeReadGBps: Summary(batchRuns.readBps).scaled(1e-9), gflops: batchGFLOPs,
            fmaPeakFraction: batchGFLOPs / machine.fmaPeakGFLOPs))
    }
    return results
}

// MARK: - Long contexts

/// Decode latency and resident memory with every sparse layer's KV cache filled as
/// after `context` tokens, for each cache dtype, first with cache compression off
/// (the cache keeps every row) and then with the default compression limits (the
/// cache keeps what a token-by-token decode would leave after compressions). The
/// caches are filled with synthetic rows (deterministic pseudo-random values), not
/// by a prefill, which would take minutes at 64000 tokens.
private func measureContexts(model: Model, contexts: [Int], cacheDTypes: [KVCacheDType],
                             settings: BenchSettings) throws -> [ContextResult] {
    let c = model.config.nEmbd
    let vocab = model.config.vocabSize
    let defaults = AttentionOptions()
    var results: [ContextResult] = []
    for compression in [false, true] {
        for dtype in cacheDTypes {
            var options = defaults
            options.maxKVCacheSize = compression ? defaults.maxKVCacheSize : 0
            options.kvCacheDType = dtype
            model.stage.options = options
            for context in contexts {
                let rows = compression ? cacheRowsAfterDecode(context, options: options) : context
                Output.err("decode at context \(context), compression \(compression ? "on" : "off"), \(dtype.rawValue) cache of \(rows) rows (synthetic) ...\n")
                let reserve = rows + settings.genTokens * (settings.repeats + 2)
                var state = model.makeState()
                for j in state.sparse.keys.sorted() {
                    state.sparse[j]!.replaceCache(keys: syntheticRows(rows * c, seed: UInt64(2 * j + 1)),
                                                  values: syntheticRows(rows * c, seed: UInt64(2 * j + 2)),
                                                  dtype: dtype, reservingRows: reserve, nEmbd: c)
                }
                let steps = benchTokens(settings.genTokens, vocab: vocab, seed: 4)
                let runs = try timedRuns(settings.repeats) {
                    for token in steps { _ = try model.forward([token], state: &state) }
                }
                let perToken = Summary(runs).scaled(1000 / Double(settings.genTokens))
                results.append(ContextResult(context: context, compression: compression, kvCacheDType: dtype.rawValue,
                                             cacheRows: rows, millisecondsPerToken: perToken,
                                             residentMiB: residentMiB()))
            }
        }
    }
    model.stage.options = defaults
    return results
}

/// Returns the rows a sparse layer's cache contains after `tokens` decoded tokens
/// from an empty cache. Each decode step compresses a cache of more than
/// maxKVCacheSize rows to minKVCacheSize rows, then appends its own row.
private func cacheRowsAfterDecode(_ tokens: Int, options: AttentionOptions) -> Int {
    var rows = 0
    for _ in 0..<tokens {
        if options.maxKVCacheSize > 0 && rows > options.maxKVCacheSize && options.minKVCacheSize < rows {
            rows = options.minKVCacheSize
        }
        rows += 1
    }
    return rows
}

/// `count` values of a xorshift sequence scaled to about [-1, 1).
private func syntheticRows(_ count: Int, seed: UInt64) -> [Float] {
    var values: [Float] = []
    values.reserveCapacity(count)
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    for _ in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        values.append(Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max))
    }
    return values
}

/// VmRSS of this process in MiB, from /proc/self/status (0 where it is unavailable).
private func residentMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kilobytes = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kilobytes / 1024
    }
    return 0
}

// MARK: - Output

private func formatReport(_ report: BenchReport, settings: BenchSettings, contextMode: Bool) -> String {
    var out = "model     \(report.model) (\(report.layout)), weights \(report.weights), \(report.threads) threads, kernels \(report.machine.kernelLevel)\n"
    out += "cpu       \(report.machine.cpu)\n"
    out += String(format: "machine   memory read %.1f GB/s (best of 6, %d threads, 512 MiB); fp32 FMA peak %.1f GFLOP/s (best of 6, %d threads)\n",
                  report.machine.readGBps, report.threads, report.machine.fmaPeakGFLOPs, report.threads)
    out += String(format: "weights   %.1f MB read per decoded token\n", Double(report.weightBytesPerToken) / 1e6)
    if !contextMode {
        out += "GB/s      weights and the KV cache rows the decode reads (all cached rows at these short contexts)\n"
    }
    out += "runs      median of \(settings.repeats) timed runs after 1 warm-up, with min-max\n"
    if !contextMode {
        out += "bound     each decode run against the mean of read probes (best of 2) just before and after it; % is the median per-run ratio\n"
    }
    out += "\n"

    func cell(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }
    if !contextMode {
        out += "| test | tokens/s | min-max | GB/s | probe GB/s | % of read bandwidth | GFLOP/s | % of FMA peak |\n"
        out += "|---|---|---|---|---|---|---|---|\n"
        for r in report.results {
            out += "| \(r.test) | " + String(format: "%.1f", r.tokensPerSecond.median)
                + " | " + String(format: "%.1f-%.1f", r.tokensPerSecond.min, r.tokensPerSecond.max)
                + " | " + cell(r.gbPerSecond, "%.1f") + " | " + cell(r.probeReadGBps?.median, "%.1f")
                + " | " + cell(r.bandwidthFraction.map { $0 * 100 }, "%.0f%%")
                + " | " + cell(r.gflops, "%.1f") + " | " + cell(r.fmaPeakFraction.map { $0 * 100 }, "%.0f%%") + " |\n"
        }
        if let one = report.results.first(where: { $0.test == "decode batch 1" }),
           let many = report.results.first(where: { $0.test.hasPrefix("decode batch") && $0.test != "decode batch 1" }) {
            out += String(format: "\n%@ / decode batch 1 = %.2fx tokens/s\n", many.test, many.tokensPerSecond.median / one.tokensPerSecond.median)
        }
    } else {
        let defaults = AttentionOptions()
        out += "KV caches filled with synthetic rows (no prefill); \(settings.genTokens) decoded tokens per run\n"
        out += "compression on: max_kv_cache \(defaults.maxKVCacheSize), window \(defaults.kvCacheWindowSize), min \(defaults.minKVCacheSize); the cache holds the rows a token-by-token decode would leave\n"
        out += "VmRSS includes the packed weights and the embedding rows read so far; each configuration's state is freed before the next\n\n"
        out += "| compression | KV cache | context | cache rows | ms/token | min-max | VmRSS MiB |\n|---|---|---|---|---|---|---|\n"
        for r in report.contexts {
            out += "| \(r.compression ? "on" : "off") | \(r.kvCacheDType) | \(r.context) | \(r.cacheRows) | "
                + String(format: "%.2f | %.2f-%.2f | %.0f", r.millisecondsPerToken.median,
                         r.millisecondsPerToken.min, r.millisecondsPerToken.max, r.residentMiB) + " |\n"
        }
        var ratios = ""
        for compression in [false, true] {
            for dtype in KVCacheDType.allCases {
                let rows = report.contexts.filter { $0.compression == compression && $0.kvCacheDType == dtype.rawValue }
                if let first = rows.first, let last = rows.last, rows.count > 1 {
                    ratios += String(format: "compression %@, %@: context %d / context %d = %.2fx ms/token\n",
                                     compression ? "on" : "off", dtype.rawValue, last.context, first.context,
                                     last.millisecondsPerToken.median / first.millisecondsPerToken.median)
                }
            }
        }
        if !ratios.isEmpty { out += "\n" + ratios }
    }
    return out
}
