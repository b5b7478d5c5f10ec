import Foundation
import MartletBroker
import MartletMQTT
import NIOCore
import NIOPosix
import Testing
import MartletTestSupport

/// /metrics, /healthz and $SYS, with values that move as traffic flows.
@Suite struct ObservabilityTests {
    /// One HTTP/1.0 GET; returns the status line and the body.
    static func get(_ port: Int, _ path: String) async throws -> (status: String, body: String) {
        let collector = ByteCollector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(collector) }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")).get()
        try await waitFor(.seconds(10), "the HTTP response") { collector.closed.withLockedValue { $0 } ? true : nil }
        let text = collector.received.withLockedValue { String(buffer: $0) }
        let parts = text.components(separatedBy: "\r\n\r\n")
        return (String(parts[0].split(separator: "\r\n").first ?? ""), parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    /// Prometheus text format → sample name with labels → value.
    static func parse(_ body: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    @Test("With persistence, /metrics shows the store: bytes on disk, commits and their latency histogram, records pending")
    func storeMetrics() async throws {
        let dir = scratchPath("store-metrics")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try await withBroker({
            $0.metrics = .init(host: "127.0.0.1", port: 0)
            $0.persistence = .init(path: dir + "/store.db")
        }) { broker, port in
            let metricsPort = try #require(broker.metricsAddress?.port)
            let (sub, _) = try await RawClient.connected(port: port, clientID: "kept", cleanStart: false)
            _ = try await sub.subscribe("s/#", qos: .atLeastOnce)
            await sub.close()
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            for i in 1...10 {
                try await pub.publish("s/\(i)", "x", qos: .atLeastOnce, id: UInt16(i))
                #expect(try await pub.next() == .puback(PubAckPacket(packetIdentifier: UInt16(i))))
            }
            let m = Self.parse(try await Self.get(metricsPort, "/metrics").body)
            #expect((m["martlet_store_commits_total"] ?? 0) >= 1)
            #expect((m["martlet_store_records_committed_total"] ?? 0) >= 20)  // ten messages and their rows
            #expect(m["martlet_store_records_pending"] != nil)
            #expect((m["martlet_store_bytes"] ?? 0) > 0)
            #expect(m["martlet_store_commit_seconds_count"] == m["martlet_store_commits_total"])
            #expect(m["martlet_store_commit_seconds_bucket{le=\"+Inf\"}"] == m["martlet_store_commits_total"])
            #expect(m["martlet_store_refused_total"] == 0)
        }
    }

    @Test("/metrics is scraped and parsed, and its values move as traffic flows; /healthz answers ok")
    func metricsEndpoint() async throws {
        try await withBroker({ $0.metrics = .init(host: "127.0.0.1", port: 0) }) { broker, port in
            let metricsPort = try #require(broker.metricsAddress?.port)
            let health = try await Self.get(metricsPort, "/healthz")
            #expect(health.status == "HTTP/1.0 200 OK")
            #expect(health.body == "ok\n")
            #expect(try await Self.get(metricsPort, "/nothing").status == "HTTP/1.0 404 Not Found")

            let before = Self.parse(try await Self.get(metricsPort, "/metrics").body)
            #expect(before["martlet_messages_received_total"] == nil || before["martlet_messages_received_total"] == 0)
            let (sub, _) = try await RawClient.connected(port: port, clientID: "sub")
            _ = try await sub.subscribe("m")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            for i in 0..<5 { try await pub.publish("m", "\(i)") }
            for _ in 0..<5 { _ = try await sub.nextPublish() }
            let after = try await waitFor(.seconds(10), "the counters to reach /metrics") { () -> [String: Double]? in
                let samples = Self.parse(try await Self.get(metricsPort, "/metrics").body)
                // Received and sent are counted on the publisher's and the subscriber's loops,
                // each folded in at its own sweep.
                return samples["martlet_messages_received_total"] == 5 && samples["martlet_messages_sent_total"] == 5 ? samples : nil
            }
            #expect(after["martlet_messages_sent_total"] == 5)
            #expect(after["martlet_connections"] == 2)
            #expect(after["martlet_connections_accepted_total"] == 2)
            #expect((after["martlet_bytes_received_total"] ?? 0) > 0)
            #expect(after["martlet_queued_bytes"] == 0)
            #expect(after.keys.contains("martlet_messages_dropped_total{reason=\"queue_full\"}"))
            #expect((after["martlet_uptime_seconds"] ?? -1) >= 0)
        }
    }

    @Test("$SYS/broker/... topics are published every sys_interval with the same figures")
    func sysTopics() async throws {
        try await withBroker({ $0.sysInterval = .milliseconds(200) }) { _, port in
            let (watcher, _) = try await RawClient.connected(port: port, clientID: "watcher")
            _ = try await watcher.subscribe("$SYS/broker/#")
            var seen: [String: String] = [:]
            try await waitFor(.seconds(10), "$SYS figures") { () -> Bool? in
                while let m = try? await watcher.nextPublish(timeout: .milliseconds(50)) { seen[m.topic] = m.payloadString }
                return seen["$SYS/broker/clients/connected"] == "1" && seen["$SYS/broker/version"] != nil ? true : nil
            }
            #expect(seen["$SYS/broker/version"] == MQTTBroker.version)
            #expect(seen.keys.contains("$SYS/broker/uptime"))
            // A plain '#' subscriber does not get $SYS (MQTT-4.7.2-1).
            let (all, _) = try await RawClient.connected(port: port, clientID: "all")
            _ = try await all.subscribe("#")
            let (pub, _) = try await RawClient.connected(port: port, clientID: "pub")
            try await pub.publish("x", "1")
            #expect(try await all.nextPublish().topic == "x")
            try await waitFor(.seconds(10), "messages/received to move") { () -> Bool? in
                while let m = try? await watcher.nextPublish(timeout: .milliseconds(50)) { seen[m.topic] = m.payloadString }
                return seen["$SYS/broker/messages/received"] == "1" && seen["$SYS/broker/clients/connected"] == "3" ? true : nil
            }
            try await all.expectSilence(for: .milliseconds(500))
        }
    }
}
