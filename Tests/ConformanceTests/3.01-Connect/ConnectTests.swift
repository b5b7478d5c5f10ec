import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// CONNECT rules of MQTT 3.1.1 section 3.1 / 3.2, checked on the wire.
@Suite struct ConnectTests {
    @Test("MQTT-3.1.2-2: unsupported protocol level → CONNACK 0x01, then close")
    func unsupportedProtocolLevel() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0F 00 04 'MQTT' 06 02 00 3C 00 03 'abc'"))
            #expect(try await c.read(count: 4) == h("20 02 00 01"))
            try await c.expectClosed()
        }
    }

    @Test("MQTT-3.1.2-1: a bad protocol name closes the connection")
    func badProtocolName() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0F 00 04 'MQTX' 04 02 00 3C 00 03 'abc'"))
            #expect(try await c.expectClosed().isEmpty)
        }
    }

    @Test("MQTT 3.1 (MQIsdp, level 3) is accepted")
    func mqtt31() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0F 00 06 'MQIsdp' 03 02 00 3C 00 01 'a'"))
            #expect(try await c.read(count: 4) == h("20 02 00 00"))
        }
    }

    @Test("MQTT-3.1.2-3: reserved CONNECT flag set → close without CONNACK")
    func reservedFlag() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0F 00 04 'MQTT' 04 03 00 3C 00 03 'abc'"))
            #expect(try await c.expectClosed().isEmpty)
        }
    }

    @Test("MQTT-3.1.3-6: zero-length client id with clean session is assigned one")
    func zeroLengthClientIDClean() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0C 00 04 'MQTT' 04 02 00 3C 00 00"))
            #expect(try await c.read(count: 4) == h("20 02 00 00"))
            try await c.send(h("C0 00"))
            #expect(try await c.read(count: 2) == h("D0 00"))
        }
    }

    @Test("MQTT-3.1.3-8: zero-length client id without clean session → CONNACK 0x02, close")
    func zeroLengthClientIDPersistent() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("10 0C 00 04 'MQTT' 04 00 00 3C 00 00"))
            #expect(try await c.read(count: 4) == h("20 02 00 02"))
            try await c.expectClosed()
        }
    }

    @Test("MQTT-3.1.0-1: the first packet must be CONNECT")
    func firstPacketMustBeConnect() async throws {
        try await withBroker { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.send(h("C0 00"))
            #expect(try await c.expectClosed().isEmpty)
        }
    }

    @Test("MQTT-3.1.0-2: a second CONNECT is a protocol violation → close")
    func secondConnect() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "twice")
            try await c.send(.connect(ConnectPacket(clientIdentifier: "twice")))
            try await c.expectClosed()
        }
    }

    @Test("MQTT-3.1.4-2: a new connection with a live client id takes over; the old one is closed and its will published")
    func takeover() async throws {
        try await withBroker { _, port in
            let (watcher, _) = try await RawClient.connected(port: port, clientID: "watcher")
            _ = try await watcher.subscribe("will/#")
            let will = Will(topic: "will/first", payload: ByteBuffer(string: "gone"))
            let (first, _) = try await RawClient.connected(port: port, clientID: "same", will: will)
            let (second, ack) = try await RawClient.connected(port: port, clientID: "same")
            #expect(ack.reasonCode == .success)
            try await first.expectClosed()
            let p = try await watcher.nextPublish()
            #expect(p.topic == "will/first")
            #expect(p.payloadString == "gone")
            try await second.send(h("C0 00"))
            #expect(try await second.read(count: 2) == h("D0 00"))
        }
    }

    @Test("connect timeout: a socket that never sends CONNECT is closed")
    func connectTimeout() async throws {
        try await withBroker({ $0.connectTimeout = .milliseconds(300) }) { _, port in
            let c = try await RawClient.connect(port: port)
            try await c.expectClosed(timeout: .seconds(5))
        }
    }

    @Test("a malformed packet closes that connection and no other")
    func malformedClosesOnlyThatConnection() async throws {
        try await withBroker { _, port in
            let (good, _) = try await RawClient.connected(port: port, clientID: "good")
            _ = try await good.subscribe("t")
            let (bad, _) = try await RawClient.connected(port: port, clientID: "bad")
            try await bad.send(h("36 05 00 01 't' 00 01"))  // QoS 3
            try await bad.expectClosed()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            try await pub.publish("t", "still here")
            #expect(try await good.nextPublish().payloadString == "still here")
        }
    }

    @Test("a packet above max_packet_size closes the connection")
    func packetTooLarge() async throws {
        try await withBroker({ $0.maximumPacketSize = 128 }) { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "big")
            try await c.publish("t", String(repeating: "x", count: 200))
            try await c.expectClosed()
        }
    }
}

/// The broker's own framing over a real socket: any split of the byte stream works.
@Suite struct FramingTests {
    @Test("packets split into single bytes, and a large packet split in pieces, are handled")
    func splitPackets() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "sub")
            _ = try await sub.subscribe("split")
            let c = try await RawClient.connect(port: port)
            var bytes = ByteBuffer()
            try MQTTPacket.connect(ConnectPacket(clientIdentifier: "byte-by-byte")).write(to: &bytes, version: .v3_1_1)
            try MQTTPacket.publish(PublishPacket(topic: "split", payload: ByteBuffer(string: "small"))).write(to: &bytes, version: .v3_1_1)
            for b in bytes.readableBytesView { try await c.send([b]) }
            #expect(try await c.read(count: 4) == h("20 02 00 00"))
            #expect(try await sub.nextPublish().payloadString == "small")
            var big = ByteBuffer()
            let payload = String(repeating: "x", count: 100_000)
            try MQTTPacket.publish(PublishPacket(topic: "split", payload: ByteBuffer(string: payload))).write(to: &big, version: .v3_1_1)
            let all = Array(big.readableBytesView)
            for range in [0..<3, 3..<50_000, 50_000..<all.count] { try await c.send(Array(all[range])) }
            #expect(try await sub.nextPublish().payload.readableBytes == 100_000)
        }
    }
}
