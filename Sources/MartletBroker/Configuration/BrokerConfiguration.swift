import MartletMQTT
import MartletTLS
import NIOCore

/// What the broker does with a message for a subscriber whose outbox is full.
/// A session belongs to the identity that created it: what a CONNECT for its client id by
/// another identity gets.
public enum SessionIdentityPolicy: String, Sendable, Hashable, CaseIterable {
    /// Refused (CONNACK 0x05 / v5 0x87, counted); the session and its connection are untouched.
    case refuse
    /// The old session ends (its connection is closed as taken over, its queue dropped and
    /// counted) and the new connection starts clean: nothing of it is resumed.
    case discard
}

public enum SlowConsumerPolicy: String, Sendable, Hashable, CaseIterable {
    /// The new message is dropped (QoS 0 ones in the outbox are evicted first for a QoS 1/2 message).
    case dropNew = "drop-new"
    /// The oldest queued message is evicted (QoS 0 first) to make room for the new one.
    case dropOld = "drop-old"
    /// New messages are dropped and, if the outbox is still full after the grace time, the
    /// subscriber is disconnected (v5: DISCONNECT 0x97 Quota exceeded).
    case disconnect
}

/// Everything the broker core needs to know, with the defaults a user gets when they
/// configure nothing. Each field is a named, documented limit (config/martlet.yaml).
public struct BrokerConfiguration: Sendable, Hashable {
    public struct Listener: Sendable, Hashable {
        public var host: String
        public var port: Int
        /// TLS settings; nil for a plain TCP listener.
        public var tls: TLSConfiguration?
        /// `max_connections` of this listener; 0 = only the broker-wide limit applies.
        public var maximumConnections: Int
        /// `slow_consumer_policy` for clients of this listener.
        public var slowConsumerPolicy: SlowConsumerPolicy
        /// `allow_anonymous`: clients without a user name may connect.
        public var allowAnonymous: Bool
        /// `use_identity_as_username` (TLS listeners): the client certificate's subject CN (or
        /// first SAN) is the user name, and the CONNECT's user name and password are ignored.
        public var useIdentityAsUsername: Bool
        /// `proxy_protocol`: every connection starts with a PROXY protocol header (v1 or v2)
        /// from a load balancer in `trusted_proxies`; the client address it gives is the one
        /// logged. A connection without a valid header is closed.
        public var proxyProtocol: Bool = false
        /// `websocket`: MQTT over WebSocket (ws, or wss with `tls`) on `path`, for browsers;
        /// `allowed_origins`: the Origin headers accepted (empty: any).
        public var webSocket: Bool = false
        public var webSocketPath: String = "/mqtt"
        public var allowedOrigins: [String] = []
        /// Set only on the in-process link a bridge connects through (never from the config
        /// file): its session's queue bounds replace `max_queued_messages` / `max_queued_bytes`.
        public var bridgeQueue: QueueBounds?
        public init(
            host: String = "127.0.0.1", port: Int = 1883, tls: TLSConfiguration? = nil,
            maximumConnections: Int = 0, slowConsumerPolicy: SlowConsumerPolicy = .dropNew,
            allowAnonymous: Bool = true, useIdentityAsUsername: Bool = false
        ) {
            self.host = host
            self.port = port
            self.tls = tls
            self.maximumConnections = maximumConnections
            self.slowConsumerPolicy = slowConsumerPolicy
            self.allowAnonymous = allowAnonymous
            self.useIdentityAsUsername = useIdentityAsUsername
        }
    }

    /// A session's outbox bounds, in messages and bytes.
    public struct QueueBounds: Sendable, Hashable {
        public var messages: Int
        public var bytes: Int
        /// QoS 1/2 messages handed to the bridge and not yet acknowledged (by the remote):
        /// more than a client's `max_inflight`, so the remote's window stays full while
        /// acknowledgements travel back.
        public var inflight: Int
        public init(messages: Int, bytes: Int, inflight: Int = 1000) {
            self.messages = messages
            self.bytes = bytes
            self.inflight = inflight
        }
    }

    /// Plain and TLS listeners.
    public var listeners: [Listener] = [Listener()]
    /// `trusted_proxies`: addresses and networks (`10.0.0.0/8`, `::1`) that may send a PROXY
    /// header on a `proxy_protocol` listener; a connection from anywhere else there is closed.
    /// Empty: any peer may.
    public var trustedProxies: [AddressRange] = []
    /// `max_http_header_bytes`: the bytes of a WebSocket listener's HTTP upgrade request;
    /// more and the connection gets 431 and is closed.
    public var maximumHTTPHeaderBytes: Int = 8192
    /// Event loops (threads) that serve connections; 0 means one per core.
    public var eventLoops: Int = 0

    /// `metrics: {host, port}`: the HTTP endpoint serving /metrics and /healthz; nil = off.
    public var metrics: MetricsListener?

    /// `persistence: {path, sync, commit_interval_ms}`: where sessions, their queued and
    /// in-flight messages, retained messages and delayed wills outlive the process; nil = in
    /// memory only.
    public var persistence: Persistence?

    /// `admin_token_file`: bearer tokens (one per line) of the admin API served under
    /// `/api/v1/` on the `metrics` endpoint; nil: the API is off.
    public var adminTokenFile: String?
    /// `admin_user`: the identity the ACL checks for `POST /api/v1/publish` (with an
    /// `acl_file`; without one the API publishes anywhere but `$SYS`).
    public var adminUser: String = "admin"

    /// `bridges:` — links to other brokers (run by `MartletBridge`, started by the daemon).
    public var bridges: [BridgeConfiguration] = []

    /// `cluster:` — this broker as one node of a cluster over NATS JetStream (run by
    /// `MartletCluster`, started by the daemon); nil: a single broker.
    public var cluster: ClusterConfiguration?

    public struct Persistence: Sendable, Hashable {
        public enum Sync: String, Sendable, Hashable, CaseIterable {
            /// A QoS 1/2 message that must be stored is acknowledged only once its commit is
            /// fsynced (SQLite synchronous=FULL): nothing acknowledged is lost, even to power loss.
            case durable
            /// Acknowledgements do not wait; a commit every `commit_interval_ms` (synchronous=NORMAL):
            /// a crash loses at most that much.
            case periodic
        }
        /// `path`: the SQLite file (created if missing).
        public var path: String
        public var sync: Sync = .durable
        /// `commit_interval_ms`: durable, the least time between two commits (what arrives
        /// meanwhile shares the next fsync); periodic, the time between commits. Nil: 2 ms
        /// durable, 1000 ms periodic.
        public var commitInterval: TimeAmount?
        /// `max_pending_records` (periodic): changes waiting for the writer beyond which
        /// acknowledgements of stored messages wait for their commit, as with durable.
        public var maximumPendingRecords: Int = 1_000_000

        public init(path: String, sync: Sync = .durable, commitInterval: TimeAmount? = nil, maximumPendingRecords: Int = 1_000_000) {
            self.path = path
            self.sync = sync
            self.commitInterval = commitInterval
            self.maximumPendingRecords = maximumPendingRecords
        }

        public var effectiveCommitInterval: TimeAmount {
            commitInterval ?? (sync == .durable ? .milliseconds(2) : .milliseconds(1000))
        }
    }
    public struct MetricsListener: Sendable, Hashable {
        public var host: String
        public var port: Int
        /// `tls`: serve /metrics, the admin API and the dashboard over HTTPS (the keys of a
        /// listener's `tls`); nil: plain HTTP.
        public var tls: TLSConfiguration?
        public init(host: String = "127.0.0.1", port: Int = 9883, tls: TLSConfiguration? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }
    }
    /// `sys_interval_s`: how often `$SYS/broker/...` topics are published (retained); 0 = never.
    public var sysInterval: TimeAmount = .seconds(10)

    // MARK: Security

    /// `password_file`: users and PBKDF2 hashes (mosquitto's format); nil = no passwords checked.
    public var passwordFile: String?
    /// `acl_file`: topic access rules (mosquitto's format); nil = every client may do anything.
    public var aclFile: String?

    // MARK: Packets and topics

    /// `max_packet_size`: largest packet accepted from a client, fixed header included.
    public var maximumPacketSize: Int = 1 << 20
    /// `max_topic_length`: longest topic name or filter, in bytes.
    public var maximumTopicLength: Int = 65_535
    /// `max_topic_levels`: most '/'-separated levels in a topic name or filter.
    public var maximumTopicLevels: Int = 200
    /// `max_subscriptions_per_client`: filters one session may hold; 0 = no limit.
    public var maximumSubscriptionsPerClient: Int = 0
    /// `session_other_identity`: what a CONNECT gets when its client id's session (online or
    /// not) was created by another identity (user name, or certificate identity).
    public var sessionOtherIdentity: SessionIdentityPolicy = .refuse
    /// `shared_subscription_strategy`: which member of a share group (`$share/{name}/{filter}`)
    /// gets each message.
    public var sharedSubscriptionStrategy: SharedSubscriptionStrategy = .balanced

    /// `max_retained_messages`: topics with a retained message, over the whole broker
    /// (`$SYS/...` not counted); 0 = no limit. Past it a retained message for a new topic is
    /// delivered to current subscribers but not stored, and counted; replacing or clearing a
    /// stored topic always works.
    public var maximumRetainedMessages: Int = 1_000_000
    /// `max_client_id_length`: longest client identifier accepted.
    public var maximumClientIdentifierLength: Int = 65_535

    // MARK: Outbound backpressure

    /// `max_inflight`: QoS 1/2 messages sent to a client and not yet acknowledged.
    public var maximumInflight: Int = 20
    /// `max_qos`: the highest QoS accepted from clients (v5 CONNACK Maximum QoS when below 2).
    /// A PUBLISH or will above it is refused (v5 0x9B); subscriptions are granted at most it.
    public var maximumQoS: QoS = .exactlyOnce
    /// `retain_available`: whether clients may publish retained messages (v5 CONNACK Retain
    /// Available). When false a retained PUBLISH or will is refused (v5 0x9A).
    public var retainAvailable = true
    /// `reason_strings`: a v5 client refused at CONNACK or disconnected by the server is told
    /// why in a Reason String (within its Maximum Packet Size).
    public var reasonStrings = true
    /// `server_reference`: when set, every CONNECT is sent to this server instead (v5: CONNACK
    /// 0x9C Use another server, or 0x9D Server moved with `server_moved`, and the Server
    /// Reference; 3.1.1: 0x03 Server unavailable). Empty: clients are served here.
    public var serverReference = ""
    public var serverMoved = false
    /// `response_information`: the prefix of the Response Information a v5 client that asks
    /// for it gets in CONNACK (the prefix followed by its client id); empty: none is given.
    public var responseInformationPrefix = ""
    /// `max_topic_alias`: the Topic Alias Maximum advertised to v5 clients (aliases a client
    /// may set on one connection for the topics it publishes to); 0: none accepted.
    public var maximumTopicAlias: Int = 10
    /// `max_topic_alias_out`: topic aliases the broker uses per connection for what it sends a
    /// v5 client that accepts them (at most the client's Topic Alias Maximum); 0 = none.
    public var maximumTopicAliasOut: Int = 10
    /// `receive_maximum`: the Receive Maximum advertised to v5 clients, QoS 2 PUBLISHes a
    /// client may have sent and not seen completed (QoS 1 ones are acknowledged at once). One
    /// more gets DISCONNECT 0x93 (MQTT 5 3.3.4).
    public var receiveMaximum: Int = 20
    /// `max_queued_messages`: messages held in one session's outbox (waiting for the socket
    /// to drain or for the inflight window, or while a persistent session is offline).
    public var maximumQueuedMessages: Int = 1000
    /// `max_queued_bytes`: the same outbox bounded in bytes.
    public var maximumQueuedBytes: Int = 16 << 20
    /// `max_queued_bytes_total`: every outbox together. Past it QoS 0 is dropped first,
    /// then the listener's slow-consumer policy applies.
    public var maximumQueuedBytesTotal: Int = 1 << 30
    /// `slow_consumer_grace_ms`: with the `disconnect` policy, how long an outbox may stay full.
    public var slowConsumerGrace: TimeAmount = .seconds(5)
    /// `write_buffer_high_water` / `write_buffer_low_water`: bytes a connection may hold in
    /// its socket write buffer before the outbox takes over (NIO's water marks).
    public var writeBufferHighWater: Int = 64 << 10
    public var writeBufferLowWater: Int = 32 << 10

    // MARK: Inbound flow control

    /// `inbound_high_water_bytes`: when the outboxes of online clients hold more than this,
    /// the broker stops reading from clients that publish; it resumes below
    /// `inbound_low_water_bytes`.
    public var inboundHighWaterBytes: Int = 256 << 20
    public var inboundLowWaterBytes: Int = 128 << 20
    /// `max_unrouted_bytes`: messages one event loop has handed to the others and they have
    /// not routed yet; past it the loop's publishers are paused until half of it is left.
    public var maximumUnroutedBytes: Int = 1 << 20
    /// `pause_publishers_for_slow_subscribers`: a subscriber whose outbox holds half of
    /// `max_queued_messages` or `max_queued_bytes` is *lagging* until it drains to a quarter;
    /// a publisher whose message is queued for a lagging subscriber stops being read (right
    /// after that packet) until no subscriber lags. The queue limits are then a buffer that
    /// absorbs bursts, not a place where messages are lost.
    public var pausePublishersForSlowSubscribers = true
    /// `subscriber_stall_timeout_ms`: a lagging subscriber that takes nothing off its outbox
    /// for this long, or stays lagging for ten times this long, is *stalled*: it stops holding
    /// publishers back and its outbox follows the slow-consumer policy (so neither a dead nor
    /// a very slow reader holds publishers for long — not long enough for their keepalive).
    public var subscriberStallTimeout: TimeAmount = .seconds(1)

    // MARK: Connections and timers

    /// `max_connections`: open connections over all listeners; 0 = no limit.
    public var maximumConnections: Int = 0
    /// `max_connection_rate`: new connections per second over all listeners (token bucket
    /// with a burst of one second's worth); 0 = no limit.
    public var maximumConnectionRate: Int = 0
    /// `connect_timeout`: a socket that has not completed TLS and sent CONNECT by then is closed.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// `write_timeout`: a connection whose socket stays unwritable this long is closed.
    public var writeTimeout: TimeAmount = .seconds(60)
    /// `keepalive_sweep_interval`: how often each event loop checks the connection timers that
    /// have come due (`TimerWheel` slots of this length).
    public var keepaliveSweepInterval: TimeAmount = .milliseconds(500)
    /// `max_keepalive`: 0 means no cap. A v5 client asking for more is told the server keep alive.
    public var maximumKeepalive: UInt16 = 0
    /// `tcp_keepalive_idle_s`: idle seconds before TCP keepalive probes start on accepted sockets
    /// (probes every 10 s, 3 of them); 0 leaves the system's setting.
    public var tcpKeepaliveIdle: Int = 60
    /// `tcp_user_timeout_ms`: how long sent data may stay unacknowledged before the kernel
    /// drops the connection (TCP_USER_TIMEOUT); 0 leaves the system's setting.
    public var tcpUserTimeout: Int = 60_000
    /// `tcp_defer_accept_s`: Linux TCP_DEFER_ACCEPT on the listening sockets. A client speaks
    /// first in MQTT, so the kernel hands a connection over only once its first bytes (CONNECT,
    /// or the TLS ClientHello) have arrived: one wake-up less per connection, and a silent
    /// connection stays in the kernel for about this many seconds before it is accepted and
    /// `connect_timeout_ms` starts. 0 = off.
    public var tcpDeferAccept: Int = 1
    /// `listen_backlog`: the accept queue of each listener.
    public var listenBacklog: Int32 = 4096
    /// `listen_per_thread`: on Linux, each listener has one listening socket per event loop
    /// (SO_REUSEPORT; the kernel spreads new connections over them), so a connection is
    /// accepted by the loop that serves it. Off: one socket, whose loop hands every accepted
    /// connection to the loops in turn.
    public var listenPerThread = true

    public init() {}
}
