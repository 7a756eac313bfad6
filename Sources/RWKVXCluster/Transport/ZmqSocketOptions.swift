// Socket options rwkvx sets on every socket, with the reason for each value.
//
// Pattern: a worker binds a ROUTER; the coordinator and the previous stage
// connect DEALERs to it. DEALER/ROUTER is asynchronous in both directions
// (unlike REQ/REP, a lost reply cannot wedge a lockstep state machine), a
// connecting DEALER reconnects on its own with back-off, and the ROUTER can
// reply to each peer by routing id. Together with send and receive timeouts and
// `zmq_poll` with timeouts, no call waits on a slow or dead peer forever.
import CZmq

/// Values applied when a `ZmqSocket` is created. Times are milliseconds.
public struct ZmqSocketOptions: Sendable {
    /// ZMQ_SNDHWM / ZMQ_RCVHWM: messages queued per peer before sends block
    /// (and then time out) or a ROUTER rejects them. The coordinator is to limit batches
    /// in flight per stage itself, so this is a backstop bounding memory to
    /// this many of the largest messages (an activation frame of a long prefill
    /// is tens of MB).
    public var highWaterMark: Int32 = 32

    /// ZMQ_LINGER: how long `close` keeps unsent messages. Bounded so that
    /// context termination cannot hang on a dead peer. Not 0, because 0 was
    /// seen to drop a large final reply that was still being written.
    public var lingerMillis: Int32 = 2_000

    /// ZMQ_RECONNECT_IVL and ZMQ_RECONNECT_IVL_MAX: a connecting socket retries
    /// after 100 ms and doubles the wait up to 5 s while the peer stays down.
    public var reconnectMillis: Int32 = 100
    public var reconnectMaxMillis: Int32 = 5_000

    /// ZMQ_HEARTBEAT_IVL / ZMQ_HEARTBEAT_TIMEOUT: ZMTP pings detect a peer that
    /// vanished without closing TCP (host down, cable cut) within about 3 s and
    /// drop the connection so reconnecting starts. The protocol's own Heartbeat
    /// message measures application health on top of this.
    public var heartbeatIntervalMillis: Int32 = 1_000
    public var heartbeatTimeoutMillis: Int32 = 3_000

    /// ZMQ_SNDTIMEO: a blocking send gives up with EAGAIN after this long when
    /// the peer's queue is full or (DEALER with `immediate`) no peer is connected.
    public var sendTimeoutMillis: Int32 = 5_000

    /// ZMQ_MAXMSGSIZE: frames larger than this close the connection instead of
    /// being allocated. 1 GiB is above any activation or state frame rwkvx sends.
    public var maxFrameBytes: Int64 = 1 << 30

    /// ZMQ_IMMEDIATE (DEALER): queue messages only on completed connections, so
    /// a send to a peer that is down fails after `sendTimeoutMillis`. Off by
    /// default: with libzmq 4.3.4 it also drops received but unread messages
    /// when the peer disconnects, which lost a worker's last reply before it
    /// closed (RoundTripBenchmarkTests, release build). With it off, sends to a
    /// down peer queue up to `highWaterMark` and then time out, and the
    /// protocol's sequence numbers reject stale work after a peer restarts.
    public var immediate: Bool = false

    /// ZMQ_ROUTER_MANDATORY (ROUTER): sending to an unknown or disconnected peer
    /// fails with EHOSTUNREACH instead of being silently dropped.
    public var routerMandatory: Bool = true

    /// ZMQ_ROUTER_HANDOVER (ROUTER): a peer that reconnects with the same
    /// routing id (the coordinator's "coordinator-" + cluster id) replaces the old
    /// connection instead of being refused.
    public var routerHandover: Bool = true

    /// ZMQ_ROUTING_ID (DEALER): fixed routing id, or nil for one libzmq picks.
    public var routingID: [UInt8]? = nil

    public init() {}

    /// The options rwkvx uses unless a caller overrides them.
    public static let standard = ZmqSocketOptions()
}
