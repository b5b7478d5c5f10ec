import NIOConcurrencyHelpers
import Synchronization

/// Broker-wide totals and gauges.
///
/// Totals: each router gathers its own and folds them in once per sweep, so the hot path
/// never touches shared memory. Gauges that several loops move (queued bytes, open
/// connections) are atomics, touched only when a message is queued or dequeued, or a
/// connection opens or closes.
public final class BrokerCounters: Sendable {
    public struct Snapshot: Sendable, Hashable {
        // Totals since start.
        public var connectionsAccepted = 0
        public var connectionsRefusedLimit = 0
        public var connectionsRefusedRate = 0
        public var messagesReceived = 0
        public var messagesSent = 0
        public var bytesReceived = 0
        public var bytesSent = 0
        public var droppedQueueFull = 0
        public var droppedEvicted = 0
        public var droppedTotalLimit = 0
        public var droppedTooLarge = 0
        public var droppedSessionEnded = 0
        public var droppedExpired = 0
        public var droppedNotAuthorized = 0
        /// CONNECTs refused because the client id's session belongs to another identity.
        public var sessionTakeoversRefused = 0
        public var keepaliveExpiries = 0
        public var connectTimeouts = 0
        public var writeTimeouts = 0
        public var slowConsumerDisconnects = 0
        public var protocolErrors = 0
        public var inboundPauses = 0
        public var inboundResumes = 0
        /// Lagging subscribers declared stalled (nothing taken off their outbox for the stall
        /// timeout, or lagging for ten times it).
        public var subscriberStalls = 0
        /// Retained messages not stored because `max_retained_messages` topics were held.
        public var retainedRefused = 0
        /// QoS 1/2 messages whose acknowledgement said they were not stored (the session store
        /// could not commit them: a full disk): v5 0x97, 3.1.1 no acknowledgement.
        public var storeRefused = 0
        /// QoS 1/2 messages whose acknowledgement said refused: the cluster did not store them.
        public var clusterRefused = 0
        /// Messages from the other nodes of the cluster routed here.
        public var clusterReceived = 0
        /// Sessions released here because a connection on another node took their client id.
        public var clusterTakeovers = 0
        /// Persistent sessions resumed here from another node's record, and the stored
        /// messages read again for them.
        public var clusterResumes = 0
        public var clusterReplayed = 0
        /// CONNECTs refused (Server unavailable) because the cluster could not read their
        /// session's record in `session_load_timeout_ms`.
        public var clusterSessionsUnavailable = 0
        /// Connections closed on a `proxy_protocol` listener: from a peer not in
        /// `trusted_proxies`, or without a valid PROXY header.
        public var proxyRefused = 0
        /// HTTP requests on a WebSocket listener answered with an error instead of an upgrade
        /// (another path, an Origin outside `allowed_origins`, no `mqtt` subprotocol).
        public var webSocketRefused = 0
        public var authFailures = 0
        public var publishDenied = 0
        public var subscribeDenied = 0
        public var tlsHandshakes = 0
        public var tlsHandshakeFailures = 0
        // Gauges, read when the snapshot is taken.
        public var connections = 0
        public var queuedMessages = 0
        public var queuedBytes = 0
        public var pausedConnections = 0
        public var inflightMessages = 0
        public var laggingSubscribers = 0
        /// CONNECTs whose password is being verified on the thread pool (or waiting for it).
        public var authenticating = 0

        public init() {}

        public var dropped: Int { DropReason.allCases.reduce(0) { $0 + self[keyPath: $1.counter] } }

        mutating func countDrop(_ reason: DropReason, _ n: Int = 1) {
            self[keyPath: reason.counter] += n
        }

        /// Adds the totals of `other` (gauges are not summed): every total of the catalog.
        mutating func add(_ other: Snapshot) {
            for total in BrokerCounters.totals { self[keyPath: total] += other[keyPath: total] }
        }
    }

    private let totals = NIOLockedValueBox(Snapshot())
    /// Bytes in every session's outbox, online or not.
    let queuedBytes = Atomic<Int>(0)
    /// Bytes in the outboxes of online sessions: what inbound flow control watches.
    let queuedBytesOnline = Atomic<Int>(0)
    let queuedMessages = Atomic<Int>(0)
    let openConnections = Atomic<Int>(0)
    let pausedConnections = Atomic<Int>(0)
    let inflightMessages = Atomic<Int>(0)
    /// Online sessions whose outbox is past half its limits and still draining: while there
    /// is one, publishers that fed one stay paused.
    let laggingSubscribers = Atomic<Int>(0)
    /// Password verifications submitted to the thread pool and not yet finished (a client
    /// that left meanwhile is still counted until its verification ends).
    let authenticating = Atomic<Int>(0)

    public var snapshot: Snapshot {
        var s = totals.withLockedValue { $0 }
        s.connections = openConnections.load(ordering: .relaxed)
        s.queuedMessages = queuedMessages.load(ordering: .relaxed)
        s.queuedBytes = queuedBytes.load(ordering: .relaxed)
        s.pausedConnections = pausedConnections.load(ordering: .relaxed)
        s.inflightMessages = inflightMessages.load(ordering: .relaxed)
        s.laggingSubscribers = laggingSubscribers.load(ordering: .relaxed)
        s.authenticating = authenticating.load(ordering: .relaxed)
        return s
    }

    func add(_ delta: Snapshot) {
        totals.withLockedValue { $0.add(delta) }
    }
}
