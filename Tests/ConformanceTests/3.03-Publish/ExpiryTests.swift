import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// MQTT 5 timers on messages: the Will Delay Interval (3.1.3.2.2) and the Message Expiry
/// Interval (3.3.2.3.3). The intervals are whole seconds, so these tests wait about one.
@Suite struct ExpiryTests {
    static func expiring(_ seconds: UInt32) -> Properties {
        var p = Properties()
        p.messageExpiryInterval = seconds
        return p
    }

    static let keepSession: Properties = {
        var p = Properties()
        p.sessionExpiryInterval = 60
        return p
    }()

    @Test("MQTT-3.1.3-9: a delayed will waits for its delay; a connection that continues the session within it (reconnect or takeover) cancels it; a clean start or the session's end sends it at once")
    func willDelay() async throws {
        try await withBroker { _, port in
            let (w, _) = try await RawClient.connected(port: port, clientID: "watcher")
            _ = try await w.subscribe("wd/#")
            func client(_ id: String, delay: UInt32, session: Properties = Self.keepSession) async throws -> RawClient {
                var willProperties = Properties()
                willProperties.willDelayInterval = delay
                return try await RawClient.connected(
                    port: port, version: .v5, clientID: id, cleanStart: false,
                    will: Will(topic: "wd/" + id, payload: ByteBuffer(string: id), properties: willProperties), properties: session).0
            }
            let a = try await client("a", delay: 1)      // lost: the will after 1 s
            let b = try await client("b", delay: 1)      // lost, then resumed: never
            _ = try await client("t", delay: 1)          // taken over, session continued: never
            _ = try await client("c", delay: 30)         // taken over with a clean start: at once
            let e = try await client("e", delay: 30, session: [])  // the session ends with the connection: at once
            let e2 = try await client("e2", delay: 30, session: {
                var p = Properties()
                p.sessionExpiryInterval = 1
                return p
            }())                                                      // the session expires after 1 s: then
            let lostAt = ContinuousClock.now
            await a.close()
            await b.close()
            await e.close()
            await e2.close()
            _ = try await RawClient.connected(port: port, version: .v5, clientID: "b", cleanStart: false, properties: Self.keepSession)
            _ = try await RawClient.connected(port: port, version: .v5, clientID: "t", cleanStart: false, properties: Self.keepSession)
            _ = try await RawClient.connected(port: port, version: .v5, clientID: "c", cleanStart: true, properties: Self.keepSession)
            var arrived: [String: Duration] = [:]
            for _ in 0..<4 {
                let m = try await w.nextPublish()
                arrived[m.topic] = ContinuousClock.now - lostAt
            }
            #expect(Set(arrived.keys) == ["wd/a", "wd/c", "wd/e", "wd/e2"])
            #expect(try #require(arrived["wd/a"]) >= .milliseconds(950))
            #expect(try #require(arrived["wd/e2"]) >= .milliseconds(950))
            // b's and t's would have come with a's.
            try await w.expectSilence(for: .milliseconds(500))
        }
    }

    @Test("a Message Expiry Interval of 0 is no expiry (as mosquitto): delivered online and from an offline queue, nothing counted as expired")
    func zeroExpiry() async throws {
        try await withBroker { broker, port in
            let (away, _) = try await RawClient.connected(port: port, version: .v5, clientID: "away0", cleanStart: false, properties: Self.keepSession)
            _ = try await away.subscribe("z", qos: .atLeastOnce)
            await away.close()
            try await waitFor(.seconds(10), "the session to go offline") {
                let report = try? await broker.sessionReport(clientID: "away0")
                return report?.online == false ? true : nil
            }
            let (online, _) = try await RawClient.connected(port: port, version: .v5, clientID: "online0")
            _ = try await online.subscribe("z")
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "pub0")
            try await pub.publish("z", "zero", qos: .atLeastOnce, id: 1, properties: Self.expiring(0))
            _ = try await pub.next()
            #expect(try await online.nextPublish().payloadString == "zero")
            let (back, _) = try await RawClient.connected(port: port, version: .v5, clientID: "away0", cleanStart: false, properties: Self.keepSession)
            #expect(try await back.nextPublish().payloadString == "zero")
            #expect(broker.counters.droppedExpired == 0)
        }
    }

    @Test("MQTT-3.3.2-5/6: a message that waited past its expiry is not sent (counted as expired); one sent carries the seconds left; an expired retained message is gone")
    func messageExpiry() async throws {
        try await withBroker { broker, port in
            // An offline persistent session collects QoS 1 messages.
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "away", cleanStart: false, properties: Self.keepSession)
            _ = try await sub.subscribe("x/#", qos: .atLeastOnce)
            let (online, _) = try await RawClient.connected(port: port, version: .v5, clientID: "online")
            _ = try await online.subscribe("x/#")
            await sub.close()
            try await waitFor(.seconds(10), "the session to go offline") {
                let report = try? await broker.sessionReport(clientID: "away")
                return report?.online == false ? true : nil
            }
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "pub")
            try await pub.publish("x/short", "1 s", qos: .atLeastOnce, id: 1, properties: Self.expiring(1))
            _ = try await pub.next()
            try await pub.publish("x/long", "60 s", qos: .atLeastOnce, id: 2, properties: Self.expiring(60))
            _ = try await pub.next()
            try await pub.publish("x/retained", "1 s", retain: true, properties: Self.expiring(1))
            // Sent at once: the interval as received.
            let first = try await online.nextPublish()
            #expect(first.topic == "x/short" && first.properties.messageExpiryInterval == 1)
            #expect(try await online.nextPublish().properties.messageExpiryInterval == 60)
            let (early, _) = try await RawClient.connected(port: port, version: .v5, clientID: "early")
            _ = try await early.subscribe("x/retained")
            let retained = try await early.nextPublish()
            #expect(retained.retain && retained.properties.messageExpiryInterval == 1)

            try await Task.sleep(for: .milliseconds(1100))
            let (back, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "away", cleanStart: false, properties: Self.keepSession)
            #expect(ack.sessionPresent)
            let kept = try await back.nextPublish()
            #expect(kept.topic == "x/long")
            let left = try #require(kept.properties.messageExpiryInterval)
            #expect(left <= 59 && left >= 50)
            try await back.send(.puback(PubAckPacket(packetIdentifier: kept.packetIdentifier!)))
            try await back.expectSilence()
            let report = try #require(try await broker.sessionReport(clientID: "away"))
            #expect(report.dropped[.expired] == 1)

            let (late, _) = try await RawClient.connected(port: port, version: .v5, clientID: "late")
            _ = try await late.subscribe("x/retained")
            try await late.expectSilence()
            #expect(broker.retainedCount == 0)
        }
    }
}
