import Foundation
import MartletAuth
import MartletMQTT
import MartletTLS
import Yams

/// `bridges:` in the config file. Every error names the key (`bridges[0].topics[1].qos`).
extension ConfigurationLoader {
    static func bridges(_ node: Node, source: String) throws(ConfigurationError) -> [BridgeConfiguration] {
        guard let sequence = node.sequence else {
            throw ConfigurationError(source: source, key: "bridges", line: node.mark.map { $0.line }, message: "expected a list of bridges")
        }
        var result: [BridgeConfiguration] = []
        for (i, item) in sequence.enumerated() {
            let bridge = try self.bridge(item, key: "bridges[\(i)]", source: source)
            if result.contains(where: { $0.name == bridge.name }) {
                throw ConfigurationError(source: source, key: "bridges[\(i)].name", line: item.mark.map { $0.line },
                                         message: "\"\(bridge.name)\" is already the name of another bridge (a bridge without a name is named after its host and port)")
            }
            result.append(bridge)
        }
        return result
    }

    private static func bridge(_ node: Node, key: String, source: String) throws(ConfigurationError) -> BridgeConfiguration {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: key, line: node.mark.map { $0.line }, message: "expected {name, host, port, topics, …}")
        }
        var bridge = BridgeConfiguration(name: "", host: "")
        var password: String?
        var passwordFile: String?
        for (k, v) in map {
            let name = k.string ?? "?"
            let entry = Entry(source: source, key: "\(key).\(name)", value: v)
            switch name {
            case "name":
                let n = try entry.text()
                guard n.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
                    throw entry.fail("a name of letters, digits, '-', '_' or '.'")
                }
                bridge.name = n
            case "host": bridge.host = try entry.text()
            case "port": bridge.port = try entry.integer(1...65_535)
            case "protocol":
                switch try entry.text() {
                case "mqttv5", "mqttv50": bridge.protocolVersion = .v5
                case "mqttv311": bridge.protocolVersion = .v3_1_1
                default: throw entry.fail("mqttv5 (or mosquitto's mqttv50) or mqttv311")
                }
            case "client_id":
                let id = try entry.text()
                guard id.utf8.count <= 65_535 else { throw entry.fail("a client id") }
                bridge.clientID = id
            case "username": bridge.username = try entry.text()
            case "password": password = v.scalar?.string ?? ""
            case "password_file": passwordFile = try entry.text()
            case "tls": bridge.tls = try bridgeTLS(v, key: "\(key).tls", source: source)
            case "clean_start":
                guard let flag = v.scalar.flatMap({ Bool($0.string) }) else { throw entry.fail("true or false") }
                bridge.cleanStart = flag
            case "session_expiry_s": bridge.sessionExpiry = UInt32(try entry.integer(0...Int(UInt32.max)))
            case "keepalive_s": bridge.keepAlive = UInt16(try entry.integer(0...65_535))
            case "topics": bridge.topics = try bridgeTopics(v, key: "\(key).topics", source: source)
            case "max_queued_messages": bridge.maximumQueuedMessages = try entry.integer(1...100_000_000)
            case "max_queued_bytes":
                guard let text = v.scalar?.string, let bytes = byteSize(text), bytes >= 1024 else {
                    throw entry.fail("a size of at least 1024 bytes such as 67108864, 64MiB or 512KiB")
                }
                bridge.maximumQueuedBytes = bytes
            case "queue_policy":
                guard let policy = v.scalar.flatMap({ BridgeConfiguration.QueuePolicy(rawValue: $0.string) }) else {
                    throw entry.fail("drop-old or drop-new")
                }
                bridge.queuePolicy = policy
            case "reconnect_initial_ms": bridge.reconnectInitialDelay = .milliseconds(try entry.integer(1...3_600_000))
            case "reconnect_max_ms": bridge.reconnectMaximumDelay = .milliseconds(try entry.integer(1...86_400_000))
            default:
                throw ConfigurationError(source: source, key: "\(key).\(name)", line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        let line = node.mark.map { $0.line }
        if bridge.host.isEmpty { throw ConfigurationError(source: source, key: "\(key).host", line: line, message: "missing: the remote broker's address") }
        // Without a name, the remote's address names it: 127.0.0.1_1883.
        if bridge.name.isEmpty {
            bridge.name = String("\(bridge.host)_\(bridge.port)".map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
        }
        if bridge.topics.isEmpty {
            throw ConfigurationError(source: source, key: "\(key).topics", line: line, message: "missing: at least one {filter, direction}")
        }
        if bridge.reconnectInitialDelay > bridge.reconnectMaximumDelay {
            throw ConfigurationError(source: source, key: "\(key).reconnect_initial_ms", line: line, message: "must not exceed reconnect_max_ms")
        }
        if password != nil && passwordFile != nil {
            throw ConfigurationError(source: source, key: "\(key).password_file", line: line, message: "give password or password_file, not both")
        }
        if let passwordFile {
            let content = try ConfigurationError.readTextFile(passwordFile, key: "\(key).password_file")
            password = content.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        }
        if password != nil && bridge.username == nil && bridge.protocolVersion == .v3_1_1 {
            throw ConfigurationError(source: source, key: "\(key).password", line: line, message: "MQTT 3.1.1 sends a password only with a username")
        }
        bridge.password = password
        return bridge
    }

    private static func bridgeTopics(_ node: Node, key: String, source: String) throws(ConfigurationError) -> [BridgeConfiguration.Topic] {
        guard let sequence = node.sequence, !sequence.isEmpty else {
            throw ConfigurationError(source: source, key: key, line: node.mark.map { $0.line }, message: "expected a list of {filter, direction, qos, local_prefix, remote_prefix}")
        }
        var topics: [BridgeConfiguration.Topic] = []
        for (i, item) in sequence.enumerated() {
            let itemKey = "\(key)[\(i)]"
            guard let map = item.mapping else {
                throw ConfigurationError(source: source, key: itemKey, line: item.mark.map { $0.line }, message: "expected {filter, direction, qos}")
            }
            var filter: String?
            var direction: BridgeConfiguration.Direction?
            var topic = BridgeConfiguration.Topic(filter: "", direction: .out)
            for (k, v) in map {
                let name = k.string ?? "?"
                let value = v.scalar?.string
                func fail(_ expected: String) -> ConfigurationError {
                    ConfigurationError(source: source, key: "\(itemKey).\(name)", line: v.mark.map { $0.line }, message: "expected \(expected), got \(describe(v))")
                }
                switch name {
                case "filter":
                    guard let f = value, (try? Topic.validateFilter(f)) != nil, SharedSubscription(f) == nil else {
                        throw fail("a topic filter such as sensors/# (not a shared subscription)")
                    }
                    filter = f
                case "direction":
                    guard let d = value.flatMap(BridgeConfiguration.Direction.init(rawValue:)) else { throw fail("in, out or both") }
                    direction = d
                case "qos":
                    guard let q = value.flatMap(UInt8.init).flatMap(QoS.init(rawValue:)) else { throw fail("0, 1 or 2") }
                    topic.qos = q
                case "local_prefix", "remote_prefix":
                    let prefix = value ?? ""
                    guard !prefix.contains("+"), !prefix.contains("#") else { throw fail("a topic prefix without wildcards") }
                    if name == "local_prefix" { topic.localPrefix = prefix } else { topic.remotePrefix = prefix }
                default:
                    throw ConfigurationError(source: source, key: "\(itemKey).\(name)", line: k.mark.map { $0.line }, message: "unknown key")
                }
            }
            guard let filter else {
                throw ConfigurationError(source: source, key: "\(itemKey).filter", line: item.mark.map { $0.line }, message: "missing: the topic filter")
            }
            guard let direction else {
                throw ConfigurationError(source: source, key: "\(itemKey).direction", line: item.mark.map { $0.line }, message: "missing: in, out or both")
            }
            topic.filter = filter
            topic.direction = direction
            for whole in [topic.localFilter, topic.remoteFilter] where (try? Topic.validateFilter(whole)) == nil {
                throw ConfigurationError(source: source, key: "\(itemKey).filter", line: item.mark.map { $0.line },
                                         message: "\(whole) (prefix and filter) is not a valid topic filter")
            }
            topics.append(topic)
        }
        return topics
    }

    /// `tls:` of a bridge: the remote is verified against `cafile` (or the system's CAs when
    /// none is given), under `server_name` (default: `host`); `cert` and `key` for mutual TLS.
    private static func bridgeTLS(_ node: Node, key: String, source: String) throws(ConfigurationError) -> TLSConfiguration {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: key, line: node.mark.map { $0.line }, message: "expected {cafile, cert, key, server_name}")
        }
        var tls = TLSConfiguration(peerVerification: .required)
        for (k, v) in map {
            let name = k.string ?? "?"
            guard let value = v.scalar?.string, !value.isEmpty else {
                throw ConfigurationError(source: source, key: "\(key).\(name)", line: v.mark.map { $0.line }, message: "expected a value, got \(describe(v))")
            }
            switch name {
            case "cafile": tls.caFile = value
            case "capath": tls.caDirectory = value
            case "cert": tls.certificateChainFile = value
            case "key": tls.privateKeyFile = value
            case "server_name": tls.serverName = value
            case "insecure":
                guard let flag = Bool(value) else {
                    throw ConfigurationError(source: source, key: "\(key).insecure", line: v.mark.map { $0.line }, message: "expected true or false, got \(describe(v))")
                }
                if flag { tls.peerVerification = .none }
            default:
                throw ConfigurationError(source: source, key: "\(key).\(name)", line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        if (tls.certificateChainFile == nil) != (tls.privateKeyFile == nil) {
            throw ConfigurationError(source: source, key: "\(key).cert", line: node.mark.map { $0.line }, message: "cert and key go together")
        }
        return tls
    }

    /// "67108864", "64MiB", "512KiB", "1GiB" (also KB/MB/GB, taken as powers of 1024).
    public static func byteSize(_ text: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("B", 1)]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            guard let n = Int(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { return nil }
            return n.multipliedReportingOverflow(by: factor).overflow ? nil : n * factor
        }
        return Int(trimmed).flatMap { $0 >= 0 ? $0 : nil }
    }
}
