/// Every broker counter and gauge, listed once: what `Snapshot.add` sums, what `/metrics`
/// exports (name and labels), and what `$SYS/broker/…` publishes. A new counter is a stored
/// property of `BrokerCounters.Snapshot` plus one line here.
struct CounterEntry: Sendable {
    enum Kind: Sendable {
        /// A total since start: routers add to it, `/metrics` exports it as a counter.
        case total
        /// A level read when the snapshot is taken: exported as a gauge, never summed.
        case gauge
    }

    let value: any WritableKeyPath<BrokerCounters.Snapshot, Int> & Sendable
    let kind: Kind
    /// The Prometheus name without the `martlet_` prefix, and its labels.
    let metric: String
    let labels: [(String, String)]
    /// The topic under `$SYS/broker/`, if it is published there.
    let sys: String?

    init(_ value: any WritableKeyPath<BrokerCounters.Snapshot, Int> & Sendable, _ kind: Kind, metric: String,
         labels: [(String, String)] = [], sys: String? = nil) {
        self.value = value
        self.kind = kind
        self.metric = metric
        self.labels = labels
        self.sys = sys
    }

    static func dropped(_ reason: DropReason) -> CounterEntry {
        CounterEntry(reason.counter, .total, metric: "messages_dropped_total", labels: [("reason", reason.rawValue)])
    }
}

extension BrokerCounters {
    static let catalog: [CounterEntry] = [
        CounterEntry(\.connectionsAccepted, .total, metric: "connections_accepted_total", sys: "clients/accepted"),
        CounterEntry(\.connectionsRefusedLimit, .total, metric: "connections_refused_total", labels: [("reason", "max_connections")]),
        CounterEntry(\.connectionsRefusedRate, .total, metric: "connections_refused_total", labels: [("reason", "max_connection_rate")]),
        CounterEntry(\.messagesReceived, .total, metric: "messages_received_total", sys: "messages/received"),
        CounterEntry(\.messagesSent, .total, metric: "messages_sent_total", sys: "messages/sent"),
        CounterEntry(\.bytesReceived, .total, metric: "bytes_received_total", sys: "bytes/received"),
        CounterEntry(\.bytesSent, .total, metric: "bytes_sent_total", sys: "bytes/sent"),
    ] + DropReason.allCases.map(CounterEntry.dropped) + [
        CounterEntry(\.keepaliveExpiries, .total, metric: "keepalive_expiries_total", sys: "keepalive/expiries"),
        CounterEntry(\.connectTimeouts, .total, metric: "connect_timeouts_total"),
        CounterEntry(\.writeTimeouts, .total, metric: "write_timeouts_total"),
        CounterEntry(\.slowConsumerDisconnects, .total, metric: "slow_consumer_disconnects_total", sys: "slow_consumers/disconnected"),
        CounterEntry(\.protocolErrors, .total, metric: "protocol_errors_total"),
        CounterEntry(\.inboundPauses, .total, metric: "inbound_pauses_total"),
        CounterEntry(\.inboundResumes, .total, metric: "inbound_resumes_total"),
        CounterEntry(\.subscriberStalls, .total, metric: "subscriber_stalls_total", sys: "subscribers/stalled"),
        CounterEntry(\.retainedRefused, .total, metric: "retained_refused_total", sys: "retained messages/refused"),
        CounterEntry(\.proxyRefused, .total, metric: "proxy_refused_total"),
        CounterEntry(\.webSocketRefused, .total, metric: "websocket_refused_total"),
        CounterEntry(\.storeRefused, .total, metric: "store_refused_total", sys: "store/refused"),
        CounterEntry(\.clusterRefused, .total, metric: "cluster_refused_total", sys: "cluster/refused"),
        CounterEntry(\.clusterReceived, .total, metric: "cluster_messages_received_total", sys: "cluster/messages/received"),
        CounterEntry(\.clusterTakeovers, .total, metric: "cluster_takeovers_total", sys: "cluster/takeovers"),
        CounterEntry(\.clusterResumes, .total, metric: "cluster_sessions_resumed_total", sys: "cluster/sessions resumed"),
        CounterEntry(\.clusterReplayed, .total, metric: "cluster_messages_replayed_total"),
        CounterEntry(\.clusterSessionsUnavailable, .total, metric: "cluster_sessions_unavailable_total"),
        CounterEntry(\.authFailures, .total, metric: "auth_failures_total", sys: "auth/failures"),
        CounterEntry(\.publishDenied, .total, metric: "acl_denied_total", labels: [("operation", "publish")]),
        CounterEntry(\.subscribeDenied, .total, metric: "acl_denied_total", labels: [("operation", "subscribe")]),
        CounterEntry(\.sessionTakeoversRefused, .total, metric: "session_takeovers_refused_total", sys: "auth/takeovers refused"),
        CounterEntry(\.tlsHandshakes, .total, metric: "tls_handshakes_total"),
        CounterEntry(\.tlsHandshakeFailures, .total, metric: "tls_handshake_failures_total"),
        CounterEntry(\.connections, .gauge, metric: "connections", sys: "clients/connected"),
        CounterEntry(\.queuedMessages, .gauge, metric: "queued_messages", sys: "queued/messages"),
        CounterEntry(\.queuedBytes, .gauge, metric: "queued_bytes", sys: "queued/bytes"),
        CounterEntry(\.inflightMessages, .gauge, metric: "inflight_messages", sys: "messages/inflight"),
        CounterEntry(\.pausedConnections, .gauge, metric: "paused_connections", sys: "inbound/paused"),
        CounterEntry(\.laggingSubscribers, .gauge, metric: "lagging_subscribers", sys: "subscribers/lagging"),
        CounterEntry(\.authenticating, .gauge, metric: "auth_pending"),
    ]

    /// The totals of the catalog (what routers fold in).
    static let totals = catalog.filter { $0.kind == .total }.map(\.value)
}

extension DropReason {
    /// The snapshot's total for this reason.
    var counter: any WritableKeyPath<BrokerCounters.Snapshot, Int> & Sendable {
        switch self {
        case .queueFull: \.droppedQueueFull
        case .evicted: \.droppedEvicted
        case .totalLimit: \.droppedTotalLimit
        case .tooLarge: \.droppedTooLarge
        case .sessionEnded: \.droppedSessionEnded
        case .expired: \.droppedExpired
        case .notAuthorized: \.droppedNotAuthorized
        }
    }
}
