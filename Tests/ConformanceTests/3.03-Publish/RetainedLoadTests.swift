import MartletBroker
import MartletMQTT
import NIOConcurrencyHelpers
import NIOCore
import Testing
import MartletTestSupport

/// MQTT-3.3.1-6 at scale: a new subscription gets every matching retained message, however
/// many, sent as its socket drains and its inflight window allows, with nothing dropped.
@Suite(.serialized) struct RetainedLoadTests {
    static let topics = 100_000

    /// Stores `topics` retained messages (`r/<i>/v`), written in large batches.
    static func storeRetained(port: Int, broker: MQTTBroker) async throws {
        let (publisher, _) = try await RawClient.connected(port: port, clientID: "retainer")
        var batch = ByteBuffer()
        for i in 0..<topics {
            try MQTTPacket.publish(PublishPacket(topic: "r/\(i)/v", payload: ByteBuffer(string: "\(i)"), retain: true))
                .write(to: &batch, version: .v3_1_1)
            if batch.readableBytes > 256 << 10 || i == topics - 1 {
                try await publisher.channel.writeAndFlush(batch).get()
                batch.clear()
            }
        }
        try await waitFor(.seconds(30), "\(topics) retained messages stored") { broker.retainedCount == topics ? true : nil }
        await publisher.close()
    }

    @Test("100,000 retained topics: a QoS 0 and a QoS 1 subscriber to # each receive all of them, none dropped", arguments: [QoS.atMostOnce, .atLeastOnce])
    func manyRetainedMessages(qos: QoS) async throws {
        try await withBroker { broker, port in
            try await Self.storeRetained(port: port, broker: broker)
            let received = NIOLockedValueBox(Set<String>())
            let (channel, peer) = try await AckingPeer.open(port: port, version: .v3_1_1, received: received)
            try await AckingPeer.send(.connect(ConnectPacket(clientIdentifier: "everything")), on: channel, version: .v3_1_1)
            try await AckingPeer.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init("#", qos: qos)])),
                                      on: channel, version: .v3_1_1)
            try await waitFor(.seconds(60), "all \(Self.topics) retained messages") {
                received.withLockedValue { $0.count } == Self.topics ? true : nil
            }
            #expect(peer.subacks.withLockedValue { $0 } == 1)
            #expect(broker.counters.dropped == 0, "\(broker.counters)")
            // A message published now still arrives after them.
            let (late, _) = try await RawClient.connected(port: port, clientID: "late")
            try await late.publish("r/late", "after")
            try await waitFor(.seconds(10), "the message published after") { received.withLockedValue { $0.contains("after") } ? true : nil }
            try await channel.close()
        }
    }
}
