import MartletBroker
import MartletMQTT
import MartletTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Connection limits, topic limits and slow or silent peers.
@Suite struct ConnectionLimitTests {
    static let refusedV3 = MQTTPacket.connack(ConnAckPacket(reasonCode: ReasonCode(ConnectReturnCode.serverUnavailable.rawValue)))

    @Test("max_connections N: connection N+1 is refused (0x03 / v5 0x97) and the first N still exchange messages")
    func maxConnections() async throws {
        try await withBroker({ $0.maximumConnections = 3 }) { broker, port in
            let (a, _) = try await RawClient.connected(port: port, clientID: "a")
            let (b, _) = try await RawClient.connected(port: port, clientID: "b")
            let (c, _) = try await RawClient.connected(port: port, clientID: "c")
            let refused = try await RawClient.connect(port: port)
            try await refused.send(.connect(ConnectPacket(clientIdentifier: "d")))
            #expect(try await refused.expectClosed() == [Self.refusedV3])
            let refused5 = try await RawClient.connect(port: port, version: .v5)
            try await refused5.send(.connect(ConnectPacket(protocolVersion: .v5, clientIdentifier: "e")))
            #expect(try await refused5.expectClosed() == [.connack(ConnAckPacket(reasonCode: .quotaExceeded))])
            // The first three still work.
            _ = try await a.subscribe("t")
            _ = try await b.subscribe("t")
            try await c.publish("t", "still here")
            #expect(try await a.nextPublish().payloadString == "still here")
            #expect(try await b.nextPublish().payloadString == "still here")
            // A freed place is taken by the next client.
            await c.close()
            try await waitFor(.seconds(10), "the connection count to drop") { broker.counters.connections == 2 ? true : nil }
            let (_, ok) = try await RawClient.connected(port: port, clientID: "f")
            #expect(ok.reasonCode == .success)
            try await waitFor(.seconds(10), "the refusal counter") { broker.counters.connectionsRefusedLimit == 2 ? true : nil }
        }
    }

    @Test("listener max_connections limits that listener only; a TLS listener over its limit closes before the handshake")
    func perListenerLimit() async throws {
        let certs = try await DevCertificates.make()
        let tls = certs.server()
        try await withBroker({
            $0.listeners = [
                .init(host: "127.0.0.1", port: 0),
                .init(host: "127.0.0.1", port: 0, maximumConnections: 1),
                .init(host: "127.0.0.1", port: 0, tls: tls, maximumConnections: 1),
            ]
        }) { broker, port in
            let limited = broker.localAddresses[1].port!
            let tlsPort = broker.localAddresses[2].port!
            let (_, first) = try await RawClient.connected(port: limited, clientID: "first")
            #expect(first.reasonCode == .success)
            let second = try await RawClient.connect(port: limited)
            try await second.send(.connect(ConnectPacket(clientIdentifier: "second")))
            #expect(try await second.expectClosed() == [Self.refusedV3])
            // The other listener is not affected.
            let (_, other) = try await RawClient.connected(port: port, clientID: "other")
            #expect(other.reasonCode == .success)

            let clientTLS = try certs.client()
            let (_, tlsFirst) = try await RawClient.connected(port: tlsPort, clientID: "tls-first", tls: clientTLS)
            #expect(tlsFirst.reasonCode == .success)
            let tlsSecond = try await RawClient.connect(port: tlsPort, tls: clientTLS)
            #expect(try await tlsSecond.expectClosed().isEmpty)
        }
    }

    @Test("max_connection_rate: connections past the rate are refused with v5 0x9F")
    func connectionRate() async throws {
        try await withBroker({
            $0.maximumConnectionRate = 2
            // Opening twelve sockets can take seconds on a busy machine; none may time out first.
            $0.connectTimeout = .seconds(30)
        }) { broker, port in
            // Twelve sockets opened at once; the bucket holds two and refills two per second.
            let clients = try await withThrowingTaskGroup(of: RawClient.self) { group in
                for _ in 0..<12 { group.addTask { try await RawClient.connect(port: port, version: .v5) } }
                var all: [RawClient] = []
                for try await c in group { all.append(c) }
                return all
            }
            var accepted = 0
            var refused = 0
            // Every CONNECT first, then the answers: on a busy machine, one at a time could take
            // the last sockets past the connect timeout.
            for (i, c) in clients.enumerated() {
                try await c.send(.connect(ConnectPacket(protocolVersion: .v5, clientIdentifier: "r\(i)")))
            }
            for c in clients {
                guard case .connack(let ack) = try await c.next() else { Issue.record("no CONNACK"); continue }
                if ack.reasonCode == .success { accepted += 1 } else {
                    #expect(ack.reasonCode == .connectionRateExceeded)
                    refused += 1
                }
            }
            #expect(accepted >= 2 && accepted + refused == 12)
            #expect(refused > 0)
            try await waitFor(.seconds(10), "the rate counter") { broker.counters.connectionsRefusedRate == refused ? true : nil }
        }
    }

    @Test("max_topic_length / max_topic_levels: a PUBLISH beyond them closes with v5 0x90; a filter beyond them gets 0x8F / 0x80")
    func topicLimits() async throws {
        try await withBroker({
            $0.maximumTopicLength = 16
            $0.maximumTopicLevels = 3
        }) { _, port in
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "v5")
            try await v5.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [
                .init("a/b/c", qos: .atMostOnce), .init("a/b/c/d", qos: .atMostOnce), .init("a-very-long-topic-filter", qos: .atMostOnce),
            ])))
            #expect(try await v5.next() == .suback(SubAckPacket(packetIdentifier: 1, reasonCodes: [.grantedQoS0, .topicFilterInvalid, .topicFilterInvalid])))
            try await v5.publish("a/b/c/d", "deep")
            #expect(try await v5.expectClosed() == [.disconnect(DisconnectPacket(reasonCode: .topicNameInvalid))])

            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            #expect(try await v3.subscribe("x/y/z/w").reasonCodes == [.subscribeFailure])
            try await v3.publish("a-very-long-topic-name", "long")
            try await v3.expectClosed()
        }
    }

    @Test("max_subscriptions_per_client: filters past the limit get 0x97 (v5) / 0x80, re-subscribing an existing one is fine")
    func subscriptionLimit() async throws {
        try await withBroker({ $0.maximumSubscriptionsPerClient = 2 }) { _, port in
            let (v5, _) = try await RawClient.connected(port: port, version: .v5, clientID: "v5")
            try await v5.send(.subscribe(SubscribePacket(packetIdentifier: 1, subscriptions: [
                .init("a", qos: .atMostOnce), .init("b", qos: .atMostOnce), .init("c", qos: .atMostOnce), .init("a", qos: .atLeastOnce),
            ])))
            #expect(try await v5.next() == .suback(SubAckPacket(packetIdentifier: 1, reasonCodes: [.grantedQoS0, .grantedQoS0, .quotaExceeded, .grantedQoS1])))
            let (v3, _) = try await RawClient.connected(port: port, clientID: "v3")
            _ = try await v3.subscribe("a")
            _ = try await v3.subscribe("b", id: 2)
            #expect(try await v3.subscribe("c", id: 3).reasonCodes == [.subscribeFailure])
        }
    }
}
