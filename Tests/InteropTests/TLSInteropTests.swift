import Foundation
import Logging
import MartletBroker
import MartletTLS
import Testing

/// Makes development certificates in `dir` with certs/make-dev-certs.sh.
func makeCertificates(_ dir: String) async throws {
    let script = DaemonTests.root.appendingPathComponent("certs/make-dev-certs.sh").path
    let r = try await run("/bin/bash", [script, dir])
    #expect(r.status == 0, "\(r.stderr)")
}

/// mosquitto_pub / mosquitto_sub over TLS, and certificate reload on SIGHUP.
@Suite struct TLSInteropTests {
    @Test func mosquittoClientsOverTLS() async throws {
        let dir = NSTemporaryDirectory() + "martlet-tls-\(UUID().uuidString)"
        try await makeCertificates(dir)
        var config = BrokerConfiguration()
        config.listeners = [.init(host: "127.0.0.1", port: 0, tls: .server(certificateChainFile: dir + "/server.pem", privateKeyFile: dir + "/server.key"))]
        config.eventLoops = 2
        var logger = Logger(label: "tls-interop")
        logger.logLevel = .critical
        let broker = MQTTBroker(configuration: config, logger: logger)
        try await broker.start()
        let port = broker.localAddresses[0].port!
        let tlsArgs = ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", dir + "/ca.pem"]
        let sub = try ChildProcess(mosquittoSub, tlsArgs + ["-t", "secure/#", "-v", "-C", "2", "-W", "10", "-q", "1"])
        try await waitForSubscriptions(broker, 1)
        for (i, version) in ["mqttv311", "mqttv5"].enumerated() {
            let r = try await run(mosquittoPub, tlsArgs + ["-V", version, "-q", "1", "-t", "secure/\(i)", "-m", "tls \(version)"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let result = try await sub.finish()
        #expect(result.stdout == "secure/0 tls mqttv311\nsecure/1 tls mqttv5\n", "\(result.stderr)")
        // A client that does not trust the broker's CA is refused by its own verification.
        let other = NSTemporaryDirectory() + "martlet-tls-\(UUID().uuidString)"
        try await makeCertificates(other)
        let refused = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", other + "/ca.pem", "-t", "x", "-m", "y"])
        #expect(refused.status != 0)
        try await broker.shutdown()
    }

    @Test func sighupReloadsCertificates() async throws {
        let dir = NSTemporaryDirectory() + "martlet-reload-\(UUID().uuidString)"
        try await makeCertificates(dir)
        let oldCA = dir + "/old-ca.pem"
        try FileManager.default.copyItem(atPath: dir + "/ca.pem", toPath: oldCA)
        let daemon = try ChildProcess(DaemonTests.martletd, ["--tls-port", "18997", "--cert", dir + "/server.pem", "--key", dir + "/server.key", "--log-level", "info"])
        defer { daemon.kill() }
        try await waitUntilListening(18997)
        let before = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "18997", "--cafile", oldCA, "-t", "r", "-m", "1"])
        #expect(before.status == 0, "\(before.stderr)")
        try await makeCertificates(dir)  // new CA and server certificate over the same files
        daemon.kill(signal: SIGHUP)
        var after = ProcessResult(status: -1, stdout: "", stderr: "")
        for _ in 0..<50 {  // the reload is asynchronous: retry briefly
            after = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "18997", "--cafile", dir + "/ca.pem", "-t", "r", "-m", "2"])
            if after.status == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(after.status == 0, "\(after.stderr)")
        let stale = try await run(mosquittoPub, ["-h", "127.0.0.1", "-p", "18997", "--cafile", oldCA, "-t", "r", "-m", "3"])
        #expect(stale.status != 0)
        daemon.kill(signal: SIGTERM)
        let r = try await daemon.finish(timeout: .seconds(5))
        #expect(r.status == 0)
        #expect(r.stderr.contains("TLS context reloaded"), "\(r.stderr)")
    }
}
