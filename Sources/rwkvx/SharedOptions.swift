// Options shared by the commands that load a model or sample text.
import Foundation
import RWKVX

enum SharedOptions {
    static let model: [OptionSpec] = [
        OptionSpec("model", "PATH", "checkpoint (.pth or .safetensors)"),
        OptionSpec("threads", "N", "compute threads (default: all cores)"),
        OptionSpec("dtype", "TYPE", "weights in memory: auto (as stored), fp32 or int8 (default auto)"),
    ]

    static let attention: [OptionSpec] = [
        OptionSpec("attn-chunk-size", "N", "sparse attention chunk size in tokens (default 2048)"),
        OptionSpec("attn-top-k", "N", "chunks each decoded token attends to (default 3)"),
        OptionSpec("max-kv-cache", "N", "cache rows that trigger compression, 0 = never (default 20000)"),
        OptionSpec("kv-window", "N", "newest rows kept by compression (default 2000)"),
        OptionSpec("min-kv-cache", "N", "rows left after compression (default 16000)"),
        OptionSpec("attn-mode", "MODE", "sparse or full decode attention (default sparse)"),
        OptionSpec("kv-cache-dtype", "TYPE", "KV cache element type: fp32 matches the reference, fp16 halves the cache memory (default fp32)"),
    ]

    static let sampling: [OptionSpec] = [
        OptionSpec("max-tokens", "N", "tokens to generate (default 256)"),
        OptionSpec("temperature", "T", "0 = greedy (default 1.0)"),
        OptionSpec("top-p", "P", "nucleus probability mass in [0, 1]; 0 keeps only the most likely token (default 1.0)"),
        OptionSpec("top-k", "K", "keep the K most likely tokens, 0 = off (default 0)"),
        OptionSpec("presence-penalty", "X", "subtracted once from every generated token's logit (default 0)"),
        OptionSpec("frequency-penalty", "X", "subtracted per decayed occurrence (default 0)"),
        OptionSpec("penalty-decay", "X", "occurrence decay per generated token (default 0.996)"),
        OptionSpec("ban", "IDS", "comma-separated token ids never to sample"),
        OptionSpec("stop-tokens", "IDS", "comma-separated token ids that end generation (default 0)"),
        OptionSpec("stop", "TEXT", "a string that ends generation; it is not printed"),
        OptionSpec("seed", "N", "random seed for reproducible sampling (default: random)"),
    ]

    static func threadCount(_ args: Arguments) throws -> Int {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let n = try args.int("threads", default: cores)
        guard n >= 1 && n <= 256 else { throw UsageError(message: "invalid --threads \(n): must be between 1 and 256") }
        return n
    }

    static func weightFormat(_ args: Arguments) throws -> WeightFormat {
        guard let s = args.string("dtype") else { return .stored }
        guard let f = WeightFormat(rawValue: s) else {
            throw UsageError(message: "invalid --dtype \(s): expected auto, fp32 or int8")
        }
        return f
    }

    static func attentionOptions(_ args: Arguments, base: AttentionOptions = AttentionOptions()) throws -> AttentionOptions {
        var o = base
        o.chunkSize = try args.int("attn-chunk-size", default: o.chunkSize)
        o.topK = try args.int("attn-top-k", default: o.topK)
        o.maxKVCacheSize = try args.int("max-kv-cache", default: o.maxKVCacheSize)
        o.kvCacheWindowSize = try args.int("kv-window", default: o.kvCacheWindowSize)
        o.minKVCacheSize = try args.int("min-kv-cache", default: o.minKVCacheSize)
        if let m = args.string("attn-mode") {
            guard let mode = AttentionMode(rawValue: m) else {
                throw UsageError(message: "invalid --attn-mode \(m): expected sparse or full")
            }
            o.mode = mode
        }
        o.kvCacheDType = try kvCacheDType(args) ?? o.kvCacheDType
        try o.validate()
        return o
    }

    /// Parses --kv-cache-dtype; nil when it is not given.
    static func kvCacheDType(_ args: Arguments) throws -> KVCacheDType? {
        guard let name = args.string("kv-cache-dtype") else { return nil }
        guard let dtype = KVCacheDType(rawValue: name) else {
            throw UsageError(message: "invalid --kv-cache-dtype \(name): expected fp32 or fp16")
        }
        return dtype
    }

    static func samplingOptions(_ args: Arguments) throws -> SamplingOptions {
        var s = SamplingOptions()
        s.maxTokens = try args.int("max-tokens", default: s.maxTokens)
        s.temperature = try args.float("temperature", default: s.temperature)
        s.topP = try args.float("top-p", default: s.topP)
        s.topK = try args.int("top-k", default: s.topK)
        s.presencePenalty = try args.float("presence-penalty", default: s.presencePenalty)
        s.frequencyPenalty = try args.float("frequency-penalty", default: s.frequencyPenalty)
        s.penaltyDecay = try args.float("penalty-decay", default: s.penaltyDecay)
        if let ids = try args.intList("ban") { s.bannedTokens = ids }
        if let ids = try args.intList("stop-tokens") { s.stopTokens = ids }
        if let stop = args.string("stop") { s.stopStrings = [stop] }
        if let seed = args.string("seed") {
            guard let v = UInt64(seed) else { throw UsageError(message: "invalid --seed \(seed): expected a non-negative integer") }
            s.seed = v
        }
        try validateSampling(s, vocabularySize: nil)
        return s
    }

    /// Checks sampling options, with token ids against `vocabularySize` when given, and
    /// names the command-line option in the error rather than the Swift property.
    static func validateSampling(_ s: SamplingOptions, vocabularySize: Int?) throws {
        do {
            try s.validate(vocabularySize: vocabularySize)
        } catch {
            let names = ["maxTokens": "--max-tokens", "temperature": "--temperature", "topP": "--top-p",
                         "topK": "--top-k", "presencePenalty": "--presence-penalty",
                         "frequencyPenalty": "--frequency-penalty", "penaltyDecay": "--penalty-decay",
                         "bannedTokens": "--ban", "stopTokens": "--stop-tokens", "stopStrings": "--stop", "seed": "--seed"]
            let property = String(error.option.prefix { $0 != "[" })
            throw UsageError(message: "invalid \(names[property] ?? error.option) \(error.value): expected \(error.allowed)")
        }
    }

    /// Loads a model with progress on stderr.
    static func loadModel(_ args: Arguments, attention: AttentionOptions? = nil) throws -> Model {
        let path = try args.required("model")
        let threads = try threadCount(args)
        let start = Date()
        Output.err("loading \(path) ...\n")
        let model = try Model(path: path, options: attention ?? AttentionOptions(), format: try weightFormat(args),
                              pool: ThreadPool(threadCount: threads))
        let c = model.config
        Output.err(String(format: "loaded %@: %d RWKV + %d sparse layers, n_embd %d, vocab %d, %.1fM params, %d threads, kernels %@ (%.2f s)\n",
                          c.layout.rawValue, c.nRWKVLayer, c.nSparseLayer, c.nEmbd, c.vocabSize,
                          Double(c.parameterCount) / 1e6, threads, kernelLevelName(), Date().timeIntervalSince(start)))
        return model
    }
}
