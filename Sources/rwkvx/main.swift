// rwkvx command-line entry point: dispatches to a subcommand and turns every error
// into one line on stderr and a non-zero exit status.
import Foundation

let commands: [Command] = [
    generateCommand, logitsCommand, tokenizeCommand, detokenizeCommand, initCheckpointCommand, inspectCommand,
    benchCommand, workerCommand, coordinatorCommand, clusterCommand, clusterBenchCommand,
]

func usage() -> String {
    var out = "rwkvx: CPU inference for RWKV-X and RWKV-7 language models\n\nusage: rwkvx COMMAND [options]\n\ncommands:\n"
    for c in commands { out += "  " + c.name.padding(toLength: 17, withPad: " ", startingAt: 0) + c.summary + "\n" }
    out += "\nrun 'rwkvx COMMAND --help' for a command's options\n"
    return out
}

func runMain() -> Int32 {
    let argv = Array(CommandLine.arguments.dropFirst())
    guard let name = argv.first, name != "--help", name != "-h", name != "help" else {
        Output.out(usage())
        return argv.isEmpty ? 2 : 0
    }
    guard let command = commands.first(where: { $0.name == name }) else {
        Output.err("rwkvx: unknown command '\(name)'; run 'rwkvx --help' for the list\n")
        return 2
    }
    let rest = Array(argv.dropFirst())
    if rest.contains("--help") || rest.contains("-h") {
        Output.out(command.helpText())
        return 0
    }
    do {
        let args = try Arguments(command: name, rest, options: command.options)
        try command.run(args)
        return 0
    } catch let error as UsageError {
        Output.err("rwkvx \(name): \(error)\n")
        return 2
    } catch {
        Output.err("rwkvx \(name): \(error)\n")
        return 1
    }
}

exit(runMain())
