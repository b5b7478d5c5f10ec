import MartletBroker
import MartletMQTT
import MartletTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Shared subscriptions, `$share/{name}/{filter}` (MQTT 5 4.8.2; accepted from 3.1.1 clients
/// too, as mosquitto and EMQX do).
@Suite struct SharedSubscriptionTests {
    /// Payloads each member received, while its reader runs.
    final class Tally: Sendable {
        let received = NIOLockedValueBox<[String: [String]]>([:])
        var total: Int { received.withLockedValue { $0.values.reduce(0) { $0 + $1.count } } }
        func of(_ member: String) -> [String] { received.withLockedValue { $0[member] ?? [] } }
    }

    /// Reads PUBLISHes into `tally` until cancelled, acknowledging QoS 1 ones if `ack`.
    func reader(_ client: RawClient, _ name: String, _ tally: Tally, ack: Bool = true) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                guard let p = try? await client.nextPublish(timeout: .milliseconds(200)) else { continue }
                tally.received.withLockedValue { $0[name, default: []].append(p.payloadString) }
                if ack, case .atLeastOnce(let id) = p.delivery { try? await client.send(.puback(PubAckPacket(packetIdentifier: id))) }
            }
        }
    }

    /// QoS 1 PUBLISHes `first...last` on `topic` in one write (payload = the number).
    func publishMany(_ port: Int, _ range: ClosedRange<Int>, topic: String = "work/items") async throws -> RawClient {
        let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
        var bytes = ByteBuffer()
        for i in range {
            try MQTTPacket.publish(PublishPacket(topic: topic, payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce, packetIdentifier: UInt16(i % 60_000 + 1)))
                .write(to: &bytes, version: .v3_1_1)
        }
        try await pub.send(Array(bytes.readableBytesView))
        return pub
    }

    @Test("MQTT 5 4.8.2: three members on three event loops (3.1.1 and 5.0 mixed), 3,000 QoS 1 messages: each reaches exactly one member, in fair shares",
          arguments: [SharedSubscriptionStrategy.roundRobin, .balanced])
    func exactlyOneMemberEach(strategy: SharedSubscriptionStrategy) async throws {
        try await withBroker({
            $0.eventLoops = 3
            $0.sharedSubscriptionStrategy = strategy
        }) { broker, port in
            let tally = Tally()
            var readers: [Task<Void, Never>] = []
            var members: [RawClient] = []
            for i in 0..<3 {
                let (c, ack) = try await RawClient.connected(port: port, version: i == 0 ? .v3_1_1 : .v5, clientID: "m\(i)")
                // Shared Subscription Available is not 0 (absent means available).
                #expect(ack.properties.sharedSubscriptionAvailable != 0)
                #expect(try await c.subscribe("$share/g/work/#", qos: .atLeastOnce).reasonCodes == [ReasonCode(1)])
                members.append(c)
                readers.append(reader(c, "m\(i)", tally))
            }
            defer { readers.forEach { $0.cancel() } }
            var loops: Set<Int> = []
            for i in 0..<3 { loops.insert(try #require(try await broker.loop(of: "m\(i)"))) }
            #expect(loops.count == 3, "the members should live on three loops")
            _ = try await publishMany(port, 1...3000)
            do {
                try await waitFor(.seconds(30), "3,000 deliveries") { tally.total >= 3000 ? true : nil }
            } catch {
                var reports: [String] = []
                for i in 0..<3 { reports.append("\(String(describing: try await broker.sessionReport(clientID: "m\(i)")))") }
                Issue.record("got \(tally.total): \((0..<3).map { tally.of("m\($0)").count }), counters \(broker.counters), groups \(broker.sharedGroups), sessions \(reports)")
                throw error
            }
            try await Task.sleep(for: .milliseconds(200))  // nothing more may arrive
            let all = (0..<3).flatMap { tally.of("m\($0)") }
            #expect(all.count == 3000)
            #expect(Set(all) == Set((1...3000).map(String.init)))
            let shares = (0..<3).map { tally.of("m\($0)").count }
            if strategy == .roundRobin {
                #expect(shares == [1000, 1000, 1000])
            } else {
                #expect(shares.allSatisfy { $0 >= 300 }, "shares \(shares)")
            }
            let group = try #require(broker.sharedGroups.first)
            #expect(group.group == "$share/g/work/#" && group.members == 3 && group.delivered == 3000)
        }
    }

    @Test("a member that goes away with messages unacknowledged: they reach the other members, each message at least once and none lost")
    func memberLostMidStream() async throws {
        try await withBroker({
            $0.sharedSubscriptionStrategy = .roundRobin
            $0.maximumInflight = 10
        }) { broker, port in
            let tally = Tally()
            let (quitter, _) = try await RawClient.connected(port: port, version: .v5, clientID: "quitter")
            _ = try await quitter.subscribe("$share/g/work/#", qos: .atLeastOnce)
            let quitterReader = reader(quitter, "quitter", tally, ack: false)
            var readers: [Task<Void, Never>] = []
            for name in ["a", "b"] {
                let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: name)
                _ = try await c.subscribe("$share/g/work/#", qos: .atLeastOnce)
                readers.append(reader(c, name, tally))
            }
            defer { readers.forEach { $0.cancel() } }
            _ = try await publishMany(port, 1...300)
            // Round robin gives the quitter every third message: 10 in flight unacknowledged,
            // the rest queued behind them.
            try await waitFor(.seconds(10), "the quitter's window to fill") { tally.of("quitter").count == 10 ? true : nil }
            quitterReader.cancel()
            await quitter.close()
            try await waitFor(.seconds(20), "every message at a or b") {
                Set(tally.of("a") + tally.of("b")).count == 300 ? true : nil
            }
            let others = tally.of("a") + tally.of("b")
            #expect(others.count == 300, "each message once at a or b")
            #expect(Set(tally.of("quitter")).isSubset(of: Set(others)))
            let group = try #require(broker.sharedGroups.first)
            // At least its ten unacknowledged ones; copies queued behind them went too (how many
            // depends on how far the publisher got before the quitter left).
            #expect(group.redelivered >= 10)
            #expect(group.delivered == 300)
            #expect(group.members == 2)
        }
    }

    @Test("MQTT-3.8.3-4: No Local on a shared subscription is a protocol error: DISCONNECT 0x82, nothing subscribed")
    func noLocalIsAProtocolError() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "nl")
            try await c.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [
                .init(topicFilter: "$share/g/t", options: .init(qos: .atLeastOnce, noLocal: true)),
            ])))
            #expect(try await c.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .protocolError))])
            #expect(broker.sharedGroups.isEmpty)
        }
    }

    @Test("MQTT 5 4.8.2: no retained messages are sent for a shared subscription (they are for a plain one)")
    func noRetainedMessages() async throws {
        try await withBroker { _, port in
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            try await pub.publish("status/door", "open", qos: .atLeastOnce, retain: true, id: 1)
            _ = try await pub.next()
            for version in [ProtocolVersion.v3_1_1, .v5] {
                let (c, _) = try await RawClient.connected(port: port, version: version, clientID: "s-\(version)")
                _ = try await c.subscribe("$share/g/status/#", qos: .atLeastOnce)
                try await c.expectSilence()
                _ = try await c.subscribe("status/#", qos: .atLeastOnce, id: 2)
                #expect(try await c.nextPublish().payloadString == "open")
            }
        }
    }

    @Test("malformed shared filters are refused in SUBACK: 0x8F (v5) / 0x80 (3.1.1) for a wildcard in the share name, an empty name or no filter")
    func malformedSharedFilters() async throws {
        try await withBroker { broker, port in
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "v5")
            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            for filter in ["$share/g+/t", "$share/#/t", "$share//t", "$share/g", "$share/g/"] {
                #expect(try await v5.subscribe(filter).reasonCodes == [.topicFilterInvalid], "\(filter)")
                #expect(try await v3.subscribe(filter).reasonCodes == [.subscribeFailure], "\(filter)")
            }
            #expect(broker.sharedGroups.isEmpty)
        }
    }

    @Test("an offline persistent member gets nothing while another member is online; with none online, it queues the group's messages and gets them when back")
    func offlinePersistentMember() async throws {
        try await withBroker { broker, port in
            var keep = Properties()
            keep.sessionExpiryInterval = 300
            let (sleeper, _) = try await RawClient.connected(port: port, version: .v5, clientID: "sleeper", properties: keep)
            _ = try await sleeper.subscribe("$share/g/jobs", qos: .atLeastOnce)
            await sleeper.close()
            try await waitUntilOffline(broker, "sleeper")
            let (awake, _) = try await RawClient.connected(port: port, version: .v5, clientID: "awake")
            _ = try await awake.subscribe("$share/g/jobs", qos: .atLeastOnce)
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            for i in 1...5 {
                try await pub.publish("jobs", "online \(i)", qos: .atLeastOnce, id: UInt16(i))
                let p = try await awake.nextPublish()
                #expect(p.payloadString == "online \(i)")
                try await awake.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
            }
            await awake.close()
            try await waitFor(.seconds(10), "the awake member to leave") { broker.sharedGroups.first?.members == 1 ? true : nil }
            for i in 1...3 { try await pub.publish("jobs", "queued \(i)", qos: .atLeastOnce, id: UInt16(10 + i)) }
            try await waitFor(.seconds(10), "three queued for the sleeper") {
                try await broker.sessionReport(clientID: "sleeper")?.queuedMessages == 3 ? true : nil
            }
            let (back, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "sleeper", cleanStart: false, properties: keep)
            #expect(ack.sessionPresent)
            var got: [String] = []
            for _ in 1...3 { got.append(try await back.nextPublish().payloadString) }
            #expect(got == ["queued 1", "queued 2", "queued 3"])
        }
    }

    @Test("UNSUBSCRIBE leaves the group; the last member leaving ends it")
    func unsubscribeLeaves() async throws {
        try await withBroker { broker, port in
            let (c, _) = try await RawClient.connected(port: port, version: .v5, clientID: "u")
            _ = try await c.subscribe("$share/g/t", qos: .atLeastOnce)
            #expect(broker.sharedGroups.first?.members == 1)
            try await c.send(.unsubscribe(UnsubscribePacket(packetIdentifier: 2, topicFilters: ["$share/g/t"])))
            #expect(try await c.next() == .unsuback(UnsubAckPacket(packetIdentifier: 2, reasonCodes: [.success])))
            #expect(broker.sharedGroups.isEmpty)
        }
    }
}
