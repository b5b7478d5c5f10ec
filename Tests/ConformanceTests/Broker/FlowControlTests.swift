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

    @Test("a subscriber that keeps reading but stays lagging for ten stall timeouts stops holding the publisher back (its excess is dropped, counted)")
    func longLaggingSubscriberIsStalled() async throws {
        try await withBroker({
            $0.maximumQueuedMessages = 400  // lagging from 200 until back at 100
            $0.maximumInflight = 1
            // Progress every 20 ms (never 100 ms without), but lagging for 1 s makes it stalled.
            $0.subscriberStallTimeout = .milliseconds(100)
        }) { broker, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "crawl")
            _ = try await sub.subscribe("crawl", qos: .atLeastOnce)
            // One message every 20 ms: 50 a second, so draining 100 takes 2 s.
            let reader = Task {
                while !Task.isCancelled {
                    guard case .publish(let p) = try await sub.next(timeout: .seconds(30)) else { continue }
                    try await Task.sleep(for: .milliseconds(20))
                    try await sub.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
                }
            }
            defer { reader.cancel() }
            let (pub, _) = try await RawClient.connected(port: port, clientID: "flood")
            let count = 2_000
            var bytes: [UInt8] = []
            for i in 1...count {
                var b = ByteBuffer()
                try MQTTPacket.publish(PublishPacket(topic: "crawl", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce, packetIdentifier: UInt16(i)))
                    .write(to: &b, version: .v3_1_1)
                bytes += b.readableBytesView
            }
            let start = ContinuousClock.now
            try await pub.send(bytes)
            // Paced at the reader's speed the publisher would be acknowledged over 40 s.
            var acks = 0
            while acks < count {
                if case .puback = try await pub.next(timeout: .seconds(10)) { acks += 1 }
            }
            #expect(ContinuousClock.now - start < .seconds(10))
            #expect(broker.counters.subscriberStalls >= 1)
            let report = try #require(try await broker.sessionReport(clientID: "crawl"))
            #expect(report.dropped[.queueFull]! > 0)
        }
    }
}
