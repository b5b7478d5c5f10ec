import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Session state rules of MQTT 3.1.1 sections 3.1.2.4 and 4.1.
@Suite struct SessionTests {
    @Test("MQTT-3.2.2-1: clean session 1 → session present 0, and state is discarded at disconnect")
    func cleanSessionDiscardsState() async throws {
        try await withBroker { broker, port in
            let (c, ack) = try await RawClient.connected(port: port, clientID: "clean", cleanStart: true)
            #expect(ack.sessionPresent == false)
            _ = try await c.subscribe("x")
            try await c.send(.disconnect(DisconnectPacket()))
            try await c.expectClosed()
            try await waitFor(.seconds(10), "the session to end") {
                let s = try? await broker.statistics()
                return s?.sessions == 0 ? true : nil
            }
            let (again, ack2) = try await RawClient.connected(port: port, clientID: "clean", cleanStart: false)
            #expect(ack2.sessionPresent == false)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("x", "not for you")
            try await again.expectSilence()
        }
    }

    @Test("MQTT-3.1.2-6 / MQTT-3.2.2-3: taking over a live clean session does not resume it: session present 0, its subscription gone", arguments: [ProtocolVersion.v3_1_1, .v5])
    func takeoverOfCleanSessionStartsEmpty(version: ProtocolVersion) async throws {
        try await withBroker { _, port in
            let (old, _) = try await RawClient.connected(port: port, version: version, clientID: "will-test", cleanStart: true)
            _ = try await old.subscribe("a/sub", qos: .atLeastOnce)
            var properties = Properties()
            if version == .v5 { properties.sessionExpiryInterval = 60 }
            let new = try await RawClient.connect(port: port, version: version)
            try await new.send(.connect(ConnectPacket(protocolVersion: version, cleanStart: false, clientIdentifier: "will-test", properties: properties)))
            if version == .v3_1_1 {
                #expect(try await new.read(count: 4) == h("20 02 00 00"))
            } else {
                guard case .connack(let ack) = try await new.next() else { Issue.record("expected CONNACK"); return }
                #expect(ack.sessionPresent == false)
                #expect(ack.reasonCode == .success)
            }
            let closing = try await old.expectClosed()
            if version == .v5 { #expect(closing.last == .disconnect(DisconnectPacket(reasonCode: .sessionTakenOver))) }
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("a/sub", "not for the new session", qos: .atLeastOnce)
            try await new.expectSilence()
        }
    }

    @Test("MQTT 3.1 (MQIsdp) has no Session Present: a resumed 3.1 session gets CONNACK 20 02 00 00 and its queued message")
    func mqtt31HasNoSessionPresent() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v3_1, clientID: "old-client", cleanStart: false)
            _ = try await c.subscribe("old/t", qos: .atLeastOnce)
            try await c.send(.disconnect(DisconnectPacket()))
            try await c.expectClosed()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("old/t", "kept", qos: .atLeastOnce)
            _ = try await pub.next()
            let again = try await RawClient.connect(port: port, version: .v3_1)
            try await again.send(.connect(ConnectPacket(protocolVersion: .v3_1, cleanStart: false, clientIdentifier: "old-client")))
            #expect(try await again.read(count: 4) == h("20 02 00 00"))
            #expect(try await again.nextPublish().payloadString == "kept")
        }
    }

    @Test("MQTT-3.2.2-2: clean session 0 resumes: session present 1 and subscriptions kept")
    func persistentSessionResumes() async throws {
        try await withBroker { _, port in
            let (c, ack) = try await RawClient.connected(port: port, clientID: "keep", cleanStart: false)
            #expect(ack.sessionPresent == false)
            _ = try await c.subscribe("keep/+", qos: .atLeastOnce)
            try await c.send(.disconnect(DisconnectPacket()))
            try await c.expectClosed()
            let (again, ack2) = try await RawClient.connected(port: port, clientID: "keep", cleanStart: false)
            #expect(ack2.sessionPresent == true)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("keep/a", "hello")
            #expect(try await again.nextPublish().payloadString == "hello")
        }
    }

    @Test("MQTT-3.1.2-5: QoS 1/2 messages are queued while offline and delivered on reconnect; QoS 0 is not")
    func offlineQueueing() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "sleeper", cleanStart: false)
            _ = try await c.subscribe("q/#", qos: .exactlyOnce)
            await c.close()
            try await waitUntilOffline(broker, "sleeper")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("q/0", "zero", qos: .atMostOnce)
            try await pub.publish("q/1", "one", qos: .atLeastOnce, id: 1)
            _ = try await pub.next()
            try await pub.publish("q/2", "two", qos: .exactlyOnce, id: 2)
            _ = try await pub.next()
            let (again, ack) = try await RawClient.connected(port: port, clientID: "sleeper", cleanStart: false)
            #expect(ack.sessionPresent)
            let first = try await again.nextPublish()
            let second = try await again.nextPublish()
            #expect([first.topic, second.topic] == ["q/1", "q/2"])
            #expect(first.qos == .atLeastOnce)
            #expect(second.qos == .exactlyOnce)
            try await again.expectSilence()
        }
    }

    @Test("MQTT-4.4.0-1: unacknowledged QoS 1 messages are resent with DUP on reconnect, same packet id")
    func resendWithDup() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "forgetful", cleanStart: false)
            _ = try await c.subscribe("r", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("r", "again", qos: .atLeastOnce, id: 9)
            let original = try await c.nextPublish()
            #expect(original.dup == false)
            await c.close()  // without PUBACK
            try await waitUntilOffline(broker, "forgetful")
            let (again, _) = try await RawClient.connected(port: port, clientID: "forgetful", cleanStart: false)
            let resent = try await again.nextPublish()
            #expect(resent.dup == true)
            #expect(resent.packetIdentifier == original.packetIdentifier)
            #expect(resent.payloadString == "again")
            try await again.send(.puback(PubAckPacket(packetIdentifier: resent.packetIdentifier!)))
            try await again.expectSilence()
        }
    }

    @Test("MQTT-4.3.3: a QoS 2 message whose PUBREL was outstanding gets PUBREL resent on reconnect")
    func resendPubrel() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "q2", cleanStart: false)
            _ = try await c.subscribe("r2", qos: .exactlyOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("r2", "x", qos: .exactlyOnce, id: 3)
            let msg = try await c.nextPublish()
            try await c.send(.pubrec(PubRecPacket(packetIdentifier: msg.packetIdentifier!)))
            #expect(try await c.next() == .pubrel(PubRelPacket(packetIdentifier: msg.packetIdentifier!)))
            await c.close()
            try await waitUntilOffline(broker, "q2")
            let (again, _) = try await RawClient.connected(port: port, clientID: "q2", cleanStart: false)
            #expect(try await again.next() == .pubrel(PubRelPacket(packetIdentifier: msg.packetIdentifier!)))
            try await again.send(.pubcomp(PubCompPacket(packetIdentifier: msg.packetIdentifier!)))
            try await again.expectSilence()
        }
    }

    @Test("clean session 1 after a persistent session discards it")
    func cleanAfterPersistent() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, clientID: "switch", cleanStart: false)
            _ = try await c.subscribe("s")
            try await c.send(.disconnect(DisconnectPacket()))
            try await c.expectClosed()
            let (clean, ack) = try await RawClient.connected(port: port, clientID: "switch", cleanStart: true)
            #expect(ack.sessionPresent == false)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("s", "x")
            try await clean.expectSilence()
        }
    }
}
