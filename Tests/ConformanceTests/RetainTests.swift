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
