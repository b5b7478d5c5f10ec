import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// MQTT 5 message expiry end to end. The rules about time themselves (will delay, expiry
/// counting down, expired retained messages) are tested on a manual clock in
/// MartletBrokerTests' TimeRulesTests.
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
}
