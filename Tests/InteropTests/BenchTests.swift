import Foundation
import Testing
import MartletTestSupport

/// `martlet bench` smoke runs: every scenario, short and at low rates, against martletd and
/// against Debian's mosquitto, asserting on the JSON summary. They load both cores, so
/// `make test` runs them with the other *LoadTests, after the rest.
@Suite(.serialized) struct BenchLoadTests {
    static func bench(_ args: [String], port: Int) async throws -> [String: Any] {
        let r = try await run(CLITests.martlet, ["bench"] + args + ["-p", "\(port)", "--json"], timeout: .seconds(30))
        #expect(r.status == 0, "martlet bench \(args): \(r.stderr)")
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(r.stdout)")
    }

    @Test("martlet bench --ws: fan-out over WebSocket (QoS 0 and QoS 1) against martletd's WebSocket listener, nothing lost")
    func overWebSocket() async throws {
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--ws-port", "\(port)", "--log-level", "error"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        for qos in ["0", "1"] {
            let r = try await Self.bench(["fanout", "-n", "3", "--rate", "200", "-q", qos, "--ws", "--duration", "0.5"], port: port)
            let published = r["published"] as? Int ?? 0
            #expect(published > 0 && r["delivered"] as? Int == published * 3, "QoS \(qos): \(r)")
            #expect(r["lost"] as? Int == 0 && r["errors"] as? Int == 0, "QoS \(qos): \(r)")
        }
    }

    func scenarios(port: Int, brokerPid: Int32?) async throws {
        let pid = brokerPid.map { ["--broker-pid", "\($0)"] } ?? []
        for (args, deliveries) in [
            (["fanout", "-n", "3", "--rate", "200"], 3), (["fanin", "-n", "3", "--rate", "100"], 1),
            (["pairs", "-n", "4", "--rate", "100"], 1), (["fanout", "-n", "2", "-q", "1", "--rate", "200"], 2),
        ] {
            let r = try await Self.bench(args + ["--duration", "0.5"] + pid, port: port)
            let published = r["published"] as? Int ?? 0
            #expect(published > 0, "\(args): \(r)")
            #expect(r["expected"] as? Int == published * deliveries)
            #expect(r["delivered"] as? Int == published * deliveries, "\(args): \(r)")
            #expect(r["lost"] as? Int == 0)
            #expect(r["errors"] as? Int == 0)
            #expect((r["latency_p99_us"] as? Int ?? -1) >= 0)
            // Every delivery's latency is in the summary (each subscriber's, merged at the end).
            #expect(r["latency_samples"] as? Int == published * deliveries, "\(args): \(r)")
            if brokerPid != nil { #expect(r["broker_cpu_percent"] != nil) }
        }
        let churn = try await Self.bench(["churn", "-c", "4", "--duration", "0.5"] + pid, port: port)
        #expect((churn["connections"] as? Int ?? 0) > 0)
        #expect(churn["errors"] as? Int == 0)
        let idle = try await Self.bench(["idle", "-n", "50", "--duration", "0.2"] + pid, port: port)
        #expect(idle["alive_after_hold"] as? Int == 50)
        if brokerPid != nil { #expect(idle["broker_rss_per_connection_bytes"] != nil) }
    }

    @Test("churn over TLS: each worker resumes its own last session (all but its first handshake), --no-tls-resume never does, --connections stops at the count")
    func tlsChurnResumption() async throws {
        let certs = try await DevCertificates.make()
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--tls-port", "\(port)", "--cert", certs.serverCert, "--key", certs.serverKey, "--log-level", "error"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        let tls = ["--tls", "--cafile", certs.ca, "--broker-pid", "\(d.pid)"]
        let resumed = try await Self.bench(["churn", "-c", "4", "--connections", "40"] + tls, port: port)
        #expect(resumed["connections"] as? Int == 40, "\(resumed)")
        #expect(resumed["errors"] as? Int == 0)
        #expect(resumed["tls_resumed"] as? Int == 36, "one full handshake per worker: \(resumed)")
        #expect((resumed["connections_per_broker_cpu_s"] as? Double ?? 0) > 0)
        let full = try await Self.bench(["churn", "-c", "4", "--connections", "20", "--no-tls-resume"] + tls, port: port)
        #expect(full["connections"] as? Int == 20, "\(full)")
        #expect(full["tls_resumed"] as? Int == 0, "\(full)")
    }

    @Test("churn that cannot connect (TLS to a plain listener) still stops at --duration, counts the failures and exits 1")
    func churnEveryConnectionFails() async throws {
        let certs = try await DevCertificates.make()
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--port", "\(port)", "--log-level", "error"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        // Before, a worker whose connection was closed during the handshake waited for a
        // CONNACK forever, and the run never ended (the 30 s bound here killed it).
        let r = try await run(CLITests.martlet, ["bench", "churn", "-c", "4", "--duration", "1", "--tls", "--cafile", certs.ca,
                                                 "-p", "\(port)", "--json"], timeout: .seconds(30))
        #expect(r.status == 1, "\(r.stdout) \(r.stderr)")
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(r.stdout)")
        #expect(summary["connections"] as? Int == 0)
        #expect((summary["errors"] as? Int ?? 0) > 0, "\(summary)")
    }

    @Test("fan-out with 100-byte topics: v5 subscribers that allow topic aliases receive far fewer bytes per message (martletd sends aliases)")
    func topicAliasBytes() async throws {
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--port", "\(port)", "--log-level", "error"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        var perMessage: [Double] = []
        for aliases in ["0", "10"] {
            let r = try await Self.bench(["fanout", "-n", "3", "--rate", "200", "--duration", "0.5", "-V", "mqttv5", "--payload", "16",
                                          "--topic-padding", "100", "--topic-alias-maximum", aliases], port: port)
            #expect(r["lost"] as? Int == 0)
            perMessage.append(r["delivered_bytes_per_message"] as? Double ?? 0)
        }
        // Without: 2 + 2 + ~120 topic + 1 + 16 payload; with: the alias (3) instead of the topic.
        #expect(perMessage[0] > 130, "\(perMessage)")
        #expect(perMessage[1] < 30, "\(perMessage)")
    }

    @Test("every scenario against martletd")
    func againstMartletd() async throws {
        let port = randomTestPort()
        let d = try ChildProcess(DaemonTests.martletd, ["--port", "\(port)", "--log-level", "error"])
        defer { d.kill() }
        try await waitUntilListening(UInt16(port))
        try await scenarios(port: port, brokerPid: d.pid)
    }

    @Test("every scenario against mosquitto")
    func againstMosquitto() async throws {
        let port = randomTestPort()
        try await CLITests().withMosquitto(port: port) { _ in
            try await scenarios(port: port, brokerPid: nil)
        }
    }
}
