// One line per event on stderr: time, level, component, message and key=value ids
// (session, stage, worker). Repeats of the same event key are rate-limited so a
// failing peer cannot flood the log. Never pass secrets as fields.
import Foundation
import Synchronization

public enum LogLevel: Int, Sendable, Comparable {
    case debug = 0, info, warning, error

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    var name: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warn"
        case .error: return "error"
        }
    }
}

public final class Logger: Sendable {
    public let component: String
    public let minimumLevel: LogLevel
    /// Per event key: window start (seconds) and events logged in it.
    private let recent = Mutex<[String: (Double, Int)]>([:])
    /// Events with the same key logged per 10-second window before suppression.
    private let burst = 5

    public init(component: String, minimumLevel: LogLevel = .info) {
        self.component = component
        if let env = ProcessInfo.processInfo.environment["RWKVX_LOG"], env == "debug" {
            self.minimumLevel = .debug
        } else {
            self.minimumLevel = minimumLevel
        }
    }

    public func debug(_ message: String, _ fields: KeyValuePairs<String, Any> = [:]) { log(.debug, message, fields) }
    public func info(_ message: String, _ fields: KeyValuePairs<String, Any> = [:]) { log(.info, message, fields) }
    public func warning(_ message: String, _ fields: KeyValuePairs<String, Any> = [:]) { log(.warning, message, fields) }
    public func error(_ message: String, _ fields: KeyValuePairs<String, Any> = [:]) { log(.error, message, fields) }

    public func log(_ level: LogLevel, _ message: String, _ fields: KeyValuePairs<String, Any>) {
        guard level >= minimumLevel else { return }
        let now = Date().timeIntervalSince1970
        let key = level.name + message
        let suppressed: Int? = recent.withLock { table in
            var entry = table[key] ?? (now, 0)
            if now - entry.0 > 10 { entry = (now, 0) }
            entry.1 += 1
            table[key] = entry
            if entry.1 <= burst { return 0 }
            return entry.1 == burst + 1 ? -1 : nil
        }
        guard let suppressed else { return }
        var line = String(format: "%.3f", now) + " \(level.name) \(component): \(message)"
        for (k, v) in fields { line += " \(k)=\(v)" }
        if suppressed < 0 { line += " (repeats suppressed for 10 s)" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
