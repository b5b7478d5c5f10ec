import Foundation
import MartletMQTT
import MartletTLS
import NIOCore
import NIOPosix

/// `mqtt[s]://[user[:password]@]host[:port]/topic`, as `martlet pub -L` and
/// `MQTTClient.publish(to:)` take it. Percent escapes in the user, password and topic are
/// decoded; the port defaults to 1883 (8883 for mqtts).
public struct MQTTURL: Sendable, Hashable {
    public var secure: Bool
    public var user: String?
    public var password: String?
    public var host: String
    public var port: Int
    public var topic: String
    /// ws:// and wss:// URLs: the WebSocket path, the URL's first path segment
    /// (`ws://host:8080/mqtt/sensors/1` is path /mqtt, topic sensors/1); nil for mqtt(s)://.
    public var webSocketPath: String?

    public enum ParseError: Error, Hashable, CustomStringConvertible {
        case scheme, noTopic, badPort, empty
        public var description: String {
            switch self {
            case .scheme: return "must start with mqtt://, mqtts://, ws:// or wss://"
            case .noTopic: return "needs a topic: mqtt://host/topic"
            case .badPort: return "has a bad port"
            case .empty: return "needs a host and a topic"
            }
        }
    }

    public init(string url: String) throws(ParseError) {
        var rest: Substring
        if url.hasPrefix("mqtts://") {
            secure = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("mqtt://") {
            secure = false
            rest = url.dropFirst(7)
        } else if url.hasPrefix("wss://") || url.hasPrefix("ws://") {
            secure = url.hasPrefix("wss://")
            rest = url.dropFirst(secure ? 6 : 5)
            webSocketPath = ""
        } else {
            throw .scheme
        }
        guard let slash = rest.firstIndex(of: "/") else { throw .noTopic }
        var authority = rest[..<slash]
        var afterAuthority = rest[rest.index(after: slash)...]
        if webSocketPath != nil {
            guard let next = afterAuthority.firstIndex(of: "/") else { throw .noTopic }
            webSocketPath = "/" + afterAuthority[..<next]
            afterAuthority = afterAuthority[afterAuthority.index(after: next)...]
        }
        let rawTopic = String(afterAuthority)
        topic = rawTopic.removingPercentEncoding ?? rawTopic
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = String(credentials[..<colon]).removingPercentEncoding
                password = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding
            } else {
                user = String(credentials).removingPercentEncoding
            }
        }
        host = String(authority)
        port = webSocketPath != nil ? (secure ? 443 : 80) : (secure ? 8883 : 1883)
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65_535).contains(p) else { throw .badPort }
            port = p
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !topic.isEmpty else { throw .empty }
    }
}

extension MQTTClient {
    /// For a program that publishes once: connects (TLS for mqtts, with the system CA store
    /// unless `tls` says otherwise), publishes, waits for the QoS flow, disconnects.
    public static func publish(
        to url: URL, payload: ByteBuffer, qos: QoS = .atLeastOnce, retain: Bool = false,
        clientID: String = "martlet-oneshot-" + String(UInt64.random(in: 0...UInt64.max), radix: 36),
        tls: TLSConfiguration? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws {
        let parsed = try MQTTURL(string: url.absoluteString)
        var configuration = MQTTClientConfiguration(host: parsed.host, port: parsed.port, clientID: clientID)
        configuration.username = parsed.user
        configuration.password = parsed.password
        if parsed.secure { configuration.tls = tls ?? TLSConfiguration.client(caFile: nil, serverName: parsed.host) }
        let client = try await MQTTClient.connect(configuration, group: group)
        do {
            try await client.publish(parsed.topic, payload: payload, qos: qos, retain: retain)
        } catch {
            try? await client.disconnect()
            throw error
        }
        try await client.disconnect()
    }
}

/// A few warm connections for an application that publishes now and then: a publish takes an
/// idle connection (opening one when none is idle and fewer than `size` exist), and gives it
/// back. Connections that fail are dropped and replaced on demand. Each connection uses the
/// configured client id with "-1", "-2", … appended.
public actor MQTTClientPool {
    public let configuration: MQTTClientConfiguration
    public let size: Int
    private var idle: [MQTTClient] = []
    private var open = 0
    private var serial = 0
    private var waiting: [CheckedContinuation<MQTTClient?, Never>] = []
    private let group: any EventLoopGroup

    public init(_ configuration: MQTTClientConfiguration, size: Int = 2, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.size = max(1, size)
        self.group = group
    }

    /// Connections open now (idle or in use).
    public var openConnections: Int { open }

    public func publish(_ topic: String, payload: ByteBuffer, qos: QoS = .atLeastOnce, retain: Bool = false) async throws {
        let client = try await take()
        do {
            try await client.publish(topic, payload: payload, qos: qos, retain: retain)
            give(back: client)
        } catch {
            discard(client)
            throw error
        }
    }

    /// Closes every idle connection; connections in use close when given back.
    public func close() async {
        let clients = idle
        idle = []
        open -= clients.count
        for c in clients { try? await c.disconnect() }
    }

    private func take() async throws -> MQTTClient {
        while true {
            if let client = idle.popLast() { return client }
            if open < size {
                open += 1
                serial += 1
                var config = configuration
                config.clientID = configuration.clientID + "-\(serial)"
                do {
                    return try await MQTTClient.connect(config, group: group)
                } catch {
                    open -= 1
                    wakeOne(nil)
                    throw error
                }
            }
            // All in use: wait for one to come back (or for a place to free up).
            if let client = await withCheckedContinuation({ waiting.append($0) }) { return client }
        }
    }

    private func give(back client: MQTTClient) {
        if let next = waiting.first {
            waiting.removeFirst()
            next.resume(returning: client)
        } else {
            idle.append(client)
        }
    }

    private func discard(_ client: MQTTClient) {
        open -= 1
        Task { try? await client.disconnect() }
        wakeOne(nil)
    }

    private func wakeOne(_ client: MQTTClient?) {
        guard !waiting.isEmpty else { return }
        waiting.removeFirst().resume(returning: client)
    }
}
