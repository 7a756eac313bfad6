// One libzmq socket: options, bind and connect, multipart send and receive.
//
// A ZmqSocket is not Sendable: libzmq sockets are not thread-safe, so a socket
// is created, used and closed on one thread. It is closed by `close()` or,
// failing that, in deinit.
import CZmq
import Glibc

/// The socket patterns rwkvx uses (see ZmqSocketOptions for why).
public enum ZmqSocketType: Sendable {
    case router
    case dealer
    case pair

    var rawValue: Int32 {
        switch self {
        case .router: ZMQ_ROUTER
        case .dealer: ZMQ_DEALER
        case .pair: ZMQ_PAIR
        }
    }
}

/// One multipart message: frames in order, each an owned byte array.
public typealias ZmqFrames = [[UInt8]]

public final class ZmqSocket {
    public let type: ZmqSocketType
    private let context: ZmqContext
    private var handle: UnsafeMutableRawPointer?

    /// Creates a socket and applies `options` to it.
    public init(context: ZmqContext, type: ZmqSocketType, options: ZmqSocketOptions = .standard) throws {
        guard let handle = zmq_socket(context.handle, type.rawValue) else {
            throw ZmqError.last("zmq_socket")
        }
        self.context = context
        self.type = type
        self.handle = handle
        do {
            try apply(options)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Closes the socket. Unsent messages are kept up to the linger time.
    /// Calling it again does nothing.
    public func close() {
        guard let handle else { return }
        zmq_close(handle)
        self.handle = nil
    }

    public var isClosed: Bool { handle == nil }

    // MARK: Options

    private func apply(_ options: ZmqSocketOptions) throws {
        try setOption(ZMQ_SNDHWM, options.highWaterMark)
        try setOption(ZMQ_RCVHWM, options.highWaterMark)
        try setOption(ZMQ_LINGER, options.lingerMillis)
        try setOption(ZMQ_RECONNECT_IVL, options.reconnectMillis)
        try setOption(ZMQ_RECONNECT_IVL_MAX, options.reconnectMaxMillis)
        try setOption(ZMQ_HEARTBEAT_IVL, options.heartbeatIntervalMillis)
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, options.heartbeatTimeoutMillis)
        try setOption(ZMQ_SNDTIMEO, options.sendTimeoutMillis)
        try setOption(ZMQ_MAXMSGSIZE, int64: options.maxFrameBytes)
        switch type {
        case .router:
            try setOption(ZMQ_ROUTER_MANDATORY, Int32(options.routerMandatory ? 1 : 0))
            try setOption(ZMQ_ROUTER_HANDOVER, Int32(options.routerHandover ? 1 : 0))
        case .dealer:
            try setOption(ZMQ_IMMEDIATE, Int32(options.immediate ? 1 : 0))
            if let routingID = options.routingID {
                try setOption(ZMQ_ROUTING_ID, bytes: routingID)
            }
        case .pair:
            break
        }
    }

    /// Sets an integer socket option (`int` in libzmq's table).
    public func setOption(_ option: Int32, _ value: Int32) throws {
        var value = value
        try setOption(option, pointer: &value, size: MemoryLayout<Int32>.size)
    }

    /// Sets a 64-bit integer socket option (`int64_t` in libzmq's table).
    public func setOption(_ option: Int32, int64 value: Int64) throws {
        var value = value
        try setOption(option, pointer: &value, size: MemoryLayout<Int64>.size)
    }

    /// Sets a binary socket option such as ZMQ_ROUTING_ID.
    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            try setOption(option, pointer: buffer.baseAddress, size: buffer.count)
        }
    }

    private func setOption(_ option: Int32, pointer: UnsafeRawPointer?, size: Int) throws {
        let handle = try openHandle("zmq_setsockopt")
        if zmq_setsockopt(handle, option, pointer, size) != 0 {
            throw ZmqError.last("zmq_setsockopt(\(option))")
        }
    }

    /// Reads an integer socket option.
    public func intOption(_ option: Int32) throws -> Int32 {
        let handle = try openHandle("zmq_getsockopt")
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(handle, option, &value, &size) != 0 {
            throw ZmqError.last("zmq_getsockopt(\(option))")
        }
        return value
    }

    // MARK: Endpoints

    /// Binds to `endpoint` and returns the endpoint actually bound, which
    /// carries the port the kernel chose for `tcp://127.0.0.1:*`.
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        let handle = try openHandle("zmq_bind", endpoint: endpoint)
        if zmq_bind(handle, endpoint) != 0 {
            throw ZmqError.last("zmq_bind", endpoint: endpoint)
        }
        return try lastEndpoint()
    }

    /// Starts connecting to `endpoint`. libzmq connects in the background and
    /// reconnects with back-off whenever the connection drops.
    public func connect(_ endpoint: String) throws {
        let handle = try openHandle("zmq_connect", endpoint: endpoint)
        if zmq_connect(handle, endpoint) != 0 {
            throw ZmqError.last("zmq_connect", endpoint: endpoint)
        }
    }

    public func disconnect(_ endpoint: String) throws {
        let handle = try openHandle("zmq_disconnect", endpoint: endpoint)
        if zmq_disconnect(handle, endpoint) != 0 {
            throw ZmqError.last("zmq_disconnect", endpoint: endpoint)
        }
    }

    public func unbind(_ endpoint: String) throws {
        let handle = try openHandle("zmq_unbind", endpoint: endpoint)
        if zmq_unbind(handle, endpoint) != 0 {
            throw ZmqError.last("zmq_unbind", endpoint: endpoint)
        }
    }

    /// The endpoint of the last bind (ZMQ_LAST_ENDPOINT).
    public func lastEndpoint() throws -> String {
        let handle = try openHandle("zmq_getsockopt")
        var buffer = [CChar](repeating: 0, count: 1_024)
        var size = buffer.count
        if zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) != 0 {
            throw ZmqError.last("zmq_getsockopt(ZMQ_LAST_ENDPOINT)")
        }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Send and receive

    /// Sends `frames` as one multipart message. Blocks at most the send timeout
    /// (ZMQ_SNDTIMEO) and then throws a ZmqError with `isTimeout`.
    public func send(_ frames: ZmqFrames) throws {
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        let handle = try openHandle("zmq_send")
        for (index, frame) in frames.enumerated() {
            let flags = index + 1 < frames.count ? ZMQ_SNDMORE : 0
            try frame.withUnsafeBytes { buffer in
                while zmq_send(handle, buffer.baseAddress, buffer.count, flags) < 0 {
                    // libzmq delivers a multipart message whole or not at all, so
                    // a failure on a later frame drops the frames already queued.
                    if zmq_errno() != EINTR { throw ZmqError.last("zmq_send") }
                }
            }
        }
    }

    /// ROUTER only: sends `frames` to the peer with routing id `peer`.
    /// Throws EHOSTUNREACH when that peer is not connected (ROUTER_MANDATORY).
    public func send(to peer: [UInt8], _ frames: ZmqFrames) throws {
        precondition(type == .router, "send(to:) needs a ROUTER socket")
        try send([peer] + frames)
    }

    /// Receives one multipart message, waiting at most `timeoutMillis`.
    /// Returns nil on timeout. A ROUTER's first frame is the sender's routing id.
    public func receive(timeoutMillis: Int) throws -> ZmqFrames? {
        guard try poll(timeoutMillis: timeoutMillis) else { return nil }
        return try receiveNow()
    }

    /// Receives one multipart message if one is queued, without waiting.
    public func receiveNow() throws -> ZmqFrames? {
        let handle = try openHandle("zmq_msg_recv")
        // zmq_msg_t must stay at one address from init to close.
        return try withUnsafeTemporaryAllocation(of: zmq_msg_t.self, capacity: 1) { storage in
            let message = storage.baseAddress!
            var frames: ZmqFrames = []
            while true {
                zmq_msg_init(message)
                defer { zmq_msg_close(message) }
                // Only the first frame may be missing: the rest of a multipart
                // message arrives with it, so later calls never wait.
                let flags = frames.isEmpty ? ZMQ_DONTWAIT : 0
                if zmq_msg_recv(message, handle, flags) < 0 {
                    let error = ZmqError.last("zmq_msg_recv")
                    if error.errno == EINTR { continue }
                    if error.isTimeout && frames.isEmpty { return nil }
                    throw error
                }
                let size = zmq_msg_size(message)
                let frame = [UInt8](UnsafeRawBufferPointer(start: zmq_msg_data(message), count: size))
                frames.append(frame)
                if zmq_msg_more(message) == 0 { return frames }
            }
        }
    }

    /// Waits at most `timeoutMillis` for a message; true when one is queued.
    public func poll(timeoutMillis: Int) throws -> Bool {
        try ZmqPoller.poll([self], timeoutMillis: timeoutMillis)[0]
    }

    func openHandle(_ function: String, endpoint: String? = nil) throws -> UnsafeMutableRawPointer {
        guard let handle else { throw ZmqError(errno: ENOTSOCK, function: function, endpoint: endpoint) }
        return handle
    }
}
