import Foundation
import MartletAuth
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

extension MQTTBroker {
    /// Method and path (below `/api/v1`) of every admin API route.
    public static var adminRoutes: [(method: String, path: String)] { AdminAPI.routes }
}

/// One admin API request, once the HTTP handler has it whole and authorized.
struct AdminRequest: Sendable {
    var method: HTTPMethod
    /// The path below `/api/v1`, split at `/` (percent-decoded).
    var segments: [String]
    var query: [String: String]
    var body: ByteBuffer?
}

struct AdminResponse: Sendable {
    var status: HTTPResponseStatus
    var body: [UInt8]

    static func json<T: Encodable>(_ value: T, _ status: HTTPResponseStatus = .ok) -> AdminResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return AdminResponse(status: status, body: Array(data))
    }

    static func error(_ status: HTTPResponseStatus, _ message: String) -> AdminResponse {
        json(AdminError(error: message), status)
    }

    static let noContent = AdminResponse(status: .noContent, body: [])
}

/// `/api/v1/…`: clients, sessions, subscriptions, retained topics, publishing, figures and
/// listeners, over the routers' loops. Every route is in `routes` and in `openAPIDocument`.
final class AdminAPI: Sendable {
    private let routers: [Router]
    private let core: BrokerCore
    private let boundAddresses: @Sendable () -> [SocketAddress?]
    /// Applies the password file and ACL as a SIGHUP would.
    private let reloadSecurity: @Sendable () throws -> Void
    /// One change to the password file or ACL at a time.
    private let fileLock = NIOLock()

    init(routers: [Router], core: BrokerCore, boundAddresses: @escaping @Sendable () -> [SocketAddress?],
         reloadSecurity: @escaping @Sendable () throws -> Void = {}) {
        self.routers = routers
        self.core = core
        self.boundAddresses = boundAddresses
        self.reloadSecurity = reloadSecurity
    }

    /// Method and path template of every route (`{id}`: one path segment).
    static let routes: [(method: String, path: String)] = [
        ("GET", "/clients"), ("GET", "/clients/{id}"), ("DELETE", "/clients/{id}"),
        ("GET", "/sessions"), ("DELETE", "/sessions/{id}"),
        ("GET", "/subscriptions"),
        ("GET", "/topics/retained"), ("DELETE", "/topics/retained"),
        ("POST", "/publish"),
        ("GET", "/stats"), ("GET", "/listeners"),
        ("GET", "/users"), ("POST", "/users"), ("DELETE", "/users/{id}"),
        ("GET", "/acl"), ("PUT", "/acl"),
    ]

    func handle(_ request: AdminRequest, on loop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        let route = request.segments.count == 2 && ["clients", "sessions", "users"].contains(request.segments[0])
            ? [request.segments[0], "{id}"] : request.segments
        let id = route.last == "{id}" ? request.segments[1] : ""
        switch (request.method, route) {
        case (.GET, ["clients"]):
            return clients(request.query, on: loop)
        case (.GET, ["clients", "{id}"]):
            return first(on: loop) { $0.adminClientDetail(id) }.map { client in
                client.map { .json($0) } ?? .error(.notFound, "no session for client id \(id)")
            }
        case (.DELETE, ["clients", "{id}"]):
            let discard = request.query["discard_session"] == "true"
            return gather(on: loop) { $0.adminDisconnect(id, discardSession: discard) }.map { done in
                done.contains(true) ? .noContent : .error(.notFound, "no connected client with id \(id)")
            }
        case (.GET, ["sessions"]):
            return sessions(request.query, on: loop)
        case (.DELETE, ["sessions", "{id}"]):
            return gather(on: loop) { $0.adminEndSession(id) }.map { done in
                done.contains(true) ? .noContent : .error(.notFound, "no offline session for client id \(id) (a connected client: DELETE /clients/{id}?discard_session=true)")
            }
        case (.GET, ["subscriptions"]):
            let filter = request.query["filter"]
            if let filter, (try? Topic.validateFilter(filter)) == nil {
                return loop.makeSucceededFuture(.error(.badRequest, "not a valid topic filter: \(filter)"))
            }
            let (offset, limit) = Self.paging(request.query)
            return gather(on: loop) { $0.adminSubscriptions(matching: filter) }.map { lists in
                let all = lists.joined().sorted { ($0.clientID, $0.filter) < ($1.clientID, $1.filter) }
                return .json(AdminPage(total: all.count, offset: offset, limit: limit, items: Array(all.dropFirst(offset).prefix(limit))))
            }
        case (.GET, ["topics", "retained"]):
            return loop.makeSucceededFuture(retained(request.query))
        case (.DELETE, ["topics", "retained"]):
            guard let topic = request.query["topic"], (try? Topic.validateName(topic)) != nil else {
                return loop.makeSucceededFuture(.error(.badRequest, "give the retained topic to delete: ?topic=a/b"))
            }
            guard core.retained.matching(topic).contains(where: { $0.topic == topic }) else {
                return loop.makeSucceededFuture(.error(.notFound, "no retained message on \(topic)"))
            }
            return publish(Message(topic: topic, payload: ByteBuffer(), qos: .atMostOnce, retain: true), on: loop)
        case (.POST, ["publish"]):
            return publish(request.body, on: loop)
        case (.GET, ["stats"]):
            return loop.makeSucceededFuture(stats())
        case (.GET, ["listeners"]):
            return loop.makeSucceededFuture(listeners())
        case (.GET, ["users"]), (.POST, ["users"]), (.DELETE, ["users", "{id}"]), (.GET, ["acl"]), (.PUT, ["acl"]):
            // File work (and deriving a password's key) off the event loop.
            return NIOThreadPool.singleton.runIfActive(eventLoop: loop) { [self] in
                fileLock.withLock { securityFiles(request.method, route.first!, id: id, body: request.body) }
            }
        default:
            let known = Self.routes.contains { route in Self.matches(route.path, request.segments) }
            return loop.makeSucceededFuture(known
                ? .error(.methodNotAllowed, "\(request.method) is not allowed here; see /api/v1/openapi.json")
                : .error(.notFound, "no such route; see /api/v1/openapi.json"))
        }
    }

    static func matches(_ template: String, _ segments: [String]) -> Bool {
        let parts = template.split(separator: "/").map(String.init)
        return parts.count == segments.count && zip(parts, segments).allSatisfy { $0 == "{id}" || $0 == $1 }
    }

    // MARK: Routes

    /// `?prefix=&user=&state=connected|offline|lagging|stalled&sort=id|queued|dropped&offset=&limit=`.
    private func clients(_ query: [String: String], on loop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        let (offset, limit) = Self.paging(query)
        let sort = query["sort"] ?? "id"
        guard ["id", "queued", "dropped"].contains(sort) else {
            return loop.makeSucceededFuture(.error(.badRequest, "sort is one of id, queued, dropped"))
        }
        let state = query["state"]
        guard state == nil || ["connected", "offline", "lagging", "stalled"].contains(state!) else {
            return loop.makeSucceededFuture(.error(.badRequest, "state is one of connected, offline, lagging, stalled"))
        }
        return gather(on: loop) { $0.adminClients() }.map { lists in
            var all = lists.joined().filter { c in
                if let prefix = query["prefix"], !c.id.hasPrefix(prefix) { return false }
                if let user = query["user"], c.username != user { return false }
                if let address = query["address"], !(c.remoteAddress?.contains(address) ?? false) { return false }
                switch state {
                case "connected": return c.connected
                case "offline": return !c.connected
                case "lagging": return c.lagging
                case "stalled": return c.stalled
                default: return true
                }
            }
            switch sort {
            case "queued": all.sort { ($0.queuedBytes, $1.id) > ($1.queuedBytes, $0.id) }
            case "dropped": all.sort { ($0.droppedTotal, $1.id) > ($1.droppedTotal, $0.id) }
            default: all.sort { $0.id < $1.id }
            }
            return .json(AdminPage(total: all.count, offset: offset, limit: limit, items: Array(all.dropFirst(offset).prefix(limit))))
        }
    }

    /// Offline sessions kept for their clients.
    private func sessions(_ query: [String: String], on loop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        let (offset, limit) = Self.paging(query)
        return gather(on: loop) { $0.adminClients().filter { !$0.connected } }.map { lists in
            let all = lists.joined().sorted { $0.id < $1.id }
            return .json(AdminPage(total: all.count, offset: offset, limit: limit, items: Array(all.dropFirst(offset).prefix(limit))))
        }
    }

    /// `?match=<filter>` (default `#`) and paging.
    private func retained(_ query: [String: String]) -> AdminResponse {
        let filter = query["match"] ?? "#"
        guard (try? Topic.validateFilter(filter)) != nil else { return .error(.badRequest, "not a valid topic filter: \(filter)") }
        let (offset, limit) = Self.paging(query)
        let all = core.retained.matching(filter).sorted { $0.topic < $1.topic }
        let items = all.dropFirst(offset).prefix(limit).map { m in
            AdminRetained(topic: m.topic, qos: Int(m.qos.rawValue), bytes: m.payload.readableBytes,
                          payload: String(validating: m.payload.readableBytesView, as: UTF8.self))
        }
        return .json(AdminPage(total: all.count, offset: offset, limit: limit, items: Array(items)))
    }

    /// `{"topic": "a/b", "payload": "text", "qos": 1, "retain": false}`, published as the broker.
    private func publish(_ body: ByteBuffer?, on loop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        guard let body, let request = try? JSONDecoder().decode(AdminPublish.self, from: Data(body.readableBytesView)) else {
            return loop.makeSucceededFuture(.error(.badRequest, "expected JSON {\"topic\": …, \"payload\": …, \"qos\": 0|1|2, \"retain\": false}"))
        }
        guard (try? Topic.validateName(request.topic)) != nil, !request.topic.hasPrefix("$") else {
            return loop.makeSucceededFuture(.error(.badRequest, "not a topic a client may publish to: \(request.topic)"))
        }
        guard let qos = QoS(rawValue: UInt8(clamping: request.qos ?? 0)), (0...2).contains(request.qos ?? 0) else {
            return loop.makeSucceededFuture(.error(.badRequest, "qos is 0, 1 or 2"))
        }
        // The ACL decides for the admin identity (`admin_user`), as for a client of that name.
        let user = core.live.withLockedValue { $0.adminUser }
        if let acl = core.security.withLockedValue({ $0.acl }), !acl.allows(.write, request.topic, username: user, clientID: "$admin") {
            return loop.makeSucceededFuture(.error(.forbidden, "the ACL does not let \(user) (admin_user) publish to \(request.topic)"))
        }
        return publish(Message(topic: request.topic, payload: ByteBuffer(string: request.payload ?? ""), qos: qos,
                               retain: request.retain ?? false), on: loop)
    }

    private func publish(_ message: Message, on loop: any EventLoop) -> EventLoopFuture<AdminResponse> {
        guard let router = routers.first else { return loop.makeSucceededFuture(.error(.serviceUnavailable, "no router")) }
        return router.eventLoop.submit { router.assumeIsolated { $0.adminPublish(message) } }.hop(to: loop).map { .noContent }
    }

    /// Every figure of /metrics: `{"connections": 3, "messages_dropped_total": {"reason=queue_full": 0, …}, …}`.
    private func stats() -> AdminResponse {
        let snapshot = core.counters.snapshot
        var result: [String: Any] = [:]
        for entry in BrokerCounters.catalog {
            let value = snapshot[keyPath: entry.value]
            if entry.labels.isEmpty {
                result[entry.metric] = value
            } else {
                var labelled = result[entry.metric] as? [String: Int] ?? [:]
                labelled[entry.labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")] = value
                result[entry.metric] = labelled
            }
        }
        result["retained_messages"] = core.retained.count
        let data = (try? JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])) ?? Data("{}".utf8)
        return AdminResponse(status: .ok, body: Array(data))
    }

    private func listeners() -> AdminResponse {
        let configured = core.live.withLockedValue { $0.listeners }
        let bound = boundAddresses()
        let items = configured.enumerated().map { i, l in
            AdminListener(host: l.host, port: l.port, bound: i < bound.count ? bound[i]?.adminDescription : nil,
                          tls: l.tls != nil, websocket: l.webSocket, proxyProtocol: l.proxyProtocol,
                          allowAnonymous: l.allowAnonymous, maxConnections: l.maximumConnections)
        }
        return .json(items)
    }

    /// Users of `password_file` and the ACL of `acl_file`, changed at run time: the file is
    /// rewritten atomically (a temporary file renamed over it), then loaded as SIGHUP would, so
    /// the files stay the source of truth.
    private func securityFiles(_ method: HTTPMethod, _ resource: String, id: String, body: ByteBuffer?) -> AdminResponse {
        let configuration = core.live.withLockedValue { $0 }
        let text = body.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
        do {
            switch (method, resource) {
            case (.GET, "acl"):
                guard let path = configuration.aclFile else { return .error(.conflict, "no acl_file is configured") }
                return .json(["acl": try ConfigurationError.readTextFile(path, key: "acl_file")])
            case (.PUT, "acl"):
                guard let path = configuration.aclFile else { return .error(.conflict, "no acl_file is configured") }
                do {
                    _ = try AccessControlList(parsing: text, source: "request")
                } catch {
                    return .error(.badRequest, "\(error)")
                }
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                try reloadSecurity()
                return .noContent
            default:
                break
            }
            guard let path = configuration.passwordFile else { return .error(.conflict, "no password_file is configured") }
            var file = try PasswordFile(parsing: ConfigurationError.readTextFile(path, key: "password_file"), source: path)
            switch method {
            case .GET:
                return .json(file.order)
            case .POST:
                guard let user = try? JSONDecoder().decode(AdminUser.self, from: Data(text.utf8)),
                      !user.username.isEmpty, !user.username.contains(":"), !user.password.isEmpty else {
                    return .error(.badRequest, "expected JSON {\"username\": …, \"password\": …} (no ':' in the user name)")
                }
                let existed = file.entries[user.username] != nil
                file.set(user: user.username, password: user.password)
                try file.rendered.write(toFile: path, atomically: true, encoding: .utf8)
                try reloadSecurity()
                return .json(["username": user.username], existed ? .ok : .created)
            default:
                guard file.entries[id] != nil else { return .error(.notFound, "no user \(id) in the password file") }
                file.remove(user: id)
                try file.rendered.write(toFile: path, atomically: true, encoding: .utf8)
                try reloadSecurity()
                return .noContent
            }
        } catch {
            return .error(.internalServerError, "\(error)")
        }
    }

    // MARK: Helpers

    /// The tokens of an `admin_token_file`: one per line, blank lines and `#` comments
    /// skipped; at least one, each at least 16 characters.
    static func tokens(_ text: String, source: String) throws(ConfigurationError) -> Set<String> {
        var tokens: Set<String> = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard line.count >= 16, !line.contains(" ") else {
                throw ConfigurationError(source: source, key: "admin_token_file", line: i + 1, message: "a token is one word of at least 16 characters")
            }
            tokens.insert(line)
        }
        guard !tokens.isEmpty else {
            throw ConfigurationError(source: source, key: "admin_token_file", line: nil, message: "no token in the file")
        }
        return tokens
    }

    /// `offset` (default 0) and `limit` (default 100, at most 1,000).
    static func paging(_ query: [String: String]) -> (offset: Int, limit: Int) {
        let offset = max(0, query["offset"].flatMap(Int.init) ?? 0)
        let limit = min(1000, max(1, query["limit"].flatMap(Int.init) ?? 100))
        return (offset, limit)
    }

    /// `body` on every router's loop; the results, in router order, on `loop`.
    private func gather<T: Sendable>(on loop: any EventLoop, _ body: @escaping @Sendable (isolated Router) -> T) -> EventLoopFuture<[T]> {
        let futures = routers.map { router in router.eventLoop.submit { router.assumeIsolated(body) } }
        return EventLoopFuture.whenAllSucceed(futures, on: loop)
    }

    private func first<T: Sendable>(on loop: any EventLoop, _ body: @escaping @Sendable (isolated Router) -> T?) -> EventLoopFuture<T?> {
        gather(on: loop, body).map { $0.lazy.compactMap { $0 }.first }
    }
}
