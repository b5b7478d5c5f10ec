import Logging
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The broker: listeners, one `Router` per event loop, and their shared state.
///
/// `start()` binds every listener (port 0 picks a free port; see `localAddresses`),
/// `shutdown()` stops accepting, closes every client and stops the event loops it made.
public final class MQTTBroker: Sendable {
    public let configuration: BrokerConfiguration
    private let core: BrokerCore
    private let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let routers: [Router]
    private let routerByLoop: [ObjectIdentifier: Router]
    private let serverChannels = NIOLockedValueBox<[any Channel]>([])
    private let isShutDown = NIOLockedValueBox(false)
    /// The TLS context each TLS listener hands to new connections; replaced on reload.
    private let tlsContexts = NIOLockedValueBox<[Int: TLSContext]>([:])

    public init(configuration: BrokerConfiguration, group: MultiThreadedEventLoopGroup? = nil, logger: Logger = Logger(label: "martlet")) {
        self.configuration = configuration
        self.core = BrokerCore(configuration: configuration, logger: logger)
        if let group {
            self.group = group
            self.ownsGroup = false
        } else {
            let threads = configuration.eventLoops > 0 ? configuration.eventLoops : System.coreCount
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            self.ownsGroup = true
        }
        var routers: [Router] = []
        var byLoop: [ObjectIdentifier: Router] = [:]
        for (i, loop) in self.group.makeIterator().enumerated() {
            let router = Router(index: i, eventLoop: loop, core: core)
            routers.append(router)
            byLoop[ObjectIdentifier(loop)] = router
        }
        self.routers = routers
        self.routerByLoop = byLoop
    }

    /// Addresses the listeners are bound to, in configuration order.
    public var localAddresses: [SocketAddress] {
        serverChannels.withLockedValue { $0.compactMap(\.localAddress) }
    }

    public var counters: BrokerCounters.Snapshot { core.counters.snapshot }
    public var retainedCount: Int { core.retained.count }

    public func start() async throws {
        let routers = self.routers
        for router in routers {
            try await router.eventLoop.submit { router.assumeIsolated { $0.start(peers: routers) } }.get()
        }
        do {
            for (i, listener) in configuration.listeners.enumerated() {
                if let tls = listener.tls {
                    let context = try TLSContext(configuration: tls, role: .server)
                    tlsContexts.withLockedValue { $0[i] = context }
                }
                let channel = try await bind(listener, index: i)
                serverChannels.withLockedValue { $0.append(channel) }
                core.logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            }
        } catch {
            try? await shutdown()
            throw error
        }
    }

    private func bind(_ listener: BrokerConfiguration.Listener, index: Int) async throws -> any Channel {
        let routerByLoop = self.routerByLoop
        let configuration = self.configuration
        let logger = core.logger
        let tlsContexts = self.tlsContexts
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.listenBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let router = routerByLoop[ObjectIdentifier(channel.eventLoop)]!
                    if let context = tlsContexts.withLockedValue({ $0[index] }) {
                        // The TLS handshake counts against the connect timeout.
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: context, handshakeTimeout: configuration.connectTimeout, shutdownTimeout: .zero))
                    }
                    let handler = MQTTConnectionHandler(router: router, configuration: configuration, logger: logger)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: listener.host, port: listener.port)
            .get()
    }

    /// Re-reads every TLS listener's certificate, key and CA files. New connections get the
    /// new context; existing ones keep theirs. A listener whose files do not load keeps its
    /// old context and its error is returned (and logged).
    @discardableResult
    public func reloadTLS() -> [TLSError] {
        var errors: [TLSError] = []
        for (i, listener) in configuration.listeners.enumerated() {
            guard let tls = listener.tls else { continue }
            do {
                let context = try TLSContext(configuration: tls, role: .server)
                tlsContexts.withLockedValue { $0[i] = context }
                core.logger.info("TLS context reloaded", metadata: ["listener": "\(listener.host):\(listener.port)"])
            } catch {
                core.logger.error("TLS reload failed, keeping the running context", metadata: [
                    "listener": "\(listener.host):\(listener.port)", "error": "\(error)",
                ])
                errors.append(error)
            }
        }
        return errors
    }

    /// Stops accepting, closes every client connection (v5 clients get DISCONNECT 0x8B) and
    /// stops the event loops the broker created. Calling it again does nothing.
    public func shutdown() async throws {
        let already = isShutDown.withLockedValue { done in
            defer { done = true }
            return done
        }
        if already { return }
        let channels = serverChannels.withLockedValue { channels in
            defer { channels = [] }
            return channels
        }
        for channel in channels { try? await channel.close() }
        for router in routers {
            try? await router.eventLoop.submit { router.assumeIsolated { $0.stop() } }.get()
        }
        if ownsGroup { try await group.shutdownGracefully() }
    }

    // MARK: Introspection

    /// Open connections, sessions (online and offline) and subscriptions, over all loops.
    public func statistics() async throws -> (connections: Int, sessions: Int, subscriptions: Int) {
        var result = (connections: 0, sessions: 0, subscriptions: 0)
        for router in routers {
            let r = try await router.eventLoop.submit {
                router.assumeIsolated { ($0.connectionCount, $0.sessionCount, $0.subscriptionCount) }
            }.get()
            result.connections += r.0
            result.sessions += r.1
            result.subscriptions += r.2
        }
        return result
    }
}
