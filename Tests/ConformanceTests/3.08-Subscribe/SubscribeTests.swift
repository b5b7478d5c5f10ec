import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// SUBSCRIBE / UNSUBSCRIBE and topic matching (MQTT 3.1.1 sections 3.8–3.11, 4.7).
@Suite struct SubscribeTests {
    @Test("MQTT-3.9.3: SUBACK has one return code per filter, 0x80 for an invalid filter")
    func subackCodes() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "s")
            try await c.send(.subscribe(SubscribePacket(packetIdentifier: 3, subscriptions: [
                .init("a/+", qos: .atLeastOnce), .init("a/#/b", qos: .atMostOnce), .init("#", qos: .exactlyOnce),
            ])))
            #expect(try await c.next() == .suback(SubAckPacket(packetIdentifier: 3, reasonCodes: [.grantedQoS1, .subscribeFailure, .grantedQoS2])))
        }
    }

    @Test("MQTT-4.7.1: '+' matches one level, '#' matches the parent and all below")
    func wildcards() async throws {
        try await withBroker { _, port in
            let (plus, _) = try await RawClient.connected(port: port, clientID: "plus")
            _ = try await plus.subscribe("sport/+/player")
            let (hash, _) = try await RawClient.connected(port: port, clientID: "hash")
            _ = try await hash.subscribe("sport/#")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("sport", "parent")
            try await pub.publish("sport/tennis/player", "p1")
            try await pub.publish("sport/tennis/player/ranking", "deep")
            #expect(try await plus.nextPublish().payloadString == "p1")
            try await plus.expectSilence()
            #expect(try await hash.nextPublish().payloadString == "parent")
            #expect(try await hash.nextPublish().payloadString == "p1")
            #expect(try await hash.nextPublish().payloadString == "deep")
        }
    }

    @Test("MQTT-4.7.2-1: filters starting with a wildcard do not match $ topics")
    func dollarTopics() async throws {
        try await withBroker { _, port in
            let (all, _) = try await RawClient.connected(port: port, clientID: "all")
            _ = try await all.subscribe("#")
            let (plus, _) = try await RawClient.connected(port: port, clientID: "plus")
            _ = try await plus.subscribe("+/info")
            // $SYS is the broker's own (clients may not publish there): another $ topic.
            let (sys, _) = try await RawClient.connected(port: port, clientID: "sys")
            _ = try await sys.subscribe("$internal/#")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("$internal/info", "system")
            #expect(try await sys.nextPublish().payloadString == "system")
            try await all.expectSilence()
            try await plus.expectSilence()
        }
    }

    @Test("across event loops: a PUBLISH the broker reads once a SUBSCRIBE is applied reaches it, without waiting for the SUBACK (100 rounds, fresh topics)")
    func subscriptionVisibleToOtherLoopsAtOnce() async throws {
        try await withBroker({ $0.eventLoops = 2 }) { broker, port in
            // Connections are spread over the two loops in turn; several publishers make sure
            // at least one is on the other loop from the subscriber.
            let (sub, _) = try await RawClient.connected(port: port, clientID: "sub")
            var publishers: [RawClient] = []
            for i in 0..<3 { publishers.append(try await RawClient.connected(port: port, clientID: "pub\(i)").0) }
            for round in 0..<100 {
                try await sub.send(.subscribe(SubscribePacket(packetIdentifier: UInt16(round + 1), subscriptions: [.init("race/\(round)", qos: .atMostOnce)])))
                try await waitFor(.seconds(10), "the subscription applied", every: .milliseconds(1)) {
                    try await broker.statistics().subscriptions == round + 1 ? true : nil
                }
                for p in publishers { try await p.publish("race/\(round)", "r\(round)") }
                guard case .suback = try await sub.next() else { Issue.record("expected SUBACK"); return }
                for _ in publishers { #expect(try await sub.nextPublish().payloadString == "r\(round)") }
            }
        }
    }

    @Test("MQTT-3.3.5-1: overlapping subscriptions deliver one copy at the highest QoS")
    func overlapping() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "o")
            _ = try await c.subscribe("a/#", qos: .atMostOnce, id: 1)
            _ = try await c.subscribe("a/+", qos: .atLeastOnce, id: 2)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("a/b", "once", qos: .exactlyOnce, id: 1)
            let m = try await c.nextPublish()
            #expect(m.qos == .atLeastOnce)
            try await c.send(.puback(PubAckPacket(packetIdentifier: m.packetIdentifier!)))
            try await c.expectSilence()
        }
    }

    @Test("MQTT-3.8.4-3: subscribing again to the same filter replaces the subscription")
    func resubscribeReplaces() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "r")
            _ = try await c.subscribe("x", qos: .atLeastOnce, id: 1)
            _ = try await c.subscribe("x", qos: .atMostOnce, id: 2)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("x", "one", qos: .atLeastOnce, id: 1)
            let m = try await c.nextPublish()
            #expect(m.qos == .atMostOnce)
            try await c.expectSilence()
        }
    }

    @Test("MQTT-3.10.4: UNSUBSCRIBE → UNSUBACK, and delivery stops")
    func unsubscribe() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "u")
            _ = try await c.subscribe("u/#")
            try await c.send(h("A2 07 00 09 00 03 'u/#'"))
            #expect(try await c.read(count: 4) == h("B0 02 00 09"))
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("u/1", "x")
            try await c.expectSilence()
        }
    }

    @Test("fan-out across event loops: every subscriber receives every message")
    func fanOutAcrossLoops() async throws {
        try await withBroker { _, port in
            var subs: [RawClient] = []
            for i in 0..<6 {
                let (c, _) = try await RawClient.connected(port: port, clientID: "s\(i)")
                _ = try await c.subscribe("fan")
                subs.append(c)
            }
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            for i in 0..<20 { try await pub.publish("fan", "\(i)") }
            for s in subs {
                var got: [String] = []
                for _ in 0..<20 { got.append(try await s.nextPublish().payloadString) }
                #expect(got == (0..<20).map(String.init))
            }
        }
    }
}
