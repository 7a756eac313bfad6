// Checks ZeroMQ endpoints given on the command line before any socket uses them,
// so a typo gets a clear message instead of a bare errno from zmq_connect.

public enum Endpoint {
    /// Returns `text` when it is a tcp://HOST:PORT (PORT 1-65535, or * to bind any),
    /// ipc://PATH or inproc://NAME endpoint; throws a message naming it otherwise.
    @discardableResult
    public static func validate(_ text: String, what: String) throws -> String {
        if text.hasPrefix("ipc://") && text.count > 6 { return text }
        if text.hasPrefix("inproc://") && text.count > 9 { return text }
        if text.hasPrefix("tcp://") {
            let rest = text.dropFirst(6)
            if let colon = rest.lastIndex(of: ":"), colon != rest.startIndex {
                let port = rest[rest.index(after: colon)...]
                if port == "*" { return text }
                if let p = Int(port), p >= 1, p <= 65535 { return text }
            }
        }
        throw ClusterClientError(message: "invalid \(what) endpoint \"\(text)\": expected tcp://HOST:PORT (port 1-65535), ipc://PATH or inproc://NAME")
    }
}
