import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// QoS flows of MQTT 3.1.1 section 4.3 and delivery rules of 3.3.5 / 4.6.
@Suite struct QoSTests {
    @Test("MQTT-4.3.2-4: QoS 1 PUBLISH → PUBACK with the same packet id")
    func qos1Acknowledged() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "p1")
            try await c.send(h("32 08 00 01 't' 12 34 'abc'"))
            #expect(try await c.read(count: 4) == h("40 02 12 34"))
        }
    }

    @Test("MQTT-4.3.3-2: QoS 2 inbound: PUBREC, then PUBREL → PUBCOMP")
    func qos2Handshake() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "p2")
            try await c.send(h("34 08 00 01 't' 00 07 'abc'"))
            #expect(try await c.read(count: 4) == h("50 02 00 07"))
            try await c.send(h("62 02 00 07"))
            #expect(try await c.read(count: 4) == h("70 02 00 07"))
        }
    }

    @Test("MQTT-4.3.3-2: a QoS 2 PUBLISH resent before PUBREL is not delivered twice")
    func qos2ExactlyOnce() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("once", qos: .exactlyOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("once", "1", qos: .exactlyOnce, id: 5)
            #expect(try await pub.next() == .pubrec(PubRecPacket(packetIdentifier: 5)))
            try await pub.send(.publish(PublishPacket(topic: "once", payload: ByteBuffer(string: "1"), qos: .exactlyOnce, dup: true, packetIdentifier: 5)))
            #expect(try await pub.next() == .pubrec(PubRecPacket(packetIdentifier: 5)))
            try await pub.send(.pubrel(PubRelPacket(packetIdentifier: 5)))
            #expect(try await pub.next() == .pubcomp(PubCompPacket(packetIdentifier: 5)))
            let m = try await sub.nextPublish()
            try await sub.send(.pubrec(PubRecPacket(packetIdentifier: m.packetIdentifier!)))
            #expect(try await sub.next() == .pubrel(PubRelPacket(packetIdentifier: m.packetIdentifier!)))
            try await sub.send(.pubcomp(PubCompPacket(packetIdentifier: m.packetIdentifier!)))
            try await sub.expectSilence()
        }
    }

    @Test("MQTT-3.8.4-6: delivery is downgraded to the granted QoS")
    func downgrade() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            let ack = try await sub.subscribe("d", qos: .atMostOnce)
            #expect(ack.reasonCodes == [.grantedQoS0])
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("d", "x", qos: .exactlyOnce, id: 1)
            let m = try await sub.nextPublish()
            #expect(m.qos == .atMostOnce)
            #expect(m.packetIdentifier == nil)
        }
    }

    @Test("MQTT-2.3.1-2: packet ids are not reused while in flight")
    func packetIDsUnique() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("ids", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for i in 1...10 {
                try await pub.publish("ids", "\(i)", qos: .atLeastOnce, id: UInt16(i))
            }
            var ids = Set<UInt16>()
            for _ in 1...10 { ids.insert(try await sub.nextPublish().packetIdentifier!) }
            #expect(ids.count == 10)
        }
    }

    @Test("max_inflight: beyond the window messages wait, in order, until PUBACKs arrive")
    func inflightWindow() async throws {
        try await withBroker({ $0.maximumInflight = 2 }) { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("w", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for i in 1...4 { try await pub.publish("w", "\(i)", qos: .atLeastOnce, id: UInt16(i)) }
            let a = try await sub.nextPublish()
            let b = try await sub.nextPublish()
            try await sub.expectSilence(for: .milliseconds(200))
            try await sub.send(.puback(PubAckPacket(packetIdentifier: a.packetIdentifier!)))
            let c = try await sub.nextPublish()
            try await sub.send(.puback(PubAckPacket(packetIdentifier: b.packetIdentifier!)))
            let d = try await sub.nextPublish()
            #expect([a, b, c, d].map(\.payloadString) == ["1", "2", "3", "4"])
        }
    }

    @Test("MQTT-4.6.0-5: messages on a topic arrive in the order published")
    func ordering() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("order", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for i in 1...100 { try await pub.publish("order", "\(i)", qos: .atLeastOnce, id: UInt16(i)) }
            var got: [String] = []
            for _ in 1...100 {
                let m = try await sub.nextPublish()
                got.append(m.payloadString)
                try await sub.send(.puback(PubAckPacket(packetIdentifier: m.packetIdentifier!)))
            }
            #expect(got == (1...100).map(String.init))
        }
    }
}
