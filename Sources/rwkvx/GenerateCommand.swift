// rwkvx generate: stream text from a prompt.
import Foundation
import RWKVX
import RWKVXCluster

let generateCommand = Command(
    name: "generate",
    summary: "generate text from a prompt and stream it to stdout",
    usage: "--model PATH --prompt TEXT [options]",
    options: SharedOptions.model + [
        OptionSpec("prompt", "TEXT", "prompt text"),
        OptionSpec("prompt-file", "PATH", "read the prompt from a file instead"),
        OptionSpec("coordinator", "ENDPOINT", "generate through a running cluster instead of in this process"),
    ] + SharedOptions.sampling + SharedOptions.attention,
    run: { args in
        let prompt: String
        if let file = args.string("prompt-file") {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw UsageError(message: "prompt file not found: \(file)")
            }
            prompt = String(decoding: data, as: UTF8.self)
        } else {
            prompt = try args.required("prompt")
        }
        let sampling = try SharedOptions.samplingOptions(args)
        if let endpoint = args.string("coordinator") {
            let client = try ClusterClient(endpoint: endpoint)
            Output.out(prompt)
            let report = try client.generate(prompt: prompt, sampling: sampling) { Output.out($0) }
            Output.out("\n")
            let rate = report.decodeSeconds > 0 ? Double(report.generatedTokens) / report.decodeSeconds : 0
            Output.err(String(format: "cluster %@: prompt %d tokens, first token after %.2f s; generated %d tokens in %.2f s (%.2f tokens/s)\n",
                              endpoint, report.promptTokens, report.prefillSeconds, report.generatedTokens,
                              report.decodeSeconds, rate))
            return
        }
        let attention = try SharedOptions.attentionOptions(args)
        let tokenizer = try WorldTokenizer.bundled()
        let model = try SharedOptions.loadModel(args, attention: attention)
        if model.config.vocabSize != tokenizer.vocabularySize {
            Output.err("note: model vocab \(model.config.vocabSize) differs from the World tokenizer's \(tokenizer.vocabularySize)\n")
        }

        var session = LocalSession(model: model)
        Output.out(prompt)
        let stats = try generateText(session: &session, tokenizer: tokenizer, prompt: prompt, options: sampling) {
            Output.out($0)
        }
        Output.out("\n")
        Output.err(String(format: "prompt %d tokens in %.2f s (%.1f tokens/s); generated %d tokens in %.2f s (%.2f tokens/s)\n",
                          stats.promptTokens, stats.prefillSeconds, stats.prefillTokensPerSecond,
                          stats.generatedTokens, stats.decodeSeconds, stats.decodeTokensPerSecond))
    }
)
