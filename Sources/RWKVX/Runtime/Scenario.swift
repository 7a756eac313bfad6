// Scenarios in the reference harness format: a checkpoint, attention settings and
// a list of prefill/decode steps sharing one state. Running one yields the logits of
// every step and the final state under the reference tensor names, so an engine's
// output can be compared with the authors' PyTorch outputs tensor by tensor.
import Foundation

public struct Scenario: Sendable {
    public enum Step: Sendable {
        case prefill(tokens: [Int], fullOutput: Bool)
        case decode(tokens: [Int])
    }

    public var name: String
    /// Checkpoint path, resolved against the scenario file's folder.
    public var checkpoint: String
    public var attention: AttentionOptions
    public var steps: [Step]

    public init(name: String, checkpoint: String, attention: AttentionOptions, steps: [Step]) {
        self.name = name
        self.checkpoint = checkpoint
        self.attention = attention
        self.steps = steps
    }

    /// Reads a scenario JSON file. Missing attention keys take the reference defaults.
    public init(contentsOf path: String) throws {
        let url = URL(fileURLWithPath: path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(message: "scenario file not found: \(path)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigurationError(message: "scenario \(path) is not a JSON object")
        }
        func fail(_ what: String) -> ConfigurationError {
            ConfigurationError(message: "scenario \(path): \(what)")
        }
        name = json["name"] as? String ?? url.deletingPathExtension().deletingPathExtension().lastPathComponent
        guard let ckpt = json["checkpoint"] as? String else { throw fail("missing \"checkpoint\"") }
        checkpoint = ckpt.hasPrefix("/") ? ckpt : url.deletingLastPathComponent().appendingPathComponent(ckpt).path
        if let mode = json["prefill_attention"] as? String, mode != "package" {
            throw fail("prefill_attention \"\(mode)\" is not supported; rwkvx implements the inference package's prefill (\"package\")")
        }

        var options = AttentionOptions()
        if let a = json["attention"] as? [String: Any] {
            func int(_ key: String, _ current: Int) throws -> Int {
                guard let v = a[key] else { return current }
                guard let i = v as? Int else { throw fail("attention.\(key) must be an integer, got \(v)") }
                return i
            }
            options.chunkSize = try int("moba_chunk_size", options.chunkSize)
            options.topK = try int("moba_topk", options.topK)
            options.maxKVCacheSize = try int("max_kv_cache_size", options.maxKVCacheSize)
            options.kvCacheWindowSize = try int("kv_cache_window_size", options.kvCacheWindowSize)
            options.minKVCacheSize = try int("min_kv_cache_size", options.minKVCacheSize)
            if let m = a["attn_mode"] {
                guard let s = m as? String, let mode = AttentionMode(rawValue: s) else {
                    throw fail("attention.attn_mode must be \"sparse\" or \"full\", got \(m)")
                }
                options.mode = mode
            }
        }
        try options.validate()
        attention = options

        guard let rawSteps = json["steps"] as? [[String: Any]] else { throw fail("missing \"steps\" list") }
        steps = try rawSteps.enumerated().map { i, step in
            if step["prefill"] != nil && step["decode"] != nil {
                throw fail("step \(i) has both \"prefill\" and \"decode\"; give one per step")
            }
            if let ids = step["prefill"] {
                guard let tokens = ids as? [Int], !tokens.isEmpty else { throw fail("step \(i): prefill needs a non-empty id list") }
                return .prefill(tokens: tokens, fullOutput: step["full_output"] as? Bool ?? false)
            }
            if let ids = step["decode"] {
                guard let tokens = ids as? [Int], !tokens.isEmpty else { throw fail("step \(i): decode needs a non-empty id list") }
                return .decode(tokens: tokens)
            }
            throw fail("step \(i) has neither \"prefill\" nor \"decode\"")
        }
    }
}

/// A named fp32 tensor, as written to a safetensors output file.
public struct NamedTensor: Sendable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// Something that runs tokens against a session state and returns logits: the
/// in-process model, or a cluster behind a coordinator.
public protocol LogitsEngine {
    var config: ModelConfig { get }
    /// Logits [V] of the last token, or [T, V] with fullOutput.
    func forward(_ tokens: [Int], fullOutput: Bool) throws -> [Float]
    /// Returns the whole session state after the calls so far.
    func finalState() throws -> SessionState
}

extension Scenario {
    /// Runs every step and returns `step{i}.logits` and the `state.*` tensors.
    public func run(on engine: LogitsEngine) throws -> [NamedTensor] {
        let config = engine.config
        let v = config.vocabSize
        var out: [NamedTensor] = []
        for (i, step) in steps.enumerated() {
            switch step {
            case .prefill(let tokens, let fullOutput):
                let logits = try engine.forward(tokens, fullOutput: fullOutput)
                let shape = fullOutput ? [tokens.count, v] : [v]
                out.append(NamedTensor(name: "step\(i).logits", shape: shape, values: logits))
            case .decode(let tokens):
                var rows: [Float] = []
                for token in tokens { rows += try engine.forward([token], fullOutput: false) }
                out.append(NamedTensor(name: "step\(i).logits", shape: [tokens.count, v], values: rows))
            }
        }
        out += Scenario.stateTensors(try engine.finalState(), config: config)
        return out
    }

    /// Names the state's tensors as the reference does: state.rwkv.{i}.* and state.moba.{j}.*.
    public static func stateTensors(_ state: SessionState, config: ModelConfig) -> [NamedTensor] {
        let c = config.nEmbd, h = config.nHead, n = config.headSize
        var out: [NamedTensor] = []
        for i in state.rwkv.keys.sorted() {
            let s = state.rwkv[i]!
            out.append(NamedTensor(name: "state.rwkv.\(i).att_x_prev", shape: [c], values: s.attXPrev))
            out.append(NamedTensor(name: "state.rwkv.\(i).wkv", shape: [h, n, n], values: s.wkv))
            out.append(NamedTensor(name: "state.rwkv.\(i).ffn_x_prev", shape: [c], values: s.ffnXPrev))
        }
        for j in state.sparse.keys.sorted() {
            let s = state.sparse[j]!
            let rows = s.rows(nEmbd: c)
            out.append(NamedTensor(name: "state.moba.\(j).k_cache", shape: [rows, c], values: s.keyRows()))
            out.append(NamedTensor(name: "state.moba.\(j).v_cache", shape: [rows, c], values: s.valueRows()))
            out.append(NamedTensor(name: "state.moba.\(j).ffn_x_prev", shape: [c], values: s.ffnXPrev))
        }
        return out
    }
}

/// The in-process engine for scenarios: one model, one session.
public final class LocalEngine: LogitsEngine {
    public let model: Model
    public var state: SessionState
    public var config: ModelConfig { model.config }

    public init(model: Model) {
        self.model = model
        state = model.makeState()
    }

    public func forward(_ tokens: [Int], fullOutput: Bool) throws -> [Float] {
        try model.forward(tokens, state: &state, fullOutput: fullOutput)
    }

    public func finalState() throws -> SessionState { state }
}
