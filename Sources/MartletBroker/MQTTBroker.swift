import Logging
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
            for listener in configuration.listeners {
                let channel = try await bind(listener)
                serverChannels.withLockedValue { $0.append(channel) }
                core.logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            }
        } catch {
            try? await shutdown()
            throw error
        }
    }

    private func bind(_ listener: BrokerConfiguration.Listener) async throws -> any Channel {
        let routerByLoop = self.routerByLoop
        let configuration = self.configuration
        let logger = core.logger
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.listenBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let router = routerByLoop[ObjectIdentifier(channel.eventLoop)]!
                    let handler = MQTTConnectionHandler(router: router, configuration: configuration, logger: logger)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: listener.host, port: listener.port)
            .get()
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
