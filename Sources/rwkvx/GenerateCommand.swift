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
        OptionSpec("prompt-file", "PATH", "read the prompt from a file instead (its bytes are tokenized as they are)"),
        OptionSpec("coordinator", "ENDPOINT", "generate through a running cluster instead of in this process"),
    ] + SharedOptions.sampling + SharedOptions.attention,
    run: { args in
        let promptBytes = try readPrompt(args)
        let sampling = try SharedOptions.samplingOptions(args)
        let tokenizer = try WorldTokenizer.bundled()
        let promptTokens = tokenizer.encode(bytes: promptBytes)
        guard !promptTokens.isEmpty else { throw UsageError(message: "the prompt is empty; pass some text with --prompt") }

        // The prompt is echoed with the first generated text, so a failed start prints only the error.
        var echoed = false
        let emit = { (text: String) in
            if !echoed {
                FileHandle.standardOutput.write(Data(promptBytes))
                echoed = true
            }
            Output.out(text)
        }

        if let endpoint = args.string("coordinator") {
            try Endpoint.validate(endpoint, what: "--coordinator")
            if args.has("model") { Output.err("note: --model is ignored with --coordinator; the cluster serves its own model\n") }
            let client = try ClusterClient(endpoint: endpoint)
            try client.checkReachable()
            try SharedOptions.validateSampling(sampling, vocabularySize: try client.status().vocabSize)
            let report = try client.generate(promptTokens: promptTokens, sampling: sampling, emit: emit)
            emit("\n")
            let rate = report.decodeSeconds > 0 ? Double(report.generatedTokens) / report.decodeSeconds : 0
            Output.err(String(format: "cluster %@: prompt %d tokens, first token after %.2f s; generated %d tokens in %.2f s (%.2f tokens/s)\n",
                              endpoint, report.promptTokens, report.prefillSeconds, report.generatedTokens,
                              report.decodeSeconds, rate))
            return
        }

        let attention = try SharedOptions.attentionOptions(args)
        let model = try SharedOptions.loadModel(args, attention: attention)
        try SharedOptions.validateSampling(sampling, vocabularySize: model.config.vocabSize)
        if let bad = promptTokens.first(where: { $0 >= model.config.vocabSize }) {
            throw UsageError(message: "the prompt encodes to token id \(bad), outside this model's vocabulary (0..<\(model.config.vocabSize)); the World tokenizer needs a model with a 65536-token vocabulary")
        }
        if model.config.vocabSize != tokenizer.vocabularySize {
            Output.err("note: model vocab \(model.config.vocabSize) differs from the World tokenizer's \(tokenizer.vocabularySize)\n")
        }

        var session = LocalSession(model: model)
        let stats = try generateText(session: &session, tokenizer: tokenizer, promptTokens: promptTokens,
                                     options: sampling, emit: emit)
        emit("\n")
        Output.err(String(format: "prompt %d tokens in %.2f s (%.1f tokens/s); generated %d tokens in %.2f s (%.2f tokens/s)\n",
                          stats.promptTokens, stats.prefillSeconds, stats.prefillTokensPerSecond,
                          stats.generatedTokens, stats.decodeSeconds, stats.decodeTokensPerSecond))
    }
)

/// Reads the prompt's bytes from --prompt or --prompt-file (exactly one of them).
func readPrompt(_ args: Arguments) throws -> [UInt8] {
    if let file = args.string("prompt-file") {
        guard args.string("prompt") == nil else {
            throw UsageError(message: "give either --prompt or --prompt-file, not both")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
            throw UsageError(message: "prompt file not found: \(file)")
        }
        guard !isDirectory.boolValue, let data = FileManager.default.contents(atPath: file) else {
            throw UsageError(message: "cannot read prompt file \(file): it is a directory or not readable")
        }
        return [UInt8](data)
    }
    return Array(try args.required("prompt").utf8)
}
