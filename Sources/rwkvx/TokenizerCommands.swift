// rwkvx tokenize / detokenize: text to token ids (a JSON array) and back.
import Foundation
import RWKVX

func readInput(_ args: Arguments) throws -> Data {
    if let path = args.positionals.first, path != "-" {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw UsageError(message: "input file not found: \(path)")
        }
        return data
    }
    return FileHandle.standardInput.readDataToEndOfFile()
}

let tokenizeCommand = Command(
    name: "tokenize",
    summary: "encode text (a file, or stdin) with the RWKV World tokenizer; prints a JSON array of ids",
    usage: "[FILE|-]",
    options: [],
    run: { args in
        let tokenizer = try WorldTokenizer.bundled()
        let ids = tokenizer.encode(bytes: [UInt8](try readInput(args)))
        Output.out("[" + ids.map(String.init).joined(separator: ", ") + "]\n")
    }
)

let detokenizeCommand = Command(
    name: "detokenize",
    summary: "decode a JSON array of token ids (a file, or stdin) and write the raw bytes to stdout",
    usage: "[FILE|-]",
    options: [],
    run: { args in
        let data = try readInput(args)
        guard let json = try? JSONSerialization.jsonObject(with: data), let ids = json as? [Int] else {
            throw UsageError(message: "input is not a JSON array of integers, e.g. [33, 44]")
        }
        let tokenizer = try WorldTokenizer.bundled()
        FileHandle.standardOutput.write(Data(try tokenizer.decodeBytes(ids)))
    }
)
