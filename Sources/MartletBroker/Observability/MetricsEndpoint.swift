import Foundation
import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Prometheus

/// The broker's counters as Prometheus metrics, through swift-metrics with a
/// swift-prometheus registry of its own (no process-wide bootstrap, so several brokers —
/// tests — can each have one).
///
/// Totals are kept by the routers; at each scrape the exporter moves every Prometheus
/// counter by what its total grew since the last scrape, and sets the gauges.
public final class MetricsExporter: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let counters: [(any KeyPath<BrokerCounters.Snapshot, Int> & Sendable, CoreMetrics.Counter)]
    private let gauges: [(any KeyPath<BrokerCounters.Snapshot, Int> & Sendable, CoreMetrics.Gauge)]
    private let uptime: CoreMetrics.Gauge
    private let last = NIOLockedValueBox(BrokerCounters.Snapshot())
    private let startedAt = NIODeadline.now()

    public init() {
        let factory = PrometheusMetricsFactory(registry: registry)
        func counter(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: "martlet_" + name, dimensions: dimensions, factory: factory)
        }
        func gauge(_ name: String) -> CoreMetrics.Gauge {
            CoreMetrics.Gauge(label: "martlet_" + name, dimensions: [], factory: factory)
        }
        counters = BrokerCounters.catalog.filter { $0.kind == .total }.map { ($0.value, counter($0.metric, $0.labels)) }
        gauges = BrokerCounters.catalog.filter { $0.kind == .gauge }.map { ($0.value, gauge($0.metric)) }
        uptime = gauge("uptime_seconds")
    }

    /// The Prometheus text exposition of `snapshot`.
    public func render(_ snapshot: BrokerCounters.Snapshot) -> [UInt8] {
        last.withLockedValue { previous in
            for (path, counter) in counters {
                let delta = snapshot[keyPath: path] - previous[keyPath: path]
                if delta > 0 { counter.increment(by: Int64(delta)) }
            }
            previous = snapshot
        }
        for (path, gauge) in gauges { gauge.record(snapshot[keyPath: path]) }
        uptime.record((NIODeadline.now() - startedAt).nanoseconds / 1_000_000_000)
        return registry.emitToBuffer()
    }

    /// Per share group (`$share/{name}/{filter}`): members, messages picked for a member,
    /// and copies handed to another member (the first left, or went offline without acknowledging).
    static func render(_ groups: [SharedSubscriptions.GroupStatistics]) -> [UInt8] {
        guard !groups.isEmpty else { return [] }
        func label(_ group: String) -> String {
            var escaped = ""
            for c in group {
                switch c {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(c)
                }
            }
            return "{group=\"\(escaped)\"}"
        }
        var text = "# HELP martlet_shared_group_members Sessions subscribed to the share group.\n# TYPE martlet_shared_group_members gauge\n"
        for g in groups { text += "martlet_shared_group_members\(label(g.group)) \(g.members)\n" }
        text += "# HELP martlet_shared_group_delivered_total Messages the share group sent one of its members.\n# TYPE martlet_shared_group_delivered_total counter\n"
        for g in groups { text += "martlet_shared_group_delivered_total\(label(g.group)) \(g.delivered)\n" }
        text += "# HELP martlet_shared_group_redelivered_total Copies handed to another member of the share group.\n# TYPE martlet_shared_group_redelivered_total counter\n"
        for g in groups { text += "martlet_shared_group_redelivered_total\(label(g.group)) \(g.redelivered)\n" }
        return Array(text.utf8)
    }
}

/// `GET /metrics` (Prometheus text format), `GET /healthz` and the admin API (`/api/v1/…`,
/// with a bearer token from `admin_token_file`) over HTTP/1.1.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exporter: MetricsExporter
    private let snapshot: @Sendable () -> BrokerCounters.Snapshot
    private let groups: @Sendable () -> [SharedSubscriptions.GroupStatistics]
    private let store: @Sendable () -> [UInt8]
    private let admin: AdminAPI?
    /// The admin API's bearer tokens as last loaded (nil: the API is off).
    private let tokens: @Sendable () -> Set<String>?
    private var request: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    /// The largest request body taken (POST /api/v1/publish).
    static let maximumBody = 1 << 20

    init(exporter: MetricsExporter, snapshot: @escaping @Sendable () -> BrokerCounters.Snapshot,
         groups: @escaping @Sendable () -> [SharedSubscriptions.GroupStatistics] = { [] },
         store: @escaping @Sendable () -> [UInt8] = { [] },
         admin: AdminAPI? = nil, tokens: @escaping @Sendable () -> Set<String>? = { nil }) {
        self.exporter = exporter
        self.snapshot = snapshot
        self.groups = groups
        self.store = store
        self.admin = admin
        self.tokens = tokens
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            body = nil
            bodyTooLarge = false
        case .body(var part):
            if (body?.readableBytes ?? 0) + part.readableBytes > Self.maximumBody {
                bodyTooLarge = true
            } else if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            guard let head = request else { return }
            request = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if path.hasPrefix("/api/") {
                api(context, head, path: path)
                return
            }
            switch (head.method, path) {
            case (.GET, "/metrics"):
                respond(context, head, .ok, "text/plain; version=0.0.4; charset=utf-8", exporter.render(snapshot()) + MetricsExporter.render(groups()) + store())
            case (.GET, "/"):
                if admin != nil, tokens() != nil {
                    respond(context, head, .ok, "text/html; charset=utf-8", Array(AdminAPI.dashboardPage.utf8))
                } else {
                    respond(context, head, .notFound, "text/plain; charset=utf-8", Array("the dashboard needs admin_token_file\n".utf8))
                }
            case (.GET, "/healthz"):
                respond(context, head, .ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
            case (.GET, _):
                respond(context, head, .notFound, "text/plain; charset=utf-8", Array("not found: try /metrics or /healthz\n".utf8))
            default:
                respond(context, head, .methodNotAllowed, "text/plain; charset=utf-8", Array("GET only\n".utf8))
            }
        }
    }

    /// `/api/v1/…`: off without `admin_token_file` (404), then the bearer token (401 without
    /// one, 403 with a wrong one); `/api/v1/openapi.json` needs none.
    private func api(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, path: String) {
        let json = "application/json"
        func reply(_ response: AdminResponse) { respond(context, head, response.status, json, response.body) }
        guard let admin, let tokens = tokens() else {
            return reply(.error(.notFound, "the admin API is off: set admin_token_file"))
        }
        if head.method == .GET && path == "/api/v1/openapi.json" {
            return respond(context, head, .ok, json, Array(AdminAPI.openAPIDocument.utf8))
        }
        guard let authorization = head.headers.first(name: "Authorization") else {
            return reply(.error(.unauthorized, "send Authorization: Bearer <token> (a token of admin_token_file)"))
        }
        guard authorization.hasPrefix("Bearer "), tokens.contains(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)) else {
            return reply(.error(.forbidden, "the token is not one of admin_token_file"))
        }
        guard path.hasPrefix("/api/v1/") else { return reply(.error(.notFound, "the API is under /api/v1/")) }
        if bodyTooLarge { return reply(.error(.payloadTooLarge, "request body over \(Self.maximumBody) bytes")) }
        let segments = path.dropFirst("/api/v1/".count).split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        let request = AdminRequest(method: head.method, segments: segments, query: Self.query(head.uri), body: body)
        body = nil
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        admin.handle(request, on: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let response): handler.respond(context, head, response.status, json, response.body)
            case .failure(let error): handler.respond(context, head, .internalServerError, json, AdminResponse.error(.internalServerError, "\(error)").body)
            }
        }
    }

    /// The query string's parameters, percent-decoded (`+` is a space).
    static func query(_ uri: String) -> [String: String] {
        guard let q = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return [:] }
        var result: [String: String] = [:]
        for pair in q.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ") }
            let key = parts[0].removingPercentEncoding ?? parts[0]
            result[key] = parts.count > 1 ? (parts[1].removingPercentEncoding ?? parts[1]) : ""
        }
        return result
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8]) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { bound.value.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
