import Logging
import MartletBroker
import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport

struct TimedOut: Error, CustomStringConvertible {
    var description: String
}

/// Collects what the broker sends, so a test can wait for bytes or for the close.
final class ByteCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let received = NIOLockedValueBox(ByteBuffer())
    let closed = NIOLockedValueBox(false)
    private let waiter = NIOLockedValueBox<(count: Int, promise: EventLoopPromise<[UInt8]>)?>(nil)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        let total = received.withLockedValue { buffer in
            buffer.writeBuffer(&incoming)
            return buffer
        }
        if let (count, promise) = waiter.withLockedValue({ $0 }), total.readableBytes >= count {
            waiter.withLockedValue { $0 = nil }
            promise.succeed(Array(total.readableBytesView.prefix(count)))
        }
    }

    /// The first `count` bytes received (without consuming them), without polling; fails
    /// if the connection closes first.
    func firstBytes(_ count: Int, on loop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        loop.flatSubmit {
            let promise = loop.makePromise(of: [UInt8].self)
            let now = self.received.withLockedValue { $0 }
            if now.readableBytes >= count {
                promise.succeed(Array(now.readableBytesView.prefix(count)))
            } else if self.closed.withLockedValue({ $0 }) {
                promise.fail(ChannelError.eof)
            } else {
                self.waiter.withLockedValue { $0 = (count, promise) }
            }
            return promise.futureResult
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed.withLockedValue { $0 = true }
        if let (_, promise) = waiter.withLockedValue({ $0 }) {
            waiter.withLockedValue { $0 = nil }
            promise.fail(ChannelError.eof)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A raw MQTT peer: sends bytes or packets, reads packets back with the codec, and
/// observes the broker closing the connection.
final class RawClient: Sendable {
    static let group = MultiThreadedEventLoopGroup.singleton
    let channel: any Channel
    let collector: ByteCollector
    let version: ProtocolVersion

    init(channel: any Channel, collector: ByteCollector, version: ProtocolVersion) {
        self.channel = channel
        self.collector = collector
        self.version = version
    }

    static func connect(port: Int, version: ProtocolVersion = .v3_1_1, tls: TLSContext? = nil) async throws -> RawClient {
        let collector = ByteCollector()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, shutdownTimeout: .zero)) }
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawClient(channel: channel, collector: collector, version: version)
    }

    /// Opens a connection and completes CONNECT/CONNACK, returning the CONNACK.
    static func connected(
        port: Int, version: ProtocolVersion = .v3_1_1, clientID: String, cleanStart: Bool = true,
        keepAlive: UInt16 = 60, will: Will? = nil, properties: Properties = [], tls: TLSContext? = nil
    ) async throws -> (RawClient, ConnAckPacket) {
        let client = try await connect(port: port, version: version, tls: tls)
        try await client.send(.connect(ConnectPacket(
            protocolVersion: version, cleanStart: cleanStart, keepAlive: keepAlive, clientIdentifier: clientID,
            will: will, properties: properties)))
        guard case .connack(let ack) = try await client.next() else { throw TimedOut(description: "expected CONNACK") }
        return (client, ack)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    func send(_ packet: MQTTPacket) async throws {
        var buffer = ByteBuffer()
        try packet.write(to: &buffer, version: version)
        try await channel.writeAndFlush(buffer).get()
    }

    /// Raw bytes received so far, without consuming them.
    var pendingBytes: [UInt8] {
        collector.received.withLockedValue { Array($0.readableBytesView) }
    }

    /// Waits for exactly `count` bytes and consumes them.
    func read(count: Int, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        try await waitFor(timeout, "\(count) bytes") {
            collector.received.withLockedValue { buffer in
                guard buffer.readableBytes >= count else { return nil }
                return buffer.readBytes(length: count)
            }
        }
    }

    /// Waits for the next whole packet and consumes it.
    func next(timeout: Duration = .seconds(10)) async throws -> MQTTPacket {
        let version = self.version
        return try await waitFor(timeout, "a packet") {
            try collector.received.withLockedValue { buffer in
                try MQTTPacket.decode(from: &buffer, version: version, maximumPacketSize: 1 << 24)
            }
        }
    }

    /// Waits for the next PUBLISH, answering nothing.
    func nextPublish(timeout: Duration = .seconds(10)) async throws -> PublishPacket {
        let packet = try await next(timeout: timeout)
        guard case .publish(let p) = packet else { throw TimedOut(description: "expected PUBLISH, got \(packet)") }
        return p
    }

    /// Asserts that nothing arrives within `duration`.
    func expectSilence(for duration: Duration = .milliseconds(300)) async throws {
        try await Task.sleep(for: duration)
        let pending = pendingBytes
        #expect(pending.isEmpty, "unexpected bytes: \(pending)")
    }

    /// Waits until the broker closes the connection; returns the packets it sent before.
    @discardableResult
    func expectClosed(timeout: Duration = .seconds(10)) async throws -> [MQTTPacket] {
        try await waitFor(timeout, "the broker to close the connection") {
            collector.closed.withLockedValue { $0 } ? true : nil
        }
        var packets: [MQTTPacket] = []
        let version = self.version
        collector.received.withLockedValue { buffer in
            while let p = try? MQTTPacket.decode(from: &buffer, version: version, maximumPacketSize: 1 << 24) { packets.append(p) }
        }
        return packets
    }

    var isClosed: Bool { collector.closed.withLockedValue { $0 } }

    func close() async {
        try? await channel.close()
    }

    func subscribe(_ filter: String, qos: QoS = .atMostOnce, id: UInt16 = 1) async throws -> SubAckPacket {
        try await send(.subscribe(SubscribePacket(packetIdentifier: id, subscriptions: [.init(filter, qos: qos)])))
        guard case .suback(let ack) = try await next() else { throw TimedOut(description: "expected SUBACK") }
        return ack
    }

    func publish(_ topic: String, _ payload: String, qos: QoS = .atMostOnce, retain: Bool = false, id: UInt16? = nil, properties: Properties = []) async throws {
        try await send(.publish(PublishPacket(
            topic: topic, payload: ByteBuffer(string: payload), qos: qos, retain: retain,
            packetIdentifier: qos == .atMostOnce ? nil : (id ?? 1), properties: properties)))
    }
}


extension PublishPacket {
    var payloadString: String { String(buffer: payload) }
}

/// Waits until the broker has handled the close of `clientID`'s connection: its session is
/// offline (or gone), so what is published next is queued for it, not sent.
func waitUntilOffline(_ broker: MQTTBroker, _ clientID: String) async throws {
    try await waitFor(.seconds(10), "the session of \(clientID) to go offline") {
        try await broker.sessionReport(clientID: clientID)?.online == true ? nil : true
    }
}
