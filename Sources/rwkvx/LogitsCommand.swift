// rwkvx logits: run a reference-format scenario and write logits and final state.
import Foundation
import RWKVX
import RWKVXCluster

let logitsCommand = Command(
    name: "logits",
    summary: "run a scenario (reference harness format) and write step logits and the final state",
    usage: "--scenario S.json --out O.safetensors [--model PATH] [options]",
    options: SharedOptions.model + [
        OptionSpec("scenario", "PATH", "scenario JSON: checkpoint, attention settings and prefill/decode steps"),
        OptionSpec("out", "PATH", "output .safetensors (tensor names as the reference outputs)"),
        OptionSpec("coordinator", "ENDPOINT", "run through a running cluster; it must use the scenario's attention settings"),
    ] + SharedOptions.attention,
    run: { args in
        var scenario = try Scenario(contentsOf: try args.required("scenario"))
        let out = try args.required("out")
        try checkWritable(out)
        scenario.attention = try SharedOptions.attentionOptions(args, base: scenario.attention)
        var withModel = args
        if args.string("model") == nil { withModel.setValue(scenario.checkpoint, for: "model") }

        if let endpoint = args.string("coordinator") {
            try Endpoint.validate(endpoint, what: "--coordinator")
            let path = try withModel.required("model")
            let checkpoint = try Checkpoint.open(path: path)
            let config = try ModelConfig.infer(from: checkpoint)
            let client = try ClusterClient(endpoint: endpoint)
            try client.checkReachable()
            let status = try client.status()
            guard status.modelFingerprint == (try checkpoint.contentFingerprint(of: checkpoint.tensorNames)) else {
                throw UsageError(message: "the cluster serves \(status.model), whose weights differ from \(path); start the cluster with the scenario's checkpoint")
            }
            guard status.attention == scenario.attention else {
                throw UsageError(message: "the cluster runs attention settings (\(describe(status.attention))) but the scenario needs (\(describe(scenario.attention))); start the cluster with the scenario's settings")
            }
            let engine = try ClusterEngine(client: client, config: config)
            let tensors = try scenario.run(on: engine)
            try engine.close()
            try writeTensors(tensors, metadata: ["scenario": scenario.name, "engine": "rwkvx-cluster"], to: out)
            Output.err("wrote \(out) (\(tensors.count) tensors) through \(endpoint)\n")
            return
        }
        let model = try SharedOptions.loadModel(withModel, attention: scenario.attention)
        try writeScenario(scenario, model: model, to: out)
    }
)

/// Attention settings in the options' command-line names.
func describe(_ a: AttentionOptions) -> String {
    "--attn-chunk-size \(a.chunkSize) --attn-top-k \(a.topK) --max-kv-cache \(a.maxKVCacheSize) --kv-window \(a.kvCacheWindowSize) --min-kv-cache \(a.minKVCacheSize) --attn-mode \(a.mode.rawValue)"
}

/// Fails early when an output file cannot be written, before any work is done.
func checkWritable(_ path: String) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
        throw UsageError(message: "--out \(path) is a directory; give a file path such as \(path)/out.safetensors")
    }
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw UsageError(message: "the folder of --out \(path) does not exist; create \(folder) first")
    }
    guard FileManager.default.isWritableFile(atPath: folder) else {
        throw UsageError(message: "cannot write to \(folder) (permission denied); choose another --out")
    }
}

func writeScenario(_ scenario: Scenario, model: Model, to path: String) throws {
    let tensors = try scenario.run(on: LocalEngine(model: model))
    try writeTensors(tensors, metadata: ["scenario": scenario.name, "engine": "rwkvx"], to: path)
    Output.err("wrote \(path) (\(tensors.count) tensors)\n")
}

func writeTensors(_ tensors: [NamedTensor], metadata: [String: String], to path: String) throws {
    let payloads = tensors.map { t in
        TensorPayload(name: t.name, dtype: .float32, shape: t.shape) { buffer in
            encodeFloats(t.values, as: .float32, into: buffer)
        }
    }
    try SafetensorsWriter.write(tensors: payloads, metadata: metadata, to: path)
}
