import Foundation
import MartletTestSupport
import Testing

/// MQTT.js (Debian's node-mqtt) against martletd's WebSocket listeners: from Node, and bundled
/// into a page that headless Chromium (Debian's chromium) loads, so the browser's own WebSocket
/// stack (Origin header, masking, subprotocol) talks to the broker.
@Suite(.serialized) struct BrowserTests {
    static let dir = DaemonTests.root.appendingPathComponent("Tests/InteropTests").path
    static let node = "/usr/bin/node"
    static let chromium = "/usr/lib/chromium/chromium"
    /// Debian installs node modules under /usr/share/nodejs; a node that is not Debian's own
    /// does not look there by itself.
    static let nodePath = "NODE_PATH=/usr/share/nodejs"

    @Test("MQTT.js from Node over ws and wss: retained, QoS 0/1/2 round trips and a will, with MQTT 3.1.1 and 5.0")
    func mqttjsFromNode() async throws {
        let certs = try await DevCertificates.make()
        let (ws, wss) = (randomTestPort(), randomTestPort())
        let d = try ChildProcess(DaemonTests.martletd, [
            "--port", "\(randomTestPort())", "--ws-port", "\(ws)", "--wss-port", "\(wss)",
            "--cert", certs.serverCert, "--key", certs.serverKey,
        ])
        defer { d.kill() }
        for port in [ws, wss] { try await waitUntilListening(UInt16(port)) }
        let expected = "v4 retained\nv4 qos 0 1 2\nv4 will\nv5 retained\nv5 qos 0 1 2\nv5 will\nOK\n"
        let script = "\(Self.dir)/mqttjs/roundtrip.js"
        let plain = try await run("/usr/bin/env", [Self.nodePath, Self.node, script, "ws://127.0.0.1:\(ws)/mqtt"], timeout: .seconds(30))
        #expect(plain.stdout == expected, "\(plain.stderr)")
        let secure = try await run("/usr/bin/env", [Self.nodePath, Self.node, script, "wss://localhost:\(wss)/mqtt", certs.ca],
                                   timeout: .seconds(30))
        #expect(secure.stdout == expected, "\(secure.stderr)")
    }

    @Test("Headless Chromium loads a page that connects with MQTT.js over ws and wss, subscribes, publishes and gets its message back; a listener whose allowed_origins leaves the page out refuses it (403)")
    func chromiumRoundTrip() async throws {
        let certs = try await DevCertificates.make()
        let scratch = scratchPath("browser")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let bundle = try await Self.bundleMQTTjs(into: scratch)
        let http = randomTestPort()
        let page = "http://127.0.0.1:\(http)"
        let (ws, wss, strict) = (randomTestPort(), randomTestPort(), randomTestPort())
        try """
            listeners:
              - {host: 127.0.0.1, port: \(ws), websocket: true, allowed_origins: ["\(page)"]}
              - host: 127.0.0.1
                port: \(wss)
                websocket: true
                allowed_origins: ["\(page)"]
                tls: {cert: \(certs.serverCert), key: \(certs.serverKey)}
              - {host: 127.0.0.1, port: \(strict), websocket: true, allowed_origins: ["https://elsewhere.example"]}
            log_level: debug

            """.write(toFile: scratch + "/martlet.yaml", atomically: true, encoding: .utf8)
        let d = try ChildProcess(DaemonTests.martletd, ["--config", scratch + "/martlet.yaml"])
        defer { d.kill() }
        for port in [ws, wss, strict] { try await waitUntilListening(UInt16(port)) }

        let plain = try await Self.loadPage(http: http, bundle: bundle, brokerURL: "ws://127.0.0.1:\(ws)/mqtt", scratch: scratch)
        #expect(plain == "round trip: hello from chromium")
        let secure = try await Self.loadPage(http: http, bundle: bundle, brokerURL: "wss://localhost:\(wss)/mqtt", scratch: scratch)
        #expect(secure == "round trip: hello from chromium")
        let refused = try await Self.loadPage(http: http, bundle: bundle, brokerURL: "ws://127.0.0.1:\(strict)/mqtt", scratch: scratch)
        // A page cannot see why its WebSocket failed; the broker log below says 403 and why.
        #expect(refused == "closed before a round trip")

        d.kill(signal: SIGTERM)
        let log = try await d.finish().stderr
        #expect(log.contains("origin=\(page) path=/mqtt remote=[IPv4]127.0.0.1/127.0.0.1:") && log.contains("status=403"), "\(log)")
        #expect(log.components(separatedBy: "client_id=chromium").count - 1 >= 2, "\(log)")
    }

    /// Bundles Debian's MQTT.js for the browser with Debian's esbuild (Node's Buffer and process
    /// from node-buffer and node-process; `ws` replaced by the browser's WebSocket).
    static func bundleMQTTjs(into scratch: String) async throws -> String {
        try "module.exports = require('mqtt')\n".write(toFile: scratch + "/entry.js", atomically: true, encoding: .utf8)
        try "export { Buffer } from 'buffer'\nimport p from 'process'\nexport { p as process }\n"
            .write(toFile: scratch + "/shim.js", atomically: true, encoding: .utf8)
        let out = scratch + "/mqtt.browser.js"
        let r = try await run("/usr/bin/env", [
            nodePath, "/usr/bin/esbuild", scratch + "/entry.js", "--bundle", "--platform=browser", "--format=iife",
            "--global-name=mqtt", "--inject:\(scratch)/shim.js", "--define:global=globalThis",
            "--alias:ws=/usr/share/nodejs/ws/browser.js", "--alias:stream=readable-stream",
            "--log-level=warning", "--outfile=\(out)",
        ], timeout: .seconds(60))
        #expect(r.status == 0, "esbuild: \(r.stderr)")
        return out
    }

    /// Serves the test page and loads it in headless Chromium; returns what the page reported.
    static func loadPage(http: Int, bundle: String, brokerURL: String, scratch: String) async throws -> String {
        let server = try ChildProcess(debianPython, ["\(dir)/browser/serve.py", "\(http)", "\(dir)/browser/page.html", bundle, "30"])
        defer { server.kill() }
        try await waitUntilListening(UInt16(http))
        let profile = scratch + "/profile-\(UUID().uuidString.prefix(8))"
        let browser = try ChildProcess(chromium, [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
            "--ignore-certificate-errors", "--user-data-dir=\(profile)",
            "http://127.0.0.1:\(http)/?url=\(brokerURL)",
        ])
        let result = try await server.finish(timeout: .seconds(40))
        browser.kill(signal: SIGTERM)
        _ = try await browser.finish(timeout: .seconds(20))
        return result.stdout.trimmingCharacters(in: .newlines)
    }
}
