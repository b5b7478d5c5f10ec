import Foundation
import Logging
import MartletBroker
import MartletClient
import MartletMQTT
import MartletTLS
import NIOCore
import Testing
import MartletTestSupport

/// Starts Debian's mosquitto broker on `port` and waits until it accepts connections.
func startMosquitto(port: Int, persistent: Bool = false) async throws -> SpawnedProcess {
    let conf = scratchPath("mosquitto", suffix: ".conf")
    // `user root`: dropping privileges would clear the parent-death signal set below.
    try "listener \(port) 127.0.0.1\nallow_anonymous true\nuser root\n".write(toFile: conf, atomically: true, encoding: .utf8)
    // Started through a one-line exec that makes the kernel kill mosquitto if this test
    // process dies first (PR_SET_PDEATHSIG), so no broker outlives an interrupted run; from
    // the one spawning thread, since that signal follows the thread that spawned it.
    let p = try SpawnThread.shared.run {
        try SpawnedProcess("/usr/bin/python3", [
            "-c", "import ctypes,os,signal,sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); os.execv(sys.argv[1], sys.argv[1:])",
            "/usr/sbin/mosquitto", "-c", conf,
        ], captureOutput: false)
    }
    let deadline = ContinuousClock.now + .seconds(10)
    while true {
        if let c = try? await MQTTClient.connect(.init(port: port, clientID: "probe")) {
            try await c.disconnect()
            return p
        }
        if ContinuousClock.now > deadline {
            p.kill()
            throw MQTTClientError.timeout("mosquitto to start")
        }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// Stops a broker started by `startMosquitto` and waits until it has exited.
func stopMosquitto(_ p: SpawnedProcess) async {
    p.kill()
    while p.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
}

/// Starts Debian's mosquitto broker on a free loopback port for the duration of `body`.
func withMosquitto(_ body: (Int) async throws -> Void) async throws {
    let port = Int.random(in: 20_000...29_000)
    let p = try await startMosquitto(port: port)
    defer { p.kill() }
    try await body(port)
}

func withMartlet(tls: TLSConfiguration? = nil, _ body: (Int) async throws -> Void) async throws {
    try await withBroker({ $0.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)] }) { _, port in
        try await body(port)
    }
}

/// Takes the next `count` messages from `client`, failing after `timeout`.
func next(_ count: Int, from client: MQTTClient, timeout: Duration = .seconds(5)) async throws -> [ReceivedMessage] {
    try await withThrowingTaskGroup(of: [ReceivedMessage]?.self) { group in
        group.addTask {
            var got: [ReceivedMessage] = []
            for await m in client.messages {
                got.append(m)
                if got.count == count { break }
            }
            return got
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let result = first else { throw MQTTClientError.timeout("\(count) messages") }
        return result
    }
}

@Suite struct MQTTClientTests {
    func roundTrip(port: Int, version: ProtocolVersion) async throws {
        var subConfig = MQTTClientConfiguration(port: port, clientID: "client-sub-\(version.rawValue)")
        subConfig.version = version
        let sub = try await MQTTClient.connect(subConfig)
        let codes = try await sub.subscribe([.init("client/+", qos: .exactlyOnce)])
        #expect(codes == [.grantedQoS2])
        var pubConfig = MQTTClientConfiguration(port: port, clientID: "client-pub-\(version.rawValue)")
        pubConfig.version = version
        let pub = try await MQTTClient.connect(pubConfig)
        for qos in QoS.allCases {
            try await pub.publish("client/\(qos.rawValue)", payload: ByteBuffer(string: "q\(qos.rawValue)"), qos: qos)
        }
        let got = try await next(3, from: sub)
        #expect(got.map(\.topic) == ["client/0", "client/1", "client/2"])
        #expect(got.map { String(buffer: $0.payload) } == ["q0", "q1", "q2"])
        #expect(got.map(\.qos) == [.atMostOnce, .atLeastOnce, .exactlyOnce])
        try await pub.disconnect()
        try await sub.disconnect()
    }

    @Test(arguments: [ProtocolVersion.v3_1_1, .v5])
    func againstMartlet(_ version: ProtocolVersion) async throws {
        try await withMartlet { port in try await roundTrip(port: port, version: version) }
    }

    @Test(arguments: [ProtocolVersion.v3_1_1, .v5])
    func againstMosquitto(_ version: ProtocolVersion) async throws {
        try await withMosquitto { port in try await roundTrip(port: port, version: version) }
    }

    @Test func refusalSaysWhy() async throws {
        try await withMartlet { port in
            var config = MQTTClientConfiguration(port: port, clientID: "")
            config.cleanStart = false
            await #expect(throws: MQTTClientError.connectionRefused(ReasonCode(ConnectReturnCode.identifierRejected.rawValue))) {
                _ = try await MQTTClient.connect(config)
            }
        }
    }

    @Test func persistentSessionIsPresentOnReconnect() async throws {
        try await withMartlet { port in
            var config = MQTTClientConfiguration(port: port, clientID: "persistent")
            config.cleanStart = false
            let first = try await MQTTClient.connect(config)
            #expect(first.connack.sessionPresent == false)
            try await first.subscribe("p", qos: .atLeastOnce)
            try await first.disconnect()
            let pub = try await MQTTClient.connect(.init(port: port, clientID: "pub"))
            try await pub.publish("p", payload: ByteBuffer(string: "while away"), qos: .atLeastOnce)
            let again = try await MQTTClient.connect(config)
            #expect(again.connack.sessionPresent == true)
            #expect(try await next(1, from: again).first.map { String(buffer: $0.payload) } == "while away")
        }
    }

    @Test func tlsWithVerification() async throws {
        let certs = try await DevCertificates.make()
        let dir = certs.directory
        try await withMartlet(tls: certs.server()) { port in
            var config = MQTTClientConfiguration(host: "127.0.0.1", port: port, clientID: "tls-client")
            config.tls = .client(caFile: dir + "/ca.pem", serverName: nil)
            let client = try await MQTTClient.connect(config)
            try await client.subscribe("secure")
            try await client.publish("secure", payload: ByteBuffer(string: "encrypted"), qos: .atLeastOnce)
            #expect(try await next(1, from: client).first.map { String(buffer: $0.payload) } == "encrypted")
            try await client.disconnect()
            // The certificate is for localhost/127.0.0.1: another name fails verification.
            config.tls?.serverName = "broker.example.com"
            let start = ContinuousClock.now
            await #expect {
                _ = try await MQTTClient.connect(config)
            } throws: { error in
                guard case TLSError.handshakeFailed(let message) = error else { return false }
                return message.contains("certificate verify failed")
            }
            // Reported as soon as the handshake fails, not after the connect timeout.
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }
}

/// MartletClient over WebSocket (`webSocketPath`) against martletd's WebSocket listener.
@Suite struct WebSocketClientTests {
    @Test("wss with mutual TLS on a use_identity_as_username listener: the client certificate's CN is the user the ACL sees (the MQTT handler comes after the upgrade, long after the handshake)")
    func identityOverSecureWebSocket() async throws {
        let certs = try await DevCertificates.make()
        let acl = scratchPath("wss-acl")
        try "user martlet-client\ntopic readwrite mtls/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: acl) }
        var wss = BrokerConfiguration.Listener(host: "127.0.0.1", port: 0, tls: certs.server(requireClientCertificate: true))
        wss.webSocket = true
        wss.useIdentityAsUsername = true
        wss.allowAnonymous = false
        try await withBroker({
            $0.listeners = [wss]
            $0.aclFile = acl
        }) { _, port in
            var config = MQTTClientConfiguration(port: port, clientID: "device")
            config.webSocketPath = "/mqtt"
            var tls = TLSConfiguration.client(caFile: certs.ca, serverName: "127.0.0.1")
            tls.certificateChainFile = certs.clientCert
            tls.privateKeyFile = certs.clientKey
            config.tls = tls
            let client = try await MQTTClient.connect(config)
            try await client.subscribe("mtls/#", qos: .atLeastOnce)
            await #expect(throws: (any Error).self, "the ACL gives martlet-client nothing else") {
                try await client.subscribe("other", qos: .atLeastOnce)
            }
            try await client.publish("mtls/x", payload: ByteBuffer(string: "mine"), qos: .atLeastOnce)
            for await m in client.messages {
                #expect(m.topic == "mtls/x" && String(buffer: m.payload) == "mine")
                break
            }
            try await client.disconnect()
        }
    }

    @Test("A WebSocket client and a TCP client exchange QoS 0 and QoS 1 messages, a 200 KiB one among them; a refused upgrade fails the connect at once")
    func roundTripOverWebSocket() async throws {
        try await withBroker({
            var ws = BrokerConfiguration.Listener(host: "127.0.0.1", port: 0)
            ws.webSocket = true
            $0.listeners.append(ws)
        }) { broker, tcpPort in
            let wsPort = try #require(broker.localAddresses.last?.port)
            var config = MQTTClientConfiguration(port: wsPort, clientID: "ws-client")
            config.webSocketPath = "/mqtt"
            let wsClient = try await MQTTClient.connect(config)
            try await wsClient.subscribe("ws/#", qos: .atLeastOnce)
            let tcpClient = try await MQTTClient.connect(.init(port: tcpPort, clientID: "tcp-client"))
            try await tcpClient.publish("ws/a", payload: ByteBuffer(string: "zero"), qos: .atMostOnce)
            try await tcpClient.publish("ws/b", payload: ByteBuffer(repeating: 0x61, count: 200_000), qos: .atLeastOnce)
            var received: [(String, Int)] = []
            for await m in wsClient.messages {
                received.append((m.topic, m.payload.readableBytes))
                if received.count == 2 { break }
            }
            #expect(received.map(\.0) == ["ws/a", "ws/b"] && received.map(\.1) == [4, 200_000])
            // And back: the WebSocket client publishes to the TCP one.
            try await tcpClient.subscribe("back", qos: .atLeastOnce)
            try await wsClient.publish("back", payload: ByteBuffer(string: "over ws"), qos: .atLeastOnce)
            for await m in tcpClient.messages {
                #expect(String(buffer: m.payload) == "over ws")
                break
            }
            try await wsClient.disconnect()
            try await tcpClient.disconnect()

            var wrong = MQTTClientConfiguration(port: wsPort, clientID: "lost")
            wrong.webSocketPath = "/nowhere"
            let started = ContinuousClock.now
            await #expect(throws: (any Error).self) { _ = try await MQTTClient.connect(wrong) }
            #expect(ContinuousClock.now - started < .seconds(5), "a 404 fails the connect at once, not at its timeout")
            // Every connection (TCP, WebSocket, the refused upgrade) was counted out as it closed.
            try await waitFor(.seconds(10), "the open connections gauge back to 0") { broker.counters.connections == 0 ? true : nil }
        }
    }
}
