// A small command-line parser: `--name value`, `--name=value`, `--flag` and
// positionals, checked against each command's declared options.

struct OptionSpec: Sendable {
    let name: String
    /// Placeholder shown in help; nil for a flag that takes no value.
    let value: String?
    let help: String

    init(_ name: String, _ value: String?, _ help: String) {
        self.name = name
        self.value = value
        self.help = help
    }
}

struct UsageError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

struct Arguments: Sendable {
    let command: String
    private(set) var values: [String: String] = [:]
    private(set) var flags: Set<String> = []
    private(set) var positionals: [String] = []

    init(command: String, _ argv: [String], options: [OptionSpec]) throws {
        self.command = command
        let byName = Dictionary(uniqueKeysWithValues: options.map { ($0.name, $0) })
        var i = 0
        while i < argv.count {
            let arg = argv[i]
            i += 1
            guard arg.hasPrefix("--"), arg.count > 2 else {
                positionals.append(arg)
                continue
            }
            var name = String(arg.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = byName[name] else {
                throw UsageError(message: "unknown option --\(name) for 'rwkvx \(command)'; run 'rwkvx \(command) --help'")
            }
            if spec.value == nil {
                flags.insert(name)
                continue
            }
            if let inline {
                values[name] = inline
            } else {
                guard i < argv.count else {
                    throw UsageError(message: "option --\(name) needs a value (\(spec.value!))")
                }
                values[name] = argv[i]
                i += 1
            }
        }
    }

    mutating func setValue(_ value: String, for name: String) { values[name] = value }

    func has(_ name: String) -> Bool { flags.contains(name) || values[name] != nil }

    func string(_ name: String) -> String? { values[name] }

    func required(_ name: String) throws -> String {
        guard let v = values[name] else {
            throw UsageError(message: "missing --\(name) for 'rwkvx \(command)'; run 'rwkvx \(command) --help'")
        }
        return v
    }

    func int(_ name: String, default value: Int) throws -> Int {
        guard let s = values[name] else { return value }
        guard let v = Int(s) else { throw UsageError(message: "invalid --\(name) \(s): expected an integer") }
        return v
    }

    func float(_ name: String, default value: Float) throws -> Float {
        guard let s = values[name] else { return value }
        guard let v = Float(s) else { throw UsageError(message: "invalid --\(name) \(s): expected a number") }
        guard v.isFinite else { throw UsageError(message: "invalid --\(name) \(s): expected a finite number (32-bit float)") }
        return v
    }

    func intList(_ name: String) throws -> [Int]? {
        guard let s = values[name] else { return nil }
        return try s.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else {
                throw UsageError(message: "invalid --\(name) \(s): expected comma-separated integers")
            }
            return v
        }
    }
}

import Foundation

/// A subcommand: its options, help and body.
struct Command: Sendable {
    let name: String
    let summary: String
    let usage: String
    let options: [OptionSpec]
    let run: @Sendable (Arguments) throws -> Void

    func helpText() -> String {
        var out = "rwkvx \(name): \(summary)\n\nusage: rwkvx \(name) \(usage)\n"
        if !options.isEmpty {
            out += "\noptions:\n"
            let width = options.map { $0.name.count + ($0.value.map { $0.count + 1 } ?? 0) }.max()! + 4
            for o in options {
                let left = "--\(o.name)" + (o.value.map { " \($0)" } ?? "")
                out += "  " + left.padding(toLength: width, withPad: " ", startingAt: 0) + o.help + "\n"
            }
        }
        return out
    }
}
