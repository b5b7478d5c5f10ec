import NIOCore

/// What the admin API (`/api/v1/…`) answers with, as JSON.

/// A client id's session: connected or not, what it holds and what it lost.
public struct AdminClient: Codable, Sendable, Hashable {
    public var id: String
    public var username: String?
    public var protocolVersion: String
    public var connected: Bool
    public var remoteAddress: String?
    public var listener: String?
    /// tcp, tls, ws or wss.
    public var transport: String?
    /// TLS protocol version and cipher suite (TLS and wss connections).
    public var tlsVersion: String?
    public var tlsCipher: String?
    /// Seconds since the epoch.
    public var connectedAt: Int?
    public var keepAlive: Int?
    /// Seconds the session outlives its connection (nil: never expires).
    public var sessionExpiry: Int?
    public var subscriptions: Int
    public var queuedMessages: Int
    public var queuedBytes: Int
    public var inflight: Int
    /// Messages it did not get, by reason (only the reasons with any).
    public var dropped: [String: Int]
    public var droppedTotal: Int
    /// Its outbox passed half its limits and is draining (publishers may be held back).
    public var lagging: Bool
    /// Lagging without progress: no longer holds publishers back.
    public var stalled: Bool
    /// With `GET /clients/{id}`: its subscriptions.
    public var subscriptionList: [AdminSubscription]?

    enum CodingKeys: String, CodingKey {
        case id, username, connected, listener, transport, subscriptions, inflight, dropped, lagging, stalled
        case protocolVersion = "protocol", remoteAddress = "remote_address", connectedAt = "connected_at"
        case keepAlive = "keepalive_s", sessionExpiry = "session_expiry_s", queuedMessages = "queued_messages"
        case tlsVersion = "tls_version", tlsCipher = "tls_cipher"
        case queuedBytes = "queued_bytes", droppedTotal = "dropped_total", subscriptionList = "subscription_list"
    }
}

public struct AdminSubscription: Codable, Sendable, Hashable {
    public var clientID: String
    public var filter: String
    public var qos: Int
    public var noLocal: Bool
    public var retainAsPublished: Bool

    enum CodingKeys: String, CodingKey {
        case filter, qos
        case clientID = "client_id", noLocal = "no_local", retainAsPublished = "retain_as_published"
    }
}

struct AdminRetained: Codable, Sendable {
    var topic: String
    var qos: Int
    var bytes: Int
    /// The payload as UTF-8 text when it is valid UTF-8 (nil otherwise).
    var payload: String?
}

struct AdminListener: Codable, Sendable {
    var host: String
    var port: Int
    var bound: String?
    var tls: Bool
    var websocket: Bool
    var proxyProtocol: Bool
    var allowAnonymous: Bool
    var maxConnections: Int

    enum CodingKeys: String, CodingKey {
        case host, port, bound, tls, websocket
        case proxyProtocol = "proxy_protocol", allowAnonymous = "allow_anonymous", maxConnections = "max_connections"
    }
}

struct AdminPublish: Codable, Sendable {
    var topic: String
    var payload: String?
    var qos: Int?
    var retain: Bool?
}

struct AdminPage<Item: Codable & Sendable>: Codable, Sendable {
    var total: Int
    var offset: Int
    var limit: Int
    var items: [Item]
}

struct AdminError: Codable, Sendable {
    var error: String
}

struct AdminUser: Codable, Sendable {
    var username: String
    var password: String
}

extension SocketAddress {
    /// `127.0.0.1:1883`, `[::1]:1883`.
    var adminDescription: String {
        guard let ip = ipAddress, let port else { return "\(self)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
