// A cluster on this machine: N worker processes and a coordinator, started from
// the rwkvx executable, with their endpoints, pids and logs recorded in a run
// folder so that `rwkvx cluster status|down` can find them.
import Foundation

public struct LocalClusterSpec: Sendable {
    public var executable: String
    public var model: String
    public var workers: Int
    public var threadsPerWorker: Int
    /// "ipc" (sockets in the run folder) or "tcp" (127.0.0.1, ports from basePort).
    public var transport: String = "tcp"
    public var basePort = 5700
    public var runDirectory: String
    /// Extra coordinator arguments (plan, wire dtype, attention options).
    public var coordinatorArguments: [String] = []

    public init(executable: String, model: String, workers: Int, threadsPerWorker: Int, runDirectory: String) {
        self.executable = executable
        self.model = model
        self.workers = workers
        self.threadsPerWorker = threadsPerWorker
        self.runDirectory = runDirectory
    }
}

/// The record `cluster up` writes to RUN_DIR/cluster.json.
public struct LocalClusterRecord: Codable, Sendable {
    public var coordinator: String
    public var workers: [String]
    public var pids: [Int32]
    public var model: String
    public var runDirectory: String

    public static func path(in directory: String) -> String { directory + "/cluster.json" }

    public static func load(from directory: String) throws -> LocalClusterRecord {
        let path = path(in: directory)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterClientError(message: "no local cluster recorded at \(path); start one with rwkvx cluster up")
        }
        return try JSONDecoder().decode(LocalClusterRecord.self, from: data)
    }
}

public enum LocalCluster {
    /// Starts the workers and the coordinator and waits until the coordinator serves.
    public static func up(_ spec: LocalClusterSpec, timeoutSeconds: Double = 180,
                          progress: (String) -> Void = { _ in }) throws -> LocalClusterRecord {
        let fm = FileManager.default
        try fm.createDirectory(atPath: spec.runDirectory, withIntermediateDirectories: true)
        let dir = URL(fileURLWithPath: spec.runDirectory).standardizedFileURL.path
        if let existing = try? LocalClusterRecord.load(from: dir), existing.pids.contains(where: isRunning) {
            throw ClusterClientError(message: "a cluster is already running from \(dir) (coordinator \(existing.coordinator)); stop it with rwkvx cluster down --run-dir \(dir)")
        }

        func endpoint(_ name: String, _ port: Int) -> String {
            spec.transport == "ipc" ? "ipc://\(dir)/\(name).sock" : "tcp://127.0.0.1:\(port)"
        }
        let workerEndpoints = (0..<spec.workers).map { endpoint("worker-\($0)", spec.basePort + 1 + $0) }
        let coordinatorEndpoint = endpoint("coordinator", spec.basePort)
        if spec.transport == "tcp" {
            guard spec.basePort >= 1, spec.basePort + spec.workers <= 65535 else {
                throw ClusterClientError(message: "invalid --base-port \(spec.basePort): ports \(spec.basePort)-\(spec.basePort + spec.workers) must lie in 1-65535")
            }
            // Another cluster on these ports would reply to our status checks and later
            // receive our `cluster down`, so refuse to start on ports in use.
            for port in spec.basePort...(spec.basePort + spec.workers) where !isPortFree(port) {
                throw ClusterClientError(message: "port \(port) on 127.0.0.1 is in use; pick another --base-port or stop what uses it")
            }
        }

        var pids: [Int32] = []
        do {
            for (i, ep) in workerEndpoints.enumerated() {
                let pid = try spawn(spec.executable, ["worker", "--listen", ep, "--threads", "\(spec.threadsPerWorker)"],
                                    log: "\(dir)/worker-\(i).log")
                pids.append(pid)
                progress("started worker \(i) (pid \(pid)) on \(ep)")
            }
            let args = ["coordinator", "--model", spec.model, "--workers", workerEndpoints.joined(separator: ","),
                        "--listen", coordinatorEndpoint] + spec.coordinatorArguments
            let pid = try spawn(spec.executable, args, log: "\(dir)/coordinator.log")
            pids.append(pid)
            progress("started coordinator (pid \(pid)) on \(coordinatorEndpoint)")

            let record = LocalClusterRecord(coordinator: coordinatorEndpoint, workers: workerEndpoints, pids: pids,
                                            model: spec.model, runDirectory: dir)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(record).write(to: URL(fileURLWithPath: LocalClusterRecord.path(in: dir)))

            // wait until the coordinator has planned and loaded every stage
            let deadline = Date().addingTimeInterval(timeoutSeconds)
            while true {
                if let dead = pids.firstIndex(where: { !isRunning($0) }) {
                    let name = dead == pids.count - 1 ? "coordinator" : "worker-\(dead)"
                    throw ClusterClientError(message: "\(name) exited during start-up:\n" + tail("\(dir)/\(name).log"))
                }
                if let client = try? ClusterClient(endpoint: coordinatorEndpoint, timeoutSeconds: 1),
                   let status = try? client.status() {
                    guard status.model == spec.model, pids.allSatisfy(isRunning) else {
                        throw ClusterClientError(message: "another cluster replies on \(coordinatorEndpoint) (serving \(status.model)); pick another --base-port")
                    }
                    return record
                }
                if Date() > deadline {
                    throw ClusterClientError(message: "the coordinator did not come up in \(Int(timeoutSeconds)) s:\n" + tail("\(dir)/coordinator.log"))
                }
                usleep(200_000)
            }
        } catch {
            for pid in pids { kill(pid, SIGTERM) }
            try? fm.removeItem(atPath: LocalClusterRecord.path(in: dir))
            throw error
        }
    }

    /// Asks the coordinator to stop the cluster, then ends any process still running.
    public static func down(runDirectory: String, progress: (String) -> Void = { _ in }) throws {
        let record = try LocalClusterRecord.load(from: runDirectory)
        if let client = try? ClusterClient(endpoint: record.coordinator, timeoutSeconds: 5) {
            if (try? client.shutdown()) != nil { progress("coordinator asked to stop") }
        }
        let deadline = Date().addingTimeInterval(10)
        while record.pids.contains(where: isRunning) && Date() < deadline { usleep(100_000) }
        for pid in record.pids where isRunning(pid) && isRWKVX(pid) {
            kill(pid, SIGTERM)
            progress("sent SIGTERM to pid \(pid)")
        }
        try? FileManager.default.removeItem(atPath: LocalClusterRecord.path(in: record.runDirectory))
        progress("cluster stopped")
    }

    /// Starts a detached process (its own session, so it outlives the caller and a
    /// terminal's hang-up) with stdout and stderr appended to `log`.
    static func spawn(_ executable: String, _ arguments: [String], log: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // POSIX_SPAWN_SETSID (glibc 2.26+), hidden from Swift behind _GNU_SOURCE.
        let spawnSetSID: Int16 = 0x80
        posix_spawnattr_setflags(&attributes, spawnSetSID)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw ClusterClientError(message: "cannot start \(executable): posix_spawn failed with errno \(rc)")
        }
        return pid
    }

    /// True when nothing listens on 127.0.0.1:`port` (a test bind succeeds).
    static func isPortFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        // As libzmq does: connections of an earlier run in TIME_WAIT do not block the
        // port, but a listening socket does.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0
    }

    /// True when `pid` runs an rwkvx binary, so a stale record never signals another program.
    static func isRWKVX(_ pid: Int32) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.prefix(2).contains { $0.hasSuffix("rwkvx") }
    }

    public static func isRunning(_ pid: Int32) -> Bool {
        // Reap the process if it is our exited child, so it does not linger as a zombie.
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { return false }
        guard kill(pid, 0) == 0 else { return false }
        // kill(pid, 0) also succeeds for a zombie, so check the process state.
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(close, offsetBy: 2)]
            return state != "Z"
        }
        return true
    }

    static func tail(_ path: String, lines: Int = 15) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log at \(path))" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
