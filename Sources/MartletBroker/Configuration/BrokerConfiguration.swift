import MartletTLS
import NIOCore

/// Everything the broker core needs to know, with the defaults a user gets when they
/// configure nothing. Each field is a named, documented limit.
public struct BrokerConfiguration: Sendable {
    public struct Listener: Sendable, Hashable {
        public var host: String
        public var port: Int
        /// TLS settings; nil for a plain TCP listener.
        public var tls: TLSConfiguration?
        public init(host: String = "127.0.0.1", port: Int = 1883, tls: TLSConfiguration? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }
    }

    /// Plain and TLS listeners.
    public var listeners: [Listener] = [Listener()]
    /// Event loops (threads) that serve connections; 0 means one per core.
    public var eventLoops: Int = 0
    /// `max_packet_size`: largest packet accepted from a client, fixed header included.
    public var maximumPacketSize: Int = 1 << 20
    /// `max_inflight`: QoS 1/2 messages sent to a client and not yet acknowledged.
    public var maximumInflight: Int = 20
    /// `max_queued_messages`: QoS 1/2 messages held for a client beyond the inflight window
    /// (and while a persistent session is offline). Past it, new messages are dropped and counted.
    public var maximumQueuedMessages: Int = 1000
    /// `connect_timeout`: a socket that has not sent CONNECT by then is closed.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// `keepalive_sweep_interval`: how often each event loop checks its connections' keepalive.
    public var keepaliveSweepInterval: TimeAmount = .milliseconds(500)
    /// `max_keepalive`: 0 means no cap. A v5 client asking for more is told the server keep alive.
    public var maximumKeepalive: UInt16 = 0
    /// `max_client_id_length`: longest client identifier accepted.
    public var maximumClientIdentifierLength: Int = 65_535
    /// `listen_backlog`: the accept queue of each listener.
    public var listenBacklog: Int32 = 4096

    public init() {}
}
