import Foundation
import MartletClient
import MartletMQTT
import NIOCore
import Testing
import MartletTestSupport

/// martletd with `bridges:` in its config file, against Debian's mosquitto: the remote stopped
/// and restarted while QoS 1 flows, martletd killed with its bridge queue stored, and SIGHUP
/// adding, removing and keeping bridges.
@Suite struct BridgeDaemonTests {
    struct Daemon {
        let process: ChildProcess
        let port: Int
        let metrics: Int
    }

    static func config(port: Int, metrics: Int, store: String? = nil, bridges: String) -> String {
        var text = """
            listeners: [{host: 127.0.0.1, port: \(port)}]
            metrics: {host: 127.0.0.1, port: \(metrics)}
            log_level: info
            sys_interval_s: 0

            """
        if let store { text += "persistence: {path: \(store), sync: durable}\n" }
        return text + bridges
    }

    static func bridgeEntry(_ name: String, port: Int, filter: String = "data/#") -> String {
        """
          - name: \(name)
            host: 127.0.0.1
            port: \(port)
            protocol: mqttv5
            reconnect_initial_ms: 50
            reconnect_max_ms: 300
            topics:
              - {filter: "\(filter)", direction: out, qos: 1, local_prefix: "", remote_prefix: "site1/"}

        """
    }

    static func start(_ configPath: String, port: Int, metrics: Int) async throws -> Daemon {
        let process = try ChildProcess(DaemonTests.martletd, ["--config", configPath])
        try await waitUntilListening(UInt16(port))
        return Daemon(process: process, port: port, metrics: metrics)
    }

    static func metrics(_ port: Int) async throws -> String {
        let fetch = "import sys, urllib.request; print(urllib.request.urlopen('http://127.0.0.1:%s/metrics' % sys.argv[1]).read().decode())"
        return try await run(debianPython, ["-c", fetch, "\(port)"]).stdout
    }

    /// A persistent 3.1.1 subscriber on mosquitto that reconnects by itself when mosquitto
    /// comes back (mosquitto keeps its session in its persistence file).
    static func remoteSubscriber(port: Int) async throws -> MQTTClient {
        var c = MQTTClientConfiguration(port: port, clientID: "remote-sub")
        c.cleanStart = false
        c.reconnect = ReconnectPolicy(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(300))
        let client = try await MQTTClient.connect(c)
        try await client.subscribe("site1/#", qos: .atLeastOnce)
        return client
    }

    /// The payload numbers received, in order, until every one of `expected` has arrived.
    static func numbers(from client: MQTTClient, expected: Set<Int>, timeout: Duration = .seconds(60)) async throws -> [Int] {
        let got = try await BridgeTests.collect(from: client, timeout: timeout) { messages in
            Set(messages.compactMap { Int(String(buffer: $0.payload)) }).isSuperset(of: expected)
        }
        return got.compactMap { Int(String(buffer: $0.payload)) }
    }

    @Test("martletd bridging to mosquitto: mosquitto stopped and restarted while a publisher sends QoS 1; every acknowledged message reaches mosquitto's subscriber, in order")
    func remoteRestartedWhilePublishing() async throws {
        let remotePort = randomTestPort()
        let store = scratchPath("mosquitto-store")
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        var mosquitto = try await BridgeTests.mosquitto(port: remotePort, store: store)
        defer { mosquitto.kill() }
        let subscriber = try await Self.remoteSubscriber(port: remotePort)
        let (port, metrics) = (randomTestPort(), randomTestPort())
        let configPath = scratchPath("bridge-daemon", suffix: ".yaml")
        try Self.config(port: port, metrics: metrics, bridges: "bridges:\n" + Self.bridgeEntry("cloud", port: remotePort))
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let daemon = try await Self.start(configPath, port: port, metrics: metrics)
        defer { daemon.process.kill() }
        try await waitFor(.seconds(20), "the bridge to connect", every: .milliseconds(50)) {
            try await Self.metrics(metrics).contains("martlet_bridge_connected{bridge=\"cloud\"} 1") ? true : nil
        }
        let publisher = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
        for i in 0..<100 { try await publisher.publish("data/x", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce) }
        mosquitto.kill(signal: SIGTERM)
        _ = try await mosquitto.finish()
        for i in 100..<200 { try await publisher.publish("data/x", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce) }
        mosquitto = try await BridgeTests.mosquitto(port: remotePort, store: store)
        for i in 200..<300 { try await publisher.publish("data/x", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce) }
        let got = try await Self.numbers(from: subscriber, expected: Set(0..<300))
        // QoS 1: a message in flight when mosquitto stopped may come twice; none is missing,
        // and the first arrivals are in publishing order.
        var seen = Set<Int>()
        let firsts = got.filter { seen.insert($0).inserted }
        #expect(firsts == Array(0..<300))
        let text = try await Self.metrics(metrics)
        #expect(text.contains("martlet_bridge_connected{bridge=\"cloud\"} 1"))
        #expect(!text.contains("martlet_bridge_reconnects_total{bridge=\"cloud\"} 0"))
        try await subscriber.disconnect()
    }

    @Test("martletd with persistence, killed (SIGKILL) while its bridge's remote is down: the queued QoS 1 messages survive the restart and reach the remote when it returns")
    func queueSurvivesRestart() async throws {
        let remotePort = randomTestPort()
        let remoteStore = scratchPath("mosquitto-store")
        try FileManager.default.createDirectory(atPath: remoteStore, withIntermediateDirectories: true)
        // The remote's subscriber session exists before the remote goes down.
        var mosquitto = try await BridgeTests.mosquitto(port: remotePort, store: remoteStore)
        defer { mosquitto.kill() }
        let first = try await Self.remoteSubscriber(port: remotePort)
        try await first.disconnect()
        mosquitto.kill(signal: SIGTERM)
        _ = try await mosquitto.finish()

        let (port, metrics) = (randomTestPort(), randomTestPort())
        let configPath = scratchPath("bridge-daemon", suffix: ".yaml")
        try Self.config(port: port, metrics: metrics, store: scratchPath("martlet-store", suffix: ".db"),
                        bridges: "bridges:\n" + Self.bridgeEntry("cloud", port: remotePort))
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        var daemon = try await Self.start(configPath, port: port, metrics: metrics)
        defer { daemon.process.kill() }
        // The bridge says its state once its local session has subscribed.
        let watcher = try await MQTTClient.connect(.init(port: port, clientID: "watcher"))
        try await watcher.subscribe("$SYS/broker/bridge/cloud/state", qos: .atMostOnce)
        let state = try await BridgeTests.collect(from: watcher) { !$0.isEmpty }
        #expect(String(buffer: state[0].payload).hasPrefix("disconnected"))
        let publisher = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
        // Acknowledged with sync: durable: stored before the PUBACK.
        for i in 0..<150 { try await publisher.publish("data/x", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce) }
        daemon.process.kill()
        _ = try await daemon.process.finish()
        daemon = try await Self.start(configPath, port: port, metrics: metrics)
        mosquitto = try await BridgeTests.mosquitto(port: remotePort, store: remoteStore)
        let subscriber = try await Self.remoteSubscriber(port: remotePort)
        let got = try await Self.numbers(from: subscriber, expected: Set(0..<150))
        var seen = Set<Int>()
        #expect(got.filter { seen.insert($0).inserted } == Array(0..<150))
        try await subscriber.disconnect()
    }

    @Test("SIGHUP: a bridge added starts, one removed stops, one unchanged keeps its connection; a reload with a bad bridge entry keeps the running bridges")
    func reload() async throws {
        let remotePort = randomTestPort()
        let mosquitto = try await BridgeTests.mosquitto(port: remotePort)
        defer { mosquitto.kill() }
        let (port, metrics) = (randomTestPort(), randomTestPort())
        let configPath = scratchPath("bridge-daemon", suffix: ".yaml")
        func write(_ bridges: String) throws {
            try Self.config(port: port, metrics: metrics, bridges: bridges).write(toFile: configPath, atomically: true, encoding: .utf8)
        }
        func connected(_ name: String) -> String { "martlet_bridge_connected{bridge=\"\(name)\"} 1" }
        try write("bridges:\n" + Self.bridgeEntry("keep", port: remotePort) + Self.bridgeEntry("drop", port: remotePort, filter: "other/#"))
        let daemon = try await Self.start(configPath, port: port, metrics: metrics)
        defer { daemon.process.kill() }
        try await waitFor(.seconds(20), "both bridges to connect", every: .milliseconds(50)) {
            let text = try await Self.metrics(metrics)
            return text.contains(connected("keep")) && text.contains(connected("drop")) ? true : nil
        }
        try write("bridges:\n" + Self.bridgeEntry("keep", port: remotePort) + Self.bridgeEntry("added", port: remotePort, filter: "more/#"))
        daemon.process.kill(signal: SIGHUP)
        try await waitFor(.seconds(20), "added to connect and drop to go", every: .milliseconds(50)) {
            let text = try await Self.metrics(metrics)
            return text.contains(connected("added")) && !text.contains("bridge=\"drop\"") ? true : nil
        }
        let text = try await Self.metrics(metrics)
        #expect(text.contains(connected("keep")))
        #expect(text.contains("martlet_bridge_reconnects_total{bridge=\"keep\"} 0"), "keep was not touched")
        // A bad entry: the reload is refused and both running bridges stay.
        try write("bridges:\n" + Self.bridgeEntry("keep", port: remotePort) + "  - {name: broken, host: h, topics: []}\n")
        daemon.process.kill(signal: SIGHUP)
        // The next good publish through "keep" proves the daemon handled the signal.
        let subscriber = try await MQTTClient.connect(.init(port: remotePort, clientID: "check"))
        try await subscriber.subscribe("site1/#", qos: .atLeastOnce)
        let publisher = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
        try await publisher.publish("data/after", payload: ByteBuffer(string: "1"), qos: .atLeastOnce)
        _ = try await BridgeTests.collect(from: subscriber) { $0.count == 1 }
        let after = try await Self.metrics(metrics)
        #expect(after.contains(connected("keep")) && after.contains(connected("added")))
        daemon.process.kill(signal: SIGTERM)
        let result = try await daemon.process.finish()
        #expect(result.stderr.contains("reload failed, keeping the running configuration"), "\(result.stderr.suffix(2000))")
        #expect(result.stderr.contains("bridges[1].topics"))
    }
}
