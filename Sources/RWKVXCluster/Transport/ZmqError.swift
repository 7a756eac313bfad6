// Typed errors of the libzmq wrapper: the failing function, errno and endpoint.
import CZmq
import Glibc

/// A failed libzmq call, with the errno it set.
public struct ZmqError: Error, Sendable, CustomStringConvertible {
    /// errno as returned by `zmq_errno()` right after the call.
    public let errno: Int32
    /// The libzmq function that failed, e.g. "zmq_bind".
    public let function: String
    /// The endpoint involved, when the call had one.
    public let endpoint: String?

    public init(errno: Int32, function: String, endpoint: String? = nil) {
        self.errno = errno
        self.function = function
        self.endpoint = endpoint
    }

    /// Captures `zmq_errno()` for a call that just failed.
    static func last(_ function: String, endpoint: String? = nil) -> ZmqError {
        ZmqError(errno: zmq_errno(), function: function, endpoint: endpoint)
    }

    /// True when a send or receive gave up after its timeout (EAGAIN).
    public var isTimeout: Bool { errno == EAGAIN }

    /// True when the socket or its context was closed under the call.
    public var isTerminated: Bool { errno == ETERM || errno == ENOTSOCK }

    public var description: String {
        let reason = String(cString: zmq_strerror(errno))
        let place = endpoint.map { " on \($0)" } ?? ""
        return "\(function) failed\(place): \(reason) (errno \(errno))"
    }
}
