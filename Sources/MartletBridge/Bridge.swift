import Logging
import MartletBroker
import MartletClient
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One bridge: a session on this broker (`$bridge/<name>`, over the in-process link) and a
/// client of the remote broker, with messages passed between them.
///
/// Nothing is acknowledged before the other side has it: a local message is acknowledged
/// to this broker only when the remote acknowledged it, and a remote message only when this
/// broker did. So the bridge's queue is its local session's outbox — bounded by
/// `max_queued_messages` / `max_queued_bytes` with `queue_policy` (drops counted as every
/// outbox drop is), stored with the session when persistence is on, and shrinking as the
/// remote acknowledges. QoS 1/2 still unacknowledged when the link drops are resent by the
/// client with DUP (PUBREL for QoS 2) on the resumed session.
///
/// Loops: the local session subscribes with No Local, so what came in over this bridge never
/// goes back out over it; a v5 remote subscription has No Local and Retain As Published; a
/// 3.1.1 remote, which has neither, has the copies it echoes dropped (`EchoFilter`).
///
/// Both clients run on the event loop that serves the broker's end of the link, and the
/// `Forwarder` passes messages between them there: no task or thread hop per message.
final class Bridge: Sendable {
    let configuration: BridgeConfiguration
    let statistics = BridgeStatistics()
    private let broker: MQTTBroker
    private let logger: Logger
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let clients = NIOLockedValueBox<(local: MQTTClient?, remote: MQTTClient?)>((nil, nil))
    /// Filters of the configuration this bridge replaces (a reload): unsubscribed locally.
    private let previousLocalFilters: [String]

    init(configuration: BridgeConfiguration, broker: MQTTBroker, logger: Logger, replacing previous: BridgeConfiguration? = nil) {
        self.configuration = configuration
        self.broker = broker
        var logger = logger
        logger[metadataKey: "bridge"] = "\(configuration.name)"
        self.logger = logger
        let now = Set(configuration.topics.filter(\.forwardsOut).map(\.localFilter))
        self.previousLocalFilters = (previous?.topics.filter(\.forwardsOut).map(\.localFilter) ?? []).filter { !now.contains($0) }
    }

    var inflight: Int { statistics.inflight.load(ordering: .relaxed) }

    func start() {
        task.withLockedValue { $0 = Task { await self.run() } }
    }

    /// Stops forwarding and closes both connections. The remote keeps our session (unless
    /// `clean_start`); the local session keeps what waits for the remote, unless `discard`
    /// (the bridge was removed from the configuration): then it ends with its queue.
    func stop(discard: Bool) async {
        let running = task.withLockedValue { $0 }
        running?.cancel()
        let (local, remote) = clients.withLockedValue { $0 }
        try? await remote?.disconnect()
        try? await local?.disconnect()
        await running?.value
        if discard { await discardLocalSession() }
        statistics.connected.store(0, ordering: .relaxed)
    }

    private func run() async {
        let link: (socket: CInt, eventLoop: any EventLoop)
        do {
            link = try await broker.openBridgeLink(
                queue: .init(messages: configuration.maximumQueuedMessages, bytes: configuration.maximumQueuedBytes,
                             inflight: min(1000, configuration.maximumQueuedMessages)),
                policy: configuration.queuePolicy.slowConsumerPolicy)
        } catch {
            logger.error("bridge cannot open its link to this broker", metadata: ["error": "\(error)"])
            return
        }
        let loop = link.eventLoop
        let configuration = self.configuration
        let statistics = self.statistics
        let logger = self.logger
        guard let forwarder = try? await loop.submit({
            NIOLoopBound(Forwarder(configuration: configuration, statistics: statistics, logger: logger), eventLoop: loop)
        }).get() else { return }
        let local: MQTTClient
        do {
            local = try await openLocal(socket: link.socket, loop: loop, forwarder: forwarder)
        } catch {
            logger.error("bridge cannot open its session on this broker", metadata: ["error": "\(error)"])
            return
        }
        clients.withLockedValue { $0.local = local }
        try? await loop.submit { forwarder.value.local = local }.get()
        await publishState("disconnected: connecting", via: local)
        let watcher = Task { await self.watchQueue() }
        defer { watcher.cancel() }
        guard await connectRemote(local: local, loop: loop, forwarder: forwarder) != nil else { return }
        await local.waitUntilClosed()
        // Stopped, or this broker shut down under the bridge: the remote client goes too
        // (it would otherwise go on reconnecting).
        try? await loop.submit { forwarder.value.stopped = true }.get()
        try? await clients.withLockedValue({ $0.remote })?.disconnect()
    }

    /// Reads the bridge session's queue and drops once a second, for /metrics and `status`.
    private func watchQueue() async {
        while !Task.isCancelled {
            let report = try? await broker.sessionReport(clientID: configuration.localClientID)
            statistics.queue.withLockedValue { $0 = report }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    // MARK: The two connections

    private func openLocal(socket: CInt, loop: any EventLoop, forwarder: NIOLoopBound<Forwarder>) async throws -> MQTTClient {
        var c = MQTTClientConfiguration(clientID: configuration.localClientID)
        c.version = .v5
        c.cleanStart = false
        c.sessionExpiryInterval = UInt32.max
        c.keepAlive = 0
        c.manualAcknowledgement = true
        c.connectedSocket = socket
        c.onMessage = { forwarder.value.fromLocal($0) }
        c.onWritable = { forwarder.value.localWritable() }
        let local = try await MQTTClient.connect(c, group: loop)
        if !previousLocalFilters.isEmpty { try? await local.unsubscribe(previousLocalFilters) }
        let out = configuration.topics.filter(\.forwardsOut).map {
            Subscription(topicFilter: $0.localFilter, options: SubscriptionOptions(qos: $0.qos, noLocal: true, retainAsPublished: true))
        }
        if !out.isEmpty { try await local.subscribe(out) }
        return local
    }

    /// Connects to the remote, retrying with backoff until it answers (or the bridge stops);
    /// from then on the client reconnects by itself with the same policy.
    private func connectRemote(local: MQTTClient, loop: any EventLoop, forwarder: NIOLoopBound<Forwarder>) async -> MQTTClient? {
        let policy = ReconnectPolicy(initialDelay: configuration.reconnectInitialDelay, maximumDelay: configuration.reconnectMaximumDelay)
        var c = MQTTClientConfiguration(host: configuration.host, port: configuration.port, clientID: configuration.effectiveClientID)
        c.version = configuration.protocolVersion
        c.cleanStart = configuration.cleanStart
        c.sessionExpiryInterval = configuration.protocolVersion == .v5 ? configuration.sessionExpiry : nil
        c.keepAlive = configuration.keepAlive
        c.username = configuration.username
        c.password = configuration.password
        c.tls = configuration.tls
        c.manualAcknowledgement = true
        c.reconnect = policy
        c.onMessage = { forwarder.value.fromRemote($0) }
        c.onWritable = { forwarder.value.remoteWritable() }
        let clients = self.clients
        c.onConnectionChange = { [weak self] change in
            guard let self else { return }
            switch change {
            case .lost:
                // Called on the connection's loop (the forwarder's) as the channel closes, so
                // nothing more is handed to it; from elsewhere only before it was used.
                if loop.inEventLoop { forwarder.value.remoteLost() } else { loop.execute { forwarder.value.remoteLost() } }
                self.statistics.connected.store(0, ordering: .relaxed)
                self.logger.warning("bridge disconnected", metadata: ["remote": "\(self.configuration.host):\(self.configuration.port)"])
                Task { await self.publishState("disconnected: connection lost", via: local) }
            case .restored(let sessionPresent):
                self.statistics.connected.store(1, ordering: .relaxed)
                self.statistics.reconnects.add(1, ordering: .relaxed)
                self.logger.info("bridge connected", metadata: [
                    "remote": "\(self.configuration.host):\(self.configuration.port)", "session_present": "\(sessionPresent)",
                ])
                if let remote = clients.withLockedValue({ $0.remote }) {
                    loop.execute { forwarder.value.remoteConnected(remote) }
                }
                Task { await self.publishState("connected", via: local) }
            }
        }
        var attempt = 0
        while !Task.isCancelled {
            do {
                let remote = try await MQTTClient.connect(c, group: loop)
                if Task.isCancelled {
                    // Stopped while connecting.
                    try? await remote.disconnect()
                    return nil
                }
                clients.withLockedValue { $0.remote = remote }
                // Before subscribing: what the subscription brings is acknowledged through it.
                try? await loop.submit { forwarder.value.remoteConnected(remote) }.get()
                let incoming = configuration.topics.filter(\.forwardsIn).map {
                    Subscription(topicFilter: $0.remoteFilter, options: SubscriptionOptions(
                        qos: $0.qos, noLocal: configuration.protocolVersion == .v5, retainAsPublished: configuration.protocolVersion == .v5))
                }
                if !incoming.isEmpty { try await remote.subscribe(incoming) }
                statistics.connected.store(1, ordering: .relaxed)
                logger.info("bridge connected", metadata: [
                    "remote": "\(configuration.host):\(configuration.port)", "session_present": "\(remote.connack.sessionPresent)",
                ])
                await publishState("connected", via: local)
                return remote
            } catch {
                if attempt == 0 || attempt % 10 == 0 {
                    logger.warning("bridge cannot connect; retrying", metadata: [
                        "remote": "\(configuration.host):\(configuration.port)", "error": "\(error)", "attempt": "\(attempt + 1)",
                    ])
                }
                if attempt == 0 { await publishState("disconnected: \(error)", via: local) }
                try? await Task.sleep(for: policy.delay(attempt: attempt))
                attempt += 1
            }
        }
        return nil
    }

    /// `$SYS/broker/bridge/<name>/state`, retained: `connected`, or `disconnected: <why>`.
    private func publishState(_ state: String, via local: MQTTClient) async {
        _ = try? await local.send("$SYS/broker/bridge/\(configuration.name)/state", payload: ByteBuffer(string: state), qos: .atMostOnce, retain: true)
    }

    /// A removed bridge's local session ends, with what it queued (counted as dropped).
    private func discardLocalSession() async {
        guard let link = try? await broker.openBridgeLink(queue: .init(messages: 1, bytes: 1024), policy: .dropNew) else { return }
        var c = MQTTClientConfiguration(clientID: configuration.localClientID)
        c.version = .v5
        c.cleanStart = true
        c.sessionExpiryInterval = 0
        c.keepAlive = 0
        c.connectedSocket = link.socket
        if let client = try? await MQTTClient.connect(c, group: link.eventLoop) { try? await client.disconnect() }
    }
}
