// zmq_poll over several sockets with a timeout that is always finite.
import CZmq
import Glibc

public enum ZmqPoller {
    /// Longest wait accepted, so no caller can block forever by passing -1.
    public static let maxTimeoutMillis = 60_000

    /// Waits until one of `sockets` has a message or `timeoutMillis` passes
    /// (clamped to 0...maxTimeoutMillis). Returns, per socket, whether a
    /// message can be received now. An interrupted wait resumes with the time left.
    public static func poll(_ sockets: [ZmqSocket], timeoutMillis: Int) throws -> [Bool] {
        let timeout = min(max(timeoutMillis, 0), maxTimeoutMillis)
        var items = try sockets.map { socket in
            zmq_pollitem_t(socket: try socket.openHandle("zmq_poll"), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        }
        let deadline = monotonicMillis() + timeout
        while true {
            let left = max(0, deadline - monotonicMillis())
            let count = items.withUnsafeMutableBufferPointer { buffer in
                zmq_poll(buffer.baseAddress, Int32(buffer.count), left)
            }
            if count >= 0 { break }
            let error = ZmqError.last("zmq_poll")
            if error.errno != EINTR { throw error }
        }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }

    static func monotonicMillis() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000 + now.tv_nsec / 1_000_000
    }
}
