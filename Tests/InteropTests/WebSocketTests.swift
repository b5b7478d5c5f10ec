import Foundation
import MartletTestSupport
import Testing

/// MQTT over WebSocket listeners of martletd: paho-mqtt's WebSocket transport (ws and wss)
/// and raw WebSocket frames for the upgrade and framing rules.
@Suite(.serialized) struct WebSocketTests {
    static let scripts = DaemonTests.root.appendingPathComponent("Tests/InteropTests").path

    @Test("paho over ws and wss (--ws-port, --wss-port): QoS 0/1/2 from a TCP publisher, small and 100 KiB, through the same broker path; retained and a will over WebSocket")
    func pahoOverWebSocket() async throws {
        let certs = try await DevCertificates.make()
        let (tcp, ws, wss) = (randomTestPort(), randomTestPort(), randomTestPort())
        let d = try ChildProcess(DaemonTests.martletd, [
            "--port", "\(tcp)", "--ws-port", "\(ws)", "--wss-port", "\(wss)", "--cert", certs.serverCert, "--key", certs.serverKey,
        ])
        defer { d.kill() }
        for port in [tcp, ws, wss] { try await waitUntilListening(UInt16(port)) }
        let plain = try await run(debianPython, ["\(Self.scripts)/paho/ws_roundtrip.py", "\(ws)", "\(tcp)"], timeout: .seconds(30))
        #expect(plain.stdout == "OK\n", "\(plain.stdout) \(plain.stderr)")
        let secure = try await run(debianPython, ["\(Self.scripts)/paho/ws_roundtrip.py", "\(wss)", "\(tcp)", certs.ca],
                                   timeout: .seconds(30))
        #expect(secure.stdout == "OK\n", "\(secure.stdout) \(secure.stderr)")
    }

    @Test("The upgrade: wrong path 404, no mqtt subprotocol 400, an Origin outside allowed_origins 403, no upgrade 400, oversized request 431; frames: MQTT split over messages and fragments, several packets in one frame, ping/pong, close, text refused (1003), a frame over max_packet_size refused (1009), an unmasked frame refused (1002), no Sec-WebSocket-Key 400, each closing only its own connection; X-Forwarded-For from a trusted proxy is the logged address")
    func upgradeAndFraming() async throws {
        let dir = scratchPath("ws")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let port = randomTestPort()
        try """
            listeners:
              - host: 127.0.0.1
                port: \(port)
                websocket: true
                allowed_origins: ["https://good.example"]
            trusted_proxies: [127.0.0.1]
            max_packet_size: 1024
            max_http_header_bytes: 2048
            log_level: debug

            """.write(toFile: dir + "/martlet.yaml", atomically: true, encoding: .utf8)
        let d = try ChildProcess(DaemonTests.martletd, ["--config", dir + "/martlet.yaml"])
        try await waitUntilListening(UInt16(port))
        let r = try await run(debianPython, ["\(Self.scripts)/scripts/ws_raw.py", "\(port)"], timeout: .seconds(30))
        #expect(r.stdout == """
            wrong path: HTTP/1.1 404 Not Found
            no subprotocol: HTTP/1.1 400 Bad Request
            bad origin: HTTP/1.1 403 Forbidden
            plain GET: HTTP/1.1 400 Bad Request
            huge headers: HTTP/1.1 431 Request Header Fields Too Large
            no Sec-WebSocket-Key: HTTP/1.1 400 Bad Request
            upgrade: HTTP/1.1 101 Switching Protocols | protocol mqtt
            split CONNECT: 20020000
            two PINGREQ in one frame: d000d000
            fragmented PINGREQ: d000
            ping: pong hi
            close: close 1000
            forwarded for: 20020000
            text frame: close 1003
            oversized frame: close 1009
            unmasked frame: close 1002
            bystander: d000

            """, "\(r.stderr)")
        d.kill(signal: SIGTERM)
        let log = try await d.finish().stderr
        #expect(log.contains("client_id=raw remote=[IPv4]203.0.113.9:0 session_present=false [MartletBroker] client connected"), "\(log)")
    }
}
