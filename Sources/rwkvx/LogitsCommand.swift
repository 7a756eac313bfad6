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
        if let endpoint = args.string("coordinator") {
            scenario.attention = try SharedOptions.attentionOptions(args, base: scenario.attention)
            let checkpoint = try Checkpoint.open(path: args.string("model") ?? scenario.checkpoint)
            let config = try ModelConfig.infer(from: checkpoint)
            let client = try ClusterClient(endpoint: endpoint)
            let served = try client.status().attention
            guard served == scenario.attention else {
                throw UsageError(message: "the cluster runs attention settings \(served), the scenario needs \(scenario.attention); start the cluster with the scenario's settings")
            }
            let engine = try ClusterEngine(client: client, config: config)
            let tensors = try scenario.run(on: engine)
            try engine.close()
            try writeTensors(tensors, metadata: ["scenario": scenario.name, "engine": "rwkvx-cluster"], to: out)
            Output.err("wrote \(out) (\(tensors.count) tensors) through \(endpoint)\n")
            return
        }
        if args.string("model") == nil {
            var withModel = args
            withModel.setValue(scenario.checkpoint, for: "model")
            scenario.attention = try SharedOptions.attentionOptions(args, base: scenario.attention)
            let model = try SharedOptions.loadModel(withModel, attention: scenario.attention)
            try writeScenario(scenario, model: model, to: out)
        } else {
            scenario.attention = try SharedOptions.attentionOptions(args, base: scenario.attention)
            let model = try SharedOptions.loadModel(args, attention: scenario.attention)
            try writeScenario(scenario, model: model, to: out)
        }
    }
)

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
