import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Retained messages (MQTT 3.1.1 section 3.3.1.3).
@Suite struct RetainTests {
    @Test("MQTT-3.3.1-6/8: a retained message goes to new subscribers with RETAIN=1")
    func sentToNewSubscribers() async throws {
        try await withBroker { _, port in
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("r/a", "kept", qos: .atLeastOnce, retain: true, id: 1)
            _ = try await pub.next()
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("r/+", qos: .atLeastOnce)
            let m = try await sub.nextPublish()
            #expect(m.retain == true)
            #expect(m.payloadString == "kept")
            #expect(m.qos == .atLeastOnce)
        }
    }

    @Test("MQTT-3.3.1-9: RETAIN is 0 when forwarding to existing subscribers")
    func notFlaggedOnForwarding() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("live")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("live", "now", retain: true)
            let m = try await sub.nextPublish()
            #expect(m.retain == false)
        }
    }

    @Test("MQTT-3.3.1-7: a new retained message replaces the old one")
    func replaced() async throws {
        try await withBroker { _, port in
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("r", "old", retain: true)
            try await pub.publish("r", "new", retain: true)
            try await pub.send(h("C0 00"))
            _ = try await pub.next()
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("r")
            #expect(try await sub.nextPublish().payloadString == "new")
            try await sub.expectSilence()
        }
    }

    @Test("max_retained_messages: past it a new topic is delivered but not stored, counted; held topics can be replaced and cleared; $SYS is outside it")
    func retainedLimit() async throws {
        try await withBroker({ $0.maximumRetainedMessages = 2 }) { broker, port in
            let (live, _) = try await RawClient.connected(port: port, clientID: "live")
            _ = try await live.subscribe("lim/c")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for (id, topic) in ["lim/a", "lim/b", "lim/c"].enumerated() {
                try await pub.publish(topic, "v1", qos: .atLeastOnce, retain: true, id: UInt16(id + 1))
                _ = try await pub.next()  // PUBACK: the router has handled it
            }
            // The refused one still reaches the current subscriber.
            #expect(try await live.nextPublish().topic == "lim/c")
            #expect(broker.retainedCount == 2)
            try await waitFor(.seconds(10), "the refusal counter") { broker.counters.retainedRefused == 1 ? true : nil }
            let (late, _) = try await RawClient.connected(port: port, clientID: "late")
            _ = try await late.subscribe("lim/#")
            #expect(try await late.nextPublish().topic == "lim/a")
            #expect(try await late.nextPublish().topic == "lim/b")
            try await late.expectSilence()
            // Replacing a held topic works at the limit; clearing one makes room.
            try await pub.publish("lim/a", "v2", qos: .atLeastOnce, retain: true, id: 4)
            _ = try await pub.next()
            try await pub.publish("lim/b", "", qos: .atLeastOnce, retain: true, id: 5)
            _ = try await pub.next()
            try await pub.publish("lim/c", "v2", qos: .atLeastOnce, retain: true, id: 6)
            _ = try await pub.next()
            let (later, _) = try await RawClient.connected(port: port, clientID: "later")
            _ = try await later.subscribe("lim/#")
            let got = [try await later.nextPublish(), try await later.nextPublish()]
            #expect(got.map(\.topic) == ["lim/a", "lim/c"])
            #expect(got.map(\.payloadString) == ["v2", "v2"])
            #expect(broker.counters.retainedRefused == 1)
        }
        // The broker's own $SYS topics are stored whatever the limit.
        try await withBroker({ $0.maximumRetainedMessages = 1; $0.sysInterval = .seconds(60) }) { broker, _ in
            try await waitFor(.seconds(10), "$SYS to be retained") { broker.retainedCount > 1 ? true : nil }
            #expect(broker.counters.retainedRefused == 0)
        }
    }

    @Test("MQTT-3.3.1-10/11: an empty retained payload deletes the retained message")
    func deletedByEmptyPayload() async throws {
        try await withBroker { broker, port in
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("gone", "x", retain: true)
            try await pub.publish("gone", "", retain: true)
            try await pub.send(h("C0 00"))
            _ = try await pub.next()
            #expect(broker.retainedCount == 0)
            let (sub, _) = try await RawClient.connected(port: port, clientID: "s")
            _ = try await sub.subscribe("gone")
            try await sub.expectSilence()
        }
    }
}
