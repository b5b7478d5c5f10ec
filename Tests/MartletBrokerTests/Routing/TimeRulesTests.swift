@testable import MartletBroker
import MartletMQTT
import NIOCore
import Testing

/// The broker's rules about time, on a manual clock: a router on an embedded event loop and
/// clients on embedded channels, time advanced by the test. No sleeps, no slack.
@Suite struct TimeRulesTests {
    func v5Connect(_ id: String, keepAlive: UInt16 = 0, cleanStart: Bool = true, expiry: UInt32? = nil, will: Will? = nil) -> ConnectPacket {
        var properties = Properties()
        if let expiry { properties.sessionExpiryInterval = expiry }
        return ConnectPacket(protocolVersion: .v5, cleanStart: cleanStart, keepAlive: keepAlive, clientIdentifier: id, will: will, properties: properties)
    }

    func subscribe(_ client: EmbeddedClient, _ filter: String, qos: QoS = .atLeastOnce) throws {
        try client.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(filter, qos: qos)])))
        _ = try client.received()
    }

    func publishes(_ packets: [MQTTPacket]) -> [PublishPacket] {
        packets.compactMap { if case .publish(let p) = $0 { p } else { nil } }
    }

    @Test("MQTT-3.1.2-24: a client silent for 1.5 × its keepalive is closed at the next sweep (v5: DISCONNECT 0x8D), not before")
    func keepalive() throws {
        let broker = EmbeddedBroker()
        let client = try broker.client(v5Connect("k", keepAlive: 10))
        _ = try client.received()
        broker.advance(by: .seconds(15))
        #expect(client.isOpen)
        try client.send(.pingreq)  // any packet restarts the silence
        #expect(try client.received() == [.pingresp])
        broker.advance(by: .seconds(15))
        #expect(client.isOpen)
        broker.advance(by: .milliseconds(500))
        #expect(!client.isOpen)
        #expect(try client.received() == [.disconnect(DisconnectPacket(reasonCode: .keepAliveTimeout))])
        #expect(broker.counters.keepaliveExpiries == 1)
    }

    @Test("A keepalive shorter than connect_timeout is kept from the CONNECT on: the sweep looks at the connection by its keepalive deadline, not the connect timeout it was first watched for")
    func shortKeepaliveLongConnectTimeout() throws {
        let broker = EmbeddedBroker { $0.connectTimeout = .seconds(30) }
        let client = try broker.client(v5Connect("short", keepAlive: 1))
        _ = try client.received()
        broker.advance(by: .milliseconds(1500))
        #expect(client.isOpen)
        broker.advance(by: .milliseconds(500))
        #expect(!client.isOpen)
        #expect(try client.received() == [.disconnect(DisconnectPacket(reasonCode: .keepAliveTimeout))])
    }

    @Test("MQTT-3.1.2-23: PINGREQ keeps the connection alive and gets PINGRESP: keepalive 2, a PINGREQ every 2.9 s for a minute")
    func pingKeepsAlive() throws {
        let broker = EmbeddedBroker()
        let client = try broker.client(ConnectPacket(keepAlive: 2, clientIdentifier: "pinger"))
        _ = try client.received()
        for _ in 0..<20 {
            broker.advance(by: .milliseconds(2900))
            try client.send(.pingreq)
            #expect(try client.received() == [.pingresp])
        }
        #expect(client.isOpen)
        broker.advance(by: .milliseconds(3500))
        #expect(!client.isOpen)
    }

    @Test("MQTT-3.1.2-24: keepalive 0 turns the timeout off (a silent hour)")
    func keepaliveZero() throws {
        let broker = EmbeddedBroker()
        let client = try broker.client(ConnectPacket(keepAlive: 0, clientIdentifier: "forever"))
        _ = try client.received()
        broker.advance(by: .hours(1))
        #expect(client.isOpen)
        try client.send(.pingreq)
        #expect(try client.received() == [.pingresp])
    }

    @Test("connect_timeout: a connection without CONNECT is closed once the timeout passes, counted")
    func connectTimeout() throws {
        let broker = EmbeddedBroker { $0.connectTimeout = .seconds(10) }
        let client = try broker.client(nil)
        broker.advance(by: .seconds(10))
        #expect(client.isOpen)
        broker.advance(by: .milliseconds(500))
        #expect(!client.isOpen)
        #expect(broker.counters.connectTimeouts == 1)
    }

    @Test("a CONNECT sent one byte at a time (slowloris) is closed at the connect timeout: bytes are not a finished CONNECT")
    func slowloris() throws {
        let broker = EmbeddedBroker { $0.connectTimeout = .milliseconds(400) }
        let client = try broker.client(nil)
        var bytes = ByteBuffer()
        try MQTTPacket.connect(ConnectPacket(clientIdentifier: "slowloris-" + String(repeating: "x", count: 56))).write(to: &bytes, version: .v3_1_1)
        var sent = 0
        for byte in bytes.readableBytesView.dropLast() where client.isOpen {
            try client.channel.writeInbound(ByteBuffer(bytes: [byte]))
            client.channel.pipeline.fireChannelReadComplete()
            sent += 1
            broker.advance(by: .milliseconds(100))
        }
        #expect(!client.isOpen)
        #expect(sent == 5)  // closed at the first sweep past 400 ms (the sweep runs every 500 ms)
        #expect(broker.counters.connectTimeouts == 1)
    }

    @Test("MQTT 5 3.1.3.2.2: a will with a delay goes out when the delay passes, not a second before")
    func willDelay() throws {
        let broker = EmbeddedBroker()
        let watcher = try broker.client(v5Connect("watcher"))
        try subscribe(watcher, "wills/#")
        var properties = Properties()
        properties.willDelayInterval = 30
        let dying = try broker.client(v5Connect("dying", expiry: 100, will: Will(topic: "wills/dying", payload: ByteBuffer(string: "gone"), properties: properties)))
        _ = try dying.received()
        try dying.drop()
        broker.advance(by: .seconds(29))
        #expect(publishes(try watcher.received()).isEmpty)
        broker.advance(by: .seconds(1))
        #expect(publishes(try watcher.received()).map(\.topic) == ["wills/dying"])
    }

    @Test("MQTT-3.1.3-9: the client back within the will delay cancels the will; the delay is capped by the session expiry")
    func willDelayCancelledOrCapped() throws {
        let broker = EmbeddedBroker()
        let watcher = try broker.client(v5Connect("watcher"))
        try subscribe(watcher, "wills/#")
        var properties = Properties()
        properties.willDelayInterval = 30
        let will = Will(topic: "wills/a", payload: ByteBuffer(string: "gone"), properties: properties)
        let first = try broker.client(v5Connect("a", expiry: 100, will: will))
        try first.drop()
        broker.advance(by: .seconds(20))
        let again = try broker.client(v5Connect("a", cleanStart: false, expiry: 100))
        _ = try again.received()
        broker.advance(by: .seconds(60))
        #expect(publishes(try watcher.received()).isEmpty)

        // Expiry 5 < delay 30: the session ends at 5 s and the will goes with it.
        let short = try broker.client(v5Connect("b", expiry: 5, will: Will(topic: "wills/b", payload: ByteBuffer(), properties: properties)))
        try short.drop()
        broker.advance(by: .seconds(4))
        #expect(publishes(try watcher.received()).isEmpty)
        broker.advance(by: .seconds(1))
        #expect(publishes(try watcher.received()).map(\.topic) == ["wills/b"])
    }

    @Test("MQTT 5 3.1.2.11.2: an offline session ends when its Session Expiry Interval passes, its queue counted as dropped")
    func sessionExpiry() throws {
        let broker = EmbeddedBroker()
        let sleeper = try broker.client(v5Connect("sleeper", expiry: 60))
        try subscribe(sleeper, "news")
        try sleeper.drop()
        let publisher = try broker.client(v5Connect("pub"))
        try publisher.send(.publish(PublishPacket(topic: "news", payload: ByteBuffer(string: "x"), qos: .atLeastOnce, packetIdentifier: 1)))
        broker.advance(by: .seconds(59))
        #expect(broker.router.assumeIsolated { $0.sessionReport("sleeper")?.queuedMessages } == 1)
        broker.advance(by: .seconds(1))
        #expect(broker.router.assumeIsolated { $0.sessionReport("sleeper") } == nil)
        #expect(broker.counters[keyPath: DropReason.sessionEnded.counter] == 1)
    }

    @Test("MQTT-3.3.2-5/6: a queued message is sent with the seconds it has left, and not at all once they ran out (counted as expired)")
    func messageExpiry() throws {
        let broker = EmbeddedBroker()
        let sleeper = try broker.client(v5Connect("sleeper", expiry: 600))
        try subscribe(sleeper, "news")
        try sleeper.drop()
        let publisher = try broker.client(v5Connect("pub"))
        var ten = Properties()
        ten.messageExpiryInterval = 10
        var three = Properties()
        three.messageExpiryInterval = 3
        try publisher.send(
            .publish(PublishPacket(topic: "news", payload: ByteBuffer(string: "long"), qos: .atLeastOnce, packetIdentifier: 1, properties: ten)),
            .publish(PublishPacket(topic: "news", payload: ByteBuffer(string: "short"), qos: .atLeastOnce, packetIdentifier: 2, properties: three)))
        broker.advance(by: .seconds(4))
        let back = try broker.client(v5Connect("sleeper", cleanStart: false, expiry: 600))
        let received = publishes(try back.received())
        #expect(received.map { String(buffer: $0.payload) } == ["long"])
        #expect(received.first?.properties.messageExpiryInterval == 6)
        #expect(broker.router.assumeIsolated { $0.sessionReport("sleeper")?.dropped[.expired] } == 1)
    }

    func expiring(_ seconds: UInt32) -> Properties {
        var p = Properties()
        p.messageExpiryInterval = seconds
        return p
    }

    @Test("MQTT-3.3.2-5/6 (moved from ExpiryTests): sent at once a message carries the interval as received; one that waited past it is not sent (counted as expired), one sent later carries the seconds left; an expired retained message is gone")
    func messageExpiryOnlineOfflineRetained() throws {
        let broker = EmbeddedBroker()
        let away = try broker.client(v5Connect("away", expiry: 60))
        try subscribe(away, "x/#")
        let online = try broker.client(v5Connect("online"))
        try subscribe(online, "x/#", qos: .atMostOnce)
        try away.drop()
        let pub = try broker.client(v5Connect("pub"))
        try pub.send(
            .publish(PublishPacket(topic: "x/short", payload: ByteBuffer(string: "1 s"), qos: .atLeastOnce, packetIdentifier: 1, properties: expiring(1))),
            .publish(PublishPacket(topic: "x/long", payload: ByteBuffer(string: "60 s"), qos: .atLeastOnce, packetIdentifier: 2, properties: expiring(60))),
            .publish(PublishPacket(topic: "x/retained", payload: ByteBuffer(string: "1 s"), retain: true, properties: expiring(1))))
        let sent = publishes(try online.received())
        #expect(sent.map(\.topic) == ["x/short", "x/long", "x/retained"])
        #expect(sent.map(\.properties.messageExpiryInterval) == [1, 60, 1])
        let early = try broker.client(v5Connect("early"))
        try early.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init("x/retained", qos: .atMostOnce)])))
        let retained = publishes(try early.received())
        #expect(retained.count == 1 && retained[0].retain && retained[0].properties.messageExpiryInterval == 1)

        broker.advance(by: .milliseconds(1100))
        let back = try broker.client(v5Connect("away", cleanStart: false, expiry: 60))
        let packets = try back.received()
        guard case .connack(let ack)? = packets.first else { Issue.record("no CONNACK: \(packets)"); return }
        #expect(ack.sessionPresent)
        let kept = publishes(packets)
        #expect(kept.map(\.topic) == ["x/long"])
        #expect(kept.first?.properties.messageExpiryInterval == 59)  // 58.9 s left, rounded up
        #expect(broker.router.assumeIsolated { $0.sessionReport("away")?.dropped[.expired] } == 1)

        let late = try broker.client(v5Connect("late"))
        try late.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init("x/retained", qos: .atMostOnce)])))
        #expect(publishes(try late.received()).isEmpty)
        #expect(broker.core.retained.count == 0)
    }

    @Test("MQTT-3.1.3-9 (moved from ExpiryTests): a delayed will is cancelled by a takeover that continues the session, sent at once by a clean-start takeover or when the session ends with its connection")
    func willDelayAndTakeovers() throws {
        let broker = EmbeddedBroker()
        let watcher = try broker.client(v5Connect("watcher"))
        try subscribe(watcher, "wd/#", qos: .atMostOnce)
        var thirty = Properties()
        thirty.willDelayInterval = 30
        func will(_ id: String) -> Will { Will(topic: "wd/" + id, payload: ByteBuffer(string: id), properties: thirty) }
        _ = try broker.client(v5Connect("t", expiry: 60, will: will("t")))
        _ = try broker.client(v5Connect("c", expiry: 60, will: will("c")))
        let e = try broker.client(v5Connect("e", will: will("e")))  // session expiry 0
        _ = try broker.client(v5Connect("t", cleanStart: false, expiry: 60))  // continues t's session: no will
        _ = try broker.client(v5Connect("c", cleanStart: true, expiry: 60))   // ends c's session: its will now
        try e.drop()                                                             // e's session ends with it: now
        #expect(Set(publishes(try watcher.received()).map(\.topic)) == ["wd/c", "wd/e"])
        broker.advance(by: .seconds(60))
        #expect(publishes(try watcher.received()).isEmpty)
    }
}
