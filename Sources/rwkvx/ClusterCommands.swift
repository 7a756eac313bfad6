// rwkvx worker, rwkvx coordinator and rwkvx cluster up|down|status.
import Foundation
import RWKVX
import RWKVXCluster

let workerCommand = Command(
    name: "worker",
    summary: "serve one pipeline stage: loads the layers the coordinator assigns and runs them",
    usage: "--listen tcp://HOST:PORT [--threads N] [--memory-limit G]",
    options: [
        OptionSpec("listen", "ENDPOINT", "ZeroMQ endpoint to bind, e.g. tcp://0.0.0.0:5701 or ipc:///tmp/w0.sock"),
        OptionSpec("threads", "N", "compute threads (default: all cores)"),
        OptionSpec("memory-limit", "GB", "memory offered for weights and states, in GiB (default: what the host has free)"),
        OptionSpec("id", "NAME", "worker name in logs (default: the listen endpoint)"),
    ],
    run: { args in
        let threads = try SharedOptions.threadCount(args)
        var limit: UInt64?
        if let s = args.string("memory-limit") {
            guard let gb = Double(s), gb > 0, gb <= 1_048_576 else {
                throw UsageError(message: "invalid --memory-limit \(s): expected a positive number of GiB, at most 1048576")
            }
            limit = UInt64(gb * 1_073_741_824)
        }
        let listen = try Endpoint.validate(try args.required("listen"), what: "--listen")
        let worker = try StageWorker(options: WorkerOptions(listen: listen, threads: threads,
                                                            memoryLimitBytes: limit, workerID: args.string("id")))
        try worker.run()
    }
)

let coordinatorOptions: [OptionSpec] = [
    OptionSpec("plan", "auto|FILE", "stage plan: auto (by block cost and worker speed) or a JSON plan file"),
    OptionSpec("wire-dtype", "TYPE", "activation dtype between stages: fp32 (exact, default), bf16 or fp16"),
    OptionSpec("worker-threads", "N", "threads each worker uses (default: the worker's --threads)"),
    OptionSpec("max-batch", "N", "maximum sessions in one batch (default 32)"),
    OptionSpec("prefill-chunk", "N", "prompt tokens per prefill step, so long prompts do not stall other sessions (default 256)"),
    OptionSpec("max-sessions", "N", "most sessions open at once (default 1024)"),
    OptionSpec("session-idle-timeout", "SECONDS", "close sessions idle this long (default 600)"),
    OptionSpec("plan-context", "N", "context length in tokens the auto plan balances stages for (default 1024)"),
] + SharedOptions.attention

func coordinatorSettings(_ args: Arguments, model: String, workers: [String], listen: String) throws -> CoordinatorOptions {
    var o = CoordinatorOptions(modelPath: model, workers: workers, listen: listen)
    if let plan = args.string("plan"), plan != "auto" { o.planFile = plan }
    o.attention = try SharedOptions.attentionOptions(args)
    switch args.string("wire-dtype") ?? "fp32" {
    case "fp32": o.wireDType = .f32
    case "bf16": o.wireDType = .bf16
    case "fp16": o.wireDType = .f16
    case let other: throw UsageError(message: "invalid --wire-dtype \(other): expected fp32, bf16 or fp16")
    }
    o.workerThreads = try args.int("worker-threads", default: 0)
    guard o.workerThreads >= 0 && o.workerThreads <= 256 else {
        throw UsageError(message: "invalid --worker-threads \(o.workerThreads): must be between 0 (each worker's own --threads) and 256")
    }
    if let plan = o.planFile, !FileManager.default.fileExists(atPath: plan) {
        throw UsageError(message: "plan file not found: \(plan)")
    }
    o.maxBatchSessions = try args.int("max-batch", default: 32)
    o.planContextTokens = try args.int("plan-context", default: 1024)
    o.prefillChunk = try args.int("prefill-chunk", default: 256)
    o.maxSessions = try args.int("max-sessions", default: 1024)
    guard o.maxSessions >= 1 else { throw UsageError(message: "invalid --max-sessions \(o.maxSessions): must be at least 1") }
    o.sessionIdleSeconds = Double(try args.int("session-idle-timeout", default: 600))
    guard o.sessionIdleSeconds >= 1 else { throw UsageError(message: "invalid --session-idle-timeout \(Int(o.sessionIdleSeconds)): must be at least 1 second") }
    guard o.prefillChunk >= 1 else { throw UsageError(message: "invalid --prefill-chunk \(o.prefillChunk): must be at least 1") }
    guard o.planContextTokens >= 0 else { throw UsageError(message: "invalid --plan-context \(o.planContextTokens): must not be negative") }
    guard o.maxBatchSessions >= 1 else { throw UsageError(message: "invalid --max-batch \(o.maxBatchSessions): must be at least 1") }
    return o
}

/// Collects the coordinator options given to `cluster up`, to pass on to the coordinator process.
func forwardedCoordinatorArguments(_ args: Arguments) -> [String] {
    var out: [String] = []
    for spec in coordinatorOptions {
        if let v = args.string(spec.name) { out += ["--\(spec.name)", v] }
    }
    return out
}

let coordinatorCommand = Command(
    name: "coordinator",
    summary: "split a model into stages over running workers and serve clients",
    usage: "--model PATH --workers tcp://a:5701,tcp://b:5701 [--listen ENDPOINT] [--plan auto|FILE]",
    options: [
        OptionSpec("model", "PATH", "checkpoint; every worker needs the same file at this path"),
        OptionSpec("workers", "LIST", "comma-separated worker endpoints, in stage order"),
        OptionSpec("listen", "ENDPOINT", "client endpoint (default tcp://127.0.0.1:5700)"),
    ] + coordinatorOptions,
    run: { args in
        let workers = try args.required("workers").split(separator: ",").map { String($0) }
        let options = try coordinatorSettings(args, model: try args.required("model"), workers: workers,
                                              listen: args.string("listen") ?? "tcp://127.0.0.1:5700")
        let coordinator = try Coordinator(options: options)
        let plan = try coordinator.start()
        Output.out(plan)
        Output.out("coordinator serving on \(coordinator.endpoint)\n")
        try coordinator.run()
    }
)

let clusterCommand = Command(
    name: "cluster",
    summary: "start, inspect or stop a local multi-process cluster (up | status | down)",
    usage: "up --workers N --model PATH [options] | status | down   [--run-dir DIR]",
    options: [
        OptionSpec("workers", "N", "worker processes (default 2)"),
        OptionSpec("model", "PATH", "checkpoint to serve"),
        OptionSpec("threads", "N", "threads per worker (default: cores / workers, at least 1)"),
        OptionSpec("transport", "KIND", "tcp (127.0.0.1, default) or ipc (sockets in the run folder)"),
        OptionSpec("base-port", "PORT", "tcp: coordinator port; workers use the next ones (default 5700)"),
        OptionSpec("run-dir", "DIR", "folder for the cluster record, sockets and logs (default .rwkvx-cluster)"),
    ] + coordinatorOptions,
    run: { args in
        let runDir = args.string("run-dir") ?? ".rwkvx-cluster"
        switch args.positionals.first {
        case "up":
            let workers = try args.int("workers", default: 2)
            guard workers >= 1 && workers <= 64 else { throw UsageError(message: "invalid --workers \(workers): must be between 1 and 64") }
            let cores = ProcessInfo.processInfo.activeProcessorCount
            var spec = LocalClusterSpec(executable: selfExecutable(), model: try args.required("model"), workers: workers,
                                        threadsPerWorker: try args.int("threads", default: max(1, cores / workers)),
                                        runDirectory: runDir)
            guard spec.threadsPerWorker >= 1 && spec.threadsPerWorker <= 256 else {
                throw UsageError(message: "invalid --threads \(spec.threadsPerWorker): must be between 1 and 256")
            }
            // Check the coordinator options here, so a bad value fails before any process starts.
            _ = try coordinatorSettings(args, model: spec.model, workers: ["tcp://127.0.0.1:1"], listen: "tcp://127.0.0.1:1")
            spec.transport = args.string("transport") ?? "tcp"
            guard ["tcp", "ipc"].contains(spec.transport) else {
                throw UsageError(message: "invalid --transport \(spec.transport): expected tcp or ipc")
            }
            spec.basePort = try args.int("base-port", default: 5700)
            spec.coordinatorArguments = forwardedCoordinatorArguments(args)
            let record = try LocalCluster.up(spec) { Output.err($0 + "\n") }
            let status = try ClusterClient(endpoint: record.coordinator).status()
            Output.out(describe(status))
            Output.out("coordinator: \(record.coordinator)  (logs in \(record.runDirectory))\n")
        case "status":
            let record = try LocalClusterRecord.load(from: runDir)
            let status = try ClusterClient(endpoint: record.coordinator, timeoutSeconds: 10).status()
            Output.out(describe(status))
            if let dead = status.stages.first(where: { !$0.alive }) {
                throw UsageError(message: "stage \(dead.index) (worker \(dead.worker)) is down; restart the cluster")
            }
        case "down":
            try LocalCluster.down(runDirectory: runDir) { Output.err($0 + "\n") }
        default:
            throw UsageError(message: "expected up, status or down; run 'rwkvx cluster --help'")
        }
    }
)

/// Path of the running rwkvx binary, so child processes run the same build.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

func describe(_ status: ClusterStatus) -> String {
    var out = "model \(status.model)\n"
    out += String(format: "%d stage(s), %d open session(s), %llu tokens generated, up %.0f s, %.0f bytes per token per hop\n",
                  status.stages.count, status.sessions, status.generatedTokens, status.uptimeSeconds, status.bytesPerTokenPerHop)
    out += "stage  worker                              blocks               alive  batches  p50 ms  p99 ms  hop ms  rss MB\n"
    for s in status.stages {
        out += String(format: "%5d  %@ %@ %5@  %7llu  %6.2f  %6.2f  %6.2f  %6llu\n", s.index,
                      s.worker.padding(toLength: 35, withPad: " ", startingAt: 0),
                      s.blocks.padding(toLength: 20, withPad: " ", startingAt: 0), s.alive ? "yes" : "NO",
                      s.batches, Double(s.p50Micros) / 1000, Double(s.p99Micros) / 1000, Double(s.hopMicros) / 1000,
                      s.residentBytes / 1_000_000)
    }
    return out
}
