// The checkpoint tensors a stage reads, for the per-stage content fingerprint that
// the coordinator sends and each worker checks against its own copy of the file.
import RWKVX

enum StageTensors {
    /// Names of the tensors of execution positions `positions`, plus the embedding for
    /// the first stage and the final norm and head for the last.
    static func names(checkpoint: Checkpoint, config: ModelConfig, positions: Range<Int>) -> [String] {
        let order = config.executionOrder
        let pre = config.rwkvPrefix
        var prefixes: [String] = order[positions].map { block in
            switch block {
            case .rwkv(let i): return "\(pre)blocks.\(i)."
            case .sparse(let j): return "moba.\(j)."
            }
        }
        var exact: Set<String> = []
        if positions.lowerBound == 0 {
            exact.formUnion([pre + "emb.weight", pre + "blocks.0.ln0.weight", pre + "blocks.0.ln0.bias"])
        }
        if positions.upperBound == order.count {
            exact.formUnion([pre + "ln_out.weight", pre + "ln_out.bias", pre + "head.weight"])
        }
        prefixes.sort()
        return checkpoint.tensorNames.filter { name in
            exact.contains(name) || prefixes.contains { name.hasPrefix($0) }
        }
    }

    /// Content fingerprint of a stage's tensors.
    static func fingerprint(checkpoint: Checkpoint, config: ModelConfig, positions: Range<Int>) throws -> String {
        try checkpoint.contentFingerprint(of: names(checkpoint: checkpoint, config: config, positions: positions))
    }
}
