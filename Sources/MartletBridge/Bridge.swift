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
final class Bridge: Sendable {
    let configuration: BridgeConfiguration
    let statistics = BridgeStatistics()
    private let broker: MQTTBroker
    private let logger: Logger
    private let remoteWindow = FlightWindow(size: 65_535)
    private let localWindow = FlightWindow(size: 65_535)
    private let echoes = NIOLockedValueBox(EchoFilter())
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

    var inflight: Int { remoteWindow.inUse + localWindow.inUse }

    func start() {
        task.withLockedValue { $0 = Task { await self.run() } }
    }

    /// Stops forwarding and closes both connections. The remote keeps our session (unless
    /// `clean_start`); the local session keeps what waits for the remote, unless `discard`
    /// (the bridge was removed from the configuration): then it ends with its queue.
    func stop(discard: Bool) async {
        let running = task.withLockedValue { $0 }
        running?.cancel()
        remoteWindow.close()
        localWindow.close()
        let (local, remote) = clients.withLockedValue { $0 }
        try? await remote?.disconnect()
        try? await local?.disconnect()
        await running?.value
        if discard { await discardLocalSession() }
        statistics.connected.store(0, ordering: .relaxed)
    }

    private func run() async {
        let local: MQTTClient
        do {
            local = try await openLocal()
        } catch {
            logger.error("bridge cannot open its session on this broker", metadata: ["error": "\(error)"])
            return
        }
        clients.withLockedValue { $0.local = local }
        localWindow.resize(Int(local.connack.properties.receiveMaximum ?? 65_535))
        await publishState("disconnected: connecting", via: local)
        guard let remote = await connectRemote(local: local) else { return }
        clients.withLockedValue { $0.remote = remote }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.forwardOut(from: local, to: remote) }
            group.addTask { await self.forwardIn(from: remote, to: local) }
        }
    }

    // MARK: The two connections

    private func openLocal() async throws -> MQTTClient {
        let socket = try await broker.openBridgeLink(
            queue: .init(messages: configuration.maximumQueuedMessages, bytes: configuration.maximumQueuedBytes),
            policy: configuration.queuePolicy.slowConsumerPolicy)
        var c = MQTTClientConfiguration(clientID: configuration.localClientID)
        c.version = .v5
        c.cleanStart = false
        c.sessionExpiryInterval = UInt32.max
        c.keepAlive = 0
        c.manualAcknowledgement = true
        c.connectedSocket = socket
        c.messageBufferSize = 1 << 20
        let local = try await MQTTClient.connect(c)
        if !previousLocalFilters.isEmpty { try? await local.unsubscribe(previousLocalFilters) }
        let out = configuration.topics.filter(\.forwardsOut).map {
            Subscription(topicFilter: $0.localFilter, options: SubscriptionOptions(qos: $0.qos, noLocal: true, retainAsPublished: true))
        }
        if !out.isEmpty { try await local.subscribe(out) }
        return local
    }

    /// Connects to the remote, retrying with backoff until it answers (or the bridge stops);
    /// from then on the client reconnects by itself with the same policy.
    private func connectRemote(local: MQTTClient) async -> MQTTClient? {
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
        c.messageBufferSize = 1 << 20
        c.reconnect = policy
        c.onConnectionChange = { [weak self] change in
            guard let self else { return }
            switch change {
            case .lost:
                self.statistics.connected.store(0, ordering: .relaxed)
                self.logger.warning("bridge disconnected", metadata: ["remote": "\(self.configuration.host):\(self.configuration.port)"])
                Task { await self.publishState("disconnected: connection lost", via: local) }
            case .restored(let sessionPresent):
                self.statistics.connected.store(1, ordering: .relaxed)
                self.statistics.reconnects.add(1, ordering: .relaxed)
                self.logger.info("bridge connected", metadata: [
                    "remote": "\(self.configuration.host):\(self.configuration.port)", "session_present": "\(sessionPresent)",
                ])
                Task { await self.publishState("connected", via: local) }
            }
        }
        var attempt = 0
        while !Task.isCancelled {
            do {
                let remote = try await MQTTClient.connect(c)
                remoteWindow.resize(Int(remote.connack.properties.receiveMaximum ?? 65_535))
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

    // MARK: Forwarding

    /// Local → remote, in the order the local session delivers.
    private func forwardOut(from local: MQTTClient, to remote: MQTTClient) async {
        let rules = configuration.topics.filter(\.forwardsOut)
        let isV5 = configuration.protocolVersion == .v5
        for await message in local.messages {
            guard let rule = rules.first(where: { Topic.matches(filter: $0.localFilter, topic: message.topic) }),
                  let topic = rule.remoteTopic(forLocal: message.topic)
            else {
                local.acknowledge(message)
                continue
            }
            let qos = min(message.qos, rule.qos)
            let properties = isV5 ? Self.forwardable(message.properties) : Properties()
            if let limit = remote.connack.properties.maximumPacketSize,
               MQTTPacket.publish(PublishPacket(topic: topic, payload: message.payload, qos: qos, retain: message.retain,
                                                packetIdentifier: qos == .atMostOnce ? nil : 1, properties: properties))
                   .encodedLength(version: configuration.protocolVersion) > Int(limit) {
                statistics.droppedTooLarge.add(1, ordering: .relaxed)
                logger.warning("message larger than the remote's Maximum Packet Size dropped", metadata: ["topic": "\(message.topic)"])
                local.acknowledge(message)
                continue
            }
            if qos != .atMostOnce { guard await remoteWindow.acquire() else { return } }
            if !isV5 { echoes.withLockedValue { $0.sent(topic: topic, payload: message.payload, now: .now()) } }
            let started = NIODeadline.now()
            do {
                let acknowledged = try await remote.send(topic, payload: message.payload, qos: qos, retain: message.retain, properties: properties)
                let statistics = self.statistics
                let window = remoteWindow
                let logger = self.logger
                acknowledged.whenComplete { result in
                    if qos != .atMostOnce { window.release() }
                    switch result {
                    case .success:
                        statistics.sent.add(1, ordering: .relaxed)
                        if qos != .atMostOnce {
                            statistics.acknowledgementNanoseconds.add(Int((NIODeadline.now() - started).nanoseconds), ordering: .relaxed)
                            statistics.acknowledgements.add(1, ordering: .relaxed)
                        }
                        local.acknowledge(message)
                    case .failure(MQTTClientError.refused(let code)):
                        statistics.droppedRefused.add(1, ordering: .relaxed)
                        logger.warning("the remote refused a message", metadata: ["topic": "\(topic)", "reason": "\(code)"])
                        local.acknowledge(message)
                    case .failure:
                        break  // the bridge is stopping: the local session sends it again next time
                    }
                }
            } catch {
                return  // the remote client finished: the bridge is stopping
            }
        }
    }

    /// Remote → local, acknowledged to the remote once this broker acknowledged it.
    private func forwardIn(from remote: MQTTClient, to local: MQTTClient) async {
        let rules = configuration.topics.filter(\.forwardsIn)
        let isV5 = configuration.protocolVersion == .v5
        for await message in remote.messages {
            guard let rule = rules.first(where: { Topic.matches(filter: $0.remoteFilter, topic: message.topic) }),
                  let topic = rule.localTopic(forRemote: message.topic)
            else {
                remote.acknowledge(message)
                continue
            }
            if !isV5, echoes.withLockedValue({ $0.isEcho(topic: message.topic, payload: message.payload, now: .now()) }) {
                statistics.echoesDropped.add(1, ordering: .relaxed)
                remote.acknowledge(message)
                continue
            }
            let qos = min(message.qos, rule.qos)
            if qos != .atMostOnce { guard await localWindow.acquire() else { return } }
            do {
                let acknowledged = try await local.send(
                    topic, payload: message.payload, qos: qos, retain: message.retain, properties: Self.forwardable(message.properties))
                let statistics = self.statistics
                let window = localWindow
                let logger = self.logger
                acknowledged.whenComplete { result in
                    if qos != .atMostOnce { window.release() }
                    switch result {
                    case .success:
                        statistics.received.add(1, ordering: .relaxed)
                    case .failure(MQTTClientError.refused(let code)):
                        statistics.droppedRefused.add(1, ordering: .relaxed)
                        logger.warning("this broker refused a message from the remote", metadata: ["topic": "\(topic)", "reason": "\(code)"])
                    case .failure:
                        return  // stopping: the remote sends it again on the resumed session
                    }
                    remote.acknowledge(message)
                }
            } catch {
                return
            }
        }
    }

    /// The properties a forwarded message keeps: what the publisher set for its receivers
    /// (expiry, content type, payload format, response topic, correlation data, user
    /// properties), not what belonged to the connection it came on (topic alias,
    /// subscription identifiers).
    static func forwardable(_ properties: Properties) -> Properties {
        var p = properties
        p.set(.topicAlias, nil)
        p.set(.subscriptionIdentifier, nil)
        return p
    }

    /// A removed bridge's local session ends, with what it queued (counted as dropped).
    private func discardLocalSession() async {
        guard let socket = try? await broker.openBridgeLink(queue: .init(messages: 1, bytes: 1024), policy: .dropNew) else { return }
        var c = MQTTClientConfiguration(clientID: configuration.localClientID)
        c.version = .v5
        c.cleanStart = true
        c.sessionExpiryInterval = 0
        c.keepAlive = 0
        c.connectedSocket = socket
        if let client = try? await MQTTClient.connect(c) { try? await client.disconnect() }
    }
}
