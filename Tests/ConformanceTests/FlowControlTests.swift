import MartletBroker
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Publishers paced by lagging subscribers (`pause_publishers_for_slow_subscribers`).
@Suite struct FlowControlTests {
    @Test("a client subscribed to what it publishes is not held back by its own lagging outbox (its acknowledgements would be held too)")
    func ownOutboxDoesNotPauseThePublisher() async throws {
        try await withBroker({
            $0.maximumQueuedMessages = 8
            $0.maximumInflight = 1
            // Long: if the client were paused for its own outbox, only the stall would free it.
            $0.subscriberStallTimeout = .seconds(30)
        }) { broker, port in
            let (client, _) = try await RawClient.connected(port: port, clientID: "echo")
            _ = try await client.subscribe("self", qos: .atLeastOnce)
            // 30 QoS 1 publications in one write, more than the 8-message outbox holds.
            var bytes: [UInt8] = []
            for i in 1...30 {
                var b = ByteBuffer()
                try MQTTPacket.publish(PublishPacket(topic: "self", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce, packetIdentifier: UInt16(i)))
                    .write(to: &b, version: .v3_1_1)
                bytes += b.readableBytesView
            }
            try await client.send(bytes)
            // Every publication is acknowledged; every delivery to itself is acknowledged back.
            var pubAcks = 0
            while pubAcks < 30 {
                switch try await client.next(timeout: .seconds(5)) {
                case .puback: pubAcks += 1
                case .publish(let p): try await client.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
                default: break
                }
            }
            #expect(broker.counters.subscriberStalls == 0)
        }
    }
}
