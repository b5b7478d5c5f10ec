import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Configured limits, each fed a client that goes past it.
@Suite struct LimitTests {
    @Test("max_queued_messages: past the queue, new QoS 1 messages are dropped (and the rest still arrive in order)")
    func queueFullDropsNewMessages() async throws {
        try await withBroker({ $0.maximumInflight = 1; $0.maximumQueuedMessages = 2 }) { broker, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "slow")
            _ = try await sub.subscribe("q", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for i in 1...5 {
                try await pub.publish("q", "\(i)", qos: .atLeastOnce, id: UInt16(i))
                _ = try await pub.next()  // PUBACK: the broker has routed it
            }
            var got: [String] = []
            for _ in 1...3 {
                let m = try await sub.nextPublish()
                got.append(m.payloadString)
                try await sub.send(.puback(PubAckPacket(packetIdentifier: m.packetIdentifier!)))
            }
            try await sub.expectSilence()
            #expect(got == ["1", "2", "3"])
            try await waitFor(.seconds(10), "the drop counter") { broker.counters.droppedQueueFull == 2 ? true : nil }
        }
    }

    @Test("max_client_id_length: a longer client id is refused with 0x02 (3.1.1) / 0x85 (v5)")
    func clientIDTooLong() async throws {
        try await withBroker({ $0.maximumClientIdentifierLength = 8 }) { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(.connect(ConnectPacket(clientIdentifier: "nine-char")))
            #expect(try await c.expectClosed() == [.connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.identifierRejected.rawValue)))])
            let v5 = try await RawClient.connect(port: port, version: .v5)
            try await v5.send(.connect(ConnectPacket(protocolVersion: .v5, clientIdentifier: "nine-char")))
            #expect(try await v5.expectClosed() == [.connack(ConnAckPacket(reasonCode: .clientIdentifierNotValid))])
            let (_, ok) = try await RawClient.connected(port: port, clientID: "eight-ch")
            #expect(ok.reasonCode == .success)
        }
    }

    @Test("max_keepalive: a v5 client asking for more is told the server keep alive; a 3.1.1 client is refused")
    func keepaliveCap() async throws {
        try await withBroker({ $0.maximumKeepalive = 30 }) { _, port in
            let (_, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "v5", keepAlive: 300)
            #expect(ack.reasonCode == .success)
            #expect(ack.properties.serverKeepAlive == 30)
            let (_, within) = try await RawClient.connected(port: port, version: .v5, clientID: "v5b", keepAlive: 20)
            #expect(within.properties.serverKeepAlive == nil)
            let c = try await RawClient.connect(port: port)
            try await c.send(.connect(ConnectPacket(keepAlive: 300, clientIdentifier: "v3")))
            #expect(try await c.expectClosed() == [.connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.identifierRejected.rawValue)))])
        }
    }
}
