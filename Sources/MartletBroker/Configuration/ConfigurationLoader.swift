import MartletAuth
import MartletMQTT
import MartletTLS
import NIOCore
import Yams
#if canImport(Glibc)
import Glibc
#endif

/// Everything the daemon reads from its configuration: the broker's settings plus the
/// daemon's own (logging).
public struct DaemonConfiguration: Sendable {
    public var broker = BrokerConfiguration()
    public var logLevel = "info"
    /// `log_format`: "text" (one line per event) or "json" (one JSON object per line).
    public var logFormat = "text"
    /// Whether `broker.listeners` came from a file (flags then add to them) or is the built-in default.
    public var listenersConfigured = false
    /// `slow_consumer_policy` at the top level: for listeners that do not set their own.
    public var slowConsumerPolicy: SlowConsumerPolicy = .dropNew
    /// Listeners (by index) whose file entry set `slow_consumer_policy`.
    var listenersWithOwnPolicy: Set<Int> = []
    public init() {}

    /// The top-level policy given to every listener without its own; then the checks that
    /// involve more than one key. Called once the file, environment and flags are applied.
    public mutating func finish(source: String) throws(ConfigurationError) {
        for i in broker.listeners.indices where !listenersWithOwnPolicy.contains(i) {
            broker.listeners[i].slowConsumerPolicy = slowConsumerPolicy
        }
        let b = broker
        if b.writeBufferLowWater >= b.writeBufferHighWater {
            throw ConfigurationError(source: source, key: "write_buffer_low_water", line: nil,
                                     message: "must be below write_buffer_high_water (\(b.writeBufferHighWater))")
        }
        if b.inboundLowWaterBytes >= b.inboundHighWaterBytes {
            throw ConfigurationError(source: source, key: "inbound_low_water_bytes", line: nil,
                                     message: "must be below inbound_high_water_bytes (\(b.inboundHighWaterBytes))")
        }
        if b.maximumQueuedBytes > b.maximumQueuedBytesTotal {
            throw ConfigurationError(source: source, key: "max_queued_bytes", line: nil,
                                     message: "must not exceed max_queued_bytes_total (\(b.maximumQueuedBytesTotal))")
        }
    }
}

/// Reads `config/martlet.yaml`, then `MARTLET_*` environment variables over it.
/// Command-line flags are applied last by the daemon (flags > env > file > defaults).
///
/// Why not apple/swift-configuration's readers: they return the default when a value
/// cannot be converted, and do not report unknown keys; an operator's typo must stop
/// the daemon with the key and the line instead. Yams parses the YAML; this file only
/// maps keys to settings.
public enum ConfigurationLoader {
    /// One scalar setting: its key, what it accepts, and where it goes.
    struct Setting: Sendable {
        var key: String
        var expected: String
        var apply: @Sendable (String, inout DaemonConfiguration) -> Bool
    }

    static func integer(_ key: String, _ range: ClosedRange<Int>, _ set: @escaping @Sendable (Int, inout DaemonConfiguration) -> Void) -> Setting {
        Setting(key: key, expected: "an integer in \(range.lowerBound)...\(range.upperBound)") { text, config in
            guard let v = Int(text), range.contains(v) else { return false }
            set(v, &config)
            return true
        }
    }

    static func boolean(_ key: String, _ set: @escaping @Sendable (Bool, inout DaemonConfiguration) -> Void) -> Setting {
        Setting(key: key, expected: "true or false") { text, config in
            guard let v = Bool(text) else { return false }
            set(v, &config)
            return true
        }
    }

    static func milliseconds(_ key: String, _ range: ClosedRange<Int>, _ set: @escaping @Sendable (TimeAmount, inout DaemonConfiguration) -> Void) -> Setting {
        integer(key, range) { v, c in set(.milliseconds(Int64(v)), &c) }
    }

    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    static let policies = SlowConsumerPolicy.allCases.map(\.rawValue)
    static let terabyte = 1 << 40

    /// Every scalar key, with its documented meaning in config/martlet.yaml.
    static let settings: [Setting] = [
        Setting(key: "log_level", expected: "one of \(logLevels.joined(separator: ", "))") { text, c in
            guard logLevels.contains(text) else { return false }
            c.logLevel = text
            return true
        },
        Setting(key: "log_format", expected: "text or json") { text, c in
            guard text == "text" || text == "json" else { return false }
            c.logFormat = text
            return true
        },
        integer("threads", 0...1024) { v, c in c.broker.eventLoops = v },
        integer("max_packet_size", 16...268_435_460) { v, c in c.broker.maximumPacketSize = v },
        integer("max_inflight", 1...65_535) { v, c in c.broker.maximumInflight = v },
        integer("receive_maximum", 1...65_535) { v, c in c.broker.receiveMaximum = v },
        integer("max_topic_alias", 0...65_535) { v, c in c.broker.maximumTopicAlias = v },
        integer("max_topic_alias_out", 0...65_535) { v, c in c.broker.maximumTopicAliasOut = v },
        integer("max_qos", 0...2) { v, c in c.broker.maximumQoS = QoS(rawValue: UInt8(v))! },
        boolean("retain_available") { v, c in c.broker.retainAvailable = v },
        boolean("reason_strings") { v, c in c.broker.reasonStrings = v },
        Setting(key: "server_reference", expected: "another server's host[:port], or empty") { text, c in
            guard !text.contains(" ") else { return false }
            c.broker.serverReference = text
            return true
        },
        boolean("server_moved") { v, c in c.broker.serverMoved = v },
        Setting(key: "response_information", expected: "a topic prefix") { text, c in
            guard !text.contains("#"), !text.contains("+") else { return false }
            c.broker.responseInformationPrefix = text
            return true
        },
        integer("max_queued_messages", 0...10_000_000) { v, c in c.broker.maximumQueuedMessages = v },
        integer("max_queued_bytes", 0...terabyte) { v, c in c.broker.maximumQueuedBytes = v },
        integer("max_queued_bytes_total", 0...terabyte) { v, c in c.broker.maximumQueuedBytesTotal = v },
        Setting(key: "slow_consumer_policy", expected: "one of \(policies.joined(separator: ", "))") { text, c in
            guard let policy = SlowConsumerPolicy(rawValue: text) else { return false }
            c.slowConsumerPolicy = policy
            return true
        },
        milliseconds("slow_consumer_grace_ms", 0...3_600_000) { v, c in c.broker.slowConsumerGrace = v },
        integer("write_buffer_high_water", 1024...terabyte) { v, c in c.broker.writeBufferHighWater = v },
        integer("write_buffer_low_water", 0...terabyte) { v, c in c.broker.writeBufferLowWater = v },
        integer("inbound_high_water_bytes", 1...terabyte) { v, c in c.broker.inboundHighWaterBytes = v },
        integer("inbound_low_water_bytes", 0...terabyte) { v, c in c.broker.inboundLowWaterBytes = v },
        integer("max_unrouted_bytes", 1024...terabyte) { v, c in c.broker.maximumUnroutedBytes = v },
        boolean("pause_publishers_for_slow_subscribers") { v, c in c.broker.pausePublishersForSlowSubscribers = v },
        milliseconds("subscriber_stall_timeout_ms", 10...3_600_000) { v, c in c.broker.subscriberStallTimeout = v },
        integer("max_topic_length", 1...65_535) { v, c in c.broker.maximumTopicLength = v },
        integer("max_topic_levels", 1...65_535) { v, c in c.broker.maximumTopicLevels = v },
        integer("max_subscriptions_per_client", 0...10_000_000) { v, c in c.broker.maximumSubscriptionsPerClient = v },
        Setting(key: "session_other_identity", expected: "refuse or discard") { text, c in
            guard let policy = SessionIdentityPolicy(rawValue: text) else { return false }
            c.broker.sessionOtherIdentity = policy
            return true
        },
        Setting(key: "shared_subscription_strategy", expected: "balanced, round_robin, random or sticky") { text, c in
            guard let strategy = SharedSubscriptionStrategy(rawValue: text) else { return false }
            c.broker.sharedSubscriptionStrategy = strategy
            return true
        },
        integer("max_http_header_bytes", 256...1_048_576) { v, c in c.broker.maximumHTTPHeaderBytes = v },
        integer("max_retained_messages", 0...1_000_000_000) { v, c in c.broker.maximumRetainedMessages = v },
        integer("max_client_id_length", 1...65_535) { v, c in c.broker.maximumClientIdentifierLength = v },
        integer("max_connections", 0...100_000_000) { v, c in c.broker.maximumConnections = v },
        integer("max_connection_rate", 0...100_000_000) { v, c in c.broker.maximumConnectionRate = v },
        integer("max_keepalive", 0...65_535) { v, c in c.broker.maximumKeepalive = UInt16(v) },
        milliseconds("connect_timeout_ms", 1...3_600_000) { v, c in c.broker.connectTimeout = v },
        milliseconds("write_timeout_ms", 1...3_600_000) { v, c in c.broker.writeTimeout = v },
        milliseconds("keepalive_sweep_interval_ms", 10...60_000) { v, c in c.broker.keepaliveSweepInterval = v },
        integer("tcp_keepalive_idle_s", 0...86_400) { v, c in c.broker.tcpKeepaliveIdle = v },
        integer("tcp_user_timeout_ms", 0...3_600_000) { v, c in c.broker.tcpUserTimeout = v },
        integer("tcp_defer_accept_s", 0...60) { v, c in c.broker.tcpDeferAccept = v },
        integer("listen_backlog", 1...65_535) { v, c in c.broker.listenBacklog = Int32(v) },
        boolean("listen_per_thread") { v, c in c.broker.listenPerThread = v },
        integer("sys_interval_s", 0...86_400) { v, c in c.broker.sysInterval = .seconds(Int64(v)) },
        Setting(key: "password_file", expected: "a file path") { text, c in
            guard !text.isEmpty else { return false }
            c.broker.passwordFile = text
            return true
        },
        Setting(key: "acl_file", expected: "a file path") { text, c in
            guard !text.isEmpty else { return false }
            c.broker.aclFile = text
            return true
        },
        Setting(key: "admin_user", expected: "a user name") { text, c in
            guard !text.isEmpty else { return false }
            c.broker.adminUser = text
            return true
        },
        Setting(key: "admin_token_file", expected: "a file path") { text, c in
            guard !text.isEmpty else { return false }
            c.broker.adminTokenFile = text
            return true
        },
    ]

    /// Parses a YAML document. Unknown keys, wrong types and out-of-range values are errors.
    public static func load(yaml: String, source: String, into config: inout DaemonConfiguration) throws(ConfigurationError) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(source: source, key: "(file)", line: nil, message: "not valid YAML: \(error)")
        }
        guard let root else { return }  // an empty file keeps the defaults
        guard let mapping = root.mapping else {
            throw ConfigurationError(source: source, key: "(file)", line: root.mark.map { $0.line }, message: "expected a mapping of keys to values")
        }
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            let line = keyNode.mark.map { $0.line }
            if key == "listeners" {
                let (listeners, withPolicy) = try listeners(value, source: source)
                config.broker.listeners = listeners
                config.listenersWithOwnPolicy = withPolicy
                config.listenersConfigured = true
                continue
            }
            if key == "metrics" {
                config.broker.metrics = try metricsListener(value, source: source)
                continue
            }
            if key == "trusted_proxies" {
                guard let list = value.sequence else {
                    throw ConfigurationError(source: source, key: key, line: line, message: "expected a list of addresses or networks (CIDR)")
                }
                config.broker.trustedProxies = []
                for (i, item) in list.enumerated() {
                    guard let text = item.scalar?.string, let range = AddressRange(text) else {
                        throw ConfigurationError(source: source, key: "trusted_proxies[\(i)]", line: item.mark.map { $0.line },
                                                 message: "expected an IP address or a network such as 10.0.0.0/8, got \(describe(item))")
                    }
                    config.broker.trustedProxies.append(range)
                }
                continue
            }
            if key == "bridges" {
                config.broker.bridges = try bridges(value, source: source)
                continue
            }
            if key == "cluster" {
                config.broker.cluster = try cluster(value, source: source)
                continue
            }
            if key == "persistence" {
                config.broker.persistence = try persistence(value, source: source)
                continue
            }
            guard let setting = settings.first(where: { $0.key == key }) else {
                throw ConfigurationError(source: source, key: key, line: line, message: "unknown key")
            }
            guard let text = value.scalar?.string, setting.apply(text, &config) else {
                throw ConfigurationError(source: source, key: key, line: value.mark.map { $0.line } ?? line,
                                         message: "expected \(setting.expected), got \(describe(value))")
            }
        }
    }

    static func listeners(_ node: Node, source: String) throws(ConfigurationError) -> ([BrokerConfiguration.Listener], Set<Int>) {
        guard let sequence = node.sequence, !sequence.isEmpty else {
            throw ConfigurationError(source: source, key: "listeners", line: node.mark.map { $0.line },
                                     message: "expected a list of {host, port}")
        }
        var result: [BrokerConfiguration.Listener] = []
        var withPolicy: Set<Int> = []
        for (i, item) in sequence.enumerated() {
            let key = "listeners[\(i)]"
            guard let map = item.mapping else {
                throw ConfigurationError(source: source, key: key, line: item.mark.map { $0.line }, message: "expected {host, port}")
            }
            var listener = BrokerConfiguration.Listener()
            for (k, v) in map {
                let name = k.string ?? "?"
                let line = v.mark.map { $0.line }
                switch name {
                case "host":
                    guard let host = v.scalar?.string, !host.isEmpty else {
                        throw ConfigurationError(source: source, key: "\(key).host", line: line, message: "expected an address")
                    }
                    listener.host = host
                case "port":
                    guard let port = v.scalar.flatMap({ Int($0.string) }), (0...65_535).contains(port) else {
                        throw ConfigurationError(source: source, key: "\(key).port", line: line, message: "expected a port in 0...65535, got \(describe(v))")
                    }
                    listener.port = port
                case "tls":
                    listener.tls = try tlsSettings(v, key: "\(key).tls", source: source)
                case "path":
                    guard let path = v.scalar?.string, path.hasPrefix("/"), !path.contains(" ") else {
                        throw ConfigurationError(source: source, key: "\(key).path", line: line, message: "expected a URL path such as /mqtt, got \(describe(v))")
                    }
                    listener.webSocketPath = path
                case "allowed_origins":
                    guard let list = v.sequence, let origins = Optional(list.compactMap({ $0.scalar?.string })), origins.count == list.count else {
                        throw ConfigurationError(source: source, key: "\(key).allowed_origins", line: line,
                                                 message: "expected a list of origins such as https://app.example.com, got \(describe(v))")
                    }
                    listener.allowedOrigins = origins
                case "allow_anonymous", "use_identity_as_username", "proxy_protocol", "websocket":
                    guard let flag = v.scalar.flatMap({ Bool($0.string) }) else {
                        throw ConfigurationError(source: source, key: "\(key).\(name)", line: line, message: "expected true or false, got \(describe(v))")
                    }
                    switch name {
                    case "allow_anonymous": listener.allowAnonymous = flag
                    case "use_identity_as_username": listener.useIdentityAsUsername = flag
                    case "websocket": listener.webSocket = flag
                    default: listener.proxyProtocol = flag
                    }
                case "max_connections":
                    guard let n = v.scalar.flatMap({ Int($0.string) }), n >= 0 else {
                        throw ConfigurationError(source: source, key: "\(key).max_connections", line: line, message: "expected a count (0 = no limit), got \(describe(v))")
                    }
                    listener.maximumConnections = n
                case "slow_consumer_policy":
                    guard let policy = v.scalar.flatMap({ SlowConsumerPolicy(rawValue: $0.string) }) else {
                        throw ConfigurationError(source: source, key: "\(key).slow_consumer_policy", line: line,
                                                 message: "expected one of \(policies.joined(separator: ", ")), got \(describe(v))")
                    }
                    listener.slowConsumerPolicy = policy
                    withPolicy.insert(i)
                default:
                    throw ConfigurationError(source: source, key: "\(key).\(name)", line: k.mark.map { $0.line }, message: "unknown key")
                }
            }
            if listener.useIdentityAsUsername && listener.tls?.peerVerification != .required && !(listener.tls == nil && listener.proxyProtocol) {
                throw ConfigurationError(source: source, key: "\(key).use_identity_as_username", line: item.mark.map { $0.line },
                                         message: "needs a TLS listener with require_certificate: true, or proxy_protocol: true behind a proxy that verifies client certificates")
            }
            result.append(listener)
        }
        return (result, withPolicy)
    }

    /// `metrics: {host, port}`.
    static func metricsListener(_ node: Node, source: String) throws(ConfigurationError) -> BrokerConfiguration.MetricsListener {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: "metrics", line: node.mark.map { $0.line }, message: "expected {host, port}")
        }
        var listener = BrokerConfiguration.MetricsListener()
        for (k, v) in map {
            let name = k.string ?? "?"
            switch name {
            case "host":
                guard let host = v.scalar?.string, !host.isEmpty else {
                    throw ConfigurationError(source: source, key: "metrics.host", line: v.mark.map { $0.line }, message: "expected an address")
                }
                listener.host = host
            case "port":
                guard let port = v.scalar.flatMap({ Int($0.string) }), (0...65_535).contains(port) else {
                    throw ConfigurationError(source: source, key: "metrics.port", line: v.mark.map { $0.line }, message: "expected a port in 0...65535, got \(describe(v))")
                }
                listener.port = port
            case "tls":
                listener.tls = try tlsSettings(v, key: "metrics.tls", source: source)
            default:
                throw ConfigurationError(source: source, key: "metrics.\(name)", line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        return listener
    }

    /// `persistence: {path, sync, commit_interval_ms}`.
    static func persistence(_ node: Node, source: String) throws(ConfigurationError) -> BrokerConfiguration.Persistence {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: "persistence", line: node.mark.map { $0.line }, message: "expected {path, sync, commit_interval_ms, max_pending_records}")
        }
        var path: String?
        var sync = BrokerConfiguration.Persistence.Sync.durable
        var interval: TimeAmount?
        var pending = 1_000_000
        for (k, v) in map {
            let name = k.string ?? "?"
            let line = v.mark.map { $0.line }
            switch name {
            case "path":
                guard let p = v.scalar?.string, !p.isEmpty else {
                    throw ConfigurationError(source: source, key: "persistence.path", line: line, message: "expected a file path, got \(describe(v))")
                }
                path = p
            case "sync":
                guard let s = v.scalar.flatMap({ BrokerConfiguration.Persistence.Sync(rawValue: $0.string) }) else {
                    throw ConfigurationError(source: source, key: "persistence.sync", line: line, message: "expected durable or periodic, got \(describe(v))")
                }
                sync = s
            case "commit_interval_ms":
                guard let ms = v.scalar.flatMap({ Int($0.string) }), (0...60_000).contains(ms) else {
                    throw ConfigurationError(source: source, key: "persistence.commit_interval_ms", line: line,
                                             message: "expected an integer in 0...60000, got \(describe(v))")
                }
                interval = .milliseconds(Int64(ms))
            case "max_pending_records":
                guard let n = v.scalar.flatMap({ Int($0.string) }), (1...100_000_000).contains(n) else {
                    throw ConfigurationError(source: source, key: "persistence.max_pending_records", line: line,
                                             message: "expected an integer in 1...100000000, got \(describe(v))")
                }
                pending = n
            default:
                throw ConfigurationError(source: source, key: "persistence.\(name)", line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        guard let path else {
            throw ConfigurationError(source: source, key: "persistence.path", line: node.mark.map { $0.line }, message: "missing: the store's file")
        }
        if sync == .periodic && interval == .zero {
            throw ConfigurationError(source: source, key: "persistence.commit_interval_ms", line: node.mark.map { $0.line },
                                     message: "must be at least 1 with sync: periodic")
        }
        return BrokerConfiguration.Persistence(path: path, sync: sync, commitInterval: interval, maximumPendingRecords: pending)
    }

    /// `tls: {cert, key, cafile, capath, require_certificate, min_version, ciphers, ciphersuites}`.
    static func tlsSettings(_ node: Node, key: String, source: String) throws(ConfigurationError) -> TLSConfiguration {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: key, line: node.mark.map { $0.line }, message: "expected a mapping with cert and key")
        }
        var tls = TLSConfiguration(peerVerification: .none)
        for (k, v) in map {
            let name = k.string ?? "?"
            let line = v.mark.map { $0.line }
            func text() throws(ConfigurationError) -> String {
                guard let s = v.scalar?.string, !s.isEmpty else {
                    throw ConfigurationError(source: source, key: "\(key).\(name)", line: line, message: "expected a value, got \(describe(v))")
                }
                return s
            }
            switch name {
            case "cert": tls.certificateChainFile = try text()
            case "key": tls.privateKeyFile = try text()
            case "cafile": tls.caFile = try text()
            case "capath": tls.caDirectory = try text()
            case "ciphers": tls.cipherList = try text()
            case "ciphersuites": tls.cipherSuites = try text()
            case "require_certificate":
                switch try text() {
                case "true": tls.peerVerification = .required
                case "false": tls.peerVerification = tls.caFile == nil ? .none : .optional
                default:
                    throw ConfigurationError(source: source, key: "\(key).\(name)", line: line, message: "expected true or false, got \(describe(v))")
                }
            case "min_version":
                switch try text() {
                case "1.2": tls.minimumVersion = .tls12
                case "1.3": tls.minimumVersion = .tls13
                default:
                    throw ConfigurationError(source: source, key: "\(key).\(name)", line: line, message: "expected \"1.2\" or \"1.3\", got \(describe(v))")
                }
            default:
                throw ConfigurationError(source: source, key: "\(key).\(name)", line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        guard tls.certificateChainFile != nil, tls.privateKeyFile != nil else {
            throw ConfigurationError(source: source, key: key, line: node.mark.map { $0.line }, message: "a TLS listener needs cert and key")
        }
        if tls.peerVerification == .required && tls.caFile == nil && tls.caDirectory == nil {
            throw ConfigurationError(source: source, key: "\(key).require_certificate", line: node.mark.map { $0.line }, message: "requires cafile or capath")
        }
        if tls.peerVerification == .none && (tls.caFile != nil || tls.caDirectory != nil) {
            tls.peerVerification = .optional
        }
        return tls
    }

    /// Applies `MARTLET_<KEY>` variables (e.g. MARTLET_MAX_INFLIGHT=50) over the file's values.
    public static func applyEnvironment(_ environment: [String: String], into config: inout DaemonConfiguration) throws(ConfigurationError) {
        for setting in settings {
            let name = "MARTLET_" + setting.key.uppercased()
            guard let text = environment[name] else { continue }
            guard setting.apply(text, &config) else {
                throw ConfigurationError(source: "environment", key: name, line: nil, message: "expected \(setting.expected), got \"\(text)\"")
            }
        }
    }

    /// One `key: value` of a section (`bridges[0]`, `cluster`): its errors name the key.
    struct Entry {
        let source: String
        let key: String
        let value: Node

        func fail(_ expected: String) -> ConfigurationError {
            ConfigurationError(source: source, key: key, line: value.mark.map { $0.line },
                               message: "expected \(expected), got \(ConfigurationLoader.describe(value))")
        }

        func text() throws(ConfigurationError) -> String {
            guard let s = value.scalar?.string, !s.isEmpty else { throw fail("a value") }
            return s
        }

        func integer(_ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            guard let n = value.scalar.flatMap({ Int($0.string) }), range.contains(n) else {
                throw fail("an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
    }

    static func describe(_ node: Node) -> String {
        if let s = node.scalar?.string { return "\"\(s)\"" }
        if node.sequence != nil { return "a list" }
        if node.mapping != nil { return "a mapping" }
        return "nothing"
    }
}
