import MartletTLS
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP endpoint (`metrics:`): /metrics, /healthz, and with `admin_token_file` the admin
/// API and the dashboard; over TLS with `metrics.tls`.
extension MQTTBroker {
    func bindMetrics(_ metrics: BrokerConfiguration.MetricsListener) async throws -> any Channel {
        let exporter = self.exporter
        let counters = core.counters
        let shared = core.shared
        let storeWriter = self.storeWriter
        let sources = self.metricsSources
        let serverChannels = self.serverChannels
        let admin = AdminAPI(
            routers: routers, core: core, boundAddresses: { serverChannels.withLockedValue { $0.map { $0.first?.localAddress } } },
            reloadSecurity: { [self] in try self.reloadSecurity() })
        let security = core.security
        let tls = try metrics.tls.map { configuration -> TLSContext in
            var http = configuration
            http.applicationProtocols = ["http/1.1"]
            return try TLSContext(configuration: http, role: .server)
        }
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, handshakeTimeout: .seconds(10))) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(
                        exporter: exporter, snapshot: { counters.snapshot }, groups: { shared.statistics() },
                        store: {
                            (storeWriter.withLockedValue { $0 }?.renderMetrics() ?? [])
                                + sources.withLockedValue { $0 }.flatMap { $0() }
                        },
                        admin: admin, tokens: { security.withLockedValue { $0.adminTokens } }))
                }
            }
            .bind(host: metrics.host, port: metrics.port)
            .get()
    }
}
