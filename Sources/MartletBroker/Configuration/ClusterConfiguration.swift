/// `cluster:` — this broker is one node of several that share NATS with JetStream
/// (MartletCluster): publishes cross to the nodes whose subscribers need them, QoS 1/2 messages
/// are acknowledged once JetStream has stored them with `replicas` copies, and retained
/// messages live in a JetStream key-value bucket every node follows. Without it the broker is
/// a single node and needs no NATS.
public struct ClusterConfiguration: Sendable, Hashable {
    /// `node_id`: this node's name, unique in the cluster (letters, digits, `-`, `_`).
    public var nodeID: String
    /// `nats`: the NATS servers' URLs (`nats://host:port`, `tls://host:port`); any one that
    /// answers will do, and the client moves to another when it goes away.
    public var servers: [String]
    /// `replicas`: the copies JetStream keeps of each stored message and retained message
    /// (its stream and bucket are created with it; an existing one with another count stops
    /// the daemon).
    public var replicas = 3
    /// `credentials_file`: a NATS `.creds` file (user JWT and NKey seed).
    public var credentialsFile: String?
    /// `tls: {cafile, cert, key}`: the NATS servers are verified against `cafile`; `cert` and
    /// `key` for mutual TLS.
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    /// `ack_timeout_ms`: how long a QoS 1/2 acknowledgement waits for JetStream to store the
    /// message before the message is refused (v5 0x80, 3.1.1 no acknowledgement).
    public var ackTimeout = 5_000
    /// `max_pending_acks`: messages sent to JetStream not yet acknowledged by it, at most;
    /// past that new QoS 1/2 messages are refused.
    public var maximumPendingAcks = 65_536
    /// `startup_timeout_ms`: how long the daemon waits at start for NATS and JetStream before
    /// it gives up (exit 2).
    public var startupTimeout = 15_000
    /// `stream_max_age_s` / `stream_max_bytes`: how long and how much of the stored QoS 1/2
    /// messages JetStream keeps (the oldest go first).
    public var streamMaximumAge = 3_600
    public var streamMaximumBytes = 1 << 30
    /// `checkpoint_interval_ms`: how often a persistent session's record is saved as its
    /// client acknowledges messages: a node that resumes it after its node died reads the
    /// stored messages again from then (duplicates, never losses).
    public var checkpointInterval = 1_000
    /// `session_load_timeout_ms`: how long a CONNECT that resumes a session held by no
    /// connection on this node waits for JetStream to read its record (a stream electing a
    /// new leader takes seconds); past that it is refused with Server unavailable rather
    /// than given an empty session.
    public var sessionLoadTimeout = 10_000
    /// `heartbeat_interval_ms` / `node_timeout_ms`: each node says it is alive this often; a
    /// node silent for `node_timeout_ms` is dead, and one other node publishes its wills.
    public var heartbeatInterval = 1_000
    public var nodeTimeout = 5_000

    public init(nodeID: String, servers: [String]) {
        self.nodeID = nodeID
        self.servers = servers
    }
}
