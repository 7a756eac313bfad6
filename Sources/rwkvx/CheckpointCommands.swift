// rwkvx init-checkpoint and rwkvx inspect.
import CKernels
import Foundation
import RWKVX

func kernelLevelName() -> String { String(cString: rwkvx_level_name(rwkvx_get_level())) }

let initCheckpointCommand = Command(
    name: "init-checkpoint",
    summary: "write a random checkpoint in the official layout (random weights generate noise, not text)",
    usage: "--out F.pth|F.safetensors [options]",
    options: [
        OptionSpec("layers", "L", "RWKV-7 layers (default 12)"),
        OptionSpec("sparse-layers", "S", "sparse-attention layers, 0 = plain RWKV-7 (default 4)"),
        OptionSpec("embd", "D", "n_embd, a multiple of 64 (default 768)"),
        OptionSpec("vocab", "V", "vocabulary size (default 65536)"),
        OptionSpec("dtype", "TYPE", "bf16, fp16 or fp32 (default bf16)"),
        OptionSpec("seed", "N", "random seed (default 0)"),
        OptionSpec("plain", nil, "plain RWKV-7 layout without the rwkv. prefix (needs --sparse-layers 0)"),
        OptionSpec("out", "PATH", "output file; .pth writes a torch.save zip, anything else safetensors"),
    ],
    run: { args in
        let dtypeName = args.string("dtype") ?? "bf16"
        let dtypes: [String: TensorDType] = ["bf16": .bfloat16, "fp16": .float16, "fp32": .float32]
        guard let dtype = dtypes[dtypeName] else {
            throw UsageError(message: "invalid --dtype \(dtypeName): expected bf16, fp16 or fp32")
        }
        guard let seed = UInt64(args.string("seed") ?? "0") else {
            throw UsageError(message: "invalid --seed \(args.string("seed")!): expected a non-negative integer")
        }
        let spec = RandomCheckpointSpec(
            nRWKVLayer: try args.int("layers", default: 12), nSparseLayer: try args.int("sparse-layers", default: 4),
            nEmbd: try args.int("embd", default: 768), vocabSize: try args.int("vocab", default: 65536),
            dtype: dtype, seed: seed, plain: args.has("plain"))
        try spec.validate()
        let out = try args.required("out")
        let start = Date()
        let payloads = spec.payloads()
        let metadata = ["format": "pt", "n_rwkv_layer": "\(spec.nRWKVLayer)", "n_moba_layer": "\(spec.nSparseLayer)",
                        "n_embd": "\(spec.nEmbd)", "vocab_size": "\(spec.vocabSize)", "seed": "\(seed)",
                        "generator": "rwkvx init-checkpoint (random weights)"]
        if out.hasSuffix(".pth") {
            try PthWriter.write(tensors: payloads, to: out)
        } else {
            try SafetensorsWriter.write(tensors: payloads, metadata: metadata, to: out)
        }
        let params = spec.tensors().reduce(0) { $0 + $1.shape.reduce(1, *) }
        Output.err(String(format: "wrote %@: %d tensors, %.1fM params, %@, random weights (%.1f s)\n",
                          out, payloads.count, Double(params) / 1e6, dtypeName, Date().timeIntervalSince(start)))
    }
)

let inspectCommand = Command(
    name: "inspect",
    summary: "print a checkpoint's configuration and tensor table",
    usage: "PATH",
    options: [],
    run: { args in
        guard let path = args.positionals.first else {
            throw UsageError(message: "missing checkpoint path; usage: rwkvx inspect PATH")
        }
        let checkpoint = try Checkpoint.open(path: path)
        let c = try ModelConfig.infer(from: checkpoint)
        var out = "checkpoint   \(path) (\(checkpoint.format.rawValue), \(checkpoint.fileSize) bytes)\n"
        out += "fingerprint  \(checkpoint.fingerprint)\n"
        out += "layout       \(c.layout.rawValue)\n"
        out += "n_embd       \(c.nEmbd)\nhead_size    \(c.headSize)\nn_head       \(c.nHead)\n"
        out += "n_rwkv_layer \(c.nRWKVLayer)\nn_sparse     \(c.nSparseLayer)\nvocab        \(c.vocabSize)\n"
        out += "ffn          \(c.ffnSize)\n"
        out += "lora         decay \(c.loraDecay), a \(c.loraA), value \(c.loraValue), gate \(c.loraGate)\n"
        out += String(format: "params       %.2fM\n", Double(c.parameterCount) / 1e6)
        out += "order        " + c.executionOrder.map(\.description).joined(separator: " ") + "\n\n"
        let width = checkpoint.tensorNames.map(\.count).max() ?? 10
        for name in checkpoint.tensorNames {
            let t = try checkpoint.tensor(name)
            out += name.padding(toLength: width + 2, withPad: " ", startingAt: 0)
                + t.dtype.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0) + "\(t.shape)\n"
        }
        Output.out(out)
    }
)
