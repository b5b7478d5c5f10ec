import Logging
import MartletAuth
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The broker: listeners, one `Router` per event loop, and their shared state.
///
/// `start()` binds every listener (port 0 picks a free port; see `localAddresses`),
/// `shutdown()` stops accepting, closes every client and stops the event loops it made.
public final class MQTTBroker: Sendable {
    public let configuration: BrokerConfiguration
    let core: BrokerCore
    let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    let routers: [Router]
    private let routerByLoop: [ObjectIdentifier: Router]
    /// The listening sockets of each listener, in configuration order: one, or one per event
    /// loop with `listen_per_thread`.
    let serverChannels = NIOLockedValueBox<[[any Channel]]>([])
    private let metricsChannel = NIOLockedValueBox<(any Channel)?>(nil)
    let exporter = MetricsExporter()
    private let sysTask = NIOLockedValueBox<RepeatedTask?>(nil)
    private let startedAt = NIODeadline.now()

    /// The version reported in `$SYS/broker/version`.
    public static let version = "martlet 0.1.0"
    private let isShutDown = NIOLockedValueBox(false)
    /// The TLS context each TLS listener hands to new connections; replaced on reload.
    private let tlsContexts = NIOLockedValueBox<[Int: TLSContext]>([:])
    /// Open connections per listener, and the broker-wide connection-rate bucket.
    private let listenerConnections: [ConnectionGauge]
    /// The session store's writer (nil: no persistence).
    let storeWriter = NIOLockedValueBox<StoreWriter?>(nil)
    private let rateLimiter: NIOLockedValueBox<TokenBucket?>
    /// Lines other parts of the daemon add to /metrics (the bridges').
    let metricsSources = NIOLockedValueBox<[@Sendable () -> [UInt8]]>([])

    /// `cluster`: this node's link to the other nodes of a cluster (MartletCluster).
    public init(configuration: BrokerConfiguration, group: MultiThreadedEventLoopGroup? = nil, logger: Logger = Logger(label: "martlet"),
                cluster: (any ClusterLink)? = nil) {
        self.configuration = configuration
        self.core = BrokerCore(configuration: configuration, logger: logger, cluster: cluster)
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
        let counters = core.counters
        self.listenerConnections = configuration.listeners.map { _ in ConnectionGauge(broker: counters) }
        self.rateLimiter = NIOLockedValueBox(
            configuration.maximumConnectionRate > 0 ? TokenBucket(ratePerSecond: configuration.maximumConnectionRate, now: .now()) : nil)
    }

    /// Addresses the listeners are bound to, in configuration order.
    public var localAddresses: [SocketAddress] {
        serverChannels.withLockedValue { $0.compactMap { $0.first?.localAddress } }
    }

    public var counters: BrokerCounters.Snapshot { core.counters.snapshot }
    public var retainedCount: Int { core.retained.count }
    /// Each share group's members and deliveries (as `/metrics` shows them).
    public var sharedGroups: [(group: String, members: Int, delivered: Int, redelivered: Int)] {
        core.shared.statistics().map { ($0.group, $0.members, $0.delivered, $0.redelivered) }
    }

    public func start() async throws {
        // A password file or ACL that does not load stops the start, naming the line.
        let security = try Self.loadSecurity(configuration)
        core.security.withLockedValue { $0 = security }
        let routers = self.routers
        var loaded: StoredState?
        var writer: StoreWriter?
        if let persistence = configuration.persistence {
            let started = NIODeadline.now()
            let (store, state) = try Self.openStore(persistence, logger: core.logger)
            loaded = state
            writer = StoreWriter(
                store: store, sync: persistence.sync, commitInterval: persistence.effectiveCommitInterval,
                maximumPendingRecords: persistence.maximumPendingRecords,
                nextSequence: state.nextSequence, nextMessageID: state.nextNegativeMessageID, logger: core.logger)
            writer!.start()
            storeWriter.withLockedValue { $0 = writer }
            core.logger.info("session store loaded", metadata: [
                "path": "\(persistence.path)", "sync": "\(persistence.sync.rawValue)", "sessions": "\(state.sessions.count)",
                "messages": "\(state.sessions.reduce(0) { $0 + $1.deliveries.count })", "retained": "\(state.retained.count)",
                "expired_sessions": "\(state.expiredSessions)", "expired_messages": "\(state.expiredMessages)",
                "ms": "\((NIODeadline.now() - started).nanoseconds / 1_000_000)",
            ])
        }
        let base = loaded?.nextMessageID ?? 1
        let startedWriter = writer
        for router in routers {
            try await router.eventLoop.submit { router.assumeIsolated { $0.start(peers: routers, writer: startedWriter, messageIDBase: base) } }.get()
        }
        do {
            if let loaded { try await recover(loaded) }
            for (i, listener) in configuration.listeners.enumerated() {
                if let tls = listener.tls {
                    let context = try TLSContext(configuration: tls, role: .server)
                    tlsContexts.withLockedValue { $0[i] = context }
                }
                let channels = try await bind(listener, index: i)
                serverChannels.withLockedValue { $0.append(channels) }
                core.logger.info("listening", metadata: [
                    "address": "\(channels.first?.localAddress.map { "\($0)" } ?? "?")", "sockets": "\(channels.count)",
                ])
            }
            startSysPublisher()
            if let metrics = configuration.metrics {
                let channel = try await bindMetrics(metrics)
                metricsChannel.withLockedValue { $0 = channel }
                core.logger.info("metrics endpoint", metadata: [
                    "address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "tls": "\(metrics.tls != nil)",
                    "paths": configuration.adminTokenFile == nil ? "/metrics /healthz" : "/metrics /healthz /api/v1/ / (dashboard)",
                ])
            }
        } catch {
            try? await shutdown()
            throw error
        }
    }

    /// Binds one listener: one listening socket, or with `listen_per_thread` (Linux, more than
    /// one event loop) one SO_REUSEPORT socket per event loop, so every connection is accepted
    /// and served on the same loop — no hand-over of each new channel to another thread.
    private func bind(_ listener: BrokerConfiguration.Listener, index: Int) async throws -> [any Channel] {
        #if os(Linux)
        let loops = Array(group.makeIterator())
        if configuration.listenPerThread, loops.count > 1 {
            // Sockets that all set SO_REUSEPORT share a port, so a second broker of the same
            // user would bind without an error and take half of the connections: a plain bind
            // first says whether anything holds the port. (Port 0: the first socket gets a free
            // port from the kernel and the others bind to that one.)
            if listener.port != 0 { try Self.checkPortIsFree(host: listener.host, port: listener.port) }
            var channels: [any Channel] = []
            do {
                var port = listener.port
                for loop in loops {
                    let channel = try await serverBootstrap(listener, index: index, group: loop)
                        .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                        .bind(host: listener.host, port: port)
                        .get()
                    channels.append(channel)
                    port = channel.localAddress?.port ?? port
                }
            } catch {
                for channel in channels { try? await channel.close() }
                throw error
            }
            return channels
        }
        #endif
        return [try await serverBootstrap(listener, index: index, group: group).bind(host: listener.host, port: listener.port).get()]
    }

    #if os(Linux)
    /// Throws EADDRINUSE (as NIO's bind would) when a socket is bound to `host`:`port`.
    private static func checkPortIsFree(host: String, port: Int) throws {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let family: Int32 = switch address { case .v6: AF_INET6; default: AF_INET }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = address.withSockAddr { pointer, size in Glibc.bind(fd, pointer, socklen_t(size)) }
        if result != 0 { throw IOError(errnoCode: errno, reason: "bind(\(address))") }
    }
    #endif

    private func serverBootstrap(_ listener: BrokerConfiguration.Listener, index: Int, group: any EventLoopGroup) -> ServerBootstrap {
        let routerByLoop = self.routerByLoop
        let configuration = self.configuration
        let connectionSettings = core.connectionSettings
        let logger = core.logger
        let tlsContexts = self.tlsContexts
        let counters = core.counters
        let listenerGauge = listenerConnections[index]
        let rateLimiter = self.rateLimiter
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.listenBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // NIO sets TCP_NODELAY on every accepted socket already (a ServerBootstrap default).
        #if os(Linux)
        // A peer that vanished without FIN: probes find it when idle, TCP_USER_TIMEOUT when
        // data stays unacknowledged. Set on the listening socket: Linux copies them to every
        // socket it accepts, which saves five setsockopt calls per connection.
        bootstrap = bootstrap.serverChannelOption(.socketOption(.so_keepalive), value: 1)
        if configuration.tcpKeepaliveIdle > 0 {
            bootstrap = bootstrap
                .serverChannelOption(.tcpOption(TCP_KEEPIDLE), value: SocketOptionValue(configuration.tcpKeepaliveIdle))
                .serverChannelOption(.tcpOption(TCP_KEEPINTVL), value: 10)
                .serverChannelOption(.tcpOption(TCP_KEEPCNT), value: 3)
        }
        if configuration.tcpUserTimeout > 0 {
            bootstrap = bootstrap.serverChannelOption(.tcpOption(TCP_USER_TIMEOUT), value: SocketOptionValue(configuration.tcpUserTimeout))
        }
        if configuration.tcpDeferAccept > 0 {
            bootstrap = bootstrap.serverChannelOption(.tcpOption(TCP_DEFER_ACCEPT), value: SocketOptionValue(configuration.tcpDeferAccept))
        }
        #else
        bootstrap = bootstrap.childChannelOption(.socketOption(.so_keepalive), value: 1)
        #endif
        let plainFirstRead = !listener.webSocket && !listener.proxyProtocol && listener.tls == nil
        return bootstrap
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Child options set here, synchronously: ServerBootstrap's childChannelOption
                    // applies each one through a chain of futures (allocations per connection).
                    // A publisher that closes while flow control holds its packets is told as
                    // `inputClosed`; the connection closes once those packets have been routed.
                    // Each channel keeps its last receive buffer for the next read: start small so
                    // an idle connection keeps little, not NIO's default 2 KiB; it grows with
                    // traffic. 128 bytes holds a plain CONNECT; TLS, WebSocket and PROXY listeners
                    // start at 256 (a larger start made their idle connections bigger: the buffer
                    // kept is the last one used).
                    if let options = channel.syncOptions {
                        try options.setOption(.allowRemoteHalfClosure, value: true)
                        try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(
                            minimum: 64, initial: plainFirstRead ? 128 : 256, maximum: 65_536))
                        try options.setOption(.writeBufferWaterMark, value: .init(
                            low: configuration.writeBufferLowWater, high: configuration.writeBufferHighWater))
                    }
                    let router = routerByLoop[ObjectIdentifier(channel.eventLoop)]!
                    // Limits as last reloaded; the listener's address and TLS-ness are fixed.
                    let settings = connectionSettings.withLockedValue { $0[index] }
                    let configuration = settings.configuration
                    let listener = settings.listener
                    let refusal = Self.admit(
                        listener: listener, configuration: configuration, counters: counters,
                        listenerGauge: listenerGauge, rateLimiter: rateLimiter)
                    let isTLS = tlsContexts.withLockedValue({ $0[index] }) != nil
                    if let refusal {
                        router.onLoop(refusal.v5 == .connectionRateExceeded ? \.connectionsRefusedRate : \.connectionsRefusedLimit) { $0.count($1) }
                        if isTLS {
                            // No TLS work for a connection that will be refused anyway.
                            channel.close(promise: nil)
                            return
                        }
                    } else {
                        router.onLoop { $0.count(\.connectionsAccepted) }
                    }
                    // An admitted connection is counted out when it closes: by its MQTT handler as
                    // it leaves the pipeline (no per-connection closure), or, where no MQTT handler
                    // is added now (WebSocket: only after the upgrade; or a refusal below), here.
                    var countedOut = refusal != nil
                    defer {
                        if !countedOut { channel.closeFuture.whenComplete { _ in listenerGauge.closed() } }
                    }
                    // Made only where a PROXY header can fill it (one allocation less per connection).
                    let proxiedSource = listener.proxyProtocol ? NIOLoopBoundBox<SocketAddress?>(nil, eventLoop: channel.eventLoop) : nil
                    if let proxiedSource {
                        // The header comes first, before TLS, and only from a trusted proxy.
                        let trusted = configuration.trustedProxies
                        if !trusted.isEmpty, !trusted.contains(where: { range in channel.remoteAddress.map { range.contains($0) } ?? false }) {
                            router.onLoop { $0.count(\.proxyRefused) }
                            logger.debug("PROXY protocol connection from a peer not in trusted_proxies", metadata: [
                                "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")",
                            ])
                            channel.close(promise: nil)
                            return
                        }
                        let loop = channel.eventLoop
                        let remote = channel.remoteAddress
                        try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler(refused: { why in
                            loop.execute { router.assumeIsolated { $0.count(\.proxyRefused) } }
                            logger.debug("connection without a valid PROXY header closed", metadata: [
                                "remote": "\(remote.map { "\($0)" } ?? "?")", "reason": "\(why)",
                            ])
                        }, announced: { header in proxiedSource.value = header.source }))
                    }
                    if let context = tlsContexts.withLockedValue({ $0[index] }) {
                        // The TLS handshake counts against the connect timeout.
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: context, handshakeTimeout: configuration.connectTimeout, shutdownTimeout: .zero))
                    }
                    if listener.webSocket {
                        try Self.configureWebSocket(channel, settings: settings, router: router, refusal: refusal, logger: logger,
                                                    proxiedSource: proxiedSource)
                        return
                    }
                    let handler = MQTTConnectionHandler(
                        router: router, settings: settings, refusal: refusal, logger: logger, countedOut: countedOut ? nil : listenerGauge)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    countedOut = true
                }
            }
    }

    /// Publishes the broker's figures as retained `$SYS/broker/...` messages every
    /// `sys_interval`, from the first event loop's router (so they route like any message).
    private func startSysPublisher() {
        let interval = configuration.sysInterval
        guard interval > .zero, let router = routers.first else { return }
        let counters = core.counters
        let retained = core.retained
        let startedAt = self.startedAt
        let task = router.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { _ in
            let s = counters.snapshot
            let uptime = (NIODeadline.now() - startedAt).nanoseconds / 1_000_000_000
            var figures: [(String, String)] = [
                ("version", Self.version),
                ("uptime", "\(uptime) seconds"),
                ("clients/refused", "\(s.connectionsRefusedLimit + s.connectionsRefusedRate)"),
                ("messages/dropped", "\(s.dropped)"),
                ("retained messages/count", "\(retained.count)"),
            ]
            for entry in BrokerCounters.catalog {
                if let topic = entry.sys { figures.append((topic, "\(s[keyPath: entry.value])")) }
            }
            router.assumeIsolated { router in
                for (topic, value) in figures {
                    router.publish(Message(topic: "$SYS/broker/" + topic, payload: ByteBuffer(string: value), qos: .atMostOnce, retain: true))
                }
                router.flush()
            }
        }
        sysTask.withLockedValue { $0 = task }
    }

    /// Adds Prometheus text lines to what /metrics serves (rendered at each scrape).
    public func addMetricsSource(_ render: @escaping @Sendable () -> [UInt8]) {
        metricsSources.withLockedValue { $0.append(render) }
    }

    /// Where /metrics is served, when configured.
    public var metricsAddress: SocketAddress? {
        metricsChannel.withLockedValue { $0?.localAddress }
    }

    /// Counts a new connection in, or says why it is refused (then it is not counted):
    /// the connection rate first, then the broker-wide and the listener's `max_connections`.
    private static func admit(
        listener: BrokerConfiguration.Listener, configuration: BrokerConfiguration, counters: BrokerCounters,
        listenerGauge: ConnectionGauge, rateLimiter: NIOLockedValueBox<TokenBucket?>
    ) -> Refusal? {
        let rateOK = rateLimiter.withLockedValue { bucket in
            guard bucket != nil else { return true }
            return bucket!.take(now: .now())
        }
        if !rateOK {
            return .init(v3: .serverUnavailable, v5: .connectionRateExceeded, why: "max_connection_rate")
        }
        let total = counters.openConnections.add(1, ordering: .relaxed).newValue
        let mine = listenerGauge.open.add(1, ordering: .relaxed).newValue
        let overTotal = configuration.maximumConnections > 0 && total > configuration.maximumConnections
        let overListener = listener.maximumConnections > 0 && mine > listener.maximumConnections
        guard overTotal || overListener else { return nil }
        counters.openConnections.subtract(1, ordering: .relaxed)
        listenerGauge.open.subtract(1, ordering: .relaxed)
        return .init(v3: .serverUnavailable, v5: .quotaExceeded, why: "max_connections")
    }

    /// Re-reads every TLS listener's certificate, key and CA files. New connections get the
    /// new context; existing ones keep theirs. A listener whose files do not load keeps its
    /// old context and its error is returned (and logged).
    @discardableResult
    public func reloadTLS() -> [TLSError] {
        var errors: [TLSError] = []
        for (i, listener) in core.live.withLockedValue({ $0.listeners }).enumerated() {
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

    /// Checks that the password file and ACL load, for `--check-config`.
    public static func validateSecurityFiles(_ configuration: BrokerConfiguration) throws(ConfigurationError) {
        _ = try loadSecurity(configuration)
    }

    static func loadSecurity(_ configuration: BrokerConfiguration, generation: Int = 0) throws(ConfigurationError) -> SecurityState {
        var state = SecurityState()
        state.generation = generation
        if let path = configuration.passwordFile {
            let passwords = try PasswordFile(parsing: ConfigurationError.readTextFile(path, key: "password_file"), source: path)
            state.authenticator = Authenticator(passwords: passwords)
        }
        if let path = configuration.aclFile {
            state.acl = try AccessControlList(parsing: ConfigurationError.readTextFile(path, key: "acl_file"), source: path)
        }
        if let path = configuration.adminTokenFile {
            state.adminTokens = try AdminAPI.tokens(ConfigurationError.readTextFile(path, key: "admin_token_file"), source: path)
        }
        return state
    }

    /// What a reload changed, and what it could not.
    public struct ReloadReport: Sendable {
        /// Keys whose new values need a restart; their running values are kept.
        public var needsRestart: [String] = []
        public var tlsErrors: [TLSError] = []
        public var securityError: ConfigurationError?
    }

    /// Applies a new configuration to the running broker: limits, timeouts, slow-consumer
    /// policies and per-listener settings (routers pick them up within one sweep, new
    /// connections at once), TLS files, the password file and the ACL. Listener addresses,
    /// event loops, socket options and the metrics endpoint need a restart: they are
    /// reported and keep their running values. Parts whose files fail to load keep theirs.
    @discardableResult
    public func reload(_ new: BrokerConfiguration) -> ReloadReport {
        var report = ReloadReport()
        let running = core.live.withLockedValue { $0 }
        var applied = new
        func keep<T: Equatable>(_ key: String, _ path: WritableKeyPath<BrokerConfiguration, T>) {
            if new[keyPath: path] != running[keyPath: path] {
                report.needsRestart.append(key)
                applied[keyPath: path] = running[keyPath: path]
            }
        }
        let sameListeners = new.listeners.count == running.listeners.count
            && zip(new.listeners, running.listeners).allSatisfy { $0.host == $1.host && $0.port == $1.port && ($0.tls == nil) == ($1.tls == nil) }
        if !sameListeners {
            report.needsRestart.append("listeners")
            applied.listeners = running.listeners
        }
        keep("threads", \.eventLoops)
        keep("metrics", \.metrics)
        keep("persistence", \.persistence)
        keep("cluster", \.cluster)
        keep("sys_interval_s", \.sysInterval)
        keep("listen_backlog", \.listenBacklog)
        keep("listen_per_thread", \.listenPerThread)
        keep("write_buffer_high_water", \.writeBufferHighWater)
        keep("write_buffer_low_water", \.writeBufferLowWater)
        keep("tcp_keepalive_idle_s", \.tcpKeepaliveIdle)
        keep("tcp_user_timeout_ms", \.tcpUserTimeout)
        keep("tcp_defer_accept_s", \.tcpDeferAccept)
        keep("keepalive_sweep_interval_ms", \.keepaliveSweepInterval)
        if !report.needsRestart.isEmpty {
            core.logger.warning("reload: these settings need a restart and keep their running values", metadata: [
                "keys": "\(report.needsRestart.joined(separator: ", "))",
            ])
        }
        core.setLive(applied)
        if applied.maximumConnectionRate != running.maximumConnectionRate {
            rateLimiter.withLockedValue {
                $0 = applied.maximumConnectionRate > 0 ? TokenBucket(ratePerSecond: applied.maximumConnectionRate, now: .now()) : nil
            }
        }
        report.tlsErrors = reloadTLS()
        do {
            try reloadSecurity()
        } catch {
            report.securityError = error
        }
        core.logger.info("configuration reloaded")
        return report
    }

    /// The configuration as last reloaded.
    public var liveConfiguration: BrokerConfiguration { core.live.withLockedValue { $0 } }

    /// Re-reads the password file and the ACL. Connected clients keep their session; from
    /// now on their publications, subscriptions and deliveries follow the new ACL, and new
    /// connections the new passwords. A file that does not load keeps the running state.
    public func reloadSecurity() throws(ConfigurationError) {
        let generation = core.security.withLockedValue { $0.generation } + 1
        do {
            let state = try Self.loadSecurity(core.live.withLockedValue { $0 }, generation: generation)
            core.security.withLockedValue { $0 = state }
            core.logger.info("password file and ACL reloaded")
        } catch {
            core.logger.error("password file or ACL reload failed, keeping the running ones", metadata: ["error": "\(error)"])
            throw error
        }
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
        sysTask.withLockedValue { $0?.cancel() }
        for channel in channels.joined() { try? await channel.close() }
        if let metrics = metricsChannel.withLockedValue({ $0 }) { try? await metrics.close() }
        for router in routers {
            try? await router.eventLoop.submit { router.assumeIsolated { $0.stop() } }.get()
        }
        if let writer = storeWriter.withLockedValue({ $0 }) {
            // What the closed connections' ends stored (sessions gone offline) goes in too.
            for router in routers {
                try? await router.eventLoop.submit { router.assumeIsolated { $0.flush() } }.get()
            }
            writer.stop()
        }
        if ownsGroup { try await group.shutdownGracefully() }
    }

    // MARK: Introspection

    /// What a session lost and holds (nil when the client id has no session).
    /// The event loop (0-based) whose router holds `clientID`'s session, if any.
    public func loop(of clientID: String) async throws -> Int? {
        for (i, router) in routers.enumerated() {
            let held = try await router.eventLoop.submit { router.assumeIsolated { $0.sessions[clientID] != nil } }.get()
            if held { return i }
        }
        return nil
    }

    public func sessionReport(clientID: String) async throws -> SessionReport? {
        for router in routers {
            let report = try await router.eventLoop.submit { router.assumeIsolated { $0.sessionReport(clientID) } }.get()
            if let report { return report }
        }
        return nil
    }

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

/// One session as the broker sees it: drops by reason and what is waiting.
public struct SessionReport: Sendable, Hashable {
    public var online: Bool
    public var dropped: [DropReason: Int]
    public var queuedMessages: Int
    public var queuedBytes: Int
    public var inflight: Int
}
