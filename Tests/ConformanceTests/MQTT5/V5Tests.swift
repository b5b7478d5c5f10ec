import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// MQTT 5.0 basics: reason codes, session expiry, assigned client id, forwarded properties.
@Suite struct V5Tests {
    @Test("v5 CONNACK assigns a client identifier when the client sent none")
    func assignedClientIdentifier() async throws {
        try await withBroker { _, port in
            let (_, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "")
            #expect(ack.reasonCode == .success)
            let assigned = try #require(ack.properties.assignedClientIdentifier)
            #expect(!assigned.isEmpty)
        }
    }

    @Test("MQTT-4.12.0-1: a CONNECT asking for enhanced authentication (not supported) gets CONNACK 0x8C and is closed")
    func unsupportedAuthenticationMethod() async throws {
        try await withBroker { broker, port in
            var properties = Properties()
            properties.authenticationMethod = "SCRAM-SHA-1"
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "scram", properties: properties)
            #expect(ack.reasonCode == .badAuthenticationMethod)
            try await c.expectClosed()
            #expect(try await broker.sessionReport(clientID: "scram") == nil)
        }
    }

    @Test("MQTT 5 3.1.2.11.10: Authentication Data without an Authentication Method is a protocol error (CONNACK 0x82, closed)")
    func authenticationDataWithoutMethod() async throws {
        try await withBroker { broker, port in
            var properties = Properties()
            properties.authenticationData = ByteBuffer(bytes: [1, 2, 3])
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "nomethod", properties: properties)
            #expect(ack.reasonCode == .protocolError)
            try await c.expectClosed()
            #expect(try await broker.sessionReport(clientID: "nomethod") == nil)
        }
    }

    @Test("MQTT-3.3.4-6: a client PUBLISH carrying a Subscription Identifier is a protocol error (DISCONNECT 0x82); other clients are untouched")
    func publishWithSubscriptionIdentifier() async throws {
        try await withBroker { _, port in
            let (other, _) = try await RawClient.connected(port: port, version: .v5, clientID: "other")
            _ = try await other.subscribe("t", qos: .atMostOnce)
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "forger")
            var properties = Properties()
            properties.elements.append(Property(.subscriptionIdentifier, .variableByteInteger(7)))
            try await c.publish("t", "x", properties: properties)
            let packets = try await c.expectClosed()
            #expect(packets == [.disconnect(DisconnectPacket(reasonCode: .protocolError))])
            // Not routed, and the other connection still works.
            try await other.expectSilence(for: .milliseconds(200))
            try await other.send(.pingreq)
            #expect(try await other.next() == .pingresp)
        }
    }

    @Test("MQTT 5 3.3.4: CONNACK advertises Receive Maximum 20; a client with one more QoS 2 PUBLISH in flight gets DISCONNECT 0x93 (a resend or a completed flow does not count); 3.1.1 has no such limit")
    func receiveMaximumEnforced() async throws {
        try await withBroker { _, port in
            // A subscriber, so that the acknowledgements say Success rather than 0x10.
            let (watcher, _) = try await RawClient.connected(port: port, clientID: "watcher")
            _ = try await watcher.subscribe("q2")
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "flood")
            #expect(ack.properties.receiveMaximum == 20)
            for id in 1...20 { try await c.publish("q2", "m\(id)", qos: .exactlyOnce, id: UInt16(id)) }
            for id in 1...20 { #expect(try await c.next() == .pubrec(PubRecPacket(packetIdentifier: UInt16(id)))) }
            // A resend of one in flight is not one more.
            try await c.send(.publish(PublishPacket(topic: "q2", payload: ByteBuffer(string: "m20"), qos: .exactlyOnce, dup: true, packetIdentifier: 20)))
            #expect(try await c.next() == .pubrec(PubRecPacket(packetIdentifier: 20)))
            // Completing one makes room for one.
            try await c.send(.pubrel(PubRelPacket(packetIdentifier: 1)))
            #expect(try await c.next() == .pubcomp(PubCompPacket(packetIdentifier: 1)))
            try await c.publish("q2", "m21", qos: .exactlyOnce, id: 21)
            #expect(try await c.next() == .pubrec(PubRecPacket(packetIdentifier: 21)))
            try await c.publish("q2", "m22", qos: .exactlyOnce, id: 22)
            let packets = try await c.expectClosed()
            #expect(packets == [.disconnect(DisconnectPacket(reasonCode: .receiveMaximumExceeded))])

            let (v3, _) = try await RawClient.connected(port: port, clientID: "flood3")
            for id in 1...30 { try await v3.publish("q2", "m\(id)", qos: .exactlyOnce, id: UInt16(id)) }
            for id in 1...30 { #expect(try await v3.next() == .pubrec(PubRecPacket(packetIdentifier: UInt16(id)))) }
        }
    }

    @Test("MQTT 5 3.3.2.3.4: topic aliases from the client: CONNACK advertises 10; an alias set with a topic stands for it on that connection (remappable), is not forwarded, and dies with the connection; 0x94 above the maximum, 0x82 for one never set")
    func topicAliasesFromTheClient() async throws {
        try await withBroker { _, port in
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "sub")
            _ = try await sub.subscribe("alias/#")
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "aliaser")
            #expect(ack.properties.topicAliasMaximum == 10)
            func aliased(_ alias: UInt16) -> Properties {
                var p = Properties()
                p.topicAlias = alias
                return p
            }
            try await c.publish("alias/long/topic/name", "set", properties: aliased(3))
            try await c.publish("", "by alias", properties: aliased(3))
            try await c.publish("alias/other", "remapped", properties: aliased(3))
            try await c.publish("", "by new alias", properties: aliased(3))
            var got: [(String, String)] = []
            for _ in 0..<4 {
                let p = try await sub.nextPublish()
                #expect(p.properties.topicAlias == nil)
                got.append((p.topic, p.payloadString))
            }
            #expect(got.map(\.0) == ["alias/long/topic/name", "alias/long/topic/name", "alias/other", "alias/other"])
            #expect(got.map(\.1) == ["set", "by alias", "remapped", "by new alias"])
            // Never set on this connection: a protocol error.
            try await c.publish("", "unknown", properties: aliased(4))
            #expect(try await c.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .protocolError))])
            // Aliases belong to the connection: a new one of the same client starts with none.
            let (again, _) = try await RawClient.connected(port: port, version: .v5, clientID: "aliaser")
            try await again.publish("", "stale", properties: aliased(3))
            #expect(try await again.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .protocolError))])
            // Above the maximum.
            let (high, _) = try await RawClient.connected(port: port, version: .v5, clientID: "high")
            try await high.publish("alias/x", "too high", properties: aliased(11))
            #expect(try await high.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .topicAliasInvalid))])
            // Alias 0 is never valid.
            let (zero, _) = try await RawClient.connected(port: port, version: .v5, clientID: "zero")
            try await zero.send(h("30 0A 00 03 'a/x' 03 23 00 00 'p'"))
            #expect(try await zero.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .topicAliasInvalid))])
            try await sub.expectSilence()
        }
        // max_topic_alias 0: none advertised, any alias refused.
        try await withBroker({ $0.maximumTopicAlias = 0 }) { _, port in
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "none")
            #expect(ack.properties.topicAliasMaximum == nil)
            var p = Properties()
            p.topicAlias = 1
            try await c.publish("t", "x", properties: p)
            #expect(try await c.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .topicAliasInvalid))])
        }
    }

    @Test("max_qos 1: CONNACK says Maximum QoS 1, a QoS 2 subscription is granted QoS 1, a QoS 2 PUBLISH gets DISCONNECT 0x9B (3.1.1: closed), a QoS 2 will gets CONNACK 0x9B (MQTT-3.2.2-9/11/12)")
    func maximumQoS() async throws {
        try await withBroker({ $0.maximumQoS = .atLeastOnce }) { _, port in
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "q")
            #expect(ack.properties.maximumQoS == 1)
            #expect(try await c.subscribe("t", qos: .exactlyOnce).reasonCodes == [.grantedQoS1])
            try await c.publish("t", "at 1", qos: .atLeastOnce, id: 1)
            var sawAck = false, sawPublish = false
            for _ in 0..<2 {
                switch try await c.next() {
                case .puback: sawAck = true
                case .publish(let p): sawPublish = p.qos == .atLeastOnce
                default: break
                }
            }
            #expect(sawAck && sawPublish)
            try await c.publish("t", "at 2", qos: .exactlyOnce, id: 2)
            #expect(try await c.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .qosNotSupported))])
            let (v3, v3ack) = try await RawClient.connected(port: port, clientID: "q3")
            #expect(v3ack.sessionPresent == false && v3ack.properties.isEmpty)
            try await v3.publish("t", "at 2", qos: .exactlyOnce, id: 1)
            try await v3.expectClosed()
            let (w, wack) = try await RawClient.connected(
                port: port, version: .v5, clientID: "w", will: Will(topic: "w", payload: ByteBuffer(string: "x"), qos: .exactlyOnce))
            #expect(wack.reasonCode == .qosNotSupported)
            try await w.expectClosed()
        }
    }

    @Test("retain_available false: CONNACK says Retain Available 0, a retained PUBLISH gets DISCONNECT 0x9A, a retained will CONNACK 0x9A; unretained ones pass")
    func retainNotAvailable() async throws {
        try await withBroker({ $0.retainAvailable = false }) { broker, port in
            let (c, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "r")
            #expect(ack.properties.retainAvailable == 0)
            _ = try await c.subscribe("t")
            try await c.publish("t", "plain")
            #expect(try await c.nextPublish().payloadString == "plain")
            try await c.publish("t", "kept", retain: true)
            #expect(try await c.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .retainNotSupported))])
            #expect(broker.retainedCount == 0)
            let (w, wack) = try await RawClient.connected(
                port: port, version: .v5, clientID: "w", will: Will(topic: "w", payload: ByteBuffer(string: "x"), retain: true))
            #expect(wack.reasonCode == .retainNotSupported)
            try await w.expectClosed()
        }
    }

    @Test("response_information: a v5 client that sets Request Response Information gets the prefix and its client id in CONNACK; one that does not, or with no prefix configured, gets none")
    func responseInformation() async throws {
        var asks = Properties()
        asks.requestResponseInformation = 1
        try await withBroker({ $0.responseInformationPrefix = "responses/" }) { _, port in
            let (_, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "asker", properties: asks)
            #expect(ack.properties.responseInformation == "responses/asker")
            let (_, plain) = try await RawClient.connected(port: port, version: .v5, clientID: "quiet")
            #expect(plain.properties.responseInformation == nil)
        }
        try await withBroker { _, port in
            let (_, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "asker", properties: asks)
            #expect(ack.properties.responseInformation == nil)
        }
    }

    @Test("v5 SUBACK and UNSUBACK reason codes")
    func subackUnsubackReasonCodes() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "s")
            try await c.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [
                .init("ok/+", qos: .exactlyOnce), .init("bad/#/x", qos: .atMostOnce), .init("$share/g/t", qos: .atMostOnce),
            ])))
            // Shared subscriptions are supported: `$share/g/t` is granted like any filter.
            #expect(try await c.next() == .suback(SubAckPacket(packetIdentifier: 1, reasonCodes: [.grantedQoS2, .topicFilterInvalid, .grantedQoS0])))
            try await c.send(.unsubscribe(UnsubscribePacket(packetIdentifier: 2, topicFilters: ["ok/+", "never"])))
            #expect(try await c.next() == .unsuback(UnsubAckPacket(packetIdentifier: 2, reasonCodes: [.success, .noSubscriptionExisted])))
        }
    }

    @Test("MQTT-3.1.2-24: nothing larger than the client's Maximum Packet Size is sent (counted as too_large); large payloads arrive intact, at QoS 0 and 1", arguments: [QoS.atMostOnce, .atLeastOnce])
    func clientMaximumPacketSize(_ qos: QoS) async throws {
        try await withBroker { broker, port in
            var limit = Properties()
            limit.maximumPacketSize = 4_000
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "small", properties: limit)
            _ = try await sub.subscribe("big/#", qos: qos)
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "pub")
            // Payloads past 2 KiB go out behind a separately encoded header (no copy).
            let fits = String((0..<3_000).map { Character(UnicodeScalar(UInt8(97 + $0 % 26))) })
            let tooBig = String(repeating: "x", count: 5_000)
            try await pub.publish("big/1", fits, qos: qos, id: qos == .atMostOnce ? nil : 1)
            try await pub.publish("big/2", tooBig, qos: qos, id: qos == .atMostOnce ? nil : 2)
            try await pub.publish("big/3", "small", qos: qos, id: qos == .atMostOnce ? nil : 3)
            let first = try await sub.nextPublish()
            #expect(first.topic == "big/1" && first.payloadString == fits)
            if qos != .atMostOnce { try await sub.send(.puback(PubAckPacket(packetIdentifier: first.packetIdentifier!))) }
            let next = try await sub.nextPublish()
            #expect(next.topic == "big/3" && next.payloadString == "small")
            let report = try #require(try await broker.sessionReport(clientID: "small"))
            #expect(report.dropped[.tooLarge] == 1)
        }
    }

    @Test("v5 PUBACK and the PUBREC/PUBREL/PUBCOMP flow; MQTT 5 3.4.2.1: 0x10 No matching subscribers when the broker knows none matched, 3.1.1 plain")
    func acks() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "p")
            try await c.publish("t", "0", qos: .atLeastOnce, id: 3)
            #expect(try await c.next() == .puback(PubAckPacket(packetIdentifier: 3, reasonCode: .noMatchingSubscribers)))
            try await c.publish("t", "0", qos: .exactlyOnce, id: 2)
            #expect(try await c.next() == .pubrec(PubRecPacket(packetIdentifier: 2, reasonCode: .noMatchingSubscribers)))
            try await c.send(.pubrel(PubRelPacket(packetIdentifier: 2)))
            #expect(try await c.next() == .pubcomp(PubCompPacket(packetIdentifier: 2)))
            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            try await v3.publish("t", "0", qos: .atLeastOnce, id: 3)
            #expect(try await v3.next() == .puback(PubAckPacket(packetIdentifier: 3)))
            _ = try await v3.subscribe("t")
            try await c.publish("t", "1", qos: .atLeastOnce, id: 4)
            #expect(try await c.next() == .puback(PubAckPacket(packetIdentifier: 4)))
            try await c.publish("t", "2", qos: .exactlyOnce, id: 5)
            #expect(try await c.next() == .pubrec(PubRecPacket(packetIdentifier: 5)))
            try await c.send(.pubrel(PubRelPacket(packetIdentifier: 6)))
            #expect(try await c.next() == .pubcomp(PubCompPacket(packetIdentifier: 6, reasonCode: .packetIdentifierNotFound)))
        }
    }

    @Test("v5: the server sends DISCONNECT with a reason code before closing on errors")
    func serverDisconnectReasonCodes() async throws {
        try await withBroker { _, port in
            let (a, _) = try await RawClient.connected(port: port, version: .v5, clientID: "alias")
            var props = Properties()
            // Above the Topic Alias Maximum (10 by default).
            props.topicAlias = 11
            try await a.publish("t", "x", properties: props)
            #expect(try await a.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .topicAliasInvalid))])

            let (m, _) = try await RawClient.connected(port: port, version: .v5, clientID: "malformed")
            try await m.send(h("36 06 00 01 't' 00 01 00"))
            #expect(try await m.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .malformedPacket))])

            let (t, _) = try await RawClient.connected(port: port, version: .v5, clientID: "taken")
            _ = try await RawClient.connected(port: port, version: .v5, clientID: "taken")
            #expect(try await t.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .sessionTakenOver))])
        }
    }

    @Test("v5 clients get DISCONNECT 0x8B when the server shuts down; 3.1.1 clients are closed")
    func serverShuttingDown() async throws {
        try await withBroker { broker, port in
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "v5")
            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            try await broker.shutdown()
            #expect(try await v5.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .serverShuttingDown))])
            #expect(try await v3.expectClosed().isEmpty)
        }
    }

    @Test("v5 keepalive expiry is reported with DISCONNECT 0x8D")
    func keepaliveReason() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "k", keepAlive: 1)
            #expect(try await c.expectClosed(timeout: .seconds(8)) == [.disconnect(DisconnectPacket(reasonCode: .keepAliveTimeout))])
        }
    }

    @Test("v5 session expiry 0 ends the session at disconnect; > 0 keeps it")
    func sessionExpiry() async throws {
        try await withBroker { _, port in
            let (a, _) = try await RawClient.connected(port: port, version: .v5, clientID: "e0", cleanStart: false)
            _ = try await a.subscribe("x")
            try await a.send(.disconnect(DisconnectPacket()))
            try await a.expectClosed()
            let (_, ack0) = try await RawClient.connected(port: port, version: .v5, clientID: "e0", cleanStart: false)
            #expect(ack0.sessionPresent == false)

            var keep = Properties()
            keep.sessionExpiryInterval = 60
            let (b, _) = try await RawClient.connected(port: port, version: .v5, clientID: "e60", cleanStart: false, properties: keep)
            _ = try await b.subscribe("x")
            try await b.send(.disconnect(DisconnectPacket()))
            try await b.expectClosed()
            let (_, ack60) = try await RawClient.connected(port: port, version: .v5, clientID: "e60", cleanStart: false, properties: keep)
            #expect(ack60.sessionPresent == true)
        }
    }

    @Test("v5 session expiry elapses: the session is gone afterwards")
    func sessionExpires() async throws {
        try await withBroker { broker, port in
            var one = Properties()
            one.sessionExpiryInterval = 1
            let (a, _) = try await RawClient.connected(port: port, version: .v5, clientID: "e1", cleanStart: false, properties: one)
            // Offline, the session lives for its expiry interval (1 s), then goes. Timed from
            // before the close: a busy test machine may resume this task late after it.
            let closedAt = ContinuousClock.now
            await a.close()
            try await waitFor(.seconds(10), "the session to expire") {
                let s = try? await broker.statistics()
                return s?.sessions == 0 ? true : nil
            }
            #expect(ContinuousClock.now - closedAt >= .milliseconds(950))
            let (_, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "e1", cleanStart: false, properties: one)
            #expect(ack.sessionPresent == false)
        }
    }

    @Test("v5 DISCONNECT raising session expiry from 0 is a protocol error")
    func disconnectExpiryProtocolError() async throws {
        try await withBroker { _, port in
            let (a, _) = try await RawClient.connected(port: port, version: .v5, clientID: "bad-expiry")
            var props = Properties()
            props.sessionExpiryInterval = 30
            try await a.send(.disconnect(DisconnectPacket(properties: props)))
            #expect(try await a.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .protocolError))])
        }
    }

    @Test("v5 DISCONNECT 0x04 publishes the will")
    func disconnectWithWill() async throws {
        try await withBroker { _, port in
            let (w, _) = try await RawClient.connected(port: port, clientID: "w")
            _ = try await w.subscribe("will")
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "c",
                will: Will(topic: "will", payload: ByteBuffer(string: "asked")))
            try await c.send(.disconnect(DisconnectPacket(reasonCode: .disconnectWithWillMessage)))
            #expect(try await w.nextPublish().payloadString == "asked")
        }
    }

    @Test("v5 properties are forwarded unchanged; a 3.1.1 subscriber gets the same message")
    func propertiesForwarded() async throws {
        try await withBroker { _, port in
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "v5")
            _ = try await v5.subscribe("props")
            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            _ = try await v3.subscribe("props")
            var props = Properties()
            props.payloadFormatIndicator = 1
            props.contentType = "text/plain"
            props.responseTopic = "reply/here"
            props.correlationData = ByteBuffer(string: "corr-1")
            props.appendUserProperty("a", "1")
            props.appendUserProperty("a", "2")
            props.appendUserProperty("b", "3")
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "p")
            try await pub.publish("props", "héllo", properties: props)
            let got = try await v5.nextPublish()
            #expect(got.properties == props)
            #expect(got.payloadString == "héllo")
            let old = try await v3.nextPublish()
            #expect(old.payloadString == "héllo")
        }
    }

    @Test("v5 no-local: a client does not receive its own messages")
    func noLocal() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "self")
            try await c.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init(topicFilter: "echo", options: .init(noLocal: true))])))
            _ = try await c.next()
            try await c.publish("echo", "me")
            try await c.expectSilence()
        }
    }

    @Test("v5 subscription identifiers are sent with matching messages")
    func subscriptionIdentifiers() async throws {
        try await withBroker { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "ids")
            var props = Properties()
            props.set(.subscriptionIdentifier, .variableByteInteger(42))
            try await c.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [.init("id/+", qos: .atMostOnce)], properties: props)))
            _ = try await c.next()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "p")
            try await pub.publish("id/x", "tagged")
            #expect(try await c.nextPublish().properties.subscriptionIdentifiers == [42])
        }
    }

    @Test("reason_strings (the default): a v5 client is told why in DISCONNECT and in a refusing CONNACK; 3.1.1 gets no such thing")
    func reasonStrings() async throws {
        try await withBroker({ $0.reasonStrings = true; $0.maximumQoS = .atLeastOnce }) { _, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "alias")
            var alias = Properties()
            alias.topicAlias = 11
            try await c.publish("t", "x", properties: alias)
            let closed = try await c.expectClosed()
            guard case .disconnect(let d)? = closed.first else { Issue.record("no DISCONNECT: \(closed)"); return }
            #expect(d.reasonCode == .topicAliasInvalid)
            #expect(d.properties.reasonString == "topic alias 11 above the maximum 10")

            let refused = try await RawClient.connect(port: port, version: .v5)
            try await refused.send(.connect(ConnectPacket(
                protocolVersion: .v5, clientIdentifier: "w", will: Will(topic: "w", payload: ByteBuffer(), qos: .exactlyOnce))))
            guard case .connack(let ack) = try await refused.next() else { Issue.record("no CONNACK"); return }
            #expect(ack.reasonCode == .qosNotSupported && ack.properties.reasonString == "will QoS above max_qos (MQTT-3.2.2-12)")
        }
    }

    @Test("MQTT 5 4.11 server redirection: with server_reference set, v5 gets CONNACK 0x9C (0x9D with server_moved) and the Server Reference; 3.1.1 gets 0x03", arguments: [false, true])
    func serverRedirection(moved: Bool) async throws {
        try await withBroker({ $0.serverReference = "other.example:1883"; $0.serverMoved = moved }) { broker, port in
            let v5 = try await RawClient.connect(port: port, version: .v5)
            try await v5.send(.connect(ConnectPacket(protocolVersion: .v5, clientIdentifier: "r5")))
            guard case .connack(let ack) = try await v5.next() else { Issue.record("no CONNACK"); return }
            #expect(ack.reasonCode == (moved ? .serverMoved : .useAnotherServer))
            #expect(ack.properties.serverReference == "other.example:1883")
            try await v5.expectClosed()
            let v3 = try await RawClient.connect(port: port)
            try await v3.send(.connect(ConnectPacket(clientIdentifier: "r3")))
            #expect(try await v3.next() == .connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.serverUnavailable.rawValue))))
            #expect(try await broker.sessionReport(clientID: "r5") == nil)
        }
    }

    @Test("MQTT 5 3.3.2.3.4: to a client that allows topic aliases the broker sends a topic once with an alias, then the alias alone; a new connection starts afresh; no aliases to a client that allows none; 85% fewer bytes for a 100-byte topic")
    func topicAliasesToClients() async throws {
        try await withBroker { broker, port in
            var allows = Properties()
            allows.topicAliasMaximum = 5
            var keeps = allows
            keeps.sessionExpiryInterval = 60
            let topic = "fleet/" + String(repeating: "t", count: 94)
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "aliased", cleanStart: false, properties: keeps)
            _ = try await sub.subscribe("fleet/#", qos: .atLeastOnce)
            let (plain, _) = try await RawClient.connected(port: port, version: .v5, clientID: "plain")
            _ = try await plain.subscribe("fleet/#")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            for i in 1...3 { try await pub.publish(topic, "m\(i)", qos: .atLeastOnce, id: UInt16(i)) }
            try await pub.publish("fleet/other", "o", qos: .atLeastOnce, id: 4)
            var got: [PublishPacket] = []
            for _ in 1...4 {
                let p = try await sub.nextPublish()
                got.append(p)
                try await sub.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
            }
            #expect(got.map(\.topic) == [topic, "", "", "fleet/other"])
            #expect(got.map(\.properties.topicAlias) == [1, 1, 1, 2])
            for _ in 1...4 { #expect(try await plain.nextPublish().properties.topicAlias == nil) }
            // A new connection: the aliases of the last one mean nothing.
            await sub.close()
            try await waitUntilOffline(broker, "aliased")
            let (again, _) = try await RawClient.connected(port: port, version: .v5, clientID: "aliased", cleanStart: false, properties: keeps)
            try await pub.publish(topic, "m4", qos: .atLeastOnce, id: 5)
            let first = try await again.nextPublish()
            #expect(first.topic == topic && first.properties.topicAlias == 1)

            // Bytes: 200 QoS 0 messages of 10 bytes on the 100-byte topic.
            let (counted, _) = try await RawClient.connected(port: port, version: .v5, clientID: "counted", properties: allows)
            _ = try await counted.subscribe("fleet/#")
            let (uncounted, _) = try await RawClient.connected(port: port, version: .v5, clientID: "uncounted")
            _ = try await uncounted.subscribe("fleet/#")
            await plain.close()
            for _ in 1...200 { try await pub.publish(topic, "0123456789") }
            try await waitFor(.seconds(10), "200 each") {
                counted.pendingBytes.count >= 118 + 199 * 18 && uncounted.pendingBytes.count >= 200 * 115 ? true : nil
            }
            try await Task.sleep(for: .milliseconds(100))
            let withAliases = counted.pendingBytes.count
            let without = uncounted.pendingBytes.count
            // Without: 2 (fixed header) + 2 + 100 (topic) + 1 (no properties) + 10 = 115 bytes each.
            #expect(without == 200 * 115)
            // With: the first 115 + 3 (the alias property); then 2 + 2 + 0 + 1 + 3 + 10 = 18 each.
            #expect(withAliases == 118 + 199 * 18, "\(withAliases) bytes with aliases, \(without) without")
        }
    }
}
