import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport

/// A client connection that answers by itself: every QoS 1 PUBLISH gets its PUBACK and its
/// payload recorded, PUBACKs and PINGRESPs are counted, CONNACK and SUBACK are kept. Driven
/// by NIO callbacks rather than polling, so a thousand takeovers take seconds.
final class AckingPeer: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let version: ProtocolVersion
    /// Payloads received on any connection sharing this set.
    let received: NIOLockedValueBox<Set<String>>
    let connack = NIOLockedValueBox<ConnAckPacket?>(nil)
    let subacks = NIOLockedValueBox(0)
    let pubacks = NIOLockedValueBox<Set<UInt16>>([])
    let pingresps = NIOLockedValueBox(0)
    let closed = NIOLockedValueBox(false)
    let disconnectReason = NIOLockedValueBox<ReasonCode?>(nil)
    private let pending = NIOLockedValueBox(ByteBuffer())

    init(version: ProtocolVersion, received: NIOLockedValueBox<Set<String>>) {
        self.version = version
        self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        var packets: [MQTTPacket] = []
        pending.withLockedValue { buffer in
            buffer.writeBuffer(&incoming)
            while let packet = try? MQTTPacket.decode(from: &buffer, version: version, maximumPacketSize: 1 << 24) {
                packets.append(packet)
            }
        }
        var answered = false
        for packet in packets {
            switch packet {
            case .connack(let ack): connack.withLockedValue { $0 = ack }
            case .suback: subacks.withLockedValue { $0 += 1 }
            case .puback(let ack): _ = pubacks.withLockedValue { $0.insert(ack.packetIdentifier) }
            case .pingresp: pingresps.withLockedValue { $0 += 1 }
            case .disconnect(let d): disconnectReason.withLockedValue { $0 = d.reasonCode }
            case .publish(let p):
                _ = received.withLockedValue { $0.insert(String(buffer: p.payload)) }
                if let id = p.packetIdentifier {
                    var out = context.channel.allocator.buffer(capacity: 8)
                    try? MQTTPacket.puback(PubAckPacket(packetIdentifier: id)).write(to: &out, version: version)
                    context.write(wrapOutboundOut(out), promise: nil)
                    answered = true
                }
            default: break
            }
        }
        if answered { context.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed.withLockedValue { $0 = true }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    var isClosed: Bool { closed.withLockedValue { $0 } }

    /// A TCP connection with this handler, no MQTT packet sent yet.
    static func open(port: Int, version: ProtocolVersion, received: NIOLockedValueBox<Set<String>>) async throws -> (any Channel, AckingPeer) {
        let peer = AckingPeer(version: version, received: received)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(peer) }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return (channel, peer)
    }

    static func send(_ packet: MQTTPacket, on channel: any Channel, version: ProtocolVersion) async throws {
        var buffer = ByteBuffer()
        try packet.write(to: &buffer, version: version)
        try await channel.writeAndFlush(buffer).get()
    }

    /// CONNECT for a session that outlives the connection (3.1.1 clean session 0; v5 expiry 1 h).
    static func persistentConnect(_ clientID: String, version: ProtocolVersion) -> MQTTPacket {
        var properties = Properties()
        if version == .v5 { properties.sessionExpiryInterval = 3600 }
        return .connect(ConnectPacket(protocolVersion: version, cleanStart: false, clientIdentifier: clientID, properties: properties))
    }

    /// Opens a connection and completes CONNECT/CONNACK.
    static func connected(port: Int, version: ProtocolVersion, clientID: String, received: NIOLockedValueBox<Set<String>>) async throws -> (any Channel, AckingPeer) {
        let (channel, peer) = try await open(port: port, version: version, received: received)
        try await send(persistentConnect(clientID, version: version), on: channel, version: version)
        try await waitFor(.seconds(10), "CONNACK", every: .milliseconds(1)) { peer.connack.withLockedValue { $0 } }
        return (channel, peer)
    }
}

/// Takeovers of one client id under load (MQTT-3.1.4-3): one serialized transition per client
/// id whatever loops the connections are on, one connection left, the session moved whole
/// and nothing acknowledged lost.
@Suite(.serialized) struct TakeoverLoadTests {
    static let versions: [ProtocolVersion] = [.v3_1_1, .v5]

    @Test("1,000 sequential takeovers of a persistent QoS 1 session while a publisher sends ~300 msg/s: every acknowledged message arrives", arguments: versions)
    func sequentialTakeoversLoseNothing(version: ProtocolVersion) async throws {
        try await withBroker({ $0.eventLoops = 2 }) { broker, port in
            let received = NIOLockedValueBox(Set<String>())
            var (channel, peer) = try await AckingPeer.connected(port: port, version: version, clientID: "victim", received: received)
            try await AckingPeer.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init("stress/#", qos: .atLeastOnce)])),
                                      on: channel, version: version)
            try await waitFor(.seconds(10), "SUBACK", every: .milliseconds(1)) { peer.subacks.withLockedValue { $0 } == 1 ? true : nil }

            let (publisher, publisherPeer) = try await AckingPeer.connected(
                port: port, version: version, clientID: "publisher", received: NIOLockedValueBox([]))
            let stop = NIOLockedValueBox(false)
            let publishing = Task {
                var sent: UInt16 = 0
                while !stop.withLockedValue({ $0 }) && sent < 60_000 {
                    sent += 1
                    try await AckingPeer.send(.publish(PublishPacket(
                        topic: "stress/t", payload: ByteBuffer(string: "\(sent)"), qos: .atLeastOnce, packetIdentifier: sent)),
                        on: publisher, version: version)
                    try await Task.sleep(for: .microseconds(3_300))
                }
                return sent
            }
            var previous = channel
            for _ in 0..<1_000 {
                (channel, peer) = try await AckingPeer.connected(port: port, version: version, clientID: "victim", received: received)
                #expect(peer.connack.withLockedValue { $0?.sessionPresent } == true)
                _ = previous
                previous = channel
            }
            stop.withLockedValue { $0 = true }
            let sent = try await publishing.value
            try await waitFor(.seconds(10), "every PUBACK") { publisherPeer.pubacks.withLockedValue { $0.count } == Int(sent) ? true : nil }
            let acknowledged = Set((1...sent).map { "\($0)" })
            do {
                try await waitFor(.seconds(10), "every acknowledged message to arrive") {
                    acknowledged.isSubset(of: received.withLockedValue { $0 }) ? true : nil
                }
            } catch {
                let missing = acknowledged.subtracting(received.withLockedValue { $0 }).compactMap { Int($0) }.sorted()
                Issue.record("\(missing.count) of \(sent) acknowledged messages never arrived: \(missing.prefix(20))")
            }
            // The last connection is the only one of the client id left.
            try await waitFor(.seconds(10), "one victim connection and the publisher") { broker.counters.connections == 2 ? true : nil }
            let report = try #require(try await broker.sessionReport(clientID: "victim"))
            #expect(report.dropped.values.reduce(0, +) == 0, "\(report.dropped)")
            try await channel.close()
            try await publisher.close()
        }
    }

    @Test("20 CONNECTs of one client id written at once: exactly one connection stays, with the whole session (subscription kept, later QoS 1 messages all arrive)", arguments: versions)
    func simultaneousConnects(version: ProtocolVersion) async throws {
        try await withBroker({ $0.eventLoops = 2 }) { broker, port in
            for round in 0..<5 {
                let clientID = "crowd-\(round)"
                let topic = "crowd/\(round)"
                let received = NIOLockedValueBox(Set<String>())
                let (first, firstPeer) = try await AckingPeer.connected(port: port, version: version, clientID: clientID, received: received)
                try await AckingPeer.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(topic, qos: .atLeastOnce)])),
                                          on: first, version: version)
                try await waitFor(.seconds(10), "SUBACK") { firstPeer.subacks.withLockedValue { $0 } == 1 ? true : nil }
                try await AckingPeer.send(.disconnect(DisconnectPacket()), on: first, version: version)
                try await waitFor(.seconds(10), "the first connection to close") { firstPeer.isClosed ? true : nil }

                var crowd: [(any Channel, AckingPeer)] = []
                for _ in 0..<20 { crowd.append(try await AckingPeer.open(port: port, version: version, received: received)) }
                var encoded = ByteBuffer()
                try AckingPeer.persistentConnect(clientID, version: version).write(to: &encoded, version: version)
                let writes = crowd.map { $0.0.writeAndFlush(encoded) }
                for write in writes { try await write.get() }
                try await waitFor(.seconds(10), "19 of the 20 connections to be closed") {
                    crowd.filter { $0.1.isClosed }.count == 19 ? true : nil
                }
                let survivors = crowd.filter { !$0.1.isClosed }
                try #require(survivors.count == 1)
                let (survivor, survivorPeer) = survivors[0]
                // The old owner closes the previous connection before the survivor's CONNACK
                // goes out (from the survivor's loop): it may still be on its way.
                let survivorAck = try await waitFor(.seconds(10), "the survivor's CONNACK") { survivorPeer.connack.withLockedValue { $0 } }
                #expect(survivorAck.sessionPresent)
                try await AckingPeer.send(.pingreq, on: survivor, version: version)
                try await waitFor(.seconds(10), "PINGRESP") { survivorPeer.pingresps.withLockedValue { $0 } == 1 ? true : nil }

                let (publisher, _) = try await AckingPeer.connected(port: port, version: version, clientID: "pub-\(round)", received: NIOLockedValueBox([]))
                for i in 1...10 {
                    try await AckingPeer.send(.publish(PublishPacket(
                        topic: topic, payload: ByteBuffer(string: "m\(i)"), qos: .atLeastOnce, packetIdentifier: UInt16(i))),
                        on: publisher, version: version)
                }
                let expected = Set((1...10).map { "m\($0)" })
                try await waitFor(.seconds(10), "the 10 messages at the survivor") {
                    expected.isSubset(of: received.withLockedValue { $0 }) ? true : nil
                }
                // Still one: the 19 others stay closed, and the survivor still answers.
                #expect(crowd.filter { $0.1.isClosed }.count == 19)
                try await AckingPeer.send(.pingreq, on: survivor, version: version)
                try await waitFor(.seconds(10), "a second PINGRESP") { survivorPeer.pingresps.withLockedValue { $0 } == 2 ? true : nil }
                try await waitFor(.seconds(10), "the survivor and the publisher as the only connections") {
                    broker.counters.connections == 2 ? true : nil
                }
                try await survivor.close()
                try await publisher.close()
                try await waitFor(.seconds(10), "every connection of the round closed") { broker.counters.connections == 0 ? true : nil }
            }
        }
    }
}
