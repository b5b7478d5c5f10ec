import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// An MQTT 3.1.1 / 5.0 client for async code.
///
/// ```swift
/// var config = MQTTClientConfiguration(clientID: "app")
/// config.reconnect = ReconnectPolicy()          // optional: reconnect with backoff
/// let client = try await MQTTClient.connect(config)
/// try await client.subscribe("sensors/#", qos: .atLeastOnce)
/// try await client.publish("sensors/t", payload: ByteBuffer(string: "21"), qos: .atLeastOnce)
/// for await message in client.messages { … }
/// ```
///
/// With `configuration.reconnect` set, a lost connection (closed by the broker, reset, or
/// a broker that stops answering PINGREQ) is opened again with exponential backoff and
/// jitter; subscriptions are sent again unless the broker kept the session, and QoS 1/2
/// messages still unacknowledged are resent (with DUP when the session was kept). Calls made
/// while reconnecting wait for the new connection.
public final class MQTTClient: Sendable {
    public let configuration: MQTTClientConfiguration
    /// Every message received on any subscription, in arrival order, across reconnects.
    public let messages: AsyncStream<ReceivedMessage>

    private struct Connection: Sendable {
        var channel: any Channel
        var handler: NIOLoopBound<ClientConnectionHandler>
        var connack: ConnAckPacket
    }

    private struct State: Sendable {
        var connection: Connection
        /// Filters subscribed (and not unsubscribed), sent again after a reconnect to a clean session.
        var subscriptions: [String: Subscription] = [:]
        var reconnecting = false
        var reconnects = 0
        /// Set by `disconnect()`, or when reconnecting gave up: no more reconnects.
        var finished = false
        /// `finish()` has run: the client is closed for good.
        var closed = false
        var closedWaiters: [CheckedContinuation<Void, Never>] = []
        var waiters: [CheckedContinuation<Connection, any Error>] = []
        /// Requests left unacknowledged by lost connections, resent on the next one.
        var carried: [PendingRequest] = []
    }

    private let state: NIOLockedValueBox<State>
    private let group: any EventLoopGroup
    private let dropped: NIOLockedValueBox<Int>
    private let deliver: @Sendable (ReceivedMessage) -> Void
    private let finishMessages: @Sendable () -> Void

    /// What the broker said in the last CONNACK (session present, v5 properties such as an assigned id).
    public var connack: ConnAckPacket { state.withLockedValue { $0.connection.connack } }
    /// Messages dropped because the consumer of `messages` fell `messageBufferSize` behind.
    public var droppedMessages: Int { dropped.withLockedValue { $0 } }
    /// Connections re-established after a loss.
    public var reconnectCount: Int { state.withLockedValue { $0.reconnects } }

    private init(configuration: MQTTClientConfiguration, group: any EventLoopGroup, connection: Connection,
                 messages: AsyncStream<ReceivedMessage>, dropped: NIOLockedValueBox<Int>,
                 deliver: @escaping @Sendable (ReceivedMessage) -> Void, finishMessages: @escaping @Sendable () -> Void) {
        self.configuration = configuration
        self.group = group
        self.state = NIOLockedValueBox(State(connection: connection))
        self.messages = messages
        self.dropped = dropped
        self.deliver = deliver
        self.finishMessages = finishMessages
    }

    /// Opens TCP (and TLS), sends CONNECT and waits for CONNACK.
    public static func connect(_ configuration: MQTTClientConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MQTTClient {
        let (stream, continuation) = AsyncStream<ReceivedMessage>.makeStream(bufferingPolicy: .bufferingNewest(configuration.messageBufferSize))
        let dropped = NIOLockedValueBox(0)
        let deliver: @Sendable (ReceivedMessage) -> Void = configuration.onMessage ?? { message in
            if case .dropped = continuation.yield(message) { dropped.withLockedValue { $0 += 1 } }
        }
        let connection = try await open(configuration, group: group, deliver: deliver)
        let client = MQTTClient(
            configuration: configuration, group: group, connection: connection, messages: stream, dropped: dropped,
            deliver: deliver, finishMessages: { continuation.finish() })
        await client.watch(connection)
        return client
    }

    /// One connection: TCP, TLS, CONNECT, CONNACK.
    private static func open(_ configuration: MQTTClientConfiguration, group: any EventLoopGroup,
                             deliver: @escaping @Sendable (ReceivedMessage) -> Void) async throws -> Connection {
        // A shared context per configuration: its session store lets a repeat connection resume.
        let tlsContext = try configuration.tls.map { try TLSContext.client($0) }
        let serverName = configuration.tls?.serverName ?? configuration.host
        let version = configuration.version
        let keepAlive = configuration.keepAlive
        // The handler as the initializer made it: looking it up in the pipeline later fails
        // once a failed TLS handshake has closed the channel and emptied the pipeline.
        let installed = NIOLockedValueBox<NIOLoopBound<ClientConnectionHandler>?>(nil)
        let webSocketPath = configuration.webSocketPath
        // With WebSocket, the connection handler is added once the upgrade is done.
        let upgraded = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
        let manual = configuration.manualAcknowledgement
        var bootstrap = ClientBootstrap(group: group).connectTimeout(configuration.connectTimeout)
        if configuration.connectedSocket == nil { bootstrap = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1) }
        bootstrap = bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: tlsContext, serverName: serverName, handshakeTimeout: configuration.connectTimeout))
                    }
                    guard webSocketPath != nil else {
                        let handler = ClientConnectionHandler(version: version, keepAlive: keepAlive, manualAcknowledgement: manual, deliver: deliver)
                        handler.onWritable = configuration.onWritable
                        try channel.pipeline.syncOperations.addHandler(handler)
                        installed.withLockedValue { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                        return
                    }
                    let future = try MQTTWebSocket.configure(channel) { channel in
                        let handler = ClientConnectionHandler(version: version, keepAlive: keepAlive, manualAcknowledgement: manual, deliver: deliver)
                        handler.onWritable = configuration.onWritable
                        try channel.pipeline.syncOperations.addHandler(handler)
                        installed.withLockedValue { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                    }
                    upgraded.withLockedValue { $0 = future }
                }
            }
        let channel: any Channel
        if let socket = configuration.connectedSocket {
            channel = try await bootstrap.withConnectedSocket(socket).get()
        } else {
            channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
        }
        if let path = webSocketPath, let upgrade = upgraded.withLockedValue({ $0 }) {
            MQTTWebSocket.requestUpgrade(channel, host: configuration.host, port: configuration.port, path: path)
            let timer = channel.eventLoop.scheduleTask(in: configuration.connectTimeout) { channel.close(promise: nil) }
            do {
                try await upgrade.get()
                timer.cancel()
            } catch {
                timer.cancel()
                try? await channel.close()
                throw error is ChannelError ? MQTTClientError.connectionClosed : error
            }
        }

        var properties = Properties()
        if version == .v5, let expiry = configuration.sessionExpiryInterval { properties.sessionExpiryInterval = expiry }
        let connect = ConnectPacket(
            protocolVersion: version, cleanStart: configuration.cleanStart, keepAlive: keepAlive,
            clientIdentifier: configuration.clientID, will: configuration.will, username: configuration.username,
            password: configuration.password.map { ByteBuffer(string: $0) }, properties: properties)
        let timeout = configuration.connectTimeout
        let (handler, ack): (NIOLoopBound<ClientConnectionHandler>, ConnAckPacket)
        do {
            (handler, ack) = try await channel.eventLoop.flatSubmit {
                guard let bound = installed.withLockedValue({ $0 }) else {
                    return channel.eventLoop.makeFailedFuture(MQTTClientError.connectionClosed)
                }
                let h = bound.value
                let promise = channel.eventLoop.makePromise(of: ConnAckPacket.self)
                let deadline = channel.eventLoop.scheduleTask(in: timeout) { promise.fail(MQTTClientError.timeout("CONNACK")) }
                promise.futureResult.whenComplete { _ in deadline.cancel() }
                h.start(connect: connect, promise: promise)
                return promise.futureResult.map { (bound, $0) }
            }.get()
        } catch {
            try? await channel.close()
            throw error
        }
        guard ack.reasonCode == .success else {
            try? await channel.close()
            throw MQTTClientError.connectionRefused(ack.reasonCode)
        }
        return Connection(channel: channel, handler: handler, connack: ack)
    }

    /// Arranges for the loss of `connection` to end the client or start reconnecting.
    private func watch(_ connection: Connection) async {
        let reconnecting = configuration.reconnect != nil
        let handler = connection.handler
        let channel = connection.channel
        let lostEarly = try? await connection.channel.eventLoop.submit { () -> Bool in
            guard reconnecting else { return false }
            handler.value.onClose = { [weak self] pending in
                guard let self else {
                    for p in pending { p.promise.fail(MQTTClientError.connectionClosed) }
                    return
                }
                self.connectionLost(pending: pending)
            }
            // Closed before the hook was in place: nobody else will notice.
            return !channel.isActive
        }.get()
        if lostEarly == true { connectionLost(pending: []) }
        connection.channel.closeFuture.whenComplete { [weak self] _ in
            guard let self, !reconnecting else { return }
            self.finish()
        }
    }

    private func finish() {
        let (waiters, carried, closedWaiters) = state.withLockedValue { s in
            s.finished = true
            s.closed = true
            defer {
                s.waiters = []
                s.carried = []
                s.closedWaiters = []
            }
            return (s.waiters, s.carried, s.closedWaiters)
        }
        for w in waiters { w.resume(throwing: MQTTClientError.connectionClosed) }
        for p in carried { p.promise.fail(MQTTClientError.connectionClosed) }
        finishMessages()
        for w in closedWaiters { w.resume() }
    }

    /// A connection closed with reconnect on: `pending` waits for the next connection, and
    /// a reconnect starts unless one is running.
    private func connectionLost(pending: [PendingRequest]) {
        enum Next { case start, running, finished }
        let next = state.withLockedValue { s -> Next in
            if s.finished { return .finished }
            s.carried += pending
            if s.reconnecting { return .running }
            s.reconnecting = true
            return .start
        }
        switch next {
        case .finished:
            for p in pending { p.promise.fail(MQTTClientError.connectionClosed) }
        case .running:
            break
        case .start:
            guard let policy = configuration.reconnect else { return finish() }
            configuration.onConnectionChange?(.lost)
            Task { await self.reconnect(policy: policy) }
        }
    }

    private func reconnect(policy: ReconnectPolicy) async {
        var attempt = 0
        while true {
            if state.withLockedValue({ $0.finished }) { break }
            try? await Task.sleep(for: policy.delay(attempt: attempt))
            if state.withLockedValue({ $0.finished }) { break }
            attempt += 1
            guard let connection = try? await Self.open(configuration, group: group, deliver: deliver) else {
                if let limit = policy.maximumAttempts, attempt >= limit { break }
                continue
            }
            // Its loss is watched for before it is used. Then, on its loop (so nothing sent from
            // that loop can come between): it becomes the connection, and what the last one left
            // unacknowledged is resent before any new request can take a packet id.
            await watch(connection)
            let sessionPresent = connection.connack.sessionPresent
            let handler = connection.handler
            let loop = connection.channel.eventLoop
            let state = self.state
            let taken = try? await loop.submit { () -> [CheckedContinuation<Connection, any Error>]? in
                guard handler.value.isOpen else { return nil }
                let (subscriptions, waiters, pending) = state.withLockedValue { s -> ([Subscription], [CheckedContinuation<Connection, any Error>], [PendingRequest]) in
                    s.connection = connection
                    s.reconnecting = false
                    s.reconnects += 1
                    defer {
                        s.waiters = []
                        s.carried = []
                    }
                    return (Array(s.subscriptions.values), s.waiters, s.carried)
                }
                if !sessionPresent && !subscriptions.isEmpty {
                    // The broker forgot them: subscribe again (the SUBACK is not awaited).
                    handler.value.request({ .subscribe(SubscribePacket(packetIdentifier: $0, subscriptions: subscriptions)) },
                                          promise: loop.makePromise(of: MQTTPacket.self))
                }
                handler.value.resend(pending, sessionPresent: sessionPresent)
                return waiters
            }.get()
            // Lost before it could be used (still reconnecting): the next attempt.
            guard let waiters = taken ?? nil else {
                try? await connection.channel.close()
                continue
            }
            configuration.onConnectionChange?(.restored(sessionPresent: sessionPresent))
            for w in waiters { w.resume(returning: connection) }
            return
        }
        finish()
    }

    /// The connection to use now; while reconnecting, waits for the next one.
    private func current() async throws -> Connection {
        enum Now { case ready(Connection), wait, closed }
        let now = state.withLockedValue { s -> Now in
            if s.finished { return .closed }
            if s.reconnecting || (!s.connection.channel.isActive && configuration.reconnect != nil) { return .wait }
            return .ready(s.connection)
        }
        switch now {
        case .ready(let c): return c
        case .closed: throw MQTTClientError.connectionClosed
        case .wait:
            return try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLockedValue { s -> Connection? in
                    if !s.reconnecting && s.connection.channel.isActive { return s.connection }
                    s.waiters.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    /// Sends a request carrying a new packet id and returns its acknowledgement.
    private func request(_ make: @escaping @Sendable (UInt16) -> MQTTPacket) async throws -> MQTTPacket {
        while true {
            let connection = try await current()
            let handler = connection.handler
            let loop = connection.channel.eventLoop
            do {
                return try await loop.flatSubmit {
                    let promise = loop.makePromise(of: MQTTPacket.self)
                    handler.value.request(make, promise: promise)
                    return promise.futureResult
                }.get()
            } catch MQTTClientError.connectionClosed where configuration.reconnect != nil && !state.withLockedValue({ $0.finished }) {
                // The connection was already closed when the request reached it, so nothing
                // was sent (a request sent and then lost is carried over instead): try the next.
                continue
            }
        }
    }

    /// Publishes and returns when the QoS flow is complete: at once for QoS 0, on PUBACK for
    /// QoS 1, on PUBCOMP for QoS 2.
    public func publish(_ topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false, properties: Properties = []) async throws {
        if qos == .atMostOnce {
            let connection = try await current()
            let handler = connection.handler
            try await connection.channel.eventLoop.submit {
                handler.value.sendAndFlush(.publish(PublishPacket(topic: topic, payload: payload, retain: retain, properties: properties)))
            }.get()
            return
        }
        let ack = try await request { id in
            .publish(PublishPacket(topic: topic, payload: payload, qos: qos, retain: retain, packetIdentifier: id, properties: properties))
        }
        switch ack {
        case .puback(let a) where a.reasonCode.isFailure: throw MQTTClientError.refused(a.reasonCode)
        case .pubrec(let r) where r.reasonCode.isFailure: throw MQTTClientError.refused(r.reasonCode)
        case .pubcomp(let c) where Self.refuses(c): throw MQTTClientError.refused(c.reasonCode)
        default: return
        }
    }

    /// Sends a PUBLISH and returns once it is handed to the connection, without waiting for
    /// its acknowledgement: the returned future completes on PUBACK / PUBCOMP (at once for
    /// QoS 0) and fails with `refused` when the broker refused it. Sends made one after the
    /// other from one task go out in that order, so a caller can keep several QoS 1/2
    /// messages in flight (the broker's Receive Maximum is the caller's to respect) and keep
    /// their order. With reconnect, an unacknowledged one is resent on the next connection.
    public func send(_ topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false, properties: Properties = []) async throws -> EventLoopFuture<Void> {
        while true {
            let connection = try await current()
            let handler = connection.handler
            let loop = connection.channel.eventLoop
            enum Sent { case closed, unacknowledged, waiting(EventLoopFuture<MQTTPacket>) }
            let reconnects = configuration.reconnect != nil
            let sent = try await loop.submit { () -> Sent in
                // Closed before it was sent: nothing went out, so with reconnect it goes on
                // the next connection.
                if reconnects && !handler.value.isOpen { return .closed }
                if qos == .atMostOnce {
                    handler.value.sendAndFlush(.publish(PublishPacket(topic: topic, payload: payload, retain: retain, properties: properties)))
                    return .unacknowledged
                }
                let promise = loop.makePromise(of: MQTTPacket.self)
                handler.value.request({ id in
                    .publish(PublishPacket(topic: topic, payload: payload, qos: qos, retain: retain, packetIdentifier: id, properties: properties))
                }, promise: promise)
                return .waiting(promise.futureResult)
            }.get()
            let acknowledged: EventLoopFuture<MQTTPacket>
            switch sent {
            case .closed: continue
            case .unacknowledged: return loop.makeSucceededVoidFuture()
            case .waiting(let future): acknowledged = future
            }
            return acknowledged.flatMapThrowing { ack in
                switch ack {
                case .puback(let a) where a.reasonCode.isFailure: throw MQTTClientError.refused(a.reasonCode)
                case .pubrec(let r) where r.reasonCode.isFailure: throw MQTTClientError.refused(r.reasonCode)
                case .pubcomp(let c) where Self.refuses(c): throw MQTTClientError.refused(c.reasonCode)
                default: return
                }
            }
        }
    }

    /// PUBCOMP 0x92 (Packet Identifier not found) answers a PUBREL resent after a reconnect
    /// for a flow the broker had already completed (its PUBCOMP was lost with the connection):
    /// the message was delivered. Any other failure code is a refusal.
    static func refuses(_ pubcomp: PubCompPacket) -> Bool {
        pubcomp.reasonCode.isFailure && pubcomp.reasonCode != .packetIdentifierNotFound
    }

    /// Whether the current connection's socket takes more writes now (NIO's high water mark
    /// not reached): a forwarder drops or holds QoS 0 messages while it does not.
    public var isWritable: Bool { state.withLockedValue { $0.connection.channel.isWritable } }

    /// Sends a PUBLISH at once, from the connection's event loop, without a task hop: nil
    /// when there is no open connection to send it on (reconnecting, or closed) — the caller
    /// keeps it. The future completes on PUBACK / PUBCOMP (at once for QoS 0) and fails with
    /// `refused` when the broker refused it; an unacknowledged one is resent on the next
    /// connection with reconnect. Sends of one loop turn share one flush.
    public func publishNow(_ topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false,
                           properties: Properties = []) -> EventLoopFuture<Void>? {
        let connection = state.withLockedValue { s -> Connection? in
            s.finished || s.reconnecting ? nil : s.connection
        }
        guard let connection else { return nil }
        let loop = connection.channel.eventLoop
        loop.preconditionInEventLoop()
        let handler = connection.handler.value
        guard handler.isOpen else { return nil }
        if qos == .atMostOnce {
            handler.send(.publish(PublishPacket(topic: topic, payload: payload, retain: retain, properties: properties)))
            handler.flushSoon()
            return loop.makeSucceededVoidFuture()
        }
        let promise = loop.makePromise(of: MQTTPacket.self)
        handler.request({ id in
            .publish(PublishPacket(topic: topic, payload: payload, qos: qos, retain: retain, packetIdentifier: id, properties: properties))
        }, promise: promise, flush: false)
        handler.flushSoon()
        return promise.futureResult.flatMapThrowing { ack in
            switch ack {
            case .puback(let a) where a.reasonCode.isFailure: throw MQTTClientError.refused(a.reasonCode)
            case .pubrec(let r) where r.reasonCode.isFailure: throw MQTTClientError.refused(r.reasonCode)
            case .pubcomp(let c) where Self.refuses(c): throw MQTTClientError.refused(c.reasonCode)
            default: return
            }
        }
    }

    /// With `manualAcknowledgement`: the application is done with `message` — its PUBACK
    /// (QoS 1) or PUBREC (QoS 2) goes to the broker. Nothing for QoS 0, or when the connection
    /// that brought it is gone (the broker sends the message again on the next one).
    public func acknowledge(_ message: ReceivedMessage) {
        guard let ack = message.acknowledgement else { return }
        let connection = state.withLockedValue { $0.connection }
        let handler = connection.handler
        let loop = connection.channel.eventLoop
        if loop.inEventLoop {
            handler.value.acknowledge(ack, flush: false)
            handler.value.flushSoon()
        } else {
            loop.execute { handler.value.acknowledge(ack) }
        }
    }

    /// Subscribes and returns the broker's reason code for each filter; throws if any was refused.
    @discardableResult
    public func subscribe(_ subscriptions: [Subscription]) async throws -> [ReasonCode] {
        let ack = try await request { .subscribe(SubscribePacket(packetIdentifier: $0, subscriptions: subscriptions)) }
        guard case .suback(let s) = ack else { throw MQTTClientError.protocolError("expected SUBACK") }
        state.withLockedValue { st in
            for (sub, code) in zip(subscriptions, s.reasonCodes) where !code.isFailure { st.subscriptions[sub.topicFilter] = sub }
        }
        if let failure = s.reasonCodes.first(where: { $0.isFailure }) { throw MQTTClientError.refused(failure) }
        return s.reasonCodes
    }

    @discardableResult
    public func subscribe(_ filter: String, qos: QoS = .atMostOnce) async throws -> ReasonCode {
        try await subscribe([Subscription(filter, qos: qos)])[0]
    }

    public func unsubscribe(_ filters: [String]) async throws {
        _ = try await request { .unsubscribe(UnsubscribePacket(packetIdentifier: $0, topicFilters: filters)) }
        state.withLockedValue { st in for f in filters { st.subscriptions.removeValue(forKey: f) } }
    }

    /// Sends DISCONNECT (the will is discarded) and closes the connection; no reconnect follows.
    public func disconnect() async throws {
        let connection = state.withLockedValue { s -> Connection in
            s.finished = true
            return s.connection
        }
        let handler = connection.handler
        try? await connection.channel.eventLoop.submit { handler.value.sendAndFlush(.disconnect(DisconnectPacket())) }.get()
        try? await connection.channel.close()
        finish()
    }

    /// Completes when the client has closed for good (with reconnect: after `disconnect()`
    /// or when reconnecting gave up).
    public func waitUntilClosed() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let closed = state.withLockedValue { s -> Bool in
                if !s.closed { s.closedWaiters.append(waiter) }
                return s.closed
            }
            if closed { waiter.resume() }
        }
    }
}

/// Automatic reconnect: the delay before attempt n is `initialDelay × 2ⁿ`, at most
/// `maximumDelay`, each multiplied by a random factor in 1 ± `jitter` so many clients that
/// lost the same broker do not all come back in the same instant.
public struct ReconnectPolicy: Sendable, Hashable {
    public var initialDelay: Duration
    public var maximumDelay: Duration
    public var jitter: Double
    /// Attempts before giving up; nil = keep trying.
    public var maximumAttempts: Int?

    public init(initialDelay: Duration = .milliseconds(100), maximumDelay: Duration = .seconds(30), jitter: Double = 0.2, maximumAttempts: Int? = nil) {
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
        self.jitter = jitter
        self.maximumAttempts = maximumAttempts
    }

    public func delay(attempt: Int) -> Duration {
        let base = initialDelay * Double(1 << min(attempt, 30))
        let capped = min(base, maximumDelay)
        let factor = jitter > 0 ? Double.random(in: (1 - jitter)...(1 + jitter)) : 1
        return capped * factor
    }
}
