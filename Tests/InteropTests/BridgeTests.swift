import Foundation
import Logging
import MartletAuth
import MartletBridge
import MartletBroker
import MartletClient
import MartletMQTT
import MartletTLS
import NIOCore
import Testing
import MartletTestSupport

/// Bridges against real peers: Debian's mosquitto and another Martlet (over TLS), both
/// directions, QoS 0/1/2, retained, prefixes, loops, a remote down while messages queue, the
/// queue bound, and a remote with Receive Maximum 2.
@Suite struct BridgeTests {
    static let logger: Logger = {
        var l = Logger(label: "test-bridge")
        l.logLevel = ProcessInfo.processInfo.environment["MARTLET_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return l
    }()

    /// Debian's mosquitto on `port`; with `store`, its persistence file there (saved when it
    /// stops with SIGTERM, loaded when it starts).
    static func mosquitto(port: Int, store: String? = nil) async throws -> ChildProcess {
        let conf = scratchPath("mosquitto-bridge", suffix: ".conf")
        var text = "listener \(port) 127.0.0.1\nallow_anonymous true\nuser root\n"
        if let store { text += "persistence true\npersistence_location \(store)/\nautosave_interval 0\n" }
        try text.write(toFile: conf, atomically: true, encoding: .utf8)
        let process = try ChildProcess("/usr/sbin/mosquitto", ["-c", conf])
        try await waitUntilListening(UInt16(port))
        return process
    }

    static func bridge(_ name: String = "b", port: Int, version: ProtocolVersion = .v5, topics: [BridgeConfiguration.Topic]) -> BridgeConfiguration {
        var b = BridgeConfiguration(name: name, host: "127.0.0.1", port: port)
        b.protocolVersion = version
        b.topics = topics
        b.reconnectInitialDelay = .milliseconds(50)
        b.reconnectMaximumDelay = .milliseconds(300)
        return b
    }

    static func client(_ port: Int, _ id: String, version: ProtocolVersion = .v5, cleanStart: Bool = true, expiry: UInt32? = nil,
                       tls: TLSConfiguration? = nil) async throws -> MQTTClient {
        var c = MQTTClientConfiguration(port: port, clientID: id)
        c.version = version
        c.cleanStart = cleanStart
        c.sessionExpiryInterval = expiry
        c.tls = tls
        return try await MQTTClient.connect(c)
    }

    /// Messages from `client` until `done` says the list is complete.
    static func collect(from client: MQTTClient, timeout: Duration = .seconds(20), until done: @escaping @Sendable ([ReceivedMessage]) -> Bool) async throws -> [ReceivedMessage] {
        try await withThrowingTaskGroup(of: [ReceivedMessage]?.self) { group in
            group.addTask {
                var got: [ReceivedMessage] = []
                for await m in client.messages {
                    got.append(m)
                    if done(got) { return got }
                }
                return got
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            guard let got = first else { throw MQTTClientError.timeout("messages") }
            return got
        }
    }

    static func waitConnected(_ manager: BridgeManager, _ name: String = "b") async throws {
        try await waitFor(.seconds(20), "bridge \(name) to connect") { manager.status(name)?.connected == true ? true : nil }
    }

    @Test("Martlet ↔ mosquitto, MQTT 5 and 3.1.1: out and in with prefixes, QoS = the lower of the rule's and the message's, a retained message stays retained on the remote, and a `both` rule neither echoes nor loops",
          arguments: [ProtocolVersion.v5, .v3_1_1])
    func withMosquitto(version: ProtocolVersion) async throws {
        let port = randomTestPort()
        let mosquitto = try await Self.mosquitto(port: port)
        defer { mosquitto.kill() }
        try await withBroker { broker, localPort in
            let publisher = try await Self.client(localPort, "local-pub")
            try await publisher.publish("sensors/kept", payload: ByteBuffer(string: "retained"), qos: .atLeastOnce, retain: true)
            let manager = BridgeManager(broker: broker, logger: Self.logger)
            await manager.apply([Self.bridge(port: port, version: version, topics: [
                .init(filter: "sensors/#", direction: .out, qos: .exactlyOnce, remotePrefix: "site1/"),
                .init(filter: "commands/#", direction: .in, qos: .atLeastOnce, localPrefix: "site1/"),
                .init(filter: "loop/#", direction: .both, qos: .atLeastOnce),
            ])])
            try await Self.waitConnected(manager)
            // The retained message went out as retained: a subscriber arriving later on the
            // remote gets it from mosquitto's store.
            try await waitFor(.seconds(20), "the retained message to go out") { manager.status("b")!.sent >= 1 ? true : nil }
            let late = try await Self.client(port, "late", version: .v3_1_1)
            try await late.subscribe("site1/sensors/kept", qos: .atLeastOnce)
            let kept = try await Self.collect(from: late) { $0.count == 1 }
            #expect(kept[0].retain && String(buffer: kept[0].payload) == "retained")

            let remoteSub = try await Self.client(port, "remote-sub")
            try await remoteSub.subscribe([Subscription(topicFilter: "site1/#", options: .init(qos: .exactlyOnce)),
                                           Subscription(topicFilter: "loop/#", options: .init(qos: .exactlyOnce))])
            let localSub = try await Self.client(localPort, "local-sub")
            try await localSub.subscribe([Subscription(topicFilter: "site1/#", options: .init(qos: .exactlyOnce)),
                                          Subscription(topicFilter: "loop/#", options: .init(qos: .exactlyOnce))])
            for qos in QoS.allCases {
                try await publisher.publish("sensors/q\(qos.rawValue)", payload: ByteBuffer(string: "out \(qos.rawValue)"), qos: qos)
            }
            // (site1/# also brings the retained site1/sensors/kept.)
            let out = try await Self.collect(from: remoteSub) { $0.filter { !$0.retain }.count == 3 }.filter { !$0.retain }
            #expect(out.map(\.topic) == ["site1/sensors/q0", "site1/sensors/q1", "site1/sensors/q2"])
            #expect(out.map(\.qos) == [.atMostOnce, .atLeastOnce, .exactlyOnce])

            let remotePublisher = try await Self.client(port, "remote-pub", version: .v3_1_1)
            try await remotePublisher.publish("commands/reboot", payload: ByteBuffer(string: "now"), qos: .exactlyOnce)
            let into = try await Self.collect(from: localSub) { $0.count == 1 }
            #expect(into[0].topic == "site1/commands/reboot" && String(buffer: into[0].payload) == "now")
            #expect(into[0].qos == .atLeastOnce, "the rule's QoS 1 caps the message's QoS 2")

            // Loops. A message published here goes out once; one published there comes in
            // once; each is followed by one from the other side, which arrives after any echo
            // of the first would have (one connection each way, delivered in order).
            try await publisher.publish("loop/a", payload: ByteBuffer(string: "from here"), qos: .atLeastOnce)
            _ = try await Self.collect(from: remoteSub) { $0.contains { $0.topic == "loop/a" } }
            try await remotePublisher.publish("loop/z", payload: ByteBuffer(string: "from there"), qos: .atLeastOnce)
            let here = try await Self.collect(from: localSub) { $0.contains { $0.topic == "loop/z" } }
            try await publisher.publish("loop/y", payload: ByteBuffer(string: "last"), qos: .atLeastOnce)
            let there = try await Self.collect(from: remoteSub) { $0.contains { $0.topic == "loop/y" } }
            let hereAll = here + (try await Self.collect(from: localSub) { $0.contains { $0.topic == "loop/y" } })
            #expect(hereAll.map(\.topic) == ["loop/a", "loop/z", "loop/y"], "each message once on this side")
            #expect(there.map(\.topic) == ["loop/z", "loop/y"], "each message once on the remote (loop/a was read above)")
            if version == .v3_1_1 {
                // mosquitto sends loop/a and loop/y back to the 3.1.1 bridge, which drops them.
                try await waitFor(.seconds(10), "both echoes dropped") { manager.status("b")!.echoesDropped == 2 ? true : nil }
            }
            await manager.shutdown()
        }
    }

    @Test("The remote stopped while QoS 1 messages queue: after it restarts, all of them reach its subscriber, in order per topic")
    func remoteRestarted() async throws {
        let port = randomTestPort()
        let store = scratchPath("mosquitto-store")
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        var mosquitto = try await Self.mosquitto(port: port, store: store)
        defer { mosquitto.kill() }
        // A persistent subscriber on the remote, offline while the messages flow.
        let subscriber = try await Self.client(port, "remote-sub", version: .v3_1_1, cleanStart: false)
        try await subscriber.subscribe("site1/#", qos: .atLeastOnce)
        try await subscriber.disconnect()
        try await withBroker { broker, localPort in
            let manager = BridgeManager(broker: broker, logger: Self.logger)
            await manager.apply([Self.bridge(port: port, topics: [.init(filter: "k/#", direction: .out, qos: .atLeastOnce, remotePrefix: "site1/")])])
            try await Self.waitConnected(manager)
            // SIGTERM: mosquitto saves its sessions and exits.
            mosquitto.kill(signal: SIGTERM)
            _ = try await mosquitto.finish()
            try await waitFor(.seconds(20), "the bridge to see the remote go") { manager.status("b")?.connected == false ? true : nil }
            let publisher = try await Self.client(localPort, "pub")
            for i in 0..<200 {
                try await publisher.publish("k/\(i % 4)", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce)
            }
            mosquitto = try await Self.mosquitto(port: port, store: store)
            try await waitFor(.seconds(30), "the bridge to forward all 200") { manager.status("b")!.sent >= 200 ? true : nil }
            let back = try await Self.client(port, "remote-sub", version: .v3_1_1, cleanStart: false)
            let got = try await Self.collect(from: back) { $0.count >= 200 }
            #expect(got.count == 200)
            for k in 0..<4 {
                let sequence = got.filter { $0.topic == "site1/k/\(k)" }.map { Int(String(buffer: $0.payload))! }
                #expect(sequence == Array(stride(from: k, to: 200, by: 4)), "topic k/\(k) in order")
            }
            #expect(manager.status("b")!.reconnects >= 1)
            await manager.shutdown()
        }
    }

    @Test("Martlet ↔ Martlet over TLS, the remote with Receive Maximum 2: 300 QoS 2 messages arrive in order and the link is never dropped for exceeding it (the remote counts a 0x93 as a protocol error)")
    func receiveMaximumOverTLS() async throws {
        let certs = try await DevCertificates.make()
        try await withBroker({
            $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: certs.server()), .init(host: "127.0.0.1", port: 0)]
            $0.receiveMaximum = 2
        }) { remote, tlsPort in
            let plainPort = remote.localAddresses[1].port!
            let subscriber = try await Self.client(plainPort, "remote-sub")
            try await subscriber.subscribe("site1/#", qos: .exactlyOnce)
            try await withBroker { broker, localPort in
                // QoS 2: the remote holds each in flight until PUBREL, so more than 2 at a
                // time would be seen (Martlet acknowledges QoS 1 at once).
                var b = Self.bridge(port: tlsPort, topics: [.init(filter: "t/#", direction: .out, qos: .exactlyOnce, remotePrefix: "site1/")])
                var tls = TLSConfiguration(peerVerification: .required)
                tls.caFile = certs.ca
                tls.serverName = "localhost"
                b.tls = tls
                let manager = BridgeManager(broker: broker, logger: Self.logger)
                await manager.apply([b])
                try await Self.waitConnected(manager)
                let publisher = try await Self.client(localPort, "pub")
                // Published 10 at a time (this broker's Receive Maximum is 20), so the bridge
                // has many in hand.
                var acks: [EventLoopFuture<Void>] = []
                for i in 0..<300 {
                    if acks.count >= 10 { try await acks.removeFirst().get() }
                    acks.append(try await publisher.send("t/x", payload: ByteBuffer(string: "\(i)"), qos: .exactlyOnce))
                }
                for a in acks { try await a.get() }
                let got = try await Self.collect(from: subscriber) { $0.count >= 300 }
                #expect(got.map { Int(String(buffer: $0.payload))! } == Array(0..<300))
                let status = manager.status("b")!
                #expect(status.reconnects == 0 && status.connected)
                #expect(remote.counters.protocolErrors == 0)
                await manager.shutdown()
            }
        }
    }

    @Test("Two Martlets, one bridged to the other on # both ways (MQTT 5 and 3.1.1): a message published on either side arrives exactly once on each",
          arguments: [ProtocolVersion.v5, .v3_1_1])
    func noAmplification(version: ProtocolVersion) async throws {
        try await withBroker { b, bPort in
            try await withBroker { a, aPort in
                let manager = BridgeManager(broker: a, logger: Self.logger)
                await manager.apply([Self.bridge(port: bPort, version: version, topics: [.init(filter: "#", direction: .both, qos: .atLeastOnce)])])
                try await Self.waitConnected(manager)
                let subA = try await Self.client(aPort, "sub-a")
                try await subA.subscribe("t/#", qos: .atLeastOnce)
                let subB = try await Self.client(bPort, "sub-b")
                try await subB.subscribe("t/#", qos: .atLeastOnce)
                let pubA = try await Self.client(aPort, "pub-a")
                let pubB = try await Self.client(bPort, "pub-b")
                try await pubA.publish("t/1", payload: ByteBuffer(string: "a"), qos: .atLeastOnce)
                _ = try await Self.collect(from: subB) { $0.contains { $0.topic == "t/1" } }
                try await pubB.publish("t/2", payload: ByteBuffer(string: "b"), qos: .atLeastOnce)
                _ = try await Self.collect(from: subA) { $0.contains { $0.topic == "t/2" } }
                try await pubA.publish("t/3", payload: ByteBuffer(string: "a"), qos: .atLeastOnce)
                // t/3 comes after any copy of t/1 or t/2 that looped (same links, in order).
                let restA = try await Self.collect(from: subA) { $0.contains { $0.topic == "t/3" } }
                let restB = try await Self.collect(from: subB) { $0.contains { $0.topic == "t/3" } }
                #expect(restA.map(\.topic) == ["t/3"], "sub-a got t/1 first, then t/2 (read above), and nothing twice")
                #expect(restB.map(\.topic) == ["t/2", "t/3"])
                await manager.shutdown()
            }
        }
    }

    @Test("While the remote refuses the bridge, its queue holds max_queued_messages (drop-old: the oldest evicted, counted), reconnecting never stops, and once let in the bridge delivers what it kept, in order")
    func queueBound() async throws {
        let dir = scratchPath("bridge-auth")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var passwords = PasswordFile()
        passwords.set(user: "sub", password: "s", iterations: 1000)
        try passwords.rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
        try await withBroker({
            $0.passwordFile = dir + "/passwords"
            $0.listeners[0].allowAnonymous = false
        }) { remote, remotePort in
            var sub = MQTTClientConfiguration(port: remotePort, clientID: "remote-sub")
            sub.username = "sub"
            sub.password = "s"
            let subscriber = try await MQTTClient.connect(sub)
            try await subscriber.subscribe("site1/#", qos: .atLeastOnce)
            try await withBroker { broker, localPort in
                var b = Self.bridge(port: remotePort, topics: [.init(filter: "q/#", direction: .out, qos: .atLeastOnce, remotePrefix: "site1/")])
                b.username = "bridge"
                b.password = "pw"
                b.maximumQueuedMessages = 50
                b.queuePolicy = .dropOld
                let manager = BridgeManager(broker: broker, logger: Self.logger)
                await manager.apply([b])
                try await waitForSubscriptions(broker, 1)
                let publisher = try await Self.client(localPort, "pub")
                for i in 0..<150 { try await publisher.publish("q/1", payload: ByteBuffer(string: "\(i)"), qos: .atLeastOnce) }
                // 50 in the bridge's hands (its in-flight window: max_queued_messages, at most
                // 1000), 50 queued, 50 evicted.
                try await waitFor(.seconds(10), "50 evictions counted") { broker.counters.droppedEvicted == 50 ? true : nil }
                try await waitFor(.seconds(10), "the bridge to report its full queue") { manager.status("b")!.queuedMessages == 50 ? true : nil }
                let refusalsBefore = remote.counters.authFailures
                try await waitFor(.seconds(20), "the bridge to keep trying") { remote.counters.authFailures >= refusalsBefore + 2 ? true : nil }
                passwords.set(user: "bridge", password: "pw", iterations: 1000)
                try passwords.rendered.write(toFile: dir + "/passwords", atomically: true, encoding: .utf8)
                remote.reload(remote.configuration)
                let got = try await Self.collect(from: subscriber) { $0.count >= 100 }
                #expect(got.map { Int(String(buffer: $0.payload))! } == Array(0..<50) + Array(100..<150))
                // The queue shrinks as the remote acknowledges: empty once all is through.
                try await waitFor(.seconds(10), "the queue to empty") {
                    let s = manager.status("b")!
                    return s.queuedMessages == 0 && s.queuedBytes == 0 && s.sent == 100 ? true : nil
                }
                #expect(manager.status("b")!.dropped["evicted"] == 50)
                await manager.shutdown()
            }
        }
    }

    @Test("A remote slower than the local publisher (a throttling proxy in between): the queue bound holds, every message is delivered or counted as dropped, in order, and the link stays up")
    func slowRemote() async throws {
        try await withBroker { _, remotePort in
            let subscriber = try await Self.client(remotePort, "remote-sub")
            try await subscriber.subscribe("site1/#", qos: .atLeastOnce)
            let proxyPort = randomTestPort()
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("scripts/slow_proxy.py").path
            // 20 kB/s towards the remote: 400 messages of 1 KiB would take 20 s.
            let proxy = try ChildProcess(debianPython, [script, "\(proxyPort)", "\(remotePort)", "20000"])
            defer { proxy.kill() }
            try await waitUntilListening(UInt16(proxyPort))
            try await withBroker { local, localPort in
                var b = Self.bridge(port: proxyPort, topics: [.init(filter: "s/#", direction: .out, qos: .atLeastOnce, remotePrefix: "site1/")])
                b.maximumQueuedMessages = 50
                b.queuePolicy = .dropNew
                let manager = BridgeManager(broker: local, logger: Self.logger)
                await manager.apply([b])
                try await Self.waitConnected(manager)
                let publisher = try await Self.client(localPort, "pub")
                let payload = String(repeating: "x", count: 1024)
                for i in 0..<400 {
                    try await publisher.publish("s/t", payload: ByteBuffer(string: "\(i) \(payload)"), qos: .atLeastOnce)
                }
                // Every message is delivered or dropped at the queue (the drops happened while
                // publishing; the counter is folded in within a sweep).
                let got = try await Self.collect(from: subscriber, timeout: .seconds(60)) { got in
                    got.count + local.counters.droppedQueueFull >= 400
                }
                let dropped = local.counters.droppedQueueFull
                #expect(dropped > 0)
                try await waitFor(.seconds(10), "the bridge's metrics to show the drops") {
                    manager.status("b")!.dropped["queue_full"] == dropped ? true : nil
                }
                let numbers = got.map { Int(String(buffer: $0.payload).split(separator: " ")[0])! }
                #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count, "in order, once each")
                #expect(numbers.count + dropped == 400, "delivered \(numbers.count) + dropped \(dropped)")
                let status = manager.status("b")!
                #expect(status.connected && status.reconnects == 0, "the link stayed up")
                await manager.shutdown()
            }
        }
    }

    @Test("The remote's Maximum Packet Size: a larger message is dropped and counted (too_large), the link stays up and the next message goes through")
    func remoteMaximumPacketSize() async throws {
        try await withBroker({ $0.maximumPacketSize = 512 }) { _, remotePort in
            let subscriber = try await Self.client(remotePort, "remote-sub")
            try await subscriber.subscribe("site1/#", qos: .atLeastOnce)
            try await withBroker { local, localPort in
                let manager = BridgeManager(broker: local, logger: Self.logger)
                await manager.apply([Self.bridge(port: remotePort, topics: [.init(filter: "m/#", direction: .out, qos: .atLeastOnce, remotePrefix: "site1/")])])
                try await Self.waitConnected(manager)
                let publisher = try await Self.client(localPort, "pub")
                try await publisher.publish("m/big", payload: ByteBuffer(string: String(repeating: "b", count: 2048)), qos: .atLeastOnce)
                try await publisher.publish("m/small", payload: ByteBuffer(string: "fits"), qos: .atLeastOnce)
                let got = try await Self.collect(from: subscriber) { $0.count == 1 }
                #expect(got.map(\.topic) == ["site1/m/small"])
                let status = manager.status("b")!
                #expect(status.dropped["too_large"] == 1 && status.reconnects == 0 && status.connected)
                await manager.shutdown()
            }
        }
    }

    @Test("QoS 2 across link failures: the connection to the remote is cut three times while 200 QoS 2 messages flow; in-flight ones are resent with DUP or PUBREL on the resumed session and each arrives exactly once, in order")
    func qos2AcrossCuts() async throws {
        try await withBroker { remote, remotePort in
            let subscriber = try await Self.client(remotePort, "remote-sub")
            try await subscriber.subscribe("site1/#", qos: .exactlyOnce)
            let proxy = try await CuttableProxy(to: remotePort)
            defer { proxy.close() }
            try await withBroker { local, localPort in
                let manager = BridgeManager(broker: local, logger: Self.logger)
                await manager.apply([Self.bridge(port: proxy.port, topics: [.init(filter: "e/#", direction: .out, qos: .exactlyOnce, remotePrefix: "site1/")])])
                try await Self.waitConnected(manager)
                let publisher = try await Self.client(localPort, "pub")
                let publishing = Task {
                    var acks: [EventLoopFuture<Void>] = []
                    for i in 0..<200 {
                        if acks.count >= 10 { try await acks.removeFirst().get() }
                        acks.append(try await publisher.send("e/x", payload: ByteBuffer(string: "\(i)"), qos: .exactlyOnce))
                    }
                    for a in acks { try await a.get() }
                }
                for cut in 1...3 {
                    // Cut once some flows are under way (the remote has seen more messages).
                    let before = remote.counters.messagesReceived
                    try await waitFor(.seconds(20), "traffic before cut \(cut)") { remote.counters.messagesReceived > before ? true : nil }
                    proxy.cut()
                    try await waitFor(.seconds(20), "reconnect \(cut)") { manager.status("b")!.reconnects >= cut ? true : nil }
                }
                try await publishing.value
                let got = try await Self.collect(from: subscriber, timeout: .seconds(30)) { $0.count >= 200 }
                #expect(got.map { Int(String(buffer: $0.payload))! } == Array(0..<200), "each once, in order")
                try await waitFor(.seconds(20), "every flow completed") { manager.status("b")!.sent == 200 ? true : nil }
                // Nothing trails in: the next message is the next one the subscriber sees.
                try await publisher.publish("e/x", payload: ByteBuffer(string: "end"), qos: .exactlyOnce)
                let rest = try await Self.collect(from: subscriber) { $0.contains { String(buffer: $0.payload) == "end" } }
                #expect(rest.map { String(buffer: $0.payload) } == ["end"])
                await manager.shutdown()
            }
        }
    }
}
