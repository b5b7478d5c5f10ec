import MartletMQTT
import MartletTLS

/// `bridges:` — links to other brokers, each forwarding chosen topics one way or both. Plain
/// values: the `MartletBridge` target runs them; the broker only parses and reloads them.
public struct BridgeConfiguration: Sendable, Hashable {
    public enum Direction: String, Sendable, Hashable, CaseIterable {
        /// Local messages go to the remote broker.
        case out
        /// The remote broker's messages come here.
        case `in`
        case both
    }

    /// One `topics` entry, read as mosquitto's `topic` line: a message on `local_prefix` +
    /// `filter` here is sent as `remote_prefix` + the same rest there, and the other way.
    public struct Topic: Sendable, Hashable {
        public var filter: String
        public var direction: Direction
        /// The highest QoS forwarded: a message goes at the lower of this and its own.
        public var qos: QoS
        public var localPrefix: String
        public var remotePrefix: String

        public init(filter: String, direction: Direction, qos: QoS = .atLeastOnce, localPrefix: String = "", remotePrefix: String = "") {
            self.filter = filter
            self.direction = direction
            self.qos = qos
            self.localPrefix = localPrefix
            self.remotePrefix = remotePrefix
        }

        public var localFilter: String { localPrefix + filter }
        public var remoteFilter: String { remotePrefix + filter }
        public var forwardsOut: Bool { direction != .in }
        public var forwardsIn: Bool { direction != .out }

        /// A local topic as the remote sees it (nil: not under `local_prefix`).
        public func remoteTopic(forLocal topic: String) -> String? {
            guard topic.hasPrefix(localPrefix) else { return nil }
            return remotePrefix + topic.dropFirst(localPrefix.count)
        }

        /// A remote topic as it is published here (nil: not under `remote_prefix`).
        public func localTopic(forRemote topic: String) -> String? {
            guard topic.hasPrefix(remotePrefix) else { return nil }
            return localPrefix + topic.dropFirst(remotePrefix.count)
        }
    }

    /// What a full queue does: `drop-old` evicts the oldest queued message, `drop-new`
    /// refuses the new one. Both are counted.
    public enum QueuePolicy: String, Sendable, Hashable, CaseIterable {
        case dropOld = "drop-old"
        case dropNew = "drop-new"

        public var slowConsumerPolicy: SlowConsumerPolicy { self == .dropOld ? .dropOld : .dropNew }
    }

    /// Unique; in logs, metrics (`bridge="…"`) and `$SYS/broker/bridge/<name>/state`.
    /// Default: the host and port (`127.0.0.1_1883`).
    public var name: String
    public var host: String
    public var port: Int = 1883
    /// `protocol`: mqttv5 or mqttv311.
    public var protocolVersion: ProtocolVersion = .v5
    /// `client_id` on the remote broker (default `martlet-bridge-<name>`).
    public var clientID: String?
    public var username: String?
    /// `password`, or the first line of `password_file`.
    public var password: String?
    /// `tls: {cafile, cert, key, server_name}`; nil: plain TCP.
    public var tls: TLSConfiguration?
    /// `clean_start`: false keeps the remote session (and what it queued for us) across reconnects.
    public var cleanStart = false
    /// `session_expiry_s` (v5): how long the remote keeps our session after the link drops.
    public var sessionExpiry: UInt32 = 3600
    /// `keepalive_s`: PINGREQ interval on the link; two missed PINGRESPs drop it.
    public var keepAlive: UInt16 = 30
    public var topics: [Topic] = []
    /// `max_queued_messages`, `max_queued_bytes`: what waits for the remote while the link
    /// is down or slow (outbound), past which `queue_policy` drops and counts.
    public var maximumQueuedMessages = 100_000
    public var maximumQueuedBytes = 64 << 20
    public var queuePolicy: QueuePolicy = .dropOld
    /// `reconnect_initial_ms`, `reconnect_max_ms`: backoff between attempts, doubled each time
    /// up to the cap, with ±20% jitter.
    public var reconnectInitialDelay: Duration = .milliseconds(500)
    public var reconnectMaximumDelay: Duration = .seconds(30)

    public init(name: String, host: String, port: Int = 1883) {
        self.name = name
        self.host = host
        self.port = port
    }

    public var effectiveClientID: String { clientID ?? "martlet-bridge-\(name)" }
    /// The client id of its session on this broker (only the bridge link may use `$bridge/`).
    public var localClientID: String { "$bridge/\(name)" }
}
