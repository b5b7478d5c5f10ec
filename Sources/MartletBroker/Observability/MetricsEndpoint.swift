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

/// `GET /metrics` (Prometheus text format) and `GET /healthz` over HTTP/1.1.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exporter: MetricsExporter
    private let snapshot: @Sendable () -> BrokerCounters.Snapshot
    private let groups: @Sendable () -> [SharedSubscriptions.GroupStatistics]
    private let store: @Sendable () -> [UInt8]
    private var request: HTTPRequestHead?

    init(exporter: MetricsExporter, snapshot: @escaping @Sendable () -> BrokerCounters.Snapshot,
         groups: @escaping @Sendable () -> [SharedSubscriptions.GroupStatistics] = { [] },
         store: @escaping @Sendable () -> [UInt8] = { [] }) {
        self.exporter = exporter
        self.snapshot = snapshot
        self.groups = groups
        self.store = store
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            switch (head.method, path) {
            case (.GET, "/metrics"):
                respond(context, head, .ok, "text/plain; version=0.0.4; charset=utf-8", exporter.render(snapshot()) + MetricsExporter.render(groups()) + store())
            case (.GET, "/healthz"):
                respond(context, head, .ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
            case (.GET, _):
                respond(context, head, .notFound, "text/plain; charset=utf-8", Array("not found: try /metrics or /healthz\n".utf8))
            default:
                respond(context, head, .methodNotAllowed, "text/plain; charset=utf-8", Array("GET only\n".utf8))
            }
        }
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
