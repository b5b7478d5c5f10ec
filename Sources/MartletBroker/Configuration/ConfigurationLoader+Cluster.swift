import MartletAuth
import Yams

/// `cluster:` in the config file. Every error names the key (`cluster.nats[1]`).
extension ConfigurationLoader {
    static func cluster(_ node: Node, source: String) throws(ConfigurationError) -> ClusterConfiguration {
        guard let map = node.mapping else {
            throw ConfigurationError(source: source, key: "cluster", line: node.mark.map { $0.line },
                                     message: "expected {node_id, nats, replicas, …}")
        }
        var cluster = ClusterConfiguration(nodeID: "", servers: [])
        for (k, v) in map {
            let name = k.string ?? "?"
            let key = "cluster.\(name)"
            let entry = Entry(source: source, key: key, value: v)
            func fail(_ expected: String, _ node: Node, key: String) -> ConfigurationError {
                Entry(source: source, key: key, value: node).fail(expected)
            }
            switch name {
            case "node_id":
                let id = try entry.text()
                guard id.utf8.count <= 64, id.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "_" }) else {
                    throw entry.fail("a name of at most 64 ASCII letters, digits, '-' or '_'")
                }
                cluster.nodeID = id
            case "nats":
                guard let list = v.sequence, !list.isEmpty else { throw entry.fail("a list of NATS server URLs") }
                for (i, item) in list.enumerated() {
                    guard let url = item.scalar?.string, Self.isNATSURL(url) else {
                        throw fail("a URL such as nats://127.0.0.1:4222 or tls://host:4222", item, key: "cluster.nats[\(i)]")
                    }
                    cluster.servers.append(url)
                }
            case "replicas": cluster.replicas = try entry.integer(1...5)
            case "credentials_file": cluster.credentialsFile = try entry.text()
            case "ack_timeout_ms": cluster.ackTimeout = try entry.integer(100...600_000)
            case "max_pending_acks": cluster.maximumPendingAcks = try entry.integer(1...10_000_000)
            case "startup_timeout_ms": cluster.startupTimeout = try entry.integer(0...3_600_000)
            case "checkpoint_interval_ms": cluster.checkpointInterval = try entry.integer(100...600_000)
            case "session_load_timeout_ms": cluster.sessionLoadTimeout = try entry.integer(100...600_000)
            case "heartbeat_interval_ms": cluster.heartbeatInterval = try entry.integer(100...60_000)
            case "node_timeout_ms": cluster.nodeTimeout = try entry.integer(300...600_000)
            case "stream_max_age_s": cluster.streamMaximumAge = try entry.integer(1...31_536_000)
            case "stream_max_bytes":
                guard let text = v.scalar?.string, let bytes = byteSize(text), bytes >= 1 << 20 else {
                    throw entry.fail("a size of at least 1MiB (bytes, or with KiB, MiB, GiB)")
                }
                cluster.streamMaximumBytes = bytes
            case "tls":
                guard let tls = v.mapping else { throw entry.fail("{cafile, cert, key}") }
                for (tk, tv) in tls {
                    let tname = tk.string ?? "?"
                    guard let value = tv.scalar?.string, !value.isEmpty else {
                        throw fail("a value", tv, key: "cluster.tls.\(tname)")
                    }
                    switch tname {
                    case "cafile": cluster.caFile = value
                    case "cert": cluster.certificateFile = value
                    case "key": cluster.keyFile = value
                    default:
                        throw ConfigurationError(source: source, key: "cluster.tls.\(tname)", line: tk.mark.map { $0.line }, message: "unknown key")
                    }
                }
                if (cluster.certificateFile == nil) != (cluster.keyFile == nil) {
                    throw ConfigurationError(source: source, key: "cluster.tls", line: v.mark.map { $0.line }, message: "cert and key go together")
                }
            default:
                throw ConfigurationError(source: source, key: key, line: k.mark.map { $0.line }, message: "unknown key")
            }
        }
        let line = node.mark.map { $0.line }
        if cluster.nodeTimeout < 2 * cluster.heartbeatInterval {
            throw ConfigurationError(source: source, key: "cluster.node_timeout_ms", line: line,
                                     message: "must be at least twice heartbeat_interval_ms (\(cluster.heartbeatInterval))")
        }
        if cluster.nodeID.isEmpty {
            throw ConfigurationError(source: source, key: "cluster.node_id", line: line, message: "required: this node's name in the cluster")
        }
        if cluster.servers.isEmpty {
            throw ConfigurationError(source: source, key: "cluster.nats", line: line, message: "required: the NATS servers' URLs")
        }
        return cluster
    }

    /// `nats://host:port` or `tls://host:port` (the port may be left out).
    static func isNATSURL(_ url: String) -> Bool {
        for scheme in ["nats://", "tls://"] where url.hasPrefix(scheme) {
            let rest = url.dropFirst(scheme.count)
            guard !rest.isEmpty, !rest.contains(where: { $0 == " " || $0 == "/" }) else { return false }
            if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
                guard let port = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(port) else { return false }
            }
            return true
        }
        return false
    }
}
