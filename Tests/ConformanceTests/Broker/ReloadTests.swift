import MartletBroker
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// Reloading a running broker: live limits apply, fixed settings are reported and kept.
@Suite struct ReloadTests {
    @Test("reload: a new max_connections and queue limit apply at once; a changed listener is reported and kept")
    func liveLimits() async throws {
        try await withBroker({ $0.maximumConnections = 1 }) { broker, port in
            let (first, _) = try await RawClient.connected(port: port, clientID: "first")
            let second = try await RawClient.connect(port: port)
            try await second.send(.connect(ConnectPacket(clientIdentifier: "second")))
            #expect(try await second.expectClosed().count == 1)  // CONNACK 0x03

            var new = broker.liveConfiguration
            new.maximumConnections = 2
            new.maximumQueuedMessages = 5
            new.listeners[0].port = 1884  // needs a restart
            let report = broker.reload(new)
            #expect(report.needsRestart == ["listeners"])
            #expect(broker.liveConfiguration.listeners[0].port == 0)  // as configured (0 picked a free port)
            #expect(broker.liveConfiguration.maximumQueuedMessages == 5)

            let (third, ack) = try await RawClient.connected(port: port, clientID: "third")
            #expect(ack.reasonCode == .success)
            _ = try await first.subscribe("t")
            try await third.publish("t", "after reload")
            #expect(try await first.nextPublish().payloadString == "after reload")
        }
    }
}
