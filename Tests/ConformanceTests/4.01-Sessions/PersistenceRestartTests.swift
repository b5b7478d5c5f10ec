import Foundation
import MartletBroker
import MartletMQTT
import MartletTestSupport
import NIOCore
import Testing

/// Sessions across a broker restart with `persistence`: the client that comes back finds its
/// session as if the broker had never stopped — in-flight messages resent with DUP under their
/// packet ids, PUBRELs owed resent (MQTT-4.4.0-1), inbound QoS 2 ids still known (exactly once).
@Suite struct PersistenceRestartTests {
    func store() -> String {
        let dir = scratchPath("restart")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/store.db"
    }

    var persistent: Properties {
        var p = Properties()
        p.sessionExpiryInterval = 3600
        return p
    }

    /// Two brokers, one after the other, on the same store file.
    func restarting(_ path: String, _ first: (Int) async throws -> Void, then second: (MQTTBroker, Int) async throws -> Void) async throws {
        try await withBroker({ $0.persistence = .init(path: path) }) { _, port in try await first(port) }
        try await withBroker({ $0.persistence = .init(path: path) }) { broker, port in try await second(broker, port) }
    }

    @Test("MQTT-4.4.0-1 across a restart: an unacknowledged QoS 1 PUBLISH is resent with DUP and its packet id, a PUBREL owed is resent; acknowledged, they leave the store")
    func inflightResentAfterRestart() async throws {
        let path = store()
        var qos1ID: UInt16 = 0
        var qos2ID: UInt16 = 0
        try await restarting(path, { port in
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "resumer", properties: persistent)
            _ = try await sub.subscribe("r/1", qos: .atLeastOnce, id: 1)
            _ = try await sub.subscribe("r/2", qos: .exactlyOnce, id: 2)
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "pub")
            try await pub.publish("r/1", "one", qos: .atLeastOnce, id: 10)
            try await pub.publish("r/2", "two", qos: .exactlyOnce, id: 11)
            let first = try await sub.nextPublish()
            let second = try await sub.nextPublish()
            #expect(first.payloadString == "one" && second.payloadString == "two")
            qos1ID = try #require(first.packetIdentifier)
            qos2ID = try #require(second.packetIdentifier)
            // QoS 1 left unacknowledged; QoS 2 received (PUBREC), its PUBREL not completed.
            try await sub.send(.pubrec(PubRecPacket(packetIdentifier: qos2ID)))
            guard case .pubrel = try await sub.next() else { Issue.record("expected PUBREL"); return }
        }, then: { broker, port in
            let (sub, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "resumer", cleanStart: false, properties: persistent)
            #expect(ack.sessionPresent)
            let resent = try await sub.nextPublish()
            #expect(resent.dup && resent.packetIdentifier == qos1ID && resent.payloadString == "one")
            #expect(try await sub.next() == .pubrel(PubRelPacket(packetIdentifier: qos2ID)))
            try await sub.send(.puback(PubAckPacket(packetIdentifier: qos1ID)))
            try await sub.send(.pubcomp(PubCompPacket(packetIdentifier: qos2ID)))
            try await sub.expectSilence()
            let report = try #require(try await broker.sessionReport(clientID: "resumer"))
            #expect(report.inflight == 0 && report.queuedMessages == 0)
        })
        let rows = try SpawnedProcess("/usr/bin/sqlite3", [path, "SELECT count(*) FROM deliveries; SELECT count(*) FROM messages"])
        while rows.isRunning { try await Task.sleep(for: .milliseconds(5)) }
        #expect(rows.output().stdout == "0\n0\n")
    }

    @Test("Exactly once inbound across a restart (MQTT-4.3.3-2): a QoS 2 PUBLISH answered with PUBREC and resent with DUP after the restart is not routed again; its PUBREL completes")
    func inboundQoS2KnownAfterRestart() async throws {
        let path = store()
        try await restarting(path, { port in
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "watcher")
            _ = try await sub.subscribe("once/#", qos: .exactlyOnce)
            let (pub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "sender", properties: persistent)
            try await pub.publish("once/a", "only once", qos: .exactlyOnce, id: 7)
            #expect(try await pub.next() == .pubrec(PubRecPacket(packetIdentifier: 7)))
            #expect(try await sub.nextPublish().payloadString == "only once")
        }, then: { _, port in
            let (sub, _) = try await RawClient.connected(port: port, version: .v5, clientID: "watcher")
            _ = try await sub.subscribe("once/#", qos: .exactlyOnce)
            let (pub, ack) = try await RawClient.connected(port: port, version: .v5, clientID: "sender", cleanStart: false, properties: persistent)
            #expect(ack.sessionPresent)
            try await pub.send(.publish(PublishPacket(topic: "once/a", payload: ByteBuffer(string: "only once"), qos: .exactlyOnce,
                                                      dup: true, packetIdentifier: 7)))
            #expect(try await pub.next() == .pubrec(PubRecPacket(packetIdentifier: 7)))
            try await pub.send(.pubrel(PubRelPacket(packetIdentifier: 7)))
            #expect(try await pub.next() == .pubcomp(PubCompPacket(packetIdentifier: 7)))
            try await sub.expectSilence()
        })
    }

    @Test("A graceful restart keeps an offline session's queue (in order) and its subscriptions; a clean start then discards them, on disk too")
    func queueAndSubscriptionsSurviveAndCleanStartDiscards() async throws {
        let path = store()
        try await restarting(path, { port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "offline", cleanStart: false)
            _ = try await sub.subscribe("q/#", qos: .atLeastOnce)
            await sub.close()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            for i in 1...20 {
                try await pub.publish("q/\(i % 3)", "m\(i)", qos: .atLeastOnce, id: UInt16(i))
                _ = try await pub.next()
            }
        }, then: { broker, port in
            let report = try #require(try await broker.sessionReport(clientID: "offline"))
            #expect(report.queuedMessages == 20 && !report.online)
            let (sub, ack) = try await RawClient.connected(port: port, clientID: "offline", cleanStart: false)
            #expect(ack.sessionPresent)
            var got: [String] = []
            for _ in 1...20 {
                let p = try await sub.nextPublish()
                got.append(p.payloadString)
                try await sub.send(.puback(PubAckPacket(packetIdentifier: p.packetIdentifier!)))
            }
            #expect(got == (1...20).map { "m\($0)" })
            // Still subscribed after the restart.
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            try await pub.publish("q/x", "live", qos: .atLeastOnce, id: 1)
            #expect(try await sub.nextPublish().payloadString == "live")
            await sub.close()
            try await waitUntilOffline(broker, "offline")
            let (clean, cleanAck) = try await RawClient.connected(port: port, clientID: "offline", cleanStart: true)
            #expect(!cleanAck.sessionPresent)
            await clean.close()
        })
        let rows = try SpawnedProcess("/usr/bin/sqlite3", [path, "SELECT count(*) FROM sessions; SELECT count(*) FROM subscriptions"])
        while rows.isRunning { try await Task.sleep(for: .milliseconds(5)) }
        #expect(rows.output().stdout == "0\n0\n")
    }

    @Test("sync: periodic past max_pending_records: acknowledgements of stored messages wait for the commit, as with durable (publishers are held back, memory does not grow)")
    func periodicHoldsAcknowledgementsPastThePendingBound() async throws {
        let path = store()
        try await withBroker({
            // No commit for a minute: what waits for the writer stays pending.
            $0.persistence = .init(path: path, sync: .periodic, commitInterval: .seconds(60), maximumPendingRecords: 1)
        }) { _, port in
            let (sub, _) = try await RawClient.connected(port: port, clientID: "slow-disk", cleanStart: false)
            _ = try await sub.subscribe("p/#", qos: .atLeastOnce)
            await sub.close()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            // The session's own records (subscribe) are pending already: past the bound of 1.
            try await pub.publish("p/1", "held", qos: .atLeastOnce, id: 1)
            try await pub.expectSilence(for: .milliseconds(500))
            // A message no stored session takes is acknowledged at once, behind nothing of its own.
            let (other, _) = try await RawClient.connected(port: port, clientID: "other")
            try await other.publish("elsewhere", "free", qos: .atLeastOnce, id: 1)
            #expect(try await other.next() == .puback(PubAckPacket(packetIdentifier: 1)))
        }
    }
}
