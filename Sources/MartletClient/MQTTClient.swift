import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An MQTT 3.1.1 / 5.0 client for async code.
///
/// ```swift
/// let client = try await MQTTClient.connect(.init(clientID: "app"))
/// try await client.subscribe("sensors/#", qos: .atLeastOnce)
/// try await client.publish("sensors/t", payload: ByteBuffer(string: "21"), qos: .atLeastOnce)
/// for await message in client.messages { … }
/// ```
public final class MQTTClient: Sendable {
    public let configuration: MQTTClientConfiguration
    /// What the broker said in CONNACK (session present, v5 properties such as an assigned id).
    public let connack: ConnAckPacket
    /// Every message received on any subscription, in arrival order.
    public let messages: AsyncStream<ReceivedMessage>

    private let channel: any Channel
    private let handler: NIOLoopBound<ClientConnectionHandler>
    private let dropped: NIOLockedValueBox<Int>

    /// Messages dropped because the consumer of `messages` fell `messageBufferSize` behind.
    public var droppedMessages: Int { dropped.withLockedValue { $0 } }

    private init(configuration: MQTTClientConfiguration, connack: ConnAckPacket, messages: AsyncStream<ReceivedMessage>,
                 channel: any Channel, handler: NIOLoopBound<ClientConnectionHandler>, dropped: NIOLockedValueBox<Int>) {
        self.configuration = configuration
        self.connack = connack
        self.messages = messages
        self.channel = channel
        self.handler = handler
        self.dropped = dropped
    }

    /// Opens TCP (and TLS), sends CONNECT and waits for CONNACK.
    public static func connect(_ configuration: MQTTClientConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MQTTClient {
        let (stream, continuation) = AsyncStream<ReceivedMessage>.makeStream(bufferingPolicy: .bufferingNewest(configuration.messageBufferSize))
        let dropped = NIOLockedValueBox(0)
        let deliver: @Sendable (ReceivedMessage) -> Void = { message in
            if case .dropped = continuation.yield(message) { dropped.withLockedValue { $0 += 1 } }
        }
        // A shared context per configuration: its session store lets a repeat connection resume.
        let tlsContext = try configuration.tls.map { try TLSContext.client($0) }
        let serverName = configuration.tls?.serverName ?? configuration.host
        let version = configuration.version
        let keepAlive = configuration.keepAlive
        // The handler as the initializer made it: looking it up in the pipeline later fails
        // once a failed TLS handshake has closed the channel and emptied the pipeline.
        let installed = NIOLockedValueBox<NIOLoopBound<ClientConnectionHandler>?>(nil)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: tlsContext, serverName: serverName, handshakeTimeout: configuration.connectTimeout))
                    }
                    let handler = ClientConnectionHandler(version: version, keepAlive: keepAlive, deliver: deliver)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    installed.withLockedValue { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .get()
        channel.closeFuture.whenComplete { _ in continuation.finish() }

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
        return MQTTClient(configuration: configuration, connack: ack, messages: stream, channel: channel, handler: handler, dropped: dropped)
    }

    /// Publishes and returns when the QoS flow is complete: at once for QoS 0, on PUBACK for
    /// QoS 1, on PUBCOMP for QoS 2.
    public func publish(_ topic: String, payload: ByteBuffer, qos: QoS = .atMostOnce, retain: Bool = false, properties: Properties = []) async throws {
        let handler = self.handler
        let loop = channel.eventLoop
        if qos == .atMostOnce {
            try await loop.submit {
                handler.value.sendAndFlush(.publish(PublishPacket(topic: topic, payload: payload, retain: retain, properties: properties)))
            }.get()
            return
        }
        let ack = try await loop.flatSubmit {
            let promise = loop.makePromise(of: MQTTPacket.self)
            handler.value.request({ id in
                .publish(PublishPacket(topic: topic, payload: payload, qos: qos, retain: retain, packetIdentifier: id, properties: properties))
            }, promise: promise)
            return promise.futureResult
        }.get()
        switch ack {
        case .puback(let a) where a.reasonCode.isFailure: throw MQTTClientError.refused(a.reasonCode)
        case .pubrec(let r) where r.reasonCode.isFailure: throw MQTTClientError.refused(r.reasonCode)
        case .pubcomp(let c) where c.reasonCode.isFailure: throw MQTTClientError.refused(c.reasonCode)
        default: return
        }
    }

    /// Subscribes and returns the broker's reason code for each filter; throws if any was refused.
    @discardableResult
    public func subscribe(_ subscriptions: [Subscription]) async throws -> [ReasonCode] {
        let handler = self.handler
        let loop = channel.eventLoop
        let ack = try await loop.flatSubmit {
            let promise = loop.makePromise(of: MQTTPacket.self)
            handler.value.request({ .subscribe(SubscribePacket(packetIdentifier: $0, subscriptions: subscriptions)) }, promise: promise)
            return promise.futureResult
        }.get()
        guard case .suback(let s) = ack else { throw MQTTClientError.protocolError("expected SUBACK") }
        if let failure = s.reasonCodes.first(where: { $0.isFailure }) { throw MQTTClientError.refused(failure) }
        return s.reasonCodes
    }

    @discardableResult
    public func subscribe(_ filter: String, qos: QoS = .atMostOnce) async throws -> ReasonCode {
        try await subscribe([Subscription(filter, qos: qos)])[0]
    }

    public func unsubscribe(_ filters: [String]) async throws {
        let handler = self.handler
        let loop = channel.eventLoop
        _ = try await loop.flatSubmit {
            let promise = loop.makePromise(of: MQTTPacket.self)
            handler.value.request({ .unsubscribe(UnsubscribePacket(packetIdentifier: $0, topicFilters: filters)) }, promise: promise)
            return promise.futureResult
        }.get()
    }

    /// Sends DISCONNECT (the will is discarded) and closes the connection.
    public func disconnect() async throws {
        let handler = self.handler
        try? await channel.eventLoop.submit { handler.value.sendAndFlush(.disconnect(DisconnectPacket())) }.get()
        try? await channel.close()
    }

    /// Completes when the connection has closed, for whatever reason.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}
