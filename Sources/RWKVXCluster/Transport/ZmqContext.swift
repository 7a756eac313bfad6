// Owner of one libzmq context (its I/O threads). Every ZmqSocket keeps its
// context alive, so the context is terminated only after its last socket is gone.
import CZmq
import Glibc

/// A libzmq context. Create one per process and share it between threads.
///
/// `@unchecked Sendable`: libzmq documents contexts as thread-safe, and this
/// class only stores the handle, which never changes after `init`.
public final class ZmqContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// Creates a context with `ioThreads` libzmq I/O threads.
    public init(ioThreads: Int32 = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZmqError.last("zmq_ctx_new") }
        if zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads) != 0 {
            let error = ZmqError.last("zmq_ctx_set")
            zmq_ctx_term(handle)
            throw error
        }
        self.handle = handle
    }

    deinit {
        // Sockets hold a strong reference to the context, so none is open here
        // and zmq_ctx_term cannot block on an unclosed socket.
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// libzmq's version as (major, minor, patch).
    public static var version: (Int32, Int32, Int32) {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return (major, minor, patch)
    }
}
